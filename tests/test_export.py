"""Optimization and export on real images: every variant, each format, the manifest, parity."""
import json
import re

import numpy as np
import pytest

from edgecls import runtime
from edgecls.bundle import sha256_file
from edgecls.data import load_dataset
from edgecls.export import GROUPS, VARIANTS, export, resolve_formats
from edgecls.errors import ConfigError
from edgecls.config import (CalibrationConfig, ConvertConfig, ExportConfig, FineTuneConfig, PruneConfig, QATConfig,
                            ValidationConfig)

pytestmark = pytest.mark.slow


def _rows(result):
    return {r["name"]: r for r in result.rows}


def test_every_variant_exports_and_validates(sample_bundle):
    rows = _rows(sample_bundle)
    assert list(rows) == list(GROUPS["default"])  # what export builds unless told otherwise
    bad = {n: r["reason"] for n, r in rows.items() if r["status"] != "ok"}
    assert not bad
    ref = sample_bundle.manifest["reference"]
    assert ref["images"] == 1000 and ref["accuracy"] > 0.3  # clearly above chance (0.1)
    for name, row in rows.items():
        v = row["validation"]
        assert v["images"] == 1000
        # A fine-tuned variant is compared with the model the user gave (what it would replace); its
        # fidelity to the fine-tuned model it was converted from is kept under "conversion".
        fidelity = v["conversion"] if row["source"] != "base" else v
        if row["precision"] == "fp32":
            assert fidelity["agreement"] >= 0.999 and fidelity["max_abs_diff"] < 1e-4
        if row["precision"] == "int8":
            assert fidelity["agreement"] >= 0.95, name
        if row["source"] != "base":
            assert v["reference"] == "keras base (the model you gave)", name
            assert fidelity["reference"] == f"keras {row['source']}" and fidelity["status"] == "ok"
            assert -v["accuracy_delta_points"] <= v["budget_points"] == 5.0
            assert v["reference_accuracy"] == ref["accuracy"]
    # Post-training quantized variants carry their per-layer diagnosis; QAT and pixel variants do not.
    diagnosed = {n for n, r in rows.items() if "diagnosis" in r}
    assert diagnosed == {"tflite_dynamic", "tflite_int8", "tflite_pruned_int8", "onnx_int8"}


def test_manifest_describes_each_artifact(sample_bundle):
    out = sample_bundle.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"] == 1 and manifest["labels"] == "labels.json"
    assert manifest["calibration"] == {"images": 200, "split": "train", "seed": 0}
    assert {"tensorflow", "tf2onnx", "onnxruntime", "tensorflow-model-optimization"} <= set(manifest["tools"])
    for art in manifest["artifacts"]:
        assert sha256_file(out / art["file"]) == art["sha256"]
        assert art["size"]["bytes"] == (out / art["file"]).stat().st_size
        assert 0 < art["size"]["gzip_bytes"] < art["size"]["bytes"]
        assert art["size"]["macs"] == 4_548_608 and art["size"]["params"] >= 122_570
        assert len(art["inputs"]) == 1 and art["inputs"][0]["shape"][1:] == [32, 32, 3]
        assert art["outputs"][0]["shape"][-1] == 10
        for key in ("agreement", "max_abs_diff", "accuracy", "accuracy_delta_points", "tolerance"):
            assert key in art["validation"]
    int8 = next(a for a in manifest["artifacts"] if a["name"] == "tflite_int8")
    assert int8["inputs"][0]["dtype"] == "int8" and "quantization" in int8["inputs"][0]
    assert int8["outputs"][0]["dtype"] == "int8"
    onnx_fp32 = next(a for a in manifest["artifacts"] if a["name"] == "onnx_fp32")
    assert onnx_fp32["opset"] == 17 and onnx_fp32["inputs"][0]["name"] == "input"


def test_sizes_and_sparsity_survive_conversion(sample_bundle):
    rows = _rows(sample_bundle)
    fp32 = rows["tflite_fp32"]["size"]
    assert rows["tflite_int8"]["size"]["bytes"] < 0.3 * fp32["bytes"]
    assert rows["tflite_fp16"]["size"]["bytes"] < 0.55 * fp32["bytes"]
    # Pruning shows only after compression: same raw size, much smaller gzip.
    pruned = rows["tflite_pruned_fp32"]["size"]
    assert pruned["bytes"] == pytest.approx(fp32["bytes"], rel=0.01)
    assert pruned["gzip_bytes"] < 0.7 * fp32["gzip_bytes"]
    # Sparsity is measured in the converted files: the zeros survive int8 quantization.
    for name in ("tflite_pruned_fp32", "tflite_pruned_int8", "tflite_pruned_qat_int8"):
        assert rows[name]["sparsity"] == pytest.approx(0.5, abs=0.02), name
    assert rows["tflite_int8"]["sparsity"] < 0.05
    assert rows["tflite_pruned_qat_int8"]["size"]["nonzero_params"] < 0.6 * rows["tflite_pruned_qat_int8"]["size"]["params"]
    details = sample_bundle.manifest["optimization"]["pruned"]
    assert set(details["per_layer"]) == {"conv1/kernel", "conv2/kernel", "conv3/kernel", "fc1/kernel", "logits/kernel"}
    assert all(abs(s - 0.5) < 0.01 for s in details["per_layer"].values())


def test_runtime_reproduces_the_validated_accuracy(sample_bundle):
    test = load_dataset("cifar10-sample").test
    for name in ("tflite_int8", "onnx_int8", "tflite_pruned_qat_int8"):
        runner = runtime.load(sample_bundle.out, variant=name)
        probs = runner.predict(test.images)
        accuracy = float((probs.argmax(1) == test.labels).mean())
        art = next(a for a in sample_bundle.manifest["artifacts"] if a["name"] == name)
        assert accuracy == pytest.approx(art["validation"]["accuracy"], abs=1e-9), name


def test_out_of_tolerance_variant_is_rejected_not_shipped(sample_model, tmp_path):
    out = tmp_path / "strict"
    result = export(sample_model.out, isolate=False, data="cifar10-sample", out=out, formats=("tflite_fp32", "tflite_int8"),
                    calibration=CalibrationConfig(count=100), validation=ValidationConfig(tolerances={"int8": {"min_agreement": 1.0, "max_abs_diff": 0.0, "max_accuracy_drop": 0.0}}))
    rows = _rows(result)
    assert rows["tflite_fp32"]["status"] == "ok"
    assert rows["tflite_int8"]["status"] == "failed"
    assert "max abs diff" in rows["tflite_int8"]["reason"]
    assert not (out / "tflite_int8.tflite").exists() and (out / "rejected" / "tflite_int8.tflite").exists()
    assert [a["name"] for a in result.manifest["artifacts"]] == ["tflite_fp32"]
    with pytest.raises(Exception, match="failed validation"):
        runtime.load(out, variant="tflite_int8")


def test_float_io_nchw_and_the_tflite_onnx_route(sample_model, tmp_path):
    result = export(sample_model.out, isolate=False, data="cifar10-sample", out=tmp_path / "b", formats=("tflite_int8", "onnx"),
                    calibration=CalibrationConfig(count=100), convert=ConvertConfig(float_io=True, nchw=True))
    rows = _rows(result)
    assert all(r["status"] == "ok" for r in rows.values()), {n: r["reason"] for n, r in rows.items()}
    assert rows["tflite_int8"]["inputs"][0]["dtype"] == "float32"
    assert rows["onnx_fp32"]["inputs"][0]["shape"] == [-1, 3, 32, 32] and rows["onnx_fp32"]["layout"] == "NCHW"
    via = export(sample_model.out, isolate=False, data="cifar10-sample", out=tmp_path / "c", formats=("onnx_int8",),
                 calibration=CalibrationConfig(count=100), convert=ConvertConfig(onnx_int8_method="tflite"))
    row = _rows(via)["onnx_int8"]
    assert row["status"] == "ok" and "tf2onnx from the int8 TFLite" in row["description"]


def test_per_tensor_weights_and_stripped_names_make_smaller_files_that_still_run(sample_model, sample_bundle, tmp_path):
    """--int8-weights per-tensor drops the per-channel scale/zero-point arrays; --strip-names drops
    tensor names and signatures. Both files validate, and the runtime reproduces their accuracy."""
    from tensorflow.lite.python import schema_py_generated as schema

    result = export(sample_model.out, isolate=False, data="cifar10-sample", out=tmp_path / "small",
                    formats=("tflite_fp32", "tflite_int8", "tflite_qat_int8"), calibration=CalibrationConfig(count=100), qat=QATConfig(epochs=1), fine_tune=FineTuneConfig(batch_size=64), convert=ConvertConfig(int8_weights="per-tensor", strip_names=True))
    rows, before = _rows(result), _rows(sample_bundle)
    assert all(r["status"] == "ok" for r in rows.values()), {n: r.get("reason") for n, r in rows.items()}
    assert rows["tflite_int8"]["weight_scales"] == "per-tensor" and rows["tflite_qat_int8"]["weight_scales"] == "per-channel"
    assert before["tflite_int8"]["weight_scales"] == "per-channel"
    assert rows["tflite_fp32"]["size"]["bytes"] < before["tflite_fp32"]["size"]["bytes"]
    # Per-tensor saves more than the names alone: the per-channel arrays are gone.
    names_only = before["tflite_fp32"]["size"]["bytes"] - rows["tflite_fp32"]["size"]["bytes"]
    assert before["tflite_int8"]["size"]["bytes"] - rows["tflite_int8"]["size"]["bytes"] > names_only
    for name in ("tflite_fp32", "tflite_int8"):
        data = (tmp_path / "small" / f"{name}.tflite").read_bytes()
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
        assert not model.signatureDefs and all(not t.name for t in model.subgraphs[0].tensors)
        if name == "tflite_int8":
            scales = [len(t.quantization.scale) for t in model.subgraphs[0].tensors
                      if t.quantization is not None and t.quantization.scale is not None]
            assert scales and max(scales) == 1
        test = load_dataset("cifar10-sample").test
        accuracy = float((runtime.load(tmp_path / "small", variant=name).predict(test.images).argmax(1) == test.labels).mean())
        assert accuracy == pytest.approx(rows[name]["validation"]["accuracy"], abs=1e-9), name
    convert = result.manifest["config"]["convert"]
    assert convert["int8_weights"] == "per-tensor" and convert["strip_names"] is True
    with pytest.raises(ConfigError, match="int8_weights must be one of"):
        export(sample_model.out, isolate=False, data="cifar10-sample", out=tmp_path / "bad", convert=ConvertConfig(int8_weights="per-row"))
    assert not (tmp_path / "bad").exists()


def test_format_names_and_groups():
    assert resolve_formats(["tflite_int8,onnx"]) == ["tflite_int8", "onnx_fp32", "onnx_int8"]
    assert resolve_formats(["all"]) == list(VARIANTS)
    assert set(GROUPS["int8"]) == {"tflite_int8", "tflite_int8_pixels", "tflite_qat_int8", "tflite_pruned_int8", "tflite_pruned_qat_int8", "onnx_int8"}
    with pytest.raises(ConfigError, match="unknown format 'tflite_int4'"):
        resolve_formats(["tflite_int4"])


def test_optimize_cli_writes_pruned_and_qat_models(sample_model, tmp_path):
    from .conftest import run_cli

    out = tmp_path / "opt"
    proc = run_cli("optimize", sample_model.out, "--data", "cifar10-sample", "--out", out, "--variants", "pruned", "qat",
                   "--sparsity", "0.6", "--prune-epochs", "1", "--batch-size", "64", "--qat-lr", "0.002")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "optimize.json").read_text())
    assert set(report["variants"]) == {"pruned", "qat"}
    assert report["variants"]["qat"]["learning_rate"] == 0.002
    assert report["variants"]["qat"]["ranges_calibrated_on"] == 300  # the default representative set
    assert report["variants"]["qat"]["per_layer"]  # kernels only, not tfmot's quantization ranges
    assert not [name for name in report["variants"]["qat"]["per_layer"] if name.endswith(("_min", "_max"))]
    assert report["variants"]["pruned"]["kernel_sparsity"] == pytest.approx(0.6, abs=0.01)
    assert all(abs(v - 0.6) < 0.01 for v in report["variants"]["pruned"]["per_layer"].values())
    assert re.search(r"pruned +accuracy 0\.\d{4}  kernel sparsity 0\.600", proc.stdout)
    # The pruned model is an ordinary edgecls model directory: it exports like any other.
    result = export(out / "pruned", isolate=False, data="cifar10-sample", out=tmp_path / "b", formats=("tflite_int8",), calibration=CalibrationConfig(count=100))
    row = result.rows[0]
    assert row["status"] == "ok" and row["sparsity"] == pytest.approx(0.6, abs=0.02)
    assert (out / "qat" / "model.h5").exists()


def test_qat_activation_ranges_start_calibrated_on_real_images():
    """tfmot starts every activation range at [-6, 6]; edgecls calibrates them on real training
    images before the fine-tune, changing nothing else in the model."""
    import numpy as np
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    from edgecls._deps import keras
    from edgecls.data import calibration_subset
    from edgecls.optimize.qat import calibrate_ranges
    from edgecls.preprocess import PreprocessingSpec
    from edgecls.zoo import create_model

    keras().utils.set_random_seed(0)
    model = create_model("resnet8")
    spec = PreprocessingSpec(scale=1 / 255, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    x = spec.apply(calibration_subset(load_dataset("cifar10-sample"), 256, seed=0))
    stem = keras().Model(model.input, model.get_layer("stem_relu").output)

    def mean_batch_max(images):
        return float(np.mean([stem(images[i:i + 64], training=False).numpy().max() for i in range(0, 256, 64)]))

    # Conv -> BN -> ReLU of a fresh model is linear in its input: scale the images so the range to
    # find is ~10, well away from tfmot's initial 6 whatever the random weights.
    x = x * np.float32(10 / mean_batch_max(x))
    q = tfmot.quantization.keras.quantize_model(model)
    ranges = {w.name.split(":")[0]: w for w in q.weights if w.name.endswith(("output_min:0", "output_max:0"))}
    assert ranges and all(float(np.max(np.abs(w.numpy()))) == 6.0 for w in ranges.values())
    others = {w.name: w.numpy().copy() for w in q.weights
              if not w.name.split("/")[-1].split(":")[0].endswith(("_min", "_max")) and "optimizer_step" not in w.name}
    original = quant_ops.MovingAvgQuantize

    calibrate_ranges(q, x, batch_size=64)

    assert quant_ops.MovingAvgQuantize is original
    assert all(layer.trainable for layer in q.layers)
    # ReLU outputs never go below zero, so their calibrated range starts at exactly 0 (tfmot: -6)...
    assert float(ranges["quant_stem_relu/output_min"].numpy()) == 0.0
    # ...and ends at the mean over the four batches of the batch maximum.
    expected = mean_batch_max(x)
    assert expected == pytest.approx(10, rel=0.01)
    assert float(ranges["quant_stem_relu/output_max"].numpy()) == pytest.approx(expected, rel=0.05)
    # Weights and BatchNorm statistics are untouched (BatchNorm was frozen for the pass).
    after = {w.name: w.numpy() for w in q.weights}
    assert any("moving_mean" in name for name in others)
    for name, value in others.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_no_qat_calibration_flag_reaches_qat(monkeypatch):
    """--no-qat-calibration turns the range calibration off; by default QAT calibrates on the
    representative set (--calibration-count, --calibration-seed)."""
    import edgecls.optimize
    from edgecls.cli import build_parser, config_from_args
    from edgecls.optimize.run import build_variant

    seen = []
    monkeypatch.setattr(edgecls.optimize, "quantize_aware", lambda *a, **kw: seen.append(kw))
    base = ["export", "m", "--data", "d", "--out", "o"]
    for extra, count in (([], 300), (["--calibration-count", "120", "--calibration-seed", "3"], 120),
                         (["--no-qat-calibration"], 0)):
        config = config_from_args(ExportConfig, build_parser().parse_args(base + extra))
        assert config.qat.calibrate == (count != 0)
        build_variant("qat", None, None, None, config)
        assert seen[-1]["calibration_count"] == count
    assert seen[1]["calibration_seed"] == 3


def test_distillation_loss_is_tempered_kl_from_probabilities():
    from edgecls.training.distill import distillation_loss

    rng = np.random.default_rng(0)
    logits_t, logits_s = rng.normal(size=(5, 10)), rng.normal(size=(5, 10))

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    t, s = softmax(logits_t).astype(np.float32), softmax(logits_s).astype(np.float32)
    for temp in (1.0, 4.0):
        pt, ps = softmax(logits_t / temp), softmax(logits_s / temp)
        expected = temp ** 2 * (pt * (np.log(pt) - np.log(ps))).sum(1)
        np.testing.assert_allclose(distillation_loss(s, t, temp).numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(distillation_loss(t, t, 4.0).numpy(), 0.0, atol=1e-5)


def test_distillation_pulls_the_student_to_the_teacher_not_the_labels(trained_tiny):
    """With alpha = 1 only the teacher's outputs teach: trained on shuffled labels, a fresh student
    still moves toward the teacher on held-out images (and away from it without distillation)."""
    from dataclasses import replace

    from edgecls._deps import keras
    from edgecls.data import ImageSet
    from edgecls.training.distill import Distillation, distillation_loss
    from edgecls.optimize.common import fine_tune
    from edgecls.preprocess import PreprocessingSpec
    from edgecls.zoo import create_model

    from .conftest import TINY_ZIP

    data = load_dataset(TINY_ZIP)
    spec = PreprocessingSpec.load(trained_tiny.out / "preprocessing.json")
    rng = np.random.default_rng(0)
    shuffled = replace(data, train=ImageSet(data.train.images, rng.permutation(data.train.labels)))
    teacher = trained_tiny.model
    x = spec.apply(data.test.images)
    soft = teacher.predict(x, verbose=0)

    def gap(student):
        return float(np.mean(distillation_loss(student.predict(x, verbose=0), soft, 1.0).numpy()))

    results = {}
    for distill in (True, False):
        keras().utils.set_random_seed(1)
        student = create_model("seed_cnn")
        before = gap(student)
        fine_tune(student, shuffled, spec, epochs=6, batch_size=32, learning_rate=0.05, val_fraction=0.0,
                  distillation=Distillation(teacher, alpha=1.0, temperature=1.0) if distill else None)
        results[distill] = (before, gap(student))
    (before, after), (_, plain) = results[True], results[False]
    assert after < 0.8 * before, results
    assert after < plain, results


def test_distill_flags_reach_every_fine_tune_with_the_base_model_as_teacher(monkeypatch):
    import edgecls.optimize
    from edgecls.cli import build_parser, config_from_args
    from edgecls.optimize.run import build_variant

    seen = []
    monkeypatch.setattr(edgecls.optimize, "quantize_aware", lambda *a, **kw: seen.append(kw))
    monkeypatch.setattr(edgecls.optimize, "prune", lambda *a, **kw: seen.append(kw))
    base = ["export", "m", "--data", "d", "--out", "o"]
    config = config_from_args(ExportConfig, build_parser().parse_args(base))
    assert not config.fine_tune.distill
    build_variant("qat", "model", None, None, config)
    assert seen[-1]["distillation"] is None
    config = config_from_args(ExportConfig, build_parser().parse_args(base + ["--distill", "--distill-alpha", "0.5", "--distill-temperature", "2"]))
    build_variant("pruned", "model", None, None, config)
    d = seen[-1]["distillation"]
    assert (d.teacher, d.alpha, d.temperature) == ("model", 0.5, 2.0)
    build_variant("pruned_qat", "pruned model", None, None, config, teacher="base model")
    assert seen[-1]["distillation"].teacher == "base model"
    with pytest.raises(SystemExit):  # refused as the command line is read
        build_parser().parse_args(base + ["--distill-alpha", "0"])
    with pytest.raises(ConfigError, match="distill_alpha"):
        ExportConfig(fine_tune=FineTuneConfig(distill_alpha=0))


def test_fine_tune_of_a_logits_model_matches_its_softmax_twin(trained_tiny):
    """Many users' models end in logits, not a softmax. Fine-tuned from the same weights on the same
    batches, the logits twin must learn exactly what the softmax model learns (cross-entropy from
    logits), not a loss computed as if its raw outputs were probabilities."""
    from edgecls._deps import keras
    from edgecls.training.distill import Distillation, outputs_are_probabilities
    from edgecls.optimize.common import fine_tune
    from edgecls.preprocess import PreprocessingSpec

    from .conftest import TINY_ZIP

    k = keras()
    data = load_dataset(TINY_ZIP)
    spec = PreprocessingSpec.load(trained_tiny.out / "preprocessing.json")
    x = spec.apply(data.test.images)
    base = trained_tiny.model

    def twins():
        soft = k.models.clone_model(base)
        soft.set_weights(base.get_weights())
        logits = k.Model(soft.input, soft.get_layer("probs").input)
        return soft, logits

    soft, logits = twins()
    assert outputs_are_probabilities(soft, x) and not outputs_are_probabilities(logits, x)
    for distill in (False, True):
        results = []
        for which in (0, 1):
            soft, logits = twins()
            k.utils.set_random_seed(3)
            fine_tune((soft, logits)[which], data, spec, epochs=2, batch_size=32, learning_rate=0.05, val_fraction=0.0,
                      distillation=Distillation(base if which == 0 else k.Model(base.input, base.get_layer("probs").input))
                      if distill else None)
            results.append(soft.get_weights())
        moved = max(float(np.abs(a - b).max()) for a, b in zip(results[0], base.get_weights()))
        assert moved > 1e-3
        for a, b in zip(*results):
            np.testing.assert_allclose(a, b, atol=1e-4 * max(1.0, moved), err_msg=f"distill={distill}")


def test_every_variant_is_made_by_a_registered_format():
    """The variant table names formats; each is one module behind the Format interface."""
    from edgecls.export.formats import Format, formats

    registry = formats()
    assert set(registry) == {"tflite", "onnx"}
    for variant in VARIANTS.values():
        fmt = registry[variant.format]
        assert isinstance(fmt, Format) and fmt.name == variant.format
        for method in ("convert", "describe", "weight_stats", "manifest_fields", "layout"):
            assert getattr(type(fmt), method) is not getattr(Format, method) or method in ("manifest_fields", "layout")


def test_export_reuses_what_optimize_built(trained_tiny, sample_model, tmp_path, monkeypatch):
    """`edgecls optimize` feeds `edgecls export --optimized DIR`: the pruned and QAT models are loaded,
    not fine-tuned again, and validated like any other."""
    from edgecls.optimize import run as optimize_run

    from .conftest import TINY_ZIP
    from edgecls.optimize.run import optimize

    config = ExportConfig(prune=PruneConfig(epochs=1), qat=QATConfig(epochs=1), calibration=CalibrationConfig(count=64), fine_tune=FineTuneConfig(batch_size=50))
    report = optimize(trained_tiny.out, data=TINY_ZIP, out=tmp_path / "opt", kinds=("pruned", "qat"), config=config)

    def no_fine_tune(*args, **kwargs):
        raise AssertionError("export fine-tuned again")

    monkeypatch.setattr(optimize_run, "build_variant", no_fine_tune)
    result = export(trained_tiny.out, isolate=False, data=TINY_ZIP, out=tmp_path / "bundle", formats=("tflite_pruned_int8", "tflite_qat_int8"),
                    optimized=str(tmp_path / "opt"), calibration=CalibrationConfig(count=64))
    rows = {r["name"]: r for r in result.rows}
    # Converted from the reused models (a 3-epoch model's int8 files may miss the tolerance; that is
    # the validation working, not the reuse), judged against the model given.
    assert rows["tflite_pruned_int8"]["validation"]["conversion"]["reference"] == "keras pruned"
    assert rows["tflite_qat_int8"]["validation"]["conversion"]["reference"] == "keras qat"
    assert rows["tflite_qat_int8"]["validation"]["reference"] == "keras base (the model you gave)"
    assert result.manifest["optimization"]["pruned"]["from"] == str(tmp_path / "opt" / "pruned")
    assert rows["tflite_pruned_int8"]["sparsity"] >= 0.45
    # The QAT Keras model loaded back scores what optimize measured on the same held-out images.
    qat = rows["tflite_qat_int8"]["validation"]["conversion"]
    assert report["variants"]["qat"]["accuracy"] == pytest.approx(qat["reference_accuracy"], abs=1e-6)
    with pytest.raises(ConfigError, match="was optimized from"):
        export(sample_model.out, isolate=False, data=TINY_ZIP, out=tmp_path / "other", formats=("tflite_pruned_int8",),
               optimized=str(tmp_path / "opt"), calibration=CalibrationConfig(count=64))


def test_a_fine_tune_whose_loss_diverges_stops_with_the_reason(trained_tiny):
    from edgecls.errors import ModelError
    from edgecls.modelio import load_trained
    from edgecls.optimize import prune, quantize_aware

    from .conftest import TINY_ZIP

    run = load_trained(trained_tiny.out)
    data = load_dataset(TINY_ZIP)
    with pytest.raises(ModelError, match=r"pruning fine-tune's loss became (NaN|infinite) in epoch 1.*--prune-lr"):
        prune(run.model, data, run.preprocessing, sparsity=0.5, epochs=2, batch_size=50, learning_rate=1e30)
    # A model whose fine-tune cannot stay finite: one classifier weight is infinite.
    model = load_trained(trained_tiny.out).model
    weights = model.get_weights()
    weights[-2] = weights[-2].copy()
    weights[-2][0, 0] = np.inf
    model.set_weights(weights)
    with pytest.raises(ModelError, match=r"QAT fine-tune's loss became (NaN|infinite).*--qat-lr.*--no-qat-calibration"):
        quantize_aware(model, data, run.preprocessing, epochs=1, batch_size=50, calibration_count=50)


def test_a_converted_model_with_nan_constants_is_rejected_before_loading(trained_tiny, tmp_path):
    from edgecls.modelio import load_trained, save_model_file

    from .conftest import TINY_ZIP

    run = load_trained(trained_tiny.out)
    weights = run.model.get_weights()
    weights[-1] = weights[-1].copy()
    weights[-1][0] = np.nan  # the classifier's bias
    run.model.set_weights(weights)
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(trained_tiny.out, broken)
    save_model_file(run.model, broken / "model.keras")
    result = export(broken, isolate=False, data=TINY_ZIP, out=tmp_path / "bundle", formats=("tflite_fp32", "onnx_fp32"), calibration=CalibrationConfig(count=64))
    for row in result.rows:
        assert row["status"] == "failed" and "NaN or infinite constants" in row["reason"], row
    assert (tmp_path / "bundle" / "manifest.json").is_file()


def test_degenerate_outputs_and_small_validation_sets_are_flagged():
    from edgecls.evaluation import summarize
    from edgecls.export.validate import TOLERANCES, agreement_lower_bound, compare

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 16)  # 160 images, balanced
    good = np.eye(10, dtype=np.float32)[labels] * 0.6 + rng.uniform(0, 0.04, (160, 10)).astype(np.float32)
    one_class = np.tile(np.eye(10, dtype=np.float32)[3], (160, 1)) * 0.6 + rng.uniform(0, 0.04, (160, 10)).astype(np.float32)
    constant = np.full((160, 10), 0.1, np.float32)

    collapsed = compare(one_class, good, labels, TOLERANCES["fp32"])
    assert collapsed["status"] == "failed" and "predicts class 3 for 100% of the images" in collapsed["reason"]
    flat = compare(constant, good, labels, TOLERANCES["int8"])
    assert flat["status"] == "failed" and "barely depend on the input" in flat["reason"]
    # Agreement 1.0 with a one-class reference is not a silent pass.
    echo = compare(one_class, one_class, labels, TOLERANCES["fp32"])
    assert echo["status"] == "ok" and "reference is degenerate" in echo["warning"]
    # 2 points of disagreement on 160 images: observed 0.98 passes 0.95, but the 95% bound does not.
    flipped = good.copy()
    flipped[:4] = np.roll(flipped[:4], 1, axis=1)
    from edgecls.export.validate import Tolerance

    small = compare(flipped, good, labels, Tolerance(min_agreement=0.95, max_abs_diff=1.0, max_accuracy_drop=5.0))
    assert small["status"] == "ok" and small["agreement"] == pytest.approx(156 / 160)
    assert small["agreement_lower_bound"] == pytest.approx(0.9437, abs=1e-4)
    assert "on only 160 images" in small["warning"] and "validate on more images" in small["warning"]
    assert agreement_lower_bound(9865, 10000) == pytest.approx(0.98444, abs=1e-5)  # scipy.stats.beta.ppf(0.05, 9865, 136)
    assert "warning" not in compare(good, good, labels, TOLERANCES["int8"])
    result = summarize(labels, one_class.argmax(1), [str(i) for i in range(10)], "d", "test", "m")
    assert "predicts '3' for 100% of the images" in result.warning and "warning:" in result.format()
    assert summarize(labels, good.argmax(1), [str(i) for i in range(10)], "d", "test", "m").warning is None


def test_a_variant_that_crashes_its_runtime_is_a_failed_row_and_the_others_ship(trained_tiny, tmp_path, monkeypatch):
    """Validation runs each artifact in a child process: a native crash (here a child killed by
    SIGSEGV, as LiteRT does on some broken files), a corrupt file or a hang becomes that variant's
    failed row with the reason; the other variants and the bundle are still written."""
    import signal
    import sys

    from edgecls.export.formats import tflite as tflite_format
    from edgecls.runtime import isolated

    from .conftest import TINY_ZIP

    real_run_child = isolated.run_child

    def crash_on_fp16(module, payload, env=None, timeout=None):
        if payload.get("file", "").endswith("tflite_fp16.tflite"):
            code = f"import os, signal; os.kill(os.getpid(), {int(signal.SIGSEGV)})"
            proc = __import__("subprocess").run([sys.executable, "-c", code], capture_output=True, text=True)
            return proc.returncode, None, proc.stderr
        return real_run_child(module, payload, env=env, timeout=timeout)

    monkeypatch.setattr(isolated, "run_child", crash_on_fp16)
    real_convert = tflite_format.convert

    def corrupt_dynamic(model, precision="fp32", *args, **kwargs):
        data = real_convert(model, precision, *args, **kwargs)
        return data[: len(data) // 3] if precision == "dynamic" else data

    monkeypatch.setattr(tflite_format, "convert", corrupt_dynamic)
    # In this process (isolate=False) so that the patches above apply; validation still runs each file apart.
    result = export(trained_tiny.out, data=TINY_ZIP, out=tmp_path / "bundle", isolate=False,
                    formats=("tflite_fp32", "tflite_fp16", "tflite_dynamic", "onnx_fp32"), calibration=CalibrationConfig(count=64))
    rows = {r["name"]: r for r in result.rows}
    assert rows["tflite_fp16"]["status"] == "failed"
    assert "LiteRT while loading or running the converted model crashed (signal 11)" in rows["tflite_fp16"]["reason"]
    assert rows["tflite_dynamic"]["status"] == "failed" and "unreadable" in rows["tflite_dynamic"]["reason"]
    assert rows["tflite_fp32"]["status"] == "ok" and rows["onnx_fp32"]["status"] == "ok"
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert [a["name"] for a in manifest["artifacts"]] == ["tflite_fp32", "onnx_fp32"]
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]

    def hang(module, payload, env=None, timeout=None):
        return None, None, ""

    monkeypatch.setattr(isolated, "run_child", hang)
    with pytest.raises(Exception, match="did not finish within 5 s"):
        isolated.outputs(tmp_path / "bundle" / "tflite_fp32.tflite", np.zeros((1, 32, 32, 3), np.float32), timeout=5)


def test_sparsity_says_whether_pruning_or_quantization_made_the_zeros(sample_bundle):
    rows = {r["name"]: r for r in sample_bundle.rows}
    assert rows["tflite_pruned_int8"]["sparsity_source"] == "pruning"
    assert rows["tflite_int8"]["sparsity_source"] == "quantization"
    assert rows["tflite_fp32"]["sparsity_source"] == "weights"
    table = sample_bundle.format_table()
    line = next(line for line in table.splitlines() if line.startswith("tflite_int8 "))
    assert f"{rows['tflite_int8']['sparsity']:g}q" in line
    from edgecls.report.tables import cell

    assert cell("sparsity", {"sparsity": 0.02, "sparsity_source": "quantization"}) == "0.02 q"
    assert cell("sparsity", {"sparsity": 0.5, "sparsity_source": "pruning"}) == "0.50"


def test_int8_calibrates_on_unlabelled_images(trained_tiny, tmp_path):
    """Calibration needs images, not labels: a flat folder of photos will do; the labelled --data is
    then read only to measure accuracy."""
    import zipfile

    from .conftest import TINY_ZIP

    flat = tmp_path / "unlabelled"
    flat.mkdir()
    with zipfile.ZipFile(TINY_ZIP) as zf:
        for i, name in enumerate(n for n in zf.namelist() if "/train/" in n and n.endswith(".jpg")):
            (flat / f"photo_{i:03d}.jpg").write_bytes(zf.read(name))
    (flat / "notes.txt").write_text("not an image")
    result = export(trained_tiny.out, isolate=False, data=TINY_ZIP, out=tmp_path / "bundle", formats=("tflite_int8",),
                    calibration=CalibrationConfig(count=48, data=str(flat)))
    calibration = result.manifest["calibration"]
    assert calibration["images"] == 48 and calibration["data"] == str(flat) and calibration["labels"] is False
    assert [r["name"] for r in result.rows] == ["tflite_int8"] and "accuracy" in result.rows[0]["validation"]
    with pytest.raises(Exception, match="calibration needs 500"):
        export(trained_tiny.out, isolate=False, data=TINY_ZIP, out=tmp_path / "b2", formats=("tflite_int8",),
               calibration=CalibrationConfig(count=500, data=str(flat)))


CRASHING_SITE = """
import os, signal
if os.environ.get("EDGECLS_TEST_CRASH_VARIANT"):
    from edgecls.export.formats import tflite
    convert = tflite.TFLiteFormat.convert
    def crashing(self, variant, job):
        if variant.name == os.environ["EDGECLS_TEST_CRASH_VARIANT"]:
            os.kill(os.getpid(), signal.SIGSEGV)
        return convert(self, variant, job)
    tflite.TFLiteFormat.convert = crashing
if os.environ.get("EDGECLS_TEST_CRASH_SOURCE"):
    from edgecls.optimize import run
    build = run.build_variant
    def aborting(kind, *args, **kwargs):
        if kind == os.environ["EDGECLS_TEST_CRASH_SOURCE"]:
            os.abort()
        return build(kind, *args, **kwargs)
    run.build_variant = aborting
"""


def test_a_native_crash_while_converting_costs_one_variant_not_the_export(trained_tiny, tmp_path, monkeypatch):
    """The export runs in a worker process that is restarted after a native crash: a converter
    segfault costs the variant being converted, an abort while fine-tuning costs the variants of
    that model; every other variant is exported and validated and the bundle is written whole."""
    from .conftest import TINY_ZIP

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASHING_SITE)  # loaded by every Python the test starts
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("EDGECLS_TEST_CRASH_VARIANT", "tflite_int8")
    monkeypatch.setenv("EDGECLS_TEST_CRASH_SOURCE", "qat")
    out = tmp_path / "bundle"
    result = export(trained_tiny.out, data=TINY_ZIP, out=out, formats=("tflite_fp32", "tflite_int8", "tflite_qat_int8", "onnx_fp32"), calibration=CalibrationConfig(count=64), qat=QATConfig(epochs=1))
    rows = _rows(result)
    assert rows["tflite_int8"]["status"] == "error"
    assert rows["tflite_int8"]["reason"] == "the export process crashed (signal 11, SIGSEGV) while converting it"
    assert rows["tflite_qat_int8"]["status"] == "error"
    assert "crashed (signal 6, SIGABRT) while building the qat model" in rows["tflite_qat_int8"]["reason"]
    assert rows["tflite_fp32"]["status"] == "ok" and rows["onnx_fp32"]["status"] == "ok"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["name"] for a in manifest["artifacts"]] == ["tflite_fp32", "onnx_fp32"]
    assert {r["name"]: r["status"] for r in manifest["rejected"]} == {"tflite_int8": "error", "tflite_qat_int8": "error"}
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "manifest.json", "onnx_fp32.onnx",
                                                      "preprocessing.json", "tflite_fp32.tflite"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "site"]  # no staging folder left behind
    # Without isolation the same crash takes the whole process down: the reason the worker exists.
    import subprocess
    import sys

    code = ("from edgecls.config import CalibrationConfig; from edgecls.export import export; "
            "export(%r, data=%r, out=%r, calibration=CalibrationConfig(count=64), isolate=False, "
            "formats=('tflite_fp32', 'tflite_int8'))" % (str(trained_tiny.out), str(TINY_ZIP), str(tmp_path / "b2")))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -11 and not (tmp_path / "b2").exists()


def test_every_quantization_engine_is_a_validated_variant(trained_tiny, tmp_path, monkeypatch):
    """The engines group builds one variant per post-training engine; each goes through the same
    validation and manifest as the rest, and says which engine made it. A missing engine is that
    variant's error row naming the extra to install."""
    from edgecls import _deps
    from edgecls.runtime.backends import open_backend

    from .conftest import TINY_ZIP

    engines = GROUPS["engines"]
    assert {VARIANTS[n].engine for n in engines} == {"converter", "aeq", "ort_minmax", "ort_entropy", "ort_percentile",
                                                     "nncf"}
    result = export(trained_tiny.out, isolate=False, data=TINY_ZIP, out=tmp_path / "b", formats=("engines",), calibration=CalibrationConfig(count=64))
    rows = _rows(result)
    assert list(rows) == list(engines)
    for name in engines:
        row = rows[name]
        assert row["status"] in ("ok", "failed") and row["engine"] == VARIANTS[name].engine, (name, row)
        assert row["validation"]["agreement"] >= 0.8, (name, row["validation"])
    assert rows["onnx_int8_nncf"]["int8_scheme"] == "u8s8_overflow_fix"
    # int16 activations: the runtime quantizes the int16 input and dequantizes the int16 output.
    folder = tmp_path / "b" if rows["tflite_int16x8_aeq"]["status"] == "ok" else tmp_path / "b" / "rejected"
    backend = open_backend(folder / "tflite_int16x8_aeq.tflite", 1)
    assert backend.input_dtype == np.int16 and backend.output_dtype == np.int16
    probs = backend.run(np.zeros((2, 32, 32, 3), np.float32))
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1.0, atol=0.05)
    # Different engines make different files from the same float model and calibration images.
    digests = {rows[n]["sha256"] for n in ("tflite_int8", "tflite_int8_aeq", "onnx_int8", "onnx_int8_nncf")}
    assert len(digests) == 4

    real = _deps.optional

    def without_nncf(module, extra="train"):
        if module == "nncf":
            raise _deps.DependencyError("nncf is not installed (No module named 'nncf'); install the train extra: "
                                        "pip install 'edgecls[train]'")
        return real(module, extra)

    monkeypatch.setattr(_deps, "optional", without_nncf)
    from edgecls.export import engines as engine_module

    monkeypatch.setattr(engine_module, "optional", without_nncf)
    monkeypatch.setattr(engine_module, "require", without_nncf)  # NNCF runs in a child: checked, not imported
    result = export(trained_tiny.out, data=TINY_ZIP, out=tmp_path / "c", formats=("onnx_int8_nncf", "onnx_fp32"),
                    isolate=False, calibration=CalibrationConfig(count=64))
    rows = _rows(result)
    assert rows["onnx_int8_nncf"]["status"] == "error" and "pip install 'edgecls[train]'" in rows["onnx_int8_nncf"]["reason"]
    assert rows["onnx_fp32"]["status"] == "ok"


def test_the_export_worker_gets_every_argument_the_caller_gave(trained_tiny, tmp_path):
    """The isolated export rebuilds the call in its worker: a PreprocessingSpec object, a labels
    list and an in-memory dataset arrive as given."""
    from edgecls.preprocess import PreprocessingSpec

    from .conftest import TINY_ZIP

    spec = PreprocessingSpec.load(trained_tiny.out / "preprocessing.json")
    labels = json.loads((trained_tiny.out / "labels.json").read_text())
    dataset = load_dataset(TINY_ZIP)
    result = export(trained_tiny.out / "model.keras", dataset=dataset, out=tmp_path / "b", preprocessing=spec,
                    labels=list(labels), formats=("tflite_fp32",), calibration=CalibrationConfig(count=64))
    assert result.rows[0]["status"] == "ok"
    assert json.loads((tmp_path / "b" / "labels.json").read_text()) == labels
    assert json.loads((tmp_path / "b" / "preprocessing.json").read_text())["mean"] == list(spec.mean)


def test_a_fine_tuned_variant_is_judged_against_the_model_the_user_gave():
    """A QAT file that reproduces its fine-tuned model exactly but is 15 points below the model the
    user gave fails (the budget: --fine-tuned-max-drop, or --max-drop when given); its agreement and
    accuracy change are against the user's model, its fidelity to the fine-tuned one under "conversion"."""
    from edgecls.export import _against_given
    from edgecls.export.validate import TOLERANCES, compare

    labels = np.arange(400) % 10
    base = np.eye(10)[labels] * 0.9 + 0.01
    tuned = base.copy()
    wrong = np.arange(60)
    tuned[wrong] = np.eye(10)[(labels[wrong] + 1) % 10] * 0.9 + 0.01
    conversion = {**compare(tuned, tuned, labels, TOLERANCES["int8"]), "reference": "keras qat"}
    given = compare(tuned, base, labels, TOLERANCES["int8"])
    judged = _against_given(conversion, given, ExportConfig())
    assert conversion["status"] == "ok" and judged["status"] == "failed"
    assert "15.00 points below the model you gave > 5 (--fine-tuned-max-drop)" in judged["reason"]
    assert judged["agreement"] == 0.85 and judged["accuracy_delta_points"] == -15.0
    assert judged["conversion"]["agreement"] == 1.0 and judged["conversion"]["reference"] == "keras qat"
    assert _against_given(conversion, given, ExportConfig(fine_tune=FineTuneConfig(max_drop=20)))["status"] == "ok"
    assert "(--max-drop)" in _against_given(conversion, given, ExportConfig(validation=ValidationConfig(max_drop=1), fine_tune=FineTuneConfig(max_drop=20)))["reason"]
    broken = {**conversion, "status": "failed", "reason": "max abs diff 0.9 > 0.5"}
    assert _against_given(broken, compare(base, base, labels, TOLERANCES["int8"]), ExportConfig())["reason"] == \
        "conversion: max abs diff 0.9 > 0.5"
