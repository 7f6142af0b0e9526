"""Remote bench over SSH against a real OpenSSH server the tests start on 127.0.0.1 with generated
keys (Debian's openssh-server; .ci/run installs it)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecls import runtime
from edgecls.bundle import sha256_file
from edgecls.data import load_dataset, sample_indices

from .conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def _client_config(folder: Path, name: str, port: int, key: Path, known_hosts: Path) -> Path:
    import getpass

    cfg = folder / f"ssh_config_{name}"
    cfg.write_text(f"""Host {name}
    HostName 127.0.0.1
    Port {port}
    User {getpass.getuser()}
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    StrictHostKeyChecking yes
    LogLevel ERROR
""")
    return cfg


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD) or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client; .ci/run does)")
    folder = tmp_path_factory.mktemp("sshd")
    host_pub = _keygen(folder / "host_key")
    client_pub = _keygen(folder / "client_key")
    (folder / "authorized_keys").write_text(client_pub + "\n")
    os.chmod(folder / "authorized_keys", 0o600)
    try:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    except OSError:
        pass
    port = _free_port()
    (folder / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {folder / 'host_key'}
AuthorizedKeysFile {folder / 'authorized_keys'}
PidFile {folder / 'sshd.pid'}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
""")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=open(folder / "sshd.log", "wb"))
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(folder / 'sshd.log').read_text()[-1500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    key_type, key_b64 = host_pub.split()[:2]
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {key_type} {key_b64}\n")
    good = _client_config(folder, "edgecls-test", port, folder / "client_key", folder / "known_hosts")
    yield {"folder": folder, "port": port, "config": good}
    proc.terminate()
    proc.wait(timeout=10)


def _remote_bench(bundle, sshd, out, *extra, host="edgecls-test", config=None, python=sys.executable):
    return run_cli("bench", bundle, "--repeats", "1", "--host", host, "--ssh-config", config or sshd["config"], "--remote-python", python,
                   "--remote-dir", sshd["folder"] / "device", "--runs", "5", "--warmup", "2", "--max-images", "100",
                   "--out", out, *extra, timeout=600)


def test_remote_bench_copies_only_what_changed_and_measures_the_same_images(sample_bundle, sshd, tmp_path):
    bundle = tmp_path / "seed"
    shutil.copytree(sample_bundle.out, bundle)
    out = tmp_path / "device.json"
    proc = _remote_bench(bundle, sshd, out, "--variants", "tflite_fp32", "tflite_int8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["kind"] == "edgecls-bench" and report["remote"]["host"] == "edgecls-test"
    assert {"cpu", "cores", "arch", "os", "python", "runtime"} <= set(report["host"])  # the device's own
    sent = report["remote"]["sent_files"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sorted(sent) == sorted({"manifest.json", "labels.json", "preprocessing.json", *(a["file"] for a in manifest["artifacts"])})
    assert sent[-1] == "manifest.json"
    device_bundle = sshd["folder"] / "device" / "bundles" / "seed"
    for art in manifest["artifacts"]:
        assert sha256_file(device_bundle / art["file"]) == art["sha256"]
    # The device measured the same 100 images as this machine would.
    test = load_dataset("cifar10-sample").test
    keep = sample_indices(len(test), 100)
    rows = {v["name"]: v for v in report["variants"]}
    assert list(rows) == ["tflite_fp32", "tflite_int8"]
    for name, row in rows.items():
        assert row["status"] == "ok", row
        probs = runtime.load(bundle, variant=name).predict(test.images[keep])
        assert row["accuracy"] == pytest.approx(float((probs.argmax(1) == test.labels[keep]).mean()), abs=1e-6)
    assert "edgecls-test: bench [" in proc.stderr

    # Second run, in two rounds on the device (--repeats): nothing to send. Then a damaged copy on
    # the device is replaced, and only it.
    proc = _remote_bench(bundle, sshd, out, "--variants", "tflite_int8", "--repeats", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = json.loads(out.read_text())
    assert second["remote"]["sent_files"] == [] and second["settings"]["repeats"] == 2
    assert second["variants"][0]["repeats"]["rounds"] == 2
    assert "sending 0 of" in proc.stderr
    damaged = device_bundle / "tflite_int8.tflite"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    proc = _remote_bench(bundle, sshd, out, "--variants", "tflite_int8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["remote"]["sent_files"] == ["tflite_int8.tflite"]
    assert sha256_file(damaged) == sha256_file(bundle / "tflite_int8.tflite")
    # No temporary files left on the device.
    assert not list((sshd["folder"] / "device").rglob("*.part*"))
    assert not list((sshd["folder"] / "device" / "reports").iterdir())


def test_remote_bench_errors_are_one_line(sample_bundle, sshd, tmp_path):
    folder = sshd["folder"]
    out = tmp_path / "r.json"
    # Nothing listens on this port.
    closed = _client_config(tmp_path, "closed", _free_port(), folder / "client_key", folder / "known_hosts")
    assert_one_line_error(_remote_bench(sample_bundle.out, sshd, out, host="closed", config=closed),
                          "cannot reach closed over SSH", "Connection refused")
    # The server presents a key other than the one known_hosts holds.
    other = _keygen(tmp_path / "other_host_key").split()
    (tmp_path / "wrong_known_hosts").write_text(f"[127.0.0.1]:{sshd['port']} {other[0]} {other[1]}\n")
    wrong = _client_config(tmp_path, "wrong", sshd["port"], folder / "client_key", tmp_path / "wrong_known_hosts")
    assert_one_line_error(_remote_bench(sample_bundle.out, sshd, out, host="wrong", config=wrong),
                          "host key verification failed for wrong")
    # A Python without edgecls on the device (the interpreter this virtualenv was made from).
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    assert_one_line_error(_remote_bench(sample_bundle.out, sshd, out, python=str(base_python)),
                          "edgecls is not installed", "pip install 'edgecls[runtime]'")
    assert_one_line_error(_remote_bench(sample_bundle.out, sshd, out, python="/no/such/python"), "command not found")
    assert_one_line_error(_remote_bench(sample_bundle.out, sshd, out, "--keras"), "cannot run on a remote device")
    assert not out.exists()


def test_pi_setup_gives_a_runtime_only_install_that_benches_over_ssh(sample_bundle, sshd, tmp_path):
    """tools/device/pi_setup.sh (what a Pi runs) on this machine: a venv with only the runtime extra, no
    TensorFlow; then the remote bench uses that venv through the loopback SSH server."""
    from .conftest import ROOT

    venv = tmp_path / "pi-venv"
    env = {**os.environ, "EDGECLS_VENV": str(venv), "EDGECLS_PI_SETUP_ANY_ARCH": "1",
           "EDGECLS_CHECK_MODEL": str(sample_bundle.out), "PYTHON": str(Path(sys.base_prefix) / "bin" / "python3")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["sh", "tools/device/pi_setup.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    frozen = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True, text=True).stdout.lower()
    assert "ai-edge-litert==" in frozen and "onnxruntime==" in frozen and "numpy==" in frozen
    assert "tensorflow" not in frozen and "keras" not in frozen
    assert "| tflite_int8 |" in proc.stdout  # its own check ran the shipped-model bench
    out = tmp_path / "device.json"
    proc = _remote_bench(sample_bundle.out, sshd, out, "--variants", "tflite_int8", "onnx_int8", python=str(venv / "bin" / "python"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [v["status"] for v in report["variants"]] == ["ok", "ok"]
    assert "tensorflow" not in json.dumps(report["host"]["runtime"]).lower()


def test_pi_setup_refuses_32_bit_and_other_machines(tmp_path):
    from .conftest import ROOT

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "uname").write_text("#!/bin/sh\necho armv7l\n")
    (fake / "uname").chmod(0o755)
    proc = subprocess.run(["sh", "tools/device/pi_setup.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "EDGECLS_VENV": str(tmp_path / "v")})
    assert proc.returncode == 1 and "no 32-bit ARM wheels" in proc.stderr and "64-bit Raspberry Pi OS" in proc.stderr
    assert not (tmp_path / "v").exists()


def test_tune_spreads_latency_over_several_devices(trained_tiny, sshd, tmp_path):
    """`edgecls tune --host A --host B`: every candidate measured on one of the devices over SSH, the
    work shared between them, and the choice made from their figures."""
    from .conftest import TINY_ZIP

    both = tmp_path / "ssh_config"
    first = sshd["config"].read_text()
    both.write_text(first + "\n" + first.replace("Host edgecls-test", "Host edgecls-test-2"))
    out = tmp_path / "tune"
    proc = run_cli("tune", trained_tiny.out, "--data", TINY_ZIP, "--out", out, "--variants", "tflite_fp32", "onnx_fp32",
                   "--validation-images", "100", "--calibration-count", "64", "--runs", "5", "--repeats", "1",
                   "--fine-tune", "never", "--host", "edgecls-test", "--host", "edgecls-test-2", "--ssh-config", both,
                   "--remote-python", sys.executable, "--remote-dir", sshd["folder"] / "device", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "tune.json").read_text())
    devices = {c["device"] for c in record["candidates"] if c["status"] == "ok"}
    assert devices == {"edgecls-test", "edgecls-test-2"}  # two bundles (tflite, onnx), one per device
    assert all(c["latency_ms"] > 0 for c in record["candidates"] if c["status"] == "ok")
    assert record["choice"]["winner"]["id"] in proc.stdout
