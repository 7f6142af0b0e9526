"""edgecls never destroys what it did not write: destinations are checked before any work, an
interrupted run (Ctrl-C, SIGTERM, SIGHUP) leaves no partial output, and a failed first check leaves
nothing that blocks a corrected retry."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecls.cli import main
from edgecls.errors import ConfigError
from edgecls.outputs import check_output_dir, check_output_file

from .conftest import ROOT, TINY_ZIP


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def user_folder(tmp_path):
    folder = tmp_path / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "notes.txt").write_text("three years of work")
    (folder / "chapters" / "one.tex").write_text("\\chapter{One}")
    return folder


def test_destinations_that_must_never_be_replaced(tmp_path, user_folder, monkeypatch):
    monkeypatch.chdir(user_folder / "chapters")
    for out, message in ((".", "current folder"), ("", "current folder"), ("..", "folder above it"),
                         (str(user_folder), "folder above it"), (str(Path.home()), "home folder|folder above it"), ("/", "folder above it")):
        with pytest.raises(ConfigError, match=message):
            check_output_dir(out, "bundle")
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match="an existing file"):
        check_output_dir(user_folder / "notes.txt", "bundle")
    with pytest.raises(ConfigError, match="did not write.*no manifest.json.*choose a new or empty folder"):
        check_output_dir(user_folder, "bundle")
    with pytest.raises(ConfigError, match="holds this command's input"):
        check_output_dir(tmp_path, "bundle", inputs=[user_folder / "model.keras"])
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_dir(user_folder / "notes.txt" / "bundle", "bundle")
    assert check_output_dir(tmp_path / "new" / "deeper", "bundle") == tmp_path / "new" / "deeper"
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", "bundle")


def test_only_an_earlier_output_of_the_same_kind_is_replaced(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": []}))
    check_output_dir(bundle, "bundle")
    with pytest.raises(ConfigError, match="no train.json"):
        check_output_dir(bundle, "train")
    (bundle / "manifest.json").write_text('{"schema": 1, "artifacts": [')  # not parsable: not ours
    with pytest.raises(ConfigError, match="did not write"):
        check_output_dir(bundle, "bundle")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"kind": "edgecls-bench", "variants": []}))
    check_output_file(bench, "bench")
    other = tmp_path / "data.json"
    other.write_text(json.dumps({"mine": 1}))
    with pytest.raises(ConfigError, match="not a bench report edgecls wrote"):
        check_output_file(other, "bench")
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(tmp_path, "eval")


def test_commands_refuse_a_users_folder_before_any_work(user_folder, sample_bundle, sample_model, capsys, monkeypatch):
    before = _snapshot(user_folder)
    import edgecls.data
    import edgecls.export
    import edgecls.optimize.run
    import edgecls.training.run

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the destination was checked")

    # Refused up front: no dataset is read, nothing is trained or exported.
    for module in (edgecls.data, edgecls.export, edgecls.optimize.run, edgecls.training.run):
        monkeypatch.setattr(module, "load_dataset", no_work)
    cases = [
        ["export", str(sample_model.out), "--data", str(TINY_ZIP), "--out", str(user_folder)],
        ["optimize", str(sample_model.out), "--data", str(TINY_ZIP), "--out", str(user_folder)],
        ["train", "--data", str(TINY_ZIP), "--arch", "seed_cnn", "--epochs", "1", "--out", str(user_folder)],
        ["report", str(ROOT / "tests" / "fixtures" / "reports" / "bench-resnet8-2t.json"), "--out", str(user_folder)],
        ["bench", str(sample_bundle.out), "--out", str(user_folder / "notes.txt")],
        ["eval", str(sample_model.out), "--data", str(TINY_ZIP), "--out", str(user_folder / "notes.txt")],
        ["pipeline", "--data", str(TINY_ZIP), "--epochs", "1", "--out", str(user_folder)],
        ["export", str(sample_model.out), "--data", str(TINY_ZIP), "--out", "."],
        ["export", str(sample_model.out), "--data", str(TINY_ZIP), "--out", str(sample_model.out.parent)],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("edgecls: error:") == 1 and "Traceback" not in err, (argv, err)
        assert "--out" in err, (argv, err)
    assert _snapshot(user_folder) == before
    assert not [p for p in user_folder.parent.iterdir() if "partial" in p.name]


def _wait_for(predicate, proc, timeout=240):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_export_leaves_no_partial_output(sample_model, tmp_path, signum):
    out = tmp_path / "bundle"
    (tmp_path / "keep.txt").write_text("mine")
    # The signal's default disposition in the child, whatever this test inherited (a shell starting a
    # job in the background ignores SIGINT, and an ignored signal stays ignored across exec).
    proc = subprocess.Popen([sys.executable, "-m", "edgecls.cli", "export", str(sample_model.out), "--data", str(TINY_ZIP),
                             "--out", str(out), "--calibration-count", "100"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    started = _wait_for(lambda: any(".partial" in p.name for p in tmp_path.iterdir()), proc)
    assert started, proc.stderr.read() if proc.poll() is not None else "no staging folder appeared"
    time.sleep(1.0)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_sigterm_after_a_finished_epoch_keeps_only_the_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "edgecls.cli", "train", "--data", str(TINY_ZIP), "--arch", "seed_cnn", "--epochs", "200",
            "--batch-size", "32", "--out", str(out), "--verbose", "0"]
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    history = tmp_path / "run.partial" / "history.json"
    assert _wait_for(lambda: history.is_file() and json.loads(history.read_text() or "[]"), proc), "no epoch finished"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "--resume" in err and "delete that folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.partial"]


def test_a_hangup_ignored_on_purpose_stays_ignored(tmp_path):
    """Under nohup (SIGHUP ignored when edgecls starts) a hangup does not stop the run; SIGTERM still does."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "edgecls.cli", "train", "--data", str(TINY_ZIP), "--arch", "seed_cnn", "--epochs", "200",
            "--batch-size", "32", "--out", str(out), "--verbose", "0"]
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    history = tmp_path / "run.partial" / "history.json"
    assert _wait_for(lambda: history.is_file() and json.loads(history.read_text() or "[]"), proc), "no epoch finished"
    proc.send_signal(signal.SIGHUP)
    time.sleep(2.0)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err


@pytest.mark.parametrize("failure", [ValueError, KeyboardInterrupt])
def test_a_run_failing_before_its_first_epoch_leaves_nothing_behind(tmp_path, failure):
    from edgecls import TrainConfig, train
    from edgecls._deps import keras

    class FailsAtStart(keras().callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise failure("the first check failed")

    config = TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", epochs=1, batch_size=32, out=str(tmp_path / "run"),
                         verbose=0)
    with pytest.raises(failure):
        train(config, callbacks=[FailsAtStart()])
    assert not os.listdir(tmp_path)
    result = train(config)  # the corrected retry, without --resume and without deleting anything
    assert result.metrics["epochs_run"] == 1
