"""Training with a teacher (knowledge distillation, `edgecls train --teacher`), on real images."""
import json

import numpy as np
import pytest

from edgecls import TrainConfig, train
from edgecls.errors import ConfigError
from edgecls.preprocess import PreprocessingSpec

from .conftest import TINY_ZIP, assert_one_line_error, run_cli

FAVOURITE = 7  # the class the constant teacher below always prefers ("horse")


def _save_teacher(out, labels, spec, favourite=FAVOURITE, margin=5.0):
    """A finished 'edgecls train' directory whose model ignores the image and puts ~94% of its
    probability on one class: what a student learns from it shows whether the teacher taught."""
    from edgecls._deps import keras
    from edgecls.modelio import save_labels, save_model_file

    k = keras()
    inputs = k.Input((*spec.input_size, 3))
    x = k.layers.GlobalAveragePooling2D()(inputs)
    bias = np.zeros(len(labels), np.float32)
    bias[favourite] = margin
    dense = k.layers.Dense(len(labels), kernel_initializer="zeros", bias_initializer=k.initializers.Constant(bias))
    model = k.Model(inputs, k.layers.Softmax()(dense(x)), name="constant_teacher")
    out.mkdir(parents=True)
    save_model_file(model, out / "model.keras")
    save_labels(out / "labels.json", labels)
    spec.save(out / "preprocessing.json")
    return out


@pytest.fixture(scope="module")
def constant_teacher(tmp_path_factory, trained_tiny):
    labels = json.loads((trained_tiny.out / "labels.json").read_text())
    # Plain pixels / 255: not the student's standardization, so the teacher's inputs are adapted.
    return _save_teacher(tmp_path_factory.mktemp("teacher") / "t", labels, PreprocessingSpec(scale=1 / 255))


def _predicted(result):
    from edgecls.data import load_dataset
    from edgecls.modelio import load_trained

    trained = load_trained(result.out)
    test = load_dataset(TINY_ZIP).test
    return trained.model.predict(trained.preprocessing.apply(test.images), verbose=0).argmax(1), test.labels


def test_the_teacher_teaches(tmp_path, constant_teacher):
    """alpha = 1: only the teacher's outputs teach. A student of the constant teacher predicts its
    favourite class for (nearly) every held-out image; the same student trained on the labels does not."""
    kw = dict(data=str(TINY_ZIP), arch="seed_cnn", epochs=6, batch_size=32, learning_rate=0.05, verbose=0)
    taught = train(TrainConfig(out=str(tmp_path / "taught"), teacher=str(constant_teacher), distill_alpha=1.0,
                               distill_temperature=1.0, **kw))
    plain = train(TrainConfig(out=str(tmp_path / "plain"), **kw))
    taught_pred, labels = _predicted(taught)
    plain_pred, _ = _predicted(plain)
    assert (taught_pred == FAVOURITE).mean() >= 0.9, np.bincount(taught_pred, minlength=10)
    assert (plain_pred == FAVOURITE).mean() <= 0.5, np.bincount(plain_pred, minlength=10)

    d = taught.metrics["distillation"]
    assert d["teacher"] == str(constant_teacher) and d["alpha"] == 1.0 and d["temperature"] == 1.0
    assert d["temperature_from"] == "given"
    assert d["teacher_preprocessing_adapted"] is True
    # The teacher's accuracy is measured on the same test images: its one class's share of them.
    assert d["teacher_test_accuracy"] == pytest.approx((labels == FAVOURITE).mean())
    assert plain.metrics["distillation"] is None
    # The shipped model is the student alone, not the wrapper that also holds the teacher.
    assert taught.metrics["model"]["params"] == plain.metrics["model"]["params"] == 122_570
    saved = json.loads((taught.out / "train.json").read_text())
    assert saved["distillation"] == d and saved["config"]["teacher"] == str(constant_teacher)


def test_teacher_sees_its_own_preprocessing(trained_tiny):
    """A teacher trained with other preprocessing, fed the student's inputs through the adapter,
    gives what it gives on its own inputs (real test images)."""
    from edgecls.data import load_dataset
    from edgecls.training.distill import on_student_inputs

    teacher = trained_tiny.model
    teacher_spec = PreprocessingSpec.load(trained_tiny.out / "preprocessing.json")
    images = load_dataset(TINY_ZIP).test.images
    own = teacher.predict(teacher_spec.apply(images), verbose=0)
    for student_spec in (PreprocessingSpec(scale=1 / 255), PreprocessingSpec(scale=1 / 127.5, mean=(1, 1, 1)),
                         PreprocessingSpec(scale=1.0, mean=(120.0, 115.0, 100.0), std=(60.0, 62.0, 65.0))):
        adapted = on_student_inputs(teacher, teacher_spec, student_spec)
        assert adapted is not teacher
        np.testing.assert_allclose(adapted.predict(student_spec.apply(images), verbose=0), own, atol=2e-5)
    assert on_student_inputs(teacher, teacher_spec, teacher_spec) is teacher


def test_averaging_with_a_teacher_averages_the_student(tmp_path, constant_teacher):
    result = train(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", epochs=3, swa_epochs=2, batch_size=32, verbose=0,
                               out=str(tmp_path / "s"), teacher=str(constant_teacher)))
    assert result.metrics["swa"]["averaged_epochs"] == [2, 3]
    assert result.metrics["model"]["params"] == 122_570 and result.metrics["distillation"]["alpha"] == 0.9


@pytest.mark.parametrize("trained, temperature, why", [
    ({"config": {"recipe": "edgecls", "label_smoothing": 0.1}}, 1.0, "label smoothing 0.1"),
    ({"config": {"recipe": "edgecls", "label_smoothing": 0.0}}, 4.0, "without label smoothing"),
    ({"config": {"recipe": "tutorial", "label_smoothing": 0.1}}, 4.0, "without label smoothing"),  # tutorial: no smoothing
    ({}, 4.0, "does not say"),
])
def test_temperature_follows_how_the_teacher_was_trained(trained, temperature, why):
    """Default (None): T = 1 for a teacher trained with label smoothing, 4 otherwise; a given T wins."""
    from edgecls.training import distill_temperature_for

    t, reason = distill_temperature_for(TrainConfig(teacher="t"), trained)
    assert t == temperature and why in reason
    assert distill_temperature_for(TrainConfig(teacher="t", distill_temperature=2.5), trained) == (2.5, "given")


def test_resume_without_a_teacher_ignores_distillation_settings(tmp_path):
    """A run started before the distillation options existed (its run.json lacks them) resumes
    with today's defaults: without a teacher, they mean nothing."""
    from edgecls.training import _check_resume

    staging = tmp_path / "o.partial"
    staging.mkdir()
    before = TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", out=str(tmp_path / "o")).to_dict()
    for key in ("teacher", "distill_alpha", "distill_temperature"):
        del before[key]
    (staging / "run.json").write_text(json.dumps(before))
    _check_resume(staging, TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", out=str(tmp_path / "o"), resume=True))


def test_resume_refuses_another_teacher(tmp_path, constant_teacher):
    staging = tmp_path / "o.partial"
    staging.mkdir()
    config = TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", out=str(tmp_path / "o"), teacher=str(constant_teacher))
    (staging / "run.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(ConfigError, match="teacher was"):
        train(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", out=str(tmp_path / "o"), resume=True))
    with pytest.raises(ConfigError, match="distill_alpha was 0.9, now 0.5"):
        train(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", out=str(tmp_path / "o"), resume=True,
                          teacher=str(constant_teacher), distill_alpha=0.5))


@pytest.mark.parametrize("kw, message", [
    (dict(distill_alpha=1.5), "distill_alpha must be in [0, 1]"),
    (dict(distill_temperature=0.0), "distill_temperature must be positive"),
    (dict(teacher="t", recipe="tutorial"), "belongs to the 'edgecls' recipe"),
])
def test_invalid_distillation_options_fail_when_built(kw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig(**kw)


def test_cli_teacher_bad_inputs_are_one_line_errors(tmp_path, trained_tiny, constant_teacher):
    args = ("train", "--data", TINY_ZIP, "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "32", "--verbose", "0",
            "--out", tmp_path / "o")
    assert_one_line_error(run_cli(*args, "--teacher", tmp_path / "nothing"), "--teacher", "not a finished 'edgecls train' directory")
    other = _save_teacher(tmp_path / "other", [f"c{i}" for i in range(10)], PreprocessingSpec())
    assert_one_line_error(run_cli(*args, "--teacher", other), "its classes", "same classes")
    assert_one_line_error(run_cli(*args, "--image-size", "24", "--teacher", trained_tiny.out), "takes (32, 32) images",
                          "--image-size 32")
    assert_one_line_error(run_cli(*args, "--teacher", constant_teacher, "--distill-alpha", "2"), "--distill-alpha: 2.0 is out of range")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_cli_train_with_a_teacher(tmp_path, constant_teacher):
    proc = run_cli("train", "--data", TINY_ZIP, "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "32", "--verbose", "0",
                   "--out", tmp_path / "o", "--teacher", constant_teacher, "--distill-temperature", "2")
    assert proc.returncode == 0, proc.stderr
    assert f"distilled from {constant_teacher}" in proc.stdout and "temperature 2" in proc.stdout
    assert json.loads((tmp_path / "o" / "train.json").read_text())["distillation"]["temperature"] == 2.0


def test_interrupted_distillation_resumes_where_it_stopped(tmp_path, constant_teacher):
    """The checkpoints of a run with a teacher restore the student and its optimizer: the resumed
    fit starts at the step the first one reached."""
    from edgecls._deps import keras

    class StopAfterOneEpoch(keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    class StartingStep(keras().callbacks.Callback):
        step = None

        def on_train_begin(self, logs=None):
            self.step = int(self.model.optimizer.iterations.numpy())

    out = tmp_path / "run"
    config = TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", epochs=3, batch_size=64, out=str(out), verbose=0,
                         teacher=str(constant_teacher))
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[StopAfterOneEpoch()])
    assert not out.exists()
    start = StartingStep()
    result = train(config, resume=True, callbacks=[start])
    assert start.step == 3  # 180 training images in batches of 64: one epoch
    assert [r["epoch"] for r in result.metrics["history"]] == [1, 2, 3]
    assert result.metrics["distillation"]["teacher"] == str(constant_teacher)


def test_ensemble_teacher_is_the_mean_of_its_members_and_teaches(tmp_path, trained_tiny):
    """tools/release/ensemble_teacher.py: a directory `--teacher` takes whose model averages its members'
    probabilities (a logits member gets a softmax first); a student of two constant teachers that
    agree on one class learns that class."""
    import subprocess
    import sys

    from edgecls.training.distill import save_ensemble_teacher
    from edgecls.modelio import load_trained

    from .conftest import ROOT

    labels = json.loads((trained_tiny.out / "labels.json").read_text())
    spec = PreprocessingSpec(scale=1 / 255)
    a = _save_teacher(tmp_path / "a", labels, spec, favourite=FAVOURITE, margin=5.0)
    b = _save_teacher(tmp_path / "b", labels, spec, favourite=FAVOURITE, margin=2.0)
    (a / "train.json").write_text(json.dumps({"arch": "constant", "config": {"label_smoothing": 0.1}}))
    record = save_ensemble_teacher([a, b], tmp_path / "ens")
    assert record["arch"] == "ensemble(constant, ?)" and record["ensemble_of"] == [str(a), str(b)]
    assert record["config"]["label_smoothing"] == 0.0  # only if every member trained with it
    x = np.random.default_rng(0).uniform(0, 1, (4, *spec.input_size, 3)).astype(np.float32)
    mean = sum(load_trained(m).model.predict(x, verbose=0) for m in (a, b)) / 2
    np.testing.assert_allclose(load_trained(tmp_path / "ens").model.predict(x, verbose=0), mean, atol=1e-6)
    # a trained seed_cnn (logits or probabilities, whichever it ends in) joins with the same preprocessing
    with pytest.raises(ConfigError, match="preprocessing differs"):
        save_ensemble_teacher([a, trained_tiny.out], tmp_path / "mixed")
    with pytest.raises(ConfigError, match="at least two"):
        save_ensemble_teacher([a], tmp_path / "one")
    with pytest.raises(ConfigError, match="exists"):
        save_ensemble_teacher([a, b], tmp_path / "ens")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "ens"]  # nothing half-written

    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "release" / "ensemble_teacher.py"), str(a), str(tmp_path / "nope"),
                           "--out", str(tmp_path / "e2")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "not a finished" in proc.stderr

    kw = dict(data=str(TINY_ZIP), arch="seed_cnn", epochs=6, batch_size=32, learning_rate=0.05, verbose=0)
    taught = train(TrainConfig(out=str(tmp_path / "taught"), teacher=str(tmp_path / "ens"), distill_alpha=1.0,
                               distill_temperature=1.0, **kw))
    assert taught.metrics["distillation"]["teacher_arch"] == "ensemble(constant, ?)"
    predicted, _ = _predicted(taught)
    assert (predicted == FAVOURITE).mean() > 0.9
