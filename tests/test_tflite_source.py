"""A float TFLite model made without Keras (tests/fixtures/tflite: tf.Module and tf.nn ops, ending in
logits; made by make_fixture.py there): export quantizes the file itself with the LiteRT quantizer
and makes the float ONNX file with tf2onnx (its ONNX engines quantize that), every file validated
against the model's own LiteRT outputs in probabilities; eval reads it; a quantized TFLite file is
refused with the reason."""
from __future__ import annotations

import json

import pytest

from edgecls.cli import main

from .conftest import FIXTURES

TFL = FIXTURES / "tflite"
MODEL = TFL / "tinycnn_float.tflite"
VERSIONS = json.loads((TFL / "versions.json").read_text())
PRE = ["--scale", "1/255", "--mean", *map(str, VERSIONS["preprocessing"]["mean"]),
       "--std", *map(str, VERSIONS["preprocessing"]["std"]), "--labels", str(TFL / "labels.json")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite_source") / "b"
    assert main(["export", str(MODEL), *PRE, "--data", "cifar10-sample", "--out", str(out), "--max-eval-images", "500",
                 "--calibration-count", "200", "--micro", "--micro-images", "50"]) == 0
    return out


def _rows(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    return manifest, {r["name"]: r for r in manifest["artifacts"] + manifest["rejected"]}


def test_a_float_tflite_file_becomes_every_post_training_file(bundle):
    manifest, rows = _rows(bundle)
    assert manifest["model"]["kind"] == "tflite" and manifest["model"]["output"] == "logits"
    assert manifest["reference"]["runtime"] == "LiteRT"
    # The default variants of a source: the float files of both formats and their post-training files;
    # the converter's int8 and dynamic range become the LiteRT quantizer's.
    made = {n for n, r in rows.items() if r["status"] != "skipped"}
    assert made == {"tflite_fp32", "tflite_fp16", "tflite_dynamic_aeq", "tflite_int8_aeq", "onnx_fp32", "onnx_int8"}
    skipped = {n: r["reason"] for n, r in rows.items() if r["status"] == "skipped"}
    assert set(skipped) == {"tflite_int8_pixels", "tflite_qat_int8", "tflite_pruned_fp32", "tflite_pruned_int8",
                            "tflite_pruned_qat_int8"}
    assert all("Keras" in why for why in skipped.values())
    fp32 = rows["tflite_fp32"]
    assert fp32["status"] == "ok" and fp32["validation"]["agreement"] == 1.0 and fp32["conversion"]["route"] == "as given"
    assert abs(fp32["validation"]["accuracy"] - VERSIONS["test_accuracy"]) <= 0.03  # 500 of the 1,000 images
    assert (bundle / "tflite_fp32.tflite").read_bytes() == MODEL.read_bytes()
    # tf2onnx's float ONNX file computes the same model (its dropped Dense bias is put back).
    onnx = rows["onnx_fp32"]
    assert onnx["status"] == "ok" and onnx["conversion"]["route"] == "tf2onnx"
    assert onnx["validation"]["agreement"] == 1.0 and onnx["validation"]["max_abs_diff"] < 1e-4
    for name in ("tflite_fp16", "tflite_dynamic_aeq", "tflite_int8_aeq", "onnx_int8"):
        row = rows[name]
        assert row["status"] in ("ok", "failed") and row["validation"]["compared"] == "probabilities (softmax of the logits)"
        assert row["validation"]["agreement"] >= 0.8, (name, row["validation"])
        assert row["size"]["bytes"] < fp32["size"]["bytes"], name
    assert rows["tflite_int8_aeq"]["engine"] == "aeq" and rows["onnx_int8"]["engine"] == "ort_percentile"
    # The model ends in logits: the LiteRT quantizer's int8 file keeps the layer making them in float.
    int8 = rows["tflite_int8_aeq"]
    assert int8["kept_float"]["layers"] == [int8["outputs"][0]["name"]] and int8["outputs"][0]["dtype"] == "float32"
    assert "logits" in int8["kept_float"]["why"] and "kept_float" not in rows["tflite_dynamic_aeq"]
    # --micro reaches a source's TFLite files too; none of these is full-integer (the int8 file's
    # output is float, its logits layer kept in float), so none is a TensorFlow Lite Micro target.
    assert not any("micro" in r for r in rows.values()) and not (bundle / "micro").exists()
    # Each quantized file is diagnosed layer by layer against the float file it was quantized from.
    for name in ("tflite_dynamic_aeq", "tflite_int8_aeq", "onnx_int8"):
        diagnosis = rows[name]["diagnosis"]
        assert diagnosis["against"].endswith("fp32 of your tflite model") and len(diagnosis["layers"]) >= 5, name
        assert all(-50 < layer["sqnr_db"] <= 120 for layer in diagnosis["layers"])


def test_pipeline_and_inspect_take_the_tflite_model(bundle, tmp_path, capsys):
    assert main(["pipeline", "--model", str(MODEL), *PRE, "--data", "cifar10-sample", "--out", str(tmp_path / "p"),
                 "--formats", "tflite_fp32", "onnx_fp32", "--runs", "5"]) == 0
    out = capsys.readouterr().out
    assert "against your TFLite model (LiteRT)" in out and (tmp_path / "p" / "report" / "report.html").is_file()
    report = json.loads((tmp_path / "p" / "bench.json").read_text())
    assert {v["name"] for v in report["variants"]} == {"tflite_fp32", "onnx_fp32"}
    assert main(["inspect", str(bundle), "--variant", "tflite_int8_aeq", "--top", "3"]) == 0
    assert "against the tflite fp32 of your tflite model" in capsys.readouterr().out


def test_eval_reads_the_tflite_model(tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", str(MODEL), *PRE, "--data", "cifar10-sample", "--out", str(out)]) == 0
    assert abs(json.loads(out.read_text())["top1"] - VERSIONS["test_accuracy"]) <= 0.002


def test_a_quantized_or_unusable_tflite_file_is_one_line(bundle, tmp_path, capsys):
    _, rows = _rows(bundle)
    quantized = bundle / rows["tflite_dynamic_aeq"]["file"]
    assert main(["export", str(quantized), *PRE, "--data", "cifar10-sample", "--out", str(tmp_path / "a")]) == 2
    assert "is a quantized TFLite file" in capsys.readouterr().err
    assert main(["export", str(MODEL), "--data", "cifar10-sample", "--out", str(tmp_path / "b")]) == 2
    assert "needs its preprocessing" in capsys.readouterr().err
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(MODEL.read_bytes()[:4000])
    assert main(["export", str(broken), *PRE, "--data", "cifar10-sample", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "edgecls: error:" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_max_drop_repairs_a_sources_int8_file_by_keeping_layers_in_float(tmp_path):
    """--max-drop on a source: an int8 file that misses the budget on the validation split (training
    images, not the test split) is quantized again by its engine with its worst layers in float; the
    LiteRT quantizer's scope for a layer is its output tensor name."""
    import numpy as np

    from edgecls.export.engines import aeq_quantize

    float_file = MODEL.read_bytes()
    images = np.random.default_rng(0).normal(size=(40, 32, 32, 3)).astype(np.float32)
    plain = aeq_quantize(float_file, "int8", images)
    assert aeq_quantize(float_file, "int8", images, keep_float=("Mean",)) != plain  # the scope reaches the op
    out = tmp_path / "b"
    assert main(["export", str(MODEL), *PRE, "--data", "cifar10-sample", "--out", str(out), "--formats", "tflite_int8_aeq",
                 "--max-drop", "1", "--repair-images", "600"]) == 0
    _, rows = _rows(out)
    record = rows["tflite_int8_aeq"]["repair"]
    assert record["images"] == 600 and record["split"] == "validation (training data)"
    if record["plain_drop_points"] > 1:  # layers of the diagnosis were tried in float, worst first
        names = {layer["name"] for layer in rows["tflite_int8_aeq"]["diagnosis"]["layers"]}
        assert record["steps"] and {step["layer"] for step in record["steps"]} <= names
    if record.get("met") and record["kept_float"]:
        assert record["bytes"] != record["plain_bytes"] and record["drop_points"] <= 1
        assert rows["tflite_int8_aeq"]["size"]["bytes"] == record["bytes"]


def test_a_bundle_is_a_source_through_its_float_file(bundle, tmp_path):
    """eval, export and tune take a bundle: its tflite_fp32 file (a private, hash-checked copy) with the
    bundle's own preprocessing and labels; an edited float file is refused."""
    import shutil

    out = tmp_path / "eval.json"
    assert main(["eval", str(bundle), "--data", "cifar10-sample", "--out", str(out)]) == 0
    assert abs(json.loads(out.read_text())["top1"] - VERSIONS["test_accuracy"]) <= 0.002
    assert main(["export", str(bundle), "--data", "cifar10-sample", "--out", str(tmp_path / "again"),
                 "--formats", "onnx_fp32"]) == 0
    manifest, rows = _rows(tmp_path / "again")
    assert manifest["model"]["source"] == f"{bundle} (tflite_fp32)" and rows["onnx_fp32"]["status"] == "ok"
    assert main(["tune", str(bundle), "--data", "cifar10-sample", "--out", str(tmp_path / "tune"),
                 "--variants", "tflite_fp32", "tflite_fp16", "--runs", "5", "--validation-images", "200"]) == 0
    record = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert record["choice"]["winner"]["variant"] in ("tflite_fp32", "tflite_fp16")
    edited = tmp_path / "edited"
    shutil.copytree(bundle, edited)
    data = bytearray((edited / "tflite_fp32.tflite").read_bytes())
    data[-100] ^= 1
    (edited / "tflite_fp32.tflite").write_bytes(bytes(data))
    assert main(["eval", str(edited), "--data", "cifar10-sample", "--out", str(tmp_path / "e2.json")]) == 2


def test_a_tflite_file_without_signatures_is_quantized(tmp_path):
    """Files from older converters (MLPerf Tiny's float ResNet-8) have no signature; the LiteRT
    quantizer keys its calibration by signature, so one naming the file's input and output is added."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils as fu

    from edgecls.export.engines import aeq_quantize, with_signature

    model = fu.read_model_from_bytearray(bytearray(MODEL.read_bytes()))
    model.signatureDefs = []
    bare = bytes(fu.convert_object_to_bytearray(model))
    assert Interpreter(model_content=bare).get_signature_list() == {}
    signed = with_signature(bare)
    assert list(Interpreter(model_content=signed).get_signature_list()) == ["serving_default"]
    assert with_signature(MODEL.read_bytes()) == MODEL.read_bytes()
    images = np.random.default_rng(0).normal(size=(20, 32, 32, 3)).astype(np.float32)
    assert len(aeq_quantize(bare, "int8", images)) < len(bare)
