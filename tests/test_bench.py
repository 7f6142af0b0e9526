"""bench, predict, report and pipeline on real images; the runtime commands without TensorFlow."""
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from edgecls import runtime
from edgecls.data import load_dataset, sample_indices

from .conftest import ROOT, TINY_ZIP, assert_one_line_error, run_cli
from .test_runtime import BLOCK_TF

pytestmark = pytest.mark.slow

VARIANT_KEYS = {"name", "format", "precision", "sparsity", "size_bytes", "size_gzip_bytes", "accuracy", "agreement",
                "latency_ms", "throughput_ips", "load_ms", "peak_rss_mb", "status", "error", "per_class", "confusion"}


@pytest.fixture(scope="module")
def bench_report(sample_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "report.json"
    proc = run_cli("bench", sample_bundle.out, "--repeats", "1", "--variants", "tflite_fp32", "tflite_int8", "onnx_int8", "tflite_pruned_qat_int8",
                   "--runs", "30", "--warmup", "5", "--batch", "16", "--max-images", "300", "--repeats", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text()), proc


def test_bench_report_schema_and_numbers(bench_report, sample_bundle):
    report, proc = bench_report
    assert report["schema"] == 1 and report["kind"] == "edgecls-bench"
    assert {"cpu", "cores", "arch", "os", "python", "runtime"} <= set(report["host"])
    assert {"onnxruntime", "ai-edge-litert", "numpy"} <= set(report["host"]["runtime"])
    assert report["settings"]["threads"] == 1 and report["settings"]["runs"] == 30
    rows = {v["name"]: v for v in report["variants"]}
    assert list(rows) == ["tflite_fp32", "tflite_int8", "onnx_int8", "tflite_pruned_qat_int8"]
    test = load_dataset("cifar10-sample").test
    keep = sample_indices(len(test), 300)
    for name, row in rows.items():
        assert VARIANT_KEYS <= set(row), name
        assert row["status"] == "ok" and row["error"] == ""
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["runs"] == 30
        assert row["throughput_ips"] > 0 and row["load_ms"] > 0 and row["peak_rss_mb"] > 20
        # Accuracy is what the runtime gives on the same 300 held-out images.
        probs = runtime.load(sample_bundle.out, variant=name).predict(test.images[keep])
        assert row["accuracy"] == pytest.approx(float((probs.argmax(1) == test.labels[keep]).mean()), abs=1e-6)  # rounded to 6 places
        assert np.array(row["confusion"]).sum() == 300
    assert rows["tflite_fp32"]["agreement"] == 1.0
    assert 0.9 <= rows["tflite_int8"]["agreement"] <= 1.0
    assert "| tflite_int8 | tflite | int8 |" in proc.stdout
    assert "bench [" in proc.stderr  # progress


def test_keras_row_beside_the_variants(sample_bundle, sample_model, tmp_path):
    """--keras adds the TensorFlow model as a row: its accuracy is Keras's own on the same images,
    its agreement is against the fp32 TFLite reference, and model.predict is timed as well."""
    from edgecls.evaluation import predict_in_batches
    from edgecls.modelio import load_trained

    out = tmp_path / "r.json"
    proc = run_cli("bench", sample_bundle.out, "--repeats", "1", "--variants", "tflite_fp32", "--keras", sample_model.out / "model.keras",
                   "--runs", "10", "--warmup", "2", "--max-images", "200", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {v["name"]: v for v in report["variants"]}
    assert list(rows) == ["tflite_fp32", "keras_fp32"]
    keras_row = rows["keras_fp32"]
    assert keras_row["status"] == "ok" and keras_row["format"] == "keras" and keras_row["backend"].startswith("tensorflow")
    assert keras_row["size_bytes"] == (sample_model.out / "model.keras").stat().st_size
    assert keras_row["latency_ms"]["runs"] == 10 and keras_row["latency_predict_ms"]["p50"] > 0
    test = load_dataset("cifar10-sample").test
    keep = sample_indices(len(test), 200)
    trained = load_trained(sample_model.out)
    probs = predict_in_batches(trained.model, trained.preprocessing.apply(test.images[keep]))
    assert keras_row["accuracy"] == pytest.approx(float((probs.argmax(1) == test.labels[keep]).mean()), abs=1e-6)
    assert keras_row["agreement"] >= 0.97 and keras_row["agreement_reference"] == "tflite_fp32"
    assert "| keras_fp32 | keras | fp32 |" in proc.stdout
    assert_one_line_error(run_cli("bench", sample_bundle.out, "--repeats", "1", "--keras", "--out", tmp_path / "x.json"), "no Keras model at")
    assert not (tmp_path / "x.json").exists()


def test_bench_with_flip_tta(sample_bundle, sample_model, tmp_path):
    """--tta flip runs every row, the Keras one too, on each image and its mirror image: the accuracy is
    the flip-averaged runtime's, the settings and the device label say so."""
    from edgecls.report import device_label

    out = tmp_path / "r.json"
    proc = run_cli("bench", sample_bundle.out, "--repeats", "1", "--variants", "tflite_fp32", "tflite_int8", "--keras",
                   sample_model.out / "model.keras", "--tta", "flip", "--runs", "5", "--warmup", "1",
                   "--max-images", "150", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["settings"]["tta"] == "flip" and device_label(report["host"], report["settings"]).endswith("flip TTA")
    rows = {v["name"]: v for v in report["variants"]}
    test = load_dataset("cifar10-sample").test
    keep = sample_indices(len(test), 150)
    for name in ("tflite_fp32", "tflite_int8"):
        probs = runtime.load(sample_bundle.out, variant=name, tta="flip").predict(test.images[keep])
        assert rows[name]["accuracy"] == pytest.approx(float((probs.argmax(1) == test.labels[keep]).mean()), abs=1e-6)
    assert rows["keras_fp32"]["status"] == "ok" and rows["keras_fp32"]["agreement"] >= 0.97
    assert_one_line_error(run_cli("bench", sample_bundle.out, "--repeats", "1", "--tta", "rotate", "--out", tmp_path / "x.json"), "--tta")
    assert not (tmp_path / "x.json").exists()


def test_failed_variant_becomes_a_row(sample_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(sample_bundle.out, copy)
    data = bytearray((copy / "tflite_int8.tflite").read_bytes())
    data[len(data) // 2] ^= 0x55
    (copy / "tflite_int8.tflite").write_bytes(bytes(data))
    out = tmp_path / "r.json"
    proc = run_cli("bench", copy, "--repeats", "1", "--variants", "tflite_fp32", "tflite_int8", "--runs", "5", "--max-images", "50", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {v["name"]: v for v in json.loads(out.read_text())["variants"]}
    assert rows["tflite_fp32"]["status"] == "ok"
    assert rows["tflite_int8"]["status"] == "failed"
    assert "does not match the manifest" in rows["tflite_int8"]["error"]


def test_bench_and_predict_run_without_tensorflow(sample_bundle, sample_model, tmp_path):
    """predict and bench with TensorFlow unimportable in every process, bench's children included
    (the block is a sitecustomize on PYTHONPATH). The Keras row, which needs TensorFlow, becomes a
    failed row with the reason; the runtime rows still run."""
    with zipfile.ZipFile(TINY_ZIP) as zf:
        (tmp_path / "ship.jpg").write_bytes(zf.read("cifar10-tiny/test/ship/0003.jpg"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_TF)
    out = tmp_path / "r.json"
    code = f"""
import sys
from edgecls.cli import main
rc1 = main(["predict", {str(sample_bundle.out)!r}, {str(tmp_path / 'ship.jpg')!r}, "--variant", "tflite_int8", "--json"])
rc2 = main(["bench", {str(sample_bundle.out)!r}, "--repeats", "1", "--variants", "tflite_int8", "onnx_fp32", "--runs", "5",
            "--max-images", "50", "--keras", {str(sample_model.out / "model.keras")!r}, "--out", {str(out)!r}])
assert not [m for m in sys.modules if m.startswith("tensorflow")]
raise SystemExit(rc1 or rc2)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    prediction = json.loads(proc.stdout[: proc.stdout.index("\n}") + 2])
    assert prediction["variant"] == "tflite_int8" and len(prediction["results"][0]["top"]) == 3
    rows = {r["name"]: r for r in json.loads(out.read_text())["variants"]}
    assert rows["tflite_int8"]["status"] == rows["onnx_fp32"]["status"] == "ok"
    assert rows["keras_fp32"]["status"] == "failed" and "needs TensorFlow" in rows["keras_fp32"]["error"]


def test_predict_cli_output_and_errors(sample_bundle, tmp_path):
    with zipfile.ZipFile(TINY_ZIP) as zf:
        (tmp_path / "a.jpg").write_bytes(zf.read("cifar10-tiny/test/airplane/0001.jpg"))
    proc = run_cli("predict", sample_bundle.out, tmp_path / "a.jpg", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith(f"{tmp_path / 'a.jpg'}: ") and len(line.split(", ")) == 2
    first = json.loads((sample_bundle.out / "manifest.json").read_text())["artifacts"][0]["name"]
    assert f"edgecls: {first} (" in proc.stderr  # which variant answered
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    assert_one_line_error(run_cli("predict", sample_bundle.out, tmp_path / "bad.png"), "not a readable image")
    assert_one_line_error(run_cli("predict", sample_bundle.out, tmp_path / "a.jpg", "--variant", "nope"), "no variant 'nope'")
    assert_one_line_error(run_cli("predict", tmp_path / "missing", tmp_path / "a.jpg"), "model not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("bench", sample_bundle.out, "--repeats", "1", "--data", empty, "--out", tmp_path / "r.json",
                                  "--variants", "tflite_int8"), "empty")
    assert not (tmp_path / "r.json").exists()


def test_interrupted_bench_writes_no_report(sample_bundle, tmp_path, monkeypatch):
    from edgecls.bench import local as bench_mod
    from edgecls.cli import main

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"name": args[1], "status": "ok", "error": ""}

    monkeypatch.setattr(bench_mod, "_child", interrupted)
    out = tmp_path / "r.json"
    assert main(["bench", str(sample_bundle.out), "--repeats", "1", "--out", str(out)]) == 130
    assert not out.exists() and not list(tmp_path.iterdir())


def test_report_from_two_devices(bench_report, tmp_path):
    report, _ = bench_report
    a = tmp_path / "workstation.json"
    a.write_text(json.dumps(report))
    other = json.loads(json.dumps(report))
    other["host"].update(hostname="pi5", arch="aarch64", cpu="Cortex-A76")
    for v in other["variants"]:
        v["latency_ms"] = {k: (x * 4 if isinstance(x, float) else x) for k, x in v["latency_ms"].items()}
    b = tmp_path / "pi.json"
    b.write_text(json.dumps(other))
    out = tmp_path / "report"
    proc = run_cli("report", a, b, "--out", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "ratio pi5 (aarch64, Cortex-A76), 1 thread / " in md and "| 4.00 |" in md
    assert "Fastest on pi5 (aarch64, Cortex-A76), 1 thread:" in md
    html_text = (out / "report.html").read_text()
    # The bundle's int8 variants carry their per-layer diagnosis from the export: its plot and section too.
    assert html_text.count("data:image/png;base64,") == 4 and "https://" not in html_text
    assert html_text.count('<svg xmlns="http://www.w3.org/2000/svg" id="scatter-') == 2  # accuracy against latency, per device
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "accuracy_vs_latency_1.svg", "accuracy_vs_latency_2.svg", "confusion.png", "devices.png", "layer_error.png", "sizes.png"]
    # Every row names its device and the report file it came from; each device gets its recommendation.
    assert "| report file |" in md and "| pi.json |" in md and "| workstation.json |" in md
    assert md.count("Ship ") == 2 and " on pi5 (aarch64, Cortex-A76), 1 thread: top-1 " in md
    assert "from pi.json" in md and "from workstation.json" in md
    assert "Where quantized variants lose accuracy" in html_text
    header = (out / "report.csv").read_text().splitlines()[0]
    assert header.startswith("device,name,format,precision,sparsity,size_bytes")
    assert json.loads((out / "report.json").read_text())["devices"][1].startswith("pi5")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert_one_line_error(run_cli("report", bad, "--out", tmp_path / "r2"), "not an 'edgecls bench' report")


def test_pipeline_end_to_end(tmp_path):
    proc = run_cli("pipeline", "--data", TINY_ZIP, "--out", tmp_path / "p", "--arch", "seed_cnn", "--epochs", "2",
                   "--formats", "tflite_fp32", "tflite_int8", "onnx_fp32", "--runs", "10", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for part in ("model/model.keras", "bundle/manifest.json", "bench.json", "report/report.html", "report/report.md"):
        assert (tmp_path / "p" / part).exists(), part
    manifest = json.loads((tmp_path / "p" / "bundle" / "manifest.json").read_text())
    shipped = [a["name"] for a in manifest["artifacts"]]
    assert "tflite_fp32" in shipped and "onnx_fp32" in shipped
    # A model trained for 2 epochs on 180 images is near chance, so int8 may fail its tolerance:
    # either way it is reported, and only validated variants are benchmarked.
    assert "tflite_int8" in proc.stdout.split("Benchmark")[0]
    bench = json.loads((tmp_path / "p" / "bench.json").read_text())
    assert [v["name"] for v in bench["variants"] if v["name"] != "keras_fp32"] == shipped
    assert {v["name"]: v for v in bench["variants"]}["keras_fp32"]["status"] == "ok"
    assert f"HTML report: {tmp_path / 'p' / 'report' / 'report.html'}" in proc.stdout
    # The terminal ends with the recommendation (or why there is none), as the page begins with it.
    ending = proc.stdout.split("HTML report:")[1]
    assert re.search(r"^(Ship \w+ on .*|No variant on .*)$", ending, re.M), ending
    page = (tmp_path / "p" / "report" / "report.html").read_text()
    assert page.index('id="recommendation"') < page.index('id="variants"')
    assert len(bench["variants"][0]["repeats"]["p50_ms"]) == 5 and "repeats" not in {
        v["name"]: v for v in bench["variants"]}["keras_fp32"]


def test_pipeline_default_starts_from_the_shipped_model(sample_model, tmp_path):
    """With no --data the pipeline takes the shipped model of --arch (here a stand-in found through
    $EDGECLS_MODELS) instead of training, and runs on the built-in sample."""
    models = tmp_path / "models"
    shutil.copytree(sample_model.out, models / "seed_cnn")
    env = {"EDGECLS_MODELS": str(models)}
    proc = run_cli("pipeline", "--out", tmp_path / "p", "--arch", "seed_cnn", "--formats", "tflite_fp32", "tflite_int8",
                   "--runs", "5", timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"using the trained model {models / 'seed_cnn'}" in proc.stderr
    assert not (tmp_path / "p" / "model").exists()  # nothing was trained
    bench = json.loads((tmp_path / "p" / "bench.json").read_text())
    assert bench["data"] == "cifar10-sample"
    rows = {v["name"]: v for v in bench["variants"]}
    assert set(rows) == {"tflite_fp32", "tflite_int8", "keras_fp32"}
    # The stand-in's own test accuracy on the sample, reproduced by the exported fp32 model.
    assert rows["tflite_fp32"]["accuracy"] == pytest.approx(sample_model.metrics["test_accuracy"], abs=0.005)


@pytest.mark.parametrize("latencies, scale", [
    ([0.05, 0.15, 5.8], "log"),          # a Keras row beside the runtime's variants
    ([0.05, 0.15, 0.3], "linear"),
    ([0.05, None, 0.0, 1.2], "log"),     # unmeasured and zero latencies are ignored
    ([None, 3.0], "linear"),
    ([], "linear"),
])
def test_latency_axis_is_logarithmic_only_when_latencies_span_more_than_20x(latencies, scale):
    from edgecls.report import latency_scale

    assert latency_scale(latencies) == scale


def test_repeated_bench_takes_turns_and_keeps_every_round(bench_report, sample_bundle, tmp_path):
    """--repeats 3: each variant measured in three processes, the variants taking turns; the row's
    accuracy and agreement are the single-round bench's (same images), its latency is the median
    round's, every round's p50 is kept, and the table shows the range."""
    single = {v["name"]: v for v in bench_report[0]["variants"]}
    out = tmp_path / "r.json"
    proc = run_cli("bench", sample_bundle.out, "--variants", "tflite_fp32", "tflite_int8", "--repeats", "3",
                   "--runs", "10", "--warmup", "2", "--batch", "16", "--max-images", "300", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["settings"]["repeats"] == 3
    # Round-robin: fp32, int8, fp32, int8, ... in the progress lines.
    turns = [line.split()[-3] for line in proc.stderr.splitlines() if "(round " in line]
    assert turns == ["tflite_fp32", "tflite_int8"] * 3
    for row in report["variants"]:
        rounds = row["repeats"]
        assert rounds["rounds"] == 3 and len(rounds["p50_ms"]) == len(rounds["throughput_ips"]) == 3
        assert row["latency_ms"]["p50"] == sorted(rounds["p50_ms"])[1]
        assert row["throughput_ips"] == sorted(rounds["throughput_ips"])[1]
        assert row["accuracy"] == single[row["name"]]["accuracy"] and row["agreement"] == single[row["name"]]["agreement"]
    assert "| p50 range ms |" in proc.stdout and "in each of 3 processes per variant" in proc.stdout
    low, high = min(report["variants"][1]["repeats"]["p50_ms"]), max(report["variants"][1]["repeats"]["p50_ms"])
    assert f"| {low:.3f}-{high:.3f} |" in proc.stdout
    assert run_cli("report", out, "--out", tmp_path / "rep").returncode == 0
    assert "p50 range ms" in (tmp_path / "rep" / "report.md").read_text()
    assert "p50_range" in (tmp_path / "rep" / "report.csv").read_text().splitlines()[0]
    # A single-round report has no range column.
    from edgecls.report import Report

    assert "p50_range" not in Report([bench_report[0]]).csv() and "p50 range" not in Report([bench_report[0]]).markdown()


def test_a_round_that_fails_after_the_first_fails_the_row():
    from edgecls.bench import combine_rounds

    ok = {"name": "v", "status": "ok", "error": "", "latency_ms": {"p50": 0.2}, "throughput_ips": 10.0, "load_ms": 5.0,
          "accuracy": 0.8}
    rounds = [ok, {**ok, "latency_ms": {"p50": 0.1}, "throughput_ips": 30.0, "load_ms": 1.0},
              {**ok, "latency_ms": {"p50": 0.3}, "throughput_ips": 20.0, "load_ms": 9.0}]
    row = combine_rounds(rounds)
    assert row["latency_ms"] == {"p50": 0.2} and row["throughput_ips"] == 20.0 and row["load_ms"] == 5.0
    assert row["repeats"]["p50_ms"] == [0.2, 0.1, 0.3] and row["accuracy"] == 0.8
    assert combine_rounds([ok]) == ok and "repeats" not in combine_rounds([ok])
    failed = combine_rounds([ok, {"name": "v", "status": "failed", "error": "the backend crashed (signal 11)"}])
    assert failed["status"] == "failed" and failed["error"] == "failed in a later round: the backend crashed (signal 11)"


@pytest.mark.parametrize("repeats", ["0", "-1", "x"])
def test_bad_repeats_is_a_one_line_error(sample_bundle, tmp_path, repeats):
    proc = run_cli("bench", sample_bundle.out, "--repeats", repeats, "--out", tmp_path / "r.json")
    assert proc.returncode != 0 and not (tmp_path / "r.json").exists()
    assert_one_line_error(proc, f"--repeats: {repeats!r} is not an integer" if repeats == "x" else
                          f"--repeats: {repeats} is out of range")


def test_bench_without_data_on_a_non_cifar_bundle_says_what_it_needs(tmp_path):
    """The built-in sample fits only CIFAR-10 classifiers: another bundle is not measured on it."""
    import shutil

    from edgecls.bundle import file_hashes

    from .conftest import FIXTURES

    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "bundles" / "seed_cnn_s8s8", bundle)
    (bundle / "labels.json").write_text(json.dumps([f"part_{i}" for i in range(10)]))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = file_hashes(bundle, ["labels.json", "preprocessing.json"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("bench", bundle, "--repeats", "1", "--out", tmp_path / "r.json", "--runs", "3")
    assert_one_line_error(proc, "part_0, part_1", "not CIFAR-10's", "pass --data")
    assert not (tmp_path / "r.json").exists()
