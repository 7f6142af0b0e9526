"""A PyTorch model given as ONNX (tests/fixtures/torch: a small CNN trained on the built-in sample,
exported by both of torch's exporters; made by make_fixtures.py there, no torch needed here): export
makes validated ONNX variants and, through onnx2tf, TFLite variants (NHWC, no transposes left),
each against the model's own onnxruntime outputs, in probabilities (it ends in logits); what needs a
Keras model is listed as skipped; bench and tune take it end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgecls.cli import main

from .conftest import FIXTURES

TORCH = FIXTURES / "torch"
VERSIONS = json.loads((TORCH / "versions.json").read_text())
PRE = ["--scale", "1/255", "--mean", *map(str, VERSIONS["preprocessing"]["mean"]),
       "--std", *map(str, VERSIONS["preprocessing"]["std"]), "--labels", str(TORCH / "labels.json")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_source")
    out = {}
    for name in ("dynamo", "legacy"):
        formats = ["onnx_fp32", "onnx_int8", "tflite_qat_int8"] + (["tflite_fp32", "tflite_int8"] if name == "dynamo" else [])
        args = ["export", str(TORCH / f"tinynet_{name}.onnx"), *PRE, "--data", "cifar10-sample",
                "--out", str(root / name), "--formats", *formats]
        assert main(args) == 0
        out[name] = root / name
    return out


def test_both_torch_exporters_become_validated_onnx_bundles(exported):
    from edgecls.bundle import load_bundle

    for name, folder in exported.items():
        manifest = load_bundle(folder).manifest
        rows = {a["name"]: a for a in manifest["artifacts"]}
        rejected = {r["name"]: r for r in manifest["rejected"]}
        assert manifest["model"]["kind"] == "onnx" and manifest["model"]["output"] == "logits"
        rows.update({n: r for n, r in rejected.items() if r["status"] == "failed"})  # int8 of a small model may fail
        made = {"onnx_fp32", "onnx_int8"} | ({"tflite_fp32", "tflite_int8_aeq"} if name == "dynamo" else set())
        assert set(rows) == made, (name, {n: r.get("reason") for n, r in rejected.items()})
        assert {n for n, r in rejected.items() if r["status"] == "skipped"} == {"tflite_qat_int8"}
        assert "needs a Keras layer graph" in rejected["tflite_qat_int8"]["reason"]
        fp32 = rows["onnx_fp32"]["validation"]
        # The float file is the user's model: the same predictions, and the accuracy torch measured.
        assert fp32["agreement"] == 1.0 and fp32["max_abs_diff"] < 1e-5
        assert abs(fp32["accuracy"] - VERSIONS["test_accuracy"]) <= 0.002
        assert manifest["reference"]["accuracy"] == fp32["accuracy"] and manifest["reference"]["format"] == "onnx"
        int8 = rows["onnx_int8"]["validation"]
        assert int8["compared"] == "probabilities (softmax of the logits)" and int8["agreement"] >= 0.95
        assert rows["onnx_int8"]["size"]["bytes"] < rows["onnx_fp32"]["size"]["bytes"]
        assert "external_data" not in rows["onnx_fp32"]  # weights folded into the one file
        assert rows["onnx_fp32"]["layout"] == "NCHW"
        assert rows["onnx_fp32"]["conversion"] == {"route": "as given"}
    # onnx2tf: the float TFLite file takes NHWC images, computes the model, and keeps no transposes;
    # the LiteRT quantizer's int8 file of it neither.
    rows = {a["name"]: a for a in json.loads((exported["dynamo"] / "manifest.json").read_text())["artifacts"] +
            json.loads((exported["dynamo"] / "manifest.json").read_text())["rejected"]}
    tfl = rows["tflite_fp32"]
    assert tfl["status"] == "ok" and tfl["layout"] == "NHWC" and tfl["validation"]["max_abs_diff"] < 1e-4
    assert tfl["conversion"]["route"] == "onnx2tf" and tfl["conversion"]["transposes"] == 0
    int8 = rows["tflite_int8_aeq"]
    assert int8["engine"] == "aeq" and int8["conversion"]["transposes"] == 0
    assert int8["validation"]["agreement"] >= 0.8 and int8["size"]["bytes"] < tfl["size"]["bytes"]
    a, b = (json.loads((exported[n] / "manifest.json").read_text())["reference"]["accuracy"] for n in exported)
    assert a == b  # both exporters compute the same model


def test_the_bundle_runs_and_predicts_probabilities(exported, capsys):
    from edgecls import runtime
    from edgecls.data import load_dataset

    images = load_dataset("cifar10-sample").test.images[:8]
    probs = runtime.load(exported["dynamo"], variant="onnx_int8").predict(images)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    lone = runtime.load(TORCH / "tinynet_dynamo.onnx", preprocessing={
        "scale": 1 / 255, "mean": VERSIONS["preprocessing"]["mean"], "std": VERSIONS["preprocessing"]["std"]})
    bundled = runtime.load(exported["dynamo"], variant="onnx_fp32")
    np.testing.assert_allclose(lone.predict(images), bundled.predict(images), atol=1e-6)


def test_an_onnx_model_without_preprocessing_or_with_wrong_labels_is_one_line(tmp_path, capsys):
    model = str(TORCH / "tinynet_legacy.onnx")
    assert main(["export", model, "--data", "cifar10-sample", "--out", str(tmp_path / "a")]) == 2
    assert "needs its preprocessing" in capsys.readouterr().err
    labels = tmp_path / "labels.json"
    labels.write_text('["a", "b"]')
    assert main(["export", model, "--scale", "1/255", "--labels", str(labels), "--data", "cifar10-sample",
                 "--out", str(tmp_path / "b")]) == 2
    assert "2 labels given but" in capsys.readouterr().err
    assert main(["export", model, "--scale", "1/255", "--data", "cifar10-sample", "--out", str(tmp_path / "c"),
                 "--formats", "tflite_qat_int8", "tflite_pruned_fp32"]) == 2
    assert "none of the requested variants can be made from an ONNX model" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name != "labels.json"]


def test_eval_takes_the_onnx_model(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(TORCH / "tinynet_legacy.onnx"), *PRE, "--data", "cifar10-sample", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert abs(result["top1"] - VERSIONS["test_accuracy"]) <= 0.002 and len(result["confusion_matrix"]) == 10


def test_bench_and_tune_take_the_onnx_model(exported, tmp_path):
    """bench runs the ONNX source's bundle; tune searches its post-training files (no fine-tuning: it
    says why) and picks one, whose bundle runs."""
    from edgecls import runtime

    assert main(["bench", str(exported["legacy"]), "--repeats", "1", "--data", "cifar10-sample", "--out", str(tmp_path / "bench.json"),
                 "--runs", "5", "--max-images", "50"]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {v["name"] for v in report["variants"] if v.get("status") == "ok"} == {"onnx_fp32", "onnx_int8"}
    assert main(["tune", str(TORCH / "tinynet_dynamo.onnx"), *PRE, "--data", "cifar10-sample", "--out",
                 str(tmp_path / "tune"), "--max-drop", "1", "--runs", "10", "--validation-images", "300"]) == 0
    record = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert record["fine_tune"].startswith("not possible: an ONNX model has no Keras layer graph")
    assert set(record["stages"]) == {"tflite", "onnx"}
    winner = record["choice"]["winner"]
    assert winner is not None and winner["status"] == "ok" and winner["drop"] <= 1
    assert record["choice"]["test"]["images"] > 0
    probs = runtime.load(tmp_path / "tune" / "bundle").predict(np.zeros((2, 32, 32, 3), np.uint8))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-4)


def test_bench_measures_a_lone_files_agreement_against_its_reference(exported, tmp_path, capsys):
    """bench FILE --reference FLOAT_FILE: the file's precision is read from it, and its agreement is
    measured against the float model it came from (benched beside it as <format>_fp32)."""
    import shutil

    lone = tmp_path / "mine_int8.onnx"
    shutil.copyfile(exported["legacy"] / "onnx_int8.onnx", lone)
    out = tmp_path / "bench.json"
    assert main(["bench", str(lone), "--repeats", "1", "--reference", str(TORCH / "tinynet_dynamo.onnx"), *PRE, "--out", str(out),
                 "--runs", "5", "--max-images", "200"]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["variants"]}
    assert set(rows) == {"onnx_fp32", "mine_int8"}
    assert rows["mine_int8"]["precision"] == "int8" and rows["onnx_fp32"]["precision"] == "fp32"
    assert rows["mine_int8"]["agreement_reference"] == "onnx_fp32" and 0.8 <= rows["mine_int8"]["agreement"] < 1.0
    assert main(["bench", str(exported["legacy"]), "--reference", str(lone), "--out", str(tmp_path / "b2.json")]) == 2
    assert "--reference are for a lone" in capsys.readouterr().err
