"""Models edgecls did not train: Keras 2 .h5, Keras 3 .keras (bridged to tf_keras), SavedModel;
safe mode; unsupported layers; bad input to export. All on real images."""
import json

import numpy as np
import pytest

from edgecls.errors import ConfigError, ModelError
from edgecls.export import export
from edgecls.modelio import load_model as load_source
from edgecls.config import CalibrationConfig, FineTuneConfig, PruneConfig, ValidationConfig

from .conftest import TINY_ZIP, assert_one_line_error, run_cli

pytestmark = pytest.mark.slow

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _fit(model, k):
    from edgecls.data import load_dataset

    ds = load_dataset(TINY_ZIP)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(ds.train.images.astype("float32") / 255.0, ds.train.labels, epochs=2, batch_size=50, verbose=0)
    return model


@pytest.fixture(scope="module")
def h5_model(tmp_path_factory):
    """A Keras 2 classifier written by hand (not by edgecls), trained briefly, saved as .h5."""
    from edgecls._deps import keras

    k = keras()
    k.utils.set_random_seed(1)
    model = k.Sequential([
        k.Input((32, 32, 3)),
        k.layers.Conv2D(16, 3, activation="relu"), k.layers.MaxPooling2D(),
        k.layers.Conv2D(32, 3, activation="relu"), k.layers.GlobalAveragePooling2D(),
        k.layers.Dense(10, activation="softmax"),
    ])
    _fit(model, k)
    folder = tmp_path_factory.mktemp("h5")
    path = folder / "classifier.h5"
    model.save(path)
    (folder / "labels.json").write_text(json.dumps(LABELS))
    return path


def test_h5_classifier_exports_with_cli_preprocessing(h5_model, tmp_path):
    out = tmp_path / "bundle"
    proc = run_cli("export", h5_model, "--data", TINY_ZIP, "--out", out, "--scale", str(1 / 255), "--mean", "0",
                   "--std", "1", "--labels", h5_model.parent / "labels.json", "--formats", "tflite_fp32", "tflite_int8",
                   "tflite_pruned_int8", "onnx_fp32", "--calibration-count", "100", "--batch-size", "50",
                   "--prune-epochs", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "h5"
    assert [a["name"] for a in manifest["artifacts"]] == ["tflite_fp32", "tflite_int8", "tflite_pruned_int8", "onnx_fp32"]
    assert json.loads((out / "labels.json").read_text()) == LABELS
    spec = json.loads((out / "preprocessing.json").read_text())
    assert spec["input_size"] == [32, 32] and spec["scale"] == pytest.approx(1 / 255)
    assert "tflite_pruned_int8" in proc.stdout and "4 of 4 variants validated" in proc.stdout
    # A quiet CLI: TensorFlow's, absl's and the converters' native chatter stays hidden without --verbose.
    import re

    assert not re.search(r"^[IWEF]\d{4} |XNNPACK delegate|fully_quantize|All log messages before absl", proc.stderr, re.M), proc.stderr


def test_user_model_without_labels_uses_class_indices(h5_model):
    source = load_source(h5_model, {"scale": 1 / 255})
    assert source.labels == tuple(str(i) for i in range(10))


def test_keras3_model_is_bridged_for_pruning_and_qat(tmp_path):
    import keras  # Keras 3, what tf.keras is in TensorFlow 2.21

    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, kernel_initializer=keras.initializers.HeNormal())(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(16, 3, padding="same")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    _fit(model, keras)
    path = tmp_path / "user.keras"
    model.save(path)
    source = load_source(path, {"scale": 1 / 255}, LABELS)
    assert source.kind == "keras3" and source.model.__class__.__module__.startswith("tf_keras")
    probe = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32") / 255
    np.testing.assert_allclose(source.model(probe).numpy(), np.asarray(model(probe)), atol=1e-5)
    result = export(path, isolate=False, data=TINY_ZIP, out=tmp_path / "b", preprocessing={"scale": 1 / 255}, labels=LABELS,
                    formats=("tflite_fp32", "tflite_qat_int8", "tflite_pruned_qat_int8"), calibration=CalibrationConfig(count=100), fine_tune=FineTuneConfig(batch_size=50), prune=PruneConfig(epochs=1, sparsity=0.75))
    rows = {r["name"]: r for r in result.rows}
    assert all(r["status"] == "ok" for r in rows.values()), {n: r["reason"] for n, r in rows.items()}
    assert rows["tflite_pruned_qat_int8"]["sparsity"] == pytest.approx(0.75, abs=0.03)


def test_savedmodel_converts_but_cannot_be_pruned(h5_model, tmp_path):
    from edgecls._deps import keras

    model = keras().models.load_model(h5_model, compile=False)
    saved = tmp_path / "saved"
    model.save(saved, save_format="tf")
    result = export(saved, isolate=False, data=TINY_ZIP, out=tmp_path / "b", preprocessing={"scale": 1 / 255}, labels=LABELS,
                    formats=("tflite_fp32", "tflite_int8"), calibration=CalibrationConfig(count=100))
    assert [r["status"] for r in result.rows] == ["ok", "ok"]
    bare = tmp_path / "bare"
    import tensorflow as tf

    tf.saved_model.save(model, str(bare))
    assert load_source(bare, {"scale": 1 / 255}).tunable is False
    with pytest.raises(ConfigError, match="pruning and QAT are impossible"):
        export(bare, isolate=False, data=TINY_ZIP, out=tmp_path / "c", preprocessing={"scale": 1 / 255}, formats=("tflite_pruned_fp32",), calibration=CalibrationConfig(count=100))


def test_unprunable_layer_is_named_with_the_way_out(tmp_path):
    from edgecls._deps import keras
    from edgecls.data import load_dataset
    from edgecls.optimize import prune
    from edgecls.preprocess import PreprocessingSpec

    k = keras()
    model = k.Sequential([k.Input((32, 32, 3)), k.layers.Conv2D(8, 3, name="conv"), k.layers.PReLU(name="prelu"),
                          k.layers.GlobalAveragePooling2D(), k.layers.Dense(10, activation="softmax", name="head")])
    ds = load_dataset(TINY_ZIP)
    with pytest.raises(ModelError, match=r"does not support layer 'prelu' \(PReLU\); leave it unpruned with --skip-layers prelu"):
        prune(model, ds, PreprocessingSpec(), sparsity=0.5, epochs=1, batch_size=50)
    pruned = prune(model, ds, PreprocessingSpec(), sparsity=0.5, epochs=1, batch_size=50, skip_layers=("prelu",))
    assert pruned.details["per_layer"]["conv/kernel"] == pytest.approx(0.5, abs=0.01)


def test_qat_names_an_unsupported_layer(tmp_path):
    from edgecls._deps import keras
    from edgecls.data import load_dataset
    from edgecls.optimize import quantize_aware
    from edgecls.preprocess import PreprocessingSpec

    k = keras()
    model = k.Sequential([k.Input((32, 32, 3)), k.layers.Rescaling(1 / 255, name="rescale"), k.layers.Conv2D(8, 3),
                          k.layers.GlobalAveragePooling2D(), k.layers.Dense(10, activation="softmax")])
    with pytest.raises(ModelError, match=r"does not support layer 'rescale' \(Rescaling\); keep preprocessing"):
        quantize_aware(model, load_dataset(TINY_ZIP), PreprocessingSpec(), epochs=1, batch_size=50)


def test_lambda_layers_are_refused_in_safe_mode(tmp_path):
    from edgecls._deps import keras

    k = keras()
    model = k.Sequential([k.Input((32, 32, 3)), k.layers.Lambda(lambda t: t * 2.0), k.layers.GlobalAveragePooling2D(),
                          k.layers.Dense(10, activation="softmax")])
    h5 = tmp_path / "lambda.h5"
    model.save(h5)
    with pytest.raises(ModelError, match="Lambda layer.*--unsafe"):
        load_source(h5, {"scale": 1 / 255})
    assert load_source(h5, {"scale": 1 / 255}, safe_mode=False).kind == "h5"
    keras_file = tmp_path / "lambda.keras"
    model.save(keras_file)
    with pytest.raises(ModelError, match="Lambda layer.*--unsafe"):
        load_source(keras_file, {"scale": 1 / 255})


def test_bad_inputs_to_export_are_one_line_errors_and_leave_nothing(h5_model, sample_model, tmp_path):
    out = tmp_path / "out"
    common = ["--data", TINY_ZIP, "--out", out, "--scale", str(1 / 255), "--formats", "tflite_fp32"]
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(h5_model.read_bytes()[:2000])
    assert_one_line_error(run_cli("export", truncated, *common), "truncated.h5")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip at all")
    assert_one_line_error(run_cli("export", corrupt, *common), "is not a model file edgecls reads")

    from edgecls._deps import keras

    k = keras()
    tabular = k.Sequential([k.Input((10,)), k.layers.Dense(3, activation="softmax")])
    tabular.save(tmp_path / "tabular.h5")
    assert_one_line_error(run_cli("export", tmp_path / "tabular.h5", *common), "not an image")

    trained = sample_model.out
    base = ["--data", TINY_ZIP, "--out", out]
    assert_one_line_error(run_cli("export", trained, *base, "--calibration-count", "500"),
                          "needs 500 training images", "has 200")
    assert_one_line_error(run_cli("export", trained, *base, "--calibration-count", "3"), "at least 32")
    assert_one_line_error(run_cli("export", trained, *base, "--sparsity", "1.5"), "--sparsity: 1.5 is out of range")
    assert_one_line_error(run_cli("export", trained, *base, "--sparsity", "0"), "--sparsity: 0.0 is out of range")
    assert_one_line_error(run_cli("export", trained, *base, "--formats", "tflite_int3"), "unknown format 'tflite_int3'")
    assert_one_line_error(run_cli("export", h5_model, "--data", TINY_ZIP, "--out", out, "--formats", "tflite_fp32"),
                          "no preprocessing given")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_logits_model_in_keras2_format_gets_probabilities_from_the_runtime(tmp_path):
    from edgecls import runtime
    from edgecls._deps import keras
    from edgecls.data import load_dataset

    k = keras()
    model = k.Sequential([k.Input((32, 32, 3)), k.layers.Conv2D(8, 3, activation="relu"),
                          k.layers.GlobalAveragePooling2D(), k.layers.Dense(10)])  # logits, no softmax
    path = tmp_path / "logits.keras"
    model.save(path)
    result = export(path, isolate=False, data=TINY_ZIP, out=tmp_path / "b", preprocessing={"scale": 1 / 255}, labels=LABELS,
                    formats=("tflite_fp32",), calibration=CalibrationConfig(count=100))
    assert result.manifest["model"]["kind"] == "keras2" and result.manifest["model"]["output"] == "logits"
    probs = runtime.load(tmp_path / "b").predict(load_dataset(TINY_ZIP).test.images[:5])
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_eval_takes_every_model_export_takes(h5_model, tmp_path):
    """One loader: eval reads a user's .h5 with the preprocessing given on the command line."""
    from edgecls.evaluation import evaluate

    result = evaluate(h5_model, TINY_ZIP, preprocessing={"scale": 1 / 255}, labels=h5_model.parent / "labels.json")
    assert result.count == 100 and 0.0 <= result.top1 <= 1.0
    assert result.class_names == tuple(LABELS)
    out = tmp_path / "eval.json"
    proc = run_cli("eval", h5_model, "--data", TINY_ZIP, "--scale", "0.00392156862745098", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text())["top1"] == pytest.approx(result.top1)


def test_no_stage_imports_a_later_one_back():
    """Distillation and ensembles read finished runs through the loader, not through training."""
    import subprocess
    import sys

    code = ("import sys, edgecls.training.distill, edgecls.modelio, edgecls.evaluation; "
            "print(sorted(m for m in sys.modules if m in ('edgecls.training.run', 'edgecls.export', 'edgecls.bench')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_preprocessing_options_take_fractions():
    from edgecls.cli import build_parser

    args = build_parser().parse_args(["export", "m.h5", "--out", "o", "--scale", "1/255", "--mean", "0.5", "1/2", "2/4"])
    assert args.scale == pytest.approx(1 / 255) and args.mean == [0.5, 0.5, 0.5]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "m.h5", "--scale", "1/0"])


def test_a_savedmodel_exports_every_format_it_can_take(h5_model, tmp_path):
    """A SavedModel Keras did not write cannot be pruned or QAT-trained: with the default formats the
    export writes the others and lists those as skipped, with the reason."""
    import tensorflow as tf

    from edgecls._deps import keras

    bare = tmp_path / "bare"
    tf.saved_model.save(keras().models.load_model(h5_model, compile=False), str(bare))
    result = export(bare, isolate=False, data=TINY_ZIP, out=tmp_path / "b", preprocessing={"scale": 1 / 255}, labels=LABELS,
                    formats=("tflite_fp32", "tflite_qat_int8", "tflite_pruned_fp32", "onnx_fp32"), calibration=CalibrationConfig(count=100))
    status = {r["name"]: r["status"] for r in result.rows}
    assert status == {"tflite_fp32": "ok", "tflite_qat_int8": "skipped", "tflite_pruned_fp32": "skipped", "onnx_fp32": "ok"}
    skipped = {r["name"]: r["reason"] for r in result.manifest["rejected"]}
    assert "cannot be pruned or quantization-aware trained" in skipped["tflite_qat_int8"]
    assert "skipped" in result.format_table()


def test_a_model_ending_in_logits_is_validated_in_probabilities(sample_model, tmp_path):
    """Raw logits (here a trained model's, scaled up 16x: the same predictions, larger numbers) are
    compared after the softmax the runtime applies: every post-training variant validates, and the
    int8 files differ from the model by far less in probability than in logits."""
    from edgecls._deps import keras

    k = keras()
    trained = k.models.load_model(sample_model.out / "model.keras", compile=False)
    logits = k.Model(trained.inputs, trained.get_layer("logits").output)
    dense = logits.get_layer("logits")
    dense.set_weights([w * 16 for w in dense.get_weights()])
    path = tmp_path / "logits.keras"
    logits.save(path)
    variants = ("tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8", "onnx_fp32", "onnx_int8")
    result = export(path, isolate=False, data="cifar10-sample", out=tmp_path / "b", preprocessing={"scale": 1 / 255},
                    labels=LABELS, formats=variants, calibration=CalibrationConfig(count=200), validation=ValidationConfig(max_images=500))
    assert result.manifest["model"]["output"] == "logits"
    rows = {r["name"]: r for r in result.rows}
    assert {n: rows[n]["status"] for n in variants} == {n: "ok" for n in variants}, {n: rows[n].get("reason") for n in variants}
    for name in ("tflite_int8", "onnx_int8"):
        v = rows[name]["validation"]
        assert v["compared"] == "probabilities (softmax of the logits)"
        assert v["max_abs_diff"] <= 0.5 and v["agreement"] >= 0.95
