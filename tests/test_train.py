"""The training stage on real images: outputs, recipe, reproducibility, resume, interruption."""
import json

import numpy as np
import pytest

from edgecls import TrainConfig, train
from edgecls.errors import ConfigError
from edgecls.preprocess import PreprocessingSpec

from .conftest import TINY_ZIP, assert_one_line_error, run_cli


def test_train_writes_model_labels_spec_and_report(trained_tiny):
    out = trained_tiny.out
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "model.keras", "preprocessing.json", "train.json"]
    assert not out.with_name(out.name + ".partial").exists()
    assert json.loads((out / "labels.json").read_text())[:3] == ["airplane", "automobile", "bird"]
    spec = PreprocessingSpec.load(out / "preprocessing.json")
    assert spec.input_size == (32, 32) and spec.scale == pytest.approx(1 / 255)
    # Standardized with the training images' statistics: CIFAR-10's means are near 0.47.
    assert all(0.35 < m < 0.6 for m in spec.mean) and all(0.15 < s < 0.35 for s in spec.std)
    report = json.loads((out / "train.json").read_text())
    assert report["split"] == {"train": 180, "val": 20, "test": 100}
    assert report["epochs_run"] == 3 and len(report["history"]) == 3
    for key in ("loss", "accuracy", "val_accuracy", "epoch_time_s", "images_per_s"):
        assert key in report["history"][0]
    assert 0.0 <= report["test_accuracy"] <= 1.0
    assert report["device"].startswith("CPU") and report["strategy"] == "cpu"
    assert report["images_per_s"] > 0 and report["wall_time_s"] > 0
    assert report["model"]["params"] == 122_570
    # Saved for inference: the weights once, without the optimizer's momentum (which doubles the file).
    import zipfile

    with zipfile.ZipFile(out / "model.keras") as zf:
        weights = [i for i in zf.infolist() if i.filename.endswith(".h5")]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())  # Keras stores them uncompressed
    assert weights and weights[0].file_size < 122_570 * 4 * 1.15 and weights[0].compress_size < weights[0].file_size


def test_saved_model_file_is_compressed_and_loads_the_same(tmp_path, trained_tiny):
    """save_model_file deflates the .keras zip and renames it into place: the model loads with the
    same weights, and no temporary file is left beside it."""
    from edgecls.modelio import load_keras_model, save_model_file

    model = trained_tiny.model
    save_model_file(model, tmp_path / "m.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]
    again = load_keras_model(tmp_path / "m.keras")
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_training_loss_falls_on_real_images(trained_tiny):
    history = trained_tiny.metrics["history"]
    assert history[-1]["loss"] < history[0]["loss"]


def test_evaluate_agrees_with_the_training_pipeline(trained_tiny):
    """`edgecls eval` preprocesses with numpy; training evaluated through tf.data. Same numbers."""
    from edgecls import evaluate

    result = evaluate(trained_tiny.out, str(TINY_ZIP))
    assert result.count == 100
    assert result.top1 == pytest.approx(trained_tiny.metrics["test_accuracy"], abs=1e-6)
    assert np.array(result.confusion).sum() == 100
    assert np.trace(np.array(result.confusion)) == round(result.top1 * 100)


def test_same_seed_gives_the_same_model(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLS_DETERMINISTIC", "1")
    kw = dict(data=str(TINY_ZIP), arch="resnet8", epochs=1, batch_size=64, verbose=0)
    a = train(TrainConfig(out=str(tmp_path / "a"), **kw))
    b = train(TrainConfig(out=str(tmp_path / "b"), **kw))
    assert a.metrics["history"][0]["loss"] == b.metrics["history"][0]["loss"]
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_interrupted_run_leaves_nothing_in_out_and_resumes(tmp_path):
    from edgecls._deps import keras

    class StopAfterOneEpoch(keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    config = TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", epochs=3, batch_size=64, out=str(out), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[StopAfterOneEpoch()])
    assert not out.exists()
    staging = tmp_path / "run.partial"
    assert (staging / "backup").is_dir()
    assert [r["epoch"] for r in json.loads((staging / "history.json").read_text())] == [1]

    with pytest.raises(ConfigError, match="interrupted run is waiting.*--resume"):
        train(config)
    with pytest.raises(ConfigError, match="cannot resume.*epochs was 3, now 5"):
        train(config, resume=True, epochs=5)
    result = train(config, resume=True)
    assert [r["epoch"] for r in result.metrics["history"]] == [1, 2, 3]
    assert (out / "model.keras").exists() and not staging.exists()


def test_tutorial_recipe_is_the_plain_baseline(tmp_path):
    result = train(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", recipe="tutorial", epochs=1, batch_size=64,
                               out=str(tmp_path / "t"), verbose=0))
    spec = PreprocessingSpec.load(tmp_path / "t" / "preprocessing.json")
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    assert result.metrics["config"]["peak_learning_rate"] == 1e-3


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "epochs must be a positive integer"),
    ("batch_size", -4, "batch_size must be a positive integer"),
    ("val_fraction", 0.7, "val_fraction must be in"),
    ("recipe", "magic", "recipe must be one of"),
])
def test_invalid_config_fails_when_built(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


def test_cli_train_and_eval(tmp_path):
    out = tmp_path / "cli"
    proc = run_cli("train", "--data", TINY_ZIP, "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "64",
                   "--out", out, "--verbose", "0")
    assert proc.returncode == 0, proc.stderr
    assert "seed_cnn: test accuracy" in proc.stdout and str(out) in proc.stdout
    proc = run_cli("eval", out, "--data", TINY_ZIP)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "eval.json").read_text())
    assert f"top-1 accuracy: {report['top1']:.4f} on 100 test images" in proc.stdout
    assert "confusion matrix" in proc.stdout and len(report["confusion_matrix"]) == 10
    assert set(report["per_class"]) == set(json.loads((out / "labels.json").read_text()))


def test_cli_bad_inputs_are_one_line_errors(tmp_path, trained_tiny):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("train", "--data", empty, "--out", tmp_path / "o", "--epochs", "1"), "empty")
    assert_one_line_error(run_cli("train", "--data", tmp_path / "missing", "--out", tmp_path / "o", "--epochs", "1"),
                          "dataset not found")
    assert_one_line_error(run_cli("train", "--data", TINY_ZIP, "--out", tmp_path / "o", "--epochs", "0"),
                          "--epochs: 0 is out of range")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("labels.json", "preprocessing.json"):
        (broken / name).write_bytes((trained_tiny.out / name).read_bytes())
    (broken / "model.keras").write_bytes((trained_tiny.out / "model.keras").read_bytes()[:500])
    assert_one_line_error(run_cli("eval", broken, "--data", TINY_ZIP), "not a valid .keras file")
    assert_one_line_error(run_cli("eval", tmp_path / "nothing", "--data", TINY_ZIP), "no model at")


def test_per_architecture_learning_rate():
    """seed_cnn has no BatchNorm and gets a lower SGD rate than resnet8; --lr overrides both."""
    assert TrainConfig(arch="resnet8").peak_learning_rate == pytest.approx(0.1)
    assert TrainConfig(arch="seed_cnn").peak_learning_rate == pytest.approx(0.02)
    assert TrainConfig(arch="seed_cnn", batch_size=256).peak_learning_rate == pytest.approx(0.04)
    assert TrainConfig(arch="seed_cnn", learning_rate=0.3).peak_learning_rate == 0.3


def test_diverging_run_stops_with_a_one_line_error(tmp_path):
    out = tmp_path / "m"
    proc = run_cli("train", "--data", TINY_ZIP, "--arch", "seed_cnn", "--epochs", "3", "--lr", "1e6", "--out", out,
                   "--batch-size", "32", "--verbose", "0")
    assert_one_line_error(proc, "training diverged", "lower --lr")
    assert not out.exists() and not (tmp_path / "m.partial").exists()


def test_init_continues_from_a_finished_run(tmp_path, trained_tiny):
    """--init starts from a finished run's weights and preprocessing, and counts its epochs.

    At a learning rate of ~0 the continued weights are the starting ones (seed_cnn has no BatchNorm
    statistics to move), which a fresh initialization would not be."""
    from edgecls.modelio import load_trained

    out = tmp_path / "c"
    result = train(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", epochs=1, batch_size=32, out=str(out), verbose=0,
                               learning_rate=1e-12, weight_decay=0.0, init_from=str(trained_tiny.out)))
    before, after = load_trained(trained_tiny.out), load_trained(out)
    for a, b in zip(before.model.get_weights(), after.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert after.preprocessing == before.preprocessing
    m = result.metrics
    assert m["epochs_run"] == 1 and m["total_epochs"] == 4
    assert m["init_from"]["path"] == str(trained_tiny.out) and m["init_from"]["epochs"] == 3
    assert m["init_from"]["test_accuracy"] == pytest.approx(trained_tiny.metrics["test_accuracy"])
    assert m["total_train_time_s"] > m["train_time_s"]


def test_init_bad_inputs_are_one_line_errors(tmp_path, trained_tiny):
    args = ("train", "--data", TINY_ZIP, "--epochs", "1", "--batch-size", "32", "--verbose", "0", "--out", tmp_path / "o")
    assert_one_line_error(run_cli(*args, "--arch", "resnet8", "--init", trained_tiny.out), "trained 'seed_cnn'", "--arch seed_cnn")
    assert_one_line_error(run_cli(*args, "--arch", "seed_cnn", "--init", tmp_path), "not a finished 'edgecls train' directory")
    assert_one_line_error(run_cli(*args, "--arch", "seed_cnn", "--image-size", "24", "--init", trained_tiny.out),
                          "takes (32, 32) images", "--image-size 32")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()
