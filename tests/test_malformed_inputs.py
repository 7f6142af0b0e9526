"""Zero tracebacks: every command, fed a table of malformed inputs (manifests, labels, preprocessing
specs, model files, images, reports, datasets, options), exits with status 2 and one
`edgecls: error:` line, and changes no file outside the test's temporary folder."""
from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from edgecls.cli import main

from .conftest import FIXTURES, ROOT, TINY_ZIP
from .test_hostile_data import png_header_bomb

BENCH_REPORT = ROOT / "tests" / "fixtures" / "reports" / "bench-resnet8-2t.json"
WATCHED = [ROOT / "models", ROOT / "tests" / "fixtures", ROOT / "docs", ROOT / "edgecls"]


def _snapshot():
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in WATCHED for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_model):
    """Malformed inputs of every kind, built once."""
    root = tmp_path_factory.mktemp("malformed")
    good = root / "bundle"
    shutil.copytree(FIXTURES / "bundles" / "seed_cnn_s8s8", good)

    def bundle(name, change=None, files=None):
        path = root / name
        shutil.copytree(good, path)
        if change:
            manifest = json.loads((path / "manifest.json").read_text())
            change(manifest)
            (path / "manifest.json").write_text(json.dumps(manifest))
        for rel, data in (files or {}).items():
            (path / rel).write_bytes(data)
        return path

    p = {"root": root, "good": good}
    p["no_manifest"] = root / "empty_dir"
    p["no_manifest"].mkdir()
    p["manifest_not_json"] = bundle("m1", files={"manifest.json": b"{\"schema\": 1,"})
    p["manifest_list"] = bundle("m2", files={"manifest.json": b"[1, 2]"})
    p["artifacts_missing"] = bundle("m3", lambda m: m.pop("artifacts"))
    p["artifact_outside"] = bundle("m4", lambda m: m["artifacts"][0].update(file="../../etc/passwd"))
    p["labels_edited"] = bundle("m5", files={"labels.json": b'["a", "b"]'})
    p["labels_not_json"] = bundle("m6", files={"labels.json": b"[\"a\","})
    p["preprocessing_edited"] = bundle("m7", files={"preprocessing.json": b'{"input_size": "big"}'})
    p["artifact_swapped"] = bundle("m8", files={"onnx_fp32.onnx": b"\x08\x01garbage"})
    p["sha_not_hex"] = bundle("m9", lambda m: m["artifacts"][0].update(sha256="x"))
    p["image_text"] = root / "notes.png"
    p["image_text"].write_text("not an image")
    p["image_bomb"] = root / "bomb.png"
    p["image_bomb"].write_bytes(png_header_bomb(20000, 20000))
    p["image_empty"] = root / "empty.jpg"
    p["image_empty"].write_bytes(b"")
    p["lone_tflite"] = root / "lone.tflite"
    p["lone_tflite"].write_bytes(b"TFL3 garbage")
    p["report_not_json"] = root / "r1.json"
    p["report_not_json"].write_text("{")
    p["report_list"] = root / "r2.json"
    p["report_list"].write_text("[]")
    good_report = json.loads(BENCH_REPORT.read_text())
    for i, change in enumerate([lambda r: r.update(variants="x"), lambda r: r.update(host=None),
                                lambda r: r["variants"].append(7), lambda r: r["variants"][0].update(latency_ms={"p50": "fast"}),
                                lambda r: r["variants"][0].update(accuracy=[1]), lambda r: r.update(schema=9)]):
        report = json.loads(json.dumps(good_report))
        change(report)
        p[f"report_bad_{i}"] = root / f"r_bad_{i}.json"
        p[f"report_bad_{i}"].write_text(json.dumps(report))
    p["model_text"] = root / "model.keras"
    p["model_text"].write_text("hello")
    p["model_empty_h5"] = root / "empty.h5"
    p["model_empty_h5"].write_bytes(b"")
    p["model_zip_no_config"] = root / "noconfig.keras"
    with zipfile.ZipFile(p["model_zip_no_config"], "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
    p["model_bad_config"] = root / "badconfig.keras"
    with zipfile.ZipFile(p["model_bad_config"], "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "2.15.0"}))
        zf.writestr("config.json", "{\"class_name\": ")
    p["model_unknown_format"] = root / "model.pt"
    p["model_unknown_format"].write_bytes(b"PK")
    run = root / "run"
    shutil.copytree(sample_model.out, run)
    p["run_no_spec"] = root / "run_no_spec"
    shutil.copytree(sample_model.out, p["run_no_spec"])
    (p["run_no_spec"] / "preprocessing.json").unlink()
    p["run_bad_spec"] = root / "run_bad_spec"
    shutil.copytree(sample_model.out, p["run_bad_spec"])
    (p["run_bad_spec"] / "preprocessing.json").write_text('{"input_size": [32, 32], "scale": "x"}')
    p["run_short_labels"] = root / "run_short_labels"
    shutil.copytree(sample_model.out, p["run_short_labels"])
    (p["run_short_labels"] / "labels.json").write_text('["only", "two"]')
    p["run"] = run
    p["labels_bad"] = root / "labels_bad.json"
    p["labels_bad"].write_text('{"cat": 1}')
    p["labels_short"] = root / "labels_short.json"
    p["labels_short"].write_text('["a", "b"]')
    p["data_empty"] = root / "data_empty"
    p["data_empty"].mkdir()
    p["data_one_empty_class"] = root / "data_one_empty_class"
    (p["data_one_empty_class"] / "cat").mkdir(parents=True)
    (p["data_one_empty_class"] / "dog").mkdir()
    (p["data_one_empty_class"] / "dog" / "notes.txt").write_text("x")
    p["data_not_zip"] = root / "data.zip"
    p["data_not_zip"].write_text("not a zip")
    p["user_file"] = root / "thesis.txt"
    p["user_file"].write_text("mine")
    return p


def _cases(p):
    out = str(p["root"] / "out")
    bench_out = str(p["root"] / "bench.json")
    run, good = str(p["run"]), str(p["good"])
    tiny = str(TINY_ZIP)
    cases = {
        "predict": [[str(p[k]), str(p["image_text"])] for k in (
            "no_manifest", "manifest_not_json", "manifest_list", "artifacts_missing", "artifact_outside", "labels_edited",
            "labels_not_json", "preprocessing_edited", "artifact_swapped", "sha_not_hex")] + [
            [good, str(p["image_text"])], [good, str(p["image_bomb"])], [good, str(p["image_empty"])],
            [good, str(p["root"] / "missing.jpg")], [good, str(p["root"])], [good, str(p["image_text"]), "--variant", "nope"],
            [good, str(p["image_text"]), "--threads", "0"], [str(p["lone_tflite"]), str(p["image_text"])],
            [str(p["root"] / "no_such_bundle"), str(p["image_text"])]],
        "bench": [[str(p[k]), "--out", bench_out] for k in (
            "no_manifest", "manifest_not_json", "artifacts_missing", "artifact_outside", "labels_edited",
            "preprocessing_edited", "sha_not_hex")] + [
            [good, "--out", bench_out, "--data", str(p["root"] / "nowhere")],
            [good, "--out", bench_out, "--data", str(p["data_not_zip"])],
            [good, "--out", bench_out, "--variants", "nope"],
            [good, "--out", str(p["root"])], [good, "--out", str(p["user_file"])],
            [good, "--out", bench_out, "--runs", "0"]],
        "report": [[str(p[k]), "--out", out] for k in ("report_not_json", "report_list") + tuple(
            f"report_bad_{i}" for i in range(6))] + [
            [str(p["root"] / "missing.json"), "--out", out], [str(BENCH_REPORT), "--out", str(p["user_file"])],
            [str(BENCH_REPORT), "--out", "."]],
        "eval": [[str(p[k]), "--data", tiny] for k in (
            "model_text", "model_empty_h5", "model_zip_no_config", "model_bad_config", "run_no_spec", "run_bad_spec",
            "run_short_labels", "no_manifest")] + [
            [str(p["root"] / "missing"), "--data", tiny], [run, "--data", str(p["data_empty"])],
            [run, "--data", str(p["root"] / "nowhere")], [run, "--data", tiny, "--out", str(p["user_file"])]],
        "export": [[str(p[k]), "--data", tiny, "--out", out, "--scale", "0.0039"] for k in (
            "model_text", "model_empty_h5", "model_zip_no_config", "model_bad_config", "model_unknown_format",
            "no_manifest")] + [
            [run, "--data", tiny, "--out", out, "--labels", str(p["labels_bad"])],
            [run, "--data", tiny, "--out", out, "--labels", str(p["labels_short"])],
            [run, "--data", tiny, "--out", out, "--labels", str(p["root"] / "missing.json")],
            [run, "--data", str(p["data_not_zip"]), "--out", out],
            [run, "--data", str(p["data_one_empty_class"]), "--out", out],
            [run, "--data", tiny, "--out", str(p["user_file"])],
            [run, "--data", tiny, "--out", out, "--scale", "-1"],
            [run, "--data", tiny, "--out", out, "--mean", "1", "2"],
            [str(p["run_bad_spec"]), "--data", tiny, "--out", out]],
        "optimize": [[str(p[k]), "--data", tiny, "--out", out, "--scale", "0.0039"] for k in (
            "model_text", "model_bad_config")] + [
            [str(p["run_no_spec"]), "--data", tiny, "--out", out],
            [run, "--data", tiny, "--out", str(p["user_file"])],
            [run, "--data", str(p["data_empty"]), "--out", out]],
        "train": [["--data", str(p[k]), "--out", out, "--epochs", "1"] for k in (
            "data_empty", "data_one_empty_class", "data_not_zip", "image_text")] + [
            ["--data", str(p["root"] / "nowhere"), "--out", out],
            ["--data", tiny, "--out", out, "--arch", "nope"],
            ["--data", tiny, "--out", out, "--epochs", "0"],
            ["--data", tiny, "--out", out, "--init", str(p["root"] / "missing")],
            ["--data", tiny, "--out", out, "--teacher", str(p["no_manifest"])],
            ["--data", tiny, "--out", str(p["user_file"])]],
    }
    return cases


def test_every_command_answers_malformed_input_in_one_line(inputs, capsys, monkeypatch):
    monkeypatch.chdir(inputs["root"])
    before = _snapshot()
    cases = _cases(inputs)
    tried = tracebacks = 0
    for command, table in cases.items():
        for args in table:
            argv = [command, *args]
            try:
                code = main(argv)
            except SystemExit as exit_:  # refused while parsing the command line
                code = exit_.code
            captured = capsys.readouterr()
            tried += 1
            tracebacks += "Traceback" in captured.err
            errors = [line for line in captured.err.splitlines() if line.startswith("edgecls: error:")]
            assert code == 2 and len(errors) == 1 and "Traceback" not in captured.err, (argv, code, captured.err[-2000:])
    assert tracebacks == 0
    assert tried >= 70 and all(len(table) >= 5 for table in cases.values())
    assert _snapshot() == before, "a file outside the test's folder changed"
    assert not (inputs["root"] / "out").exists()
    assert (inputs["user_file"]).read_text() == "mine"
    assert not [p for p in inputs["root"].iterdir() if "partial" in p.name]
