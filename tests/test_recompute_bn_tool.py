"""experiments/recompute_bn.py: the BatchNorm pass sees the stream the run was trained on."""
import json
import shutil

import pytest

from .conftest import ROOT, TINY_ZIP, load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("recompute_bn")


def test_augmentation_comes_from_the_runs_train_json(tool):
    assert tool.training_augmentation({"config": {"cutout": 8, "cutmix": 0.5}}) == {"cutout": 8, "cutmix": 0.5}
    # a run from before CutMix existed records no cutmix key; one from before cutout, neither
    assert tool.training_augmentation({"config": {"cutout": 8}}) == {"cutout": 8, "cutmix": 0.0}
    assert tool.training_augmentation({}) == {"cutout": 0, "cutmix": 0.0}


@pytest.fixture
def run_dir(tmp_path):
    """The shipped resnet8's training directory files, its train.json saying cutout 8 and CutMix 0.5."""
    src = ROOT / "models" / "resnet8"
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "labels.json", "preprocessing.json"):
        shutil.copy(src / name, run / name)
    record = json.loads((src / "train.json").read_text())
    record["config"]["cutmix"] = 0.5
    (run / "train.json").write_text(json.dumps(record))
    return run


def _watch_stream(tool, monkeypatch):
    seen = {}
    real = tool.make_dataset

    def watched(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tool, "make_dataset", watched)
    return seen


def test_the_pass_uses_the_runs_cutout_and_cutmix_on_real_images(tool, run_dir, monkeypatch, capsys):
    seen = _watch_stream(tool, monkeypatch)
    assert tool.main([str(run_dir), "--data", str(TINY_ZIP)]) == 0
    assert (seen["augment"], seen["cutout"], seen["cutmix"]) == (True, 8, 0.5)
    out = capsys.readouterr().out
    assert "over 200 augmented (cutout 8, cutmix 0.5) training images (100 test images" in out


def test_options_override_the_run_and_plain_turns_everything_off(tool, run_dir, monkeypatch, capsys):
    seen = _watch_stream(tool, monkeypatch)
    assert tool.main([str(run_dir), "--data", str(TINY_ZIP), "--cutmix", "0"]) == 0
    assert (seen["cutout"], seen["cutmix"]) == (8, 0.0)
    assert tool.main([str(run_dir), "--data", str(TINY_ZIP), "--plain"]) == 0
    assert (seen["augment"], seen["cutout"], seen["cutmix"]) == (False, 0, 0.0)
    assert "over 200 plain training images" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--cutmix", "1.5"], "--cutmix 1.5: must be a probability in [0, 1]"),
    (["--cutout", "-1"], "--cutout -1: must be 0 (off) or a square size in pixels"),
    (["--plain", "--cutout", "8"], "--plain feeds unaugmented images"),
])
def test_bad_options_are_one_line_errors(tool, run_dir, argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        tool.main([str(run_dir), "--data", str(TINY_ZIP), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_an_unreadable_train_json_is_a_one_line_error(tool, run_dir, capsys):
    (run_dir / "train.json").write_text("{not json")
    assert tool.main([str(run_dir), "--data", str(TINY_ZIP)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"recompute_bn: error: model {run_dir}: cannot read train.json (")
