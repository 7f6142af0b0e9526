"""tools/release/compare_reports.py: does a fresh bench reproduce a committed report?"""
import json

import pytest

from .conftest import ROOT, load_tool

COMMITTED = ROOT / "models" / "resnet8" / "report.json"


@pytest.fixture(scope="module")
def tool():
    return load_tool("compare_reports")


def _write(tmp_path, name, report):
    p = tmp_path / name
    p.write_text(json.dumps(report))
    return str(p)


def test_a_report_reproduces_itself_and_latency_never_decides(tool, tmp_path, capsys):
    report = json.loads(COMMITTED.read_text())
    for v in report["variants"]:  # a slower host: latency and throughput move, accuracy does not
        v["latency_ms"] = {k: 2 * x for k, x in v["latency_ms"].items()}
        v["throughput_ips"] = v["throughput_ips"] / 2
    assert tool.main([str(COMMITTED), _write(tmp_path, "new.json", report)]) == 0
    out = capsys.readouterr().out
    assert out.count("same  ") == len(report["variants"])
    assert "REPRODUCED" in out and "x2.00-2.00" in out


def test_an_accuracy_size_or_image_difference_is_named(tool, tmp_path, capsys):
    report = json.loads(COMMITTED.read_text())
    rows = {v["name"]: v for v in report["variants"]}
    rows["tflite_int8"]["accuracy"] += 0.0001            # one image of 10,000
    rows["onnx_int8"]["size_bytes"] += 1
    rows["tflite_fp16"]["images"] = 9999
    dropped = "tflite_pruned_fp32"
    report["variants"] = [v for v in report["variants"] if v["name"] != dropped]
    assert tool.main([str(COMMITTED), _write(tmp_path, "new.json", report)]) == 1
    out = capsys.readouterr().out
    assert "DIFF  tflite_int8 " in out and "accuracy" in out
    assert "DIFF  onnx_int8" in out and "bytes" in out
    assert "DIFF  tflite_fp16" in out and "images" in out
    assert f"DIFF  {dropped}" in out and "only in the committed report" in out
    assert "NOT REPRODUCED" in out
    # a tolerance of one image's worth lets the accuracy move, not the size
    rows2 = {v["name"]: v for v in json.loads(COMMITTED.read_text())["variants"]}
    rows2["tflite_int8"]["accuracy"] += 0.0001
    new = _write(tmp_path, "new2.json", {"variants": list(rows2.values())})
    assert tool.main([str(COMMITTED), new, "--accuracy-tolerance", "0.01"]) == 0


@pytest.mark.parametrize("content", [None, "not json", '{"variants": 3}', '{"no": []}'])
def test_unreadable_input_is_a_one_line_error(tool, tmp_path, capsys, content):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    assert tool.main([str(COMMITTED), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compare_reports: error: ") and "\n" not in err and "edgecls bench" in err
