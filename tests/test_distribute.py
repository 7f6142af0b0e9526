"""Multi-replica training code paths, exercised on the CPU: MirroredStrategy over two logical CPU
devices, and MultiWorkerMirroredStrategy with two worker processes on localhost (TF_CONFIG)."""
import json
import os
import socket
import subprocess
import sys

from .conftest import ROOT, TINY_ZIP, run_cli


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mirrored_over_two_logical_cpus(tmp_path):
    out = tmp_path / "mirrored"
    proc = run_cli("train", "--data", TINY_ZIP, "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "64",
                   "--out", out, "--verbose", "0", env={"EDGECLS_CPU_DEVICES": "2"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "train.json").read_text())
    assert report["strategy"] == "mirrored" and report["replicas"] == 2
    assert report["device"].startswith("2 logical devices")


def test_multi_worker_with_tf_config(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    out = tmp_path / "mw"
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "edgecls.cli", "train", "--data", str(TINY_ZIP), "--arch", "seed_cnn",
             "--epochs", "1", "--batch-size", "64", "--out", str(out), "--verbose", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    report = json.loads((out / "train.json").read_text())
    assert report["strategy"] == "multi-worker" and report["replicas"] == 2
    assert report["device"].startswith("2 workers")
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "model.keras", "preprocessing.json", "train.json"]
