"""Per-layer diagnosis of quantized variants: the numbers, the ranking on a model with a layer made
sensitive on purpose, and `edgecls inspect`."""
import json
import math

import numpy as np
import pytest

from edgecls.export.diagnose import CAP_DB, own_db, ranked, sqnr_db
from edgecls.config import CalibrationConfig, ValidationConfig

from .conftest import TINY_ZIP, run_cli

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_sqnr_and_each_layers_own_error_follow_their_definitions():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=10_000)
    noise = rng.normal(size=10_000)
    noise *= 0.01 * np.linalg.norm(signal) / np.linalg.norm(noise)  # |noise| = 1% of |signal|: 40 dB
    assert sqnr_db(signal, signal + noise) == pytest.approx(40.0, abs=0.01)
    assert sqnr_db(signal, signal) == CAP_DB
    # 40 dB in, 30 dB out: the layer added 1e-3 - 1e-4 of the signal's power.
    assert own_db([40.0], 30.0) == pytest.approx(-10 * math.log10(1e-3 - 1e-4), abs=0.01)
    assert own_db([30.0], 30.0) == CAP_DB  # passed its input's error along, added none
    assert own_db([], 30.0) == pytest.approx(30.0)  # exact input: all of it is the layer's
    # Two branches of 30 dB joined: their 2e-3 arrives; an output at 25 dB adds the rest.
    assert own_db([30.0, 30.0], 25.0) == pytest.approx(-10 * math.log10(10 ** -2.5 - 2e-3), abs=0.01)
    layers = {"layers": [{"name": "a", "op": "CONV_2D", "sqnr_db": 40.0, "own_db": 40.0},
                         {"name": "b", "op": "CONV_2D", "sqnr_db": 20.0, "own_db": 20.04},
                         {"name": "c", "op": "ADD", "sqnr_db": 19.0, "own_db": 25.0}]}
    assert [layer["name"] for layer in ranked(layers)] == ["b", "c", "a"]


@pytest.mark.slow
def test_the_layer_made_sensitive_ranks_first_in_both_formats(tmp_path):
    """A middle convolution whose channel 0 fires, very strongly, on only a few positions of a few
    images (its activation range set by those rare values, so an int8 step that crushes every
    ordinary value of the layer) is named first by the diagnosis of the int8 TFLite and ONNX files;
    `edgecls inspect` prints it."""
    from edgecls._deps import keras
    from edgecls.data import load_dataset
    from edgecls.export import export

    k = keras()
    k.utils.set_random_seed(3)
    inputs = k.Input((32, 32, 3))
    x = k.layers.Conv2D(16, 3, activation="relu", name="first")(inputs)
    x = k.layers.Conv2D(16, 3, activation="relu", name="sensitive")(x)
    x = k.layers.Conv2D(16, 3, activation="relu", name="third")(x)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = k.layers.Dense(10, activation="softmax", name="head")(x)
    model = k.Model(inputs, outputs)
    # Channel 0 of "sensitive" = 2000 * relu(first's channel 0 - its 99.9th percentile) at the centre tap.
    images = load_dataset(TINY_ZIP).train.images.astype("float32") / 255.0
    first = k.Model(inputs, model.get_layer("first").output).predict(images, verbose=0)[..., 0]
    threshold = float(np.percentile(first, 99.9))
    kernel, bias = model.get_layer("sensitive").get_weights()
    kernel[..., 0] = 0.0
    kernel[1, 1, 0, 0] = 2000.0
    bias[0] = -2000.0 * threshold
    model.get_layer("sensitive").set_weights([kernel, bias])
    path = tmp_path / "model.keras"
    model.save(path)
    (tmp_path / "labels.json").write_text(json.dumps(LABELS))
    out = tmp_path / "bundle"
    result = export(path, data=TINY_ZIP, out=out, preprocessing={"scale": 1 / 255}, labels=LABELS, isolate=False,
                    formats=("tflite_int8", "onnx_int8", "tflite_fp32"), calibration=CalibrationConfig(count=64), validation=ValidationConfig(max_images=50))
    rows = {r["name"]: r for r in result.rows}
    assert "diagnosis" not in rows["tflite_fp32"]
    for name in ("tflite_int8", "onnx_int8"):
        found = rows[name]["diagnosis"]
        assert found["images"] == 32
        worst = ranked(found)[0]
        assert "sensitive" in worst["name"], (name, ranked(found)[:3])
        first = next(layer for layer in found["layers"] if "first" in layer["name"])
        assert worst["own_db"] < first["own_db"] - 10, (name, found["layers"])
    proc = run_cli("inspect", str(out), "--variant", "tflite_int8", "--top", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "worst first" in lines[0] and "sensitive" in lines[2] and "more layers" in lines[3]
    proc = run_cli("inspect", str(out), "--variant", "tflite_fp32")
    assert proc.returncode == 0 and "not diagnosed" in proc.stdout
    proc = run_cli("inspect", str(out), "--variant", "nope")
    assert proc.returncode == 2 and "has no variant 'nope'" in proc.stderr


class _FakeFormat:
    """A format whose files' accuracies are scripted: requantize returns a file naming what it kept."""

    def __init__(self):
        self.calls = []

    def layout(self, config):
        return "NHWC"

    def requantize(self, variant, job, keep):
        from edgecls.export.formats.base import Converted

        self.calls.append(keep)
        return Converted(("|".join(keep)).encode() * 10, {"engine": "fake"})


def _scripted(monkeypatch, accuracies):
    """file_accuracy returns accuracies[file name without suffix]: 'plain', 'step1', 'step2', ..."""
    from edgecls.export import repair as module

    monkeypatch.setattr(module, "file_accuracy", lambda path, images, labels, layout, timeout: accuracies[path.stem])


DIAGNOSIS = {"layers": [{"name": "a", "op": "CONV_2D", "sqnr_db": 40.0, "own_db": 40.0, "scope": "A"},
                        {"name": "b", "op": "CONV_2D", "sqnr_db": 30.0, "own_db": 30.0, "scope": "B"},
                        {"name": "c", "op": "ADD", "sqnr_db": 29.0, "own_db": 35.0, "scope": "C"},
                        {"name": "d", "op": "MEAN", "sqnr_db": 29.0, "own_db": CAP_DB, "scope": "D"}]}


def test_repair_keeps_the_worst_layers_in_float_until_the_budget_is_met(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from edgecls.export.repair import repair

    job = SimpleNamespace(config=SimpleNamespace(validation=SimpleNamespace(timeout_s=60)))
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(b"x" * 100)
    labels = np.zeros(200, np.int64)
    fmt = _FakeFormat()
    # Plain int8 within the budget: left fully quantized, nothing re-quantized.
    _scripted(monkeypatch, {"plain": 0.896})
    record, converted = repair(fmt, None, job, plain, DIAGNOSIS, None, labels, 0.90, max_drop=0.5, max_layers=8)
    assert converted is None and record["met"] and record["kept_float"] == [] and fmt.calls == []
    assert record["plain_drop_points"] == pytest.approx(0.4)
    # 1.5 points lost; one layer in float leaves 0.8, two leave 0.3: b then c (lowest own_db first), never d.
    _scripted(monkeypatch, {"plain": 0.885, "step1": 0.892, "step2": 0.897})
    record, converted = repair(fmt, None, job, plain, DIAGNOSIS, None, labels, 0.90, max_drop=0.5, max_layers=8)
    assert record["met"] and record["kept_float"] == ["b", "c"] and fmt.calls == [("B",), ("B", "C")]
    assert [s["drop_points"] for s in record["steps"]] == [pytest.approx(0.8), pytest.approx(0.3)]
    assert converted.data == b"B|C" * 10 and record["bytes"] == 30 and record["plain_bytes"] == 100
    # A layer whose float version does not help by at least one image (0.5 points on 200) stays
    # quantized; a budget nothing meets says by how much the best set missed.
    fmt.calls.clear()
    _scripted(monkeypatch, {"plain": 0.88, "step1": 0.886, "step2": 0.884, "step3": 0.885})
    record, converted = repair(fmt, None, job, plain, DIAGNOSIS, None, labels, 0.90, max_drop=0.5, max_layers=8)
    assert converted is None and not record["met"]
    assert fmt.calls == [("B",), ("B", "C"), ("B", "A")]  # c did not help, so a is tried beside b alone; d never
    assert [s["kept"] for s in record["steps"]] == [True, False, False]
    assert record["reason"] == ("--max-drop 0.5 not met: the plain file loses 2.00 points on 200 validation images; "
                                "with up to 3 layers tried in float the best (1 kept) loses 1.40, 0.90 over")


@pytest.mark.slow
def test_max_drop_from_export_on_a_trained_model(trained_tiny, tmp_path):
    """--max-drop end to end on real images: checked on training images the calibration did not
    use; each int8 variant either meets it (plain, or with its worst layers in float) or fails
    saying by how much."""
    from edgecls.data import calibration_indices, load_dataset
    from edgecls.export import export

    data = load_dataset(TINY_ZIP)
    free = len(data.train) - len(calibration_indices(data, 64, 0))
    result = export(trained_tiny.out, data=TINY_ZIP, out=tmp_path / "b", formats=("tflite_int8", "onnx_int8", "tflite_fp32"),
                    isolate=False, calibration=CalibrationConfig(count=64), validation=ValidationConfig(max_drop=0.0, repair_max_layers=2))
    rows = {r["name"]: r for r in result.rows}
    assert "repair" not in rows["tflite_fp32"]
    for name in ("tflite_int8", "onnx_int8"):
        record = rows[name]["repair"]
        assert record["images"] == min(1000, free) and record["split"] == "validation (training data)"
        assert len(record["kept_float"]) <= 2
        if record["met"]:
            assert record["drop_points"] <= 0.0 and (rows[name]["status"] == "ok" or rows[name]["reason"])
            if record["kept_float"]:
                assert rows[name]["size"]["bytes"] == record["bytes"] != record["plain_bytes"]
        else:
            assert rows[name]["status"] == "failed" and "--max-drop 0 not met" in rows[name]["reason"]
    proc = run_cli("export", trained_tiny.out, "--data", TINY_ZIP, "--out", tmp_path / "c", "--max-drop", "-1")
    assert proc.returncode == 2 and "--max-drop: -1.0 is out of range" in proc.stderr


def test_the_report_shows_each_diagnosed_variants_worst_layers(tmp_path):
    from edgecls.errors import DataError
    from edgecls.report import Report

    from .conftest import FIXTURES

    data = json.loads((FIXTURES / "reports" / "bench-resnet8-2t.json").read_text())
    name = data["variants"][1]["name"]
    data["variants"][1]["diagnosis"] = {"images": 32, "metric": "SQNR", "layers": [
        {"name": "stem", "op": "CONV_2D", "sqnr_db": 38.5, "own_db": 39.0, "scope": "stem"},
        {"name": "s3_relu", "op": "ADD", "sqnr_db": 23.8, "own_db": 28.8, "scope": "s3"}]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    report = Report.load([path])
    assert [r["name"] for r in report.diagnosed()] == [name]
    from edgecls.report.html import html_page

    page = html_page(report, plots={})
    section = page[page.index("Where quantized variants lose accuracy"):]
    assert section.index("s3_relu") < section.index("stem")  # worst first
    data["variants"][1]["diagnosis"] = {"layers": [{"name": "x", "op": "ADD", "sqnr_db": "high", "own_db": 1}]}
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"variants\[1\].diagnosis.layers\[0\].sqnr_db' must be a number"):
        Report.load([path])
