"""The report's answer to "which file do I ship": the recommendation per device, a front noise cannot
reorder, every warning and rejected variant in sight, merged devices named, charts whose labels do
not overlap. On recorded bench reports (tests/fixtures/reports/) and synthetic candidates; the
browser rendering is tests/test_report_browser.py."""
import json
import random
import re

import numpy as np
import pytest

from .conftest import FIXTURES, assert_one_line_error, run_cli

REPORTS = FIXTURES / "reports"
DEMO = REPORTS / "demo-resnet8-5processes.json"  # `edgecls bench` of the demo bundle: 5 processes, per-image results
PI = REPORTS / "pi-resnet8-emulated.json"  # the Raspberry Pi 4 userland under qemu, one process per variant
WORKSTATION = REPORTS / "workstation-resnet8.json"  # 10,000 JPEG test images, 5 processes, no per-image results


def cand(name, accuracy, rounds, size=100_000, precision="int8", correct=None):
    return {"id": name, "artifact": name, "status": "ok", "accuracy": accuracy, "latency_ms": sorted(rounds)[len(rounds) // 2],
            "latency_rounds_ms": rounds, "bytes": size, "gzip_bytes": size, "precision": precision, "correct": correct,
            "images": None if correct is None else len(correct), "images_id": 0}


def correct(n_right, n=1000, seed=0):
    c = np.zeros(n, bool)
    c[np.random.default_rng(seed).permutation(n)[:n_right]] = True
    return c


# -- what the measurements resolve ---------------------------------------------------------------

def test_rank_test_matches_its_exact_distribution():
    from edgecls.selection import mann_whitney_p

    assert mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert mann_whitney_p([1, 2, 3, 4, 6], [5, 7, 8, 9, 10]) == pytest.approx(4 / 252)
    assert mann_whitney_p([1, 2, 3, 5, 7], [4, 6, 8, 9, 10]) == pytest.approx(14 / 252)
    assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)


def test_a_faster_median_is_not_faster_beyond_noise_when_the_processes_overlap():
    from edgecls.selection import faster_beyond_noise

    a = cand("a", 0.85, [0.448, 0.450, 0.452, 0.460, 0.470])
    b = cand("b", 0.85, [0.449, 0.451, 0.455, 0.458, 0.465])
    assert not faster_beyond_noise(a, b) and not faster_beyond_noise(b, a)
    c = cand("c", 0.85, [0.30, 0.31, 0.32, 0.33, 0.34])
    assert faster_beyond_noise(c, a) and not faster_beyond_noise(a, c)
    # Three processes each: the rank test cannot reach 5%, complete separation decides.
    assert faster_beyond_noise(cand("d", 0.8, [1, 2, 3]), cand("e", 0.8, [4, 5, 6]))
    assert not faster_beyond_noise(cand("d", 0.8, [1, 2, 5]), cand("e", 0.8, [4, 6, 7]))


def test_the_front_keeps_no_variant_for_being_faster_by_noise():
    """The quick tour's case: a pruned int8 file at 31.5% sat on the front for 0.002 ms."""
    from edgecls.selection import Budgets, front, robust_front, tie_groups

    right = correct(850, seed=2)
    worse = right.copy()
    worse[np.flatnonzero(right)[:50]] = False  # int8 loses 50 images fp32 gets right: 5 points, beyond noise
    int8 = cand("tflite_int8", 0.800, [0.440, 0.445, 0.449, 0.452, 0.470], correct=worse)
    pruned = cand("tflite_pruned_int8", 0.315, [0.438, 0.443, 0.447, 0.455, 0.461], correct=correct(315, seed=1))
    fp32 = cand("tflite_fp32", 0.850, [0.60, 0.61, 0.62, 0.63, 0.64], size=300_000, precision="fp32", correct=right)
    fp16 = cand("tflite_fp16", 0.850, [0.605, 0.612, 0.618, 0.631, 0.641], size=160_000, precision="fp16", correct=right)
    on = [c["id"] for c in robust_front([int8, pruned, fp32, fp16])]
    assert "tflite_pruned_int8" not in on and "tflite_int8" in on
    # fp32 and fp16: as fast and as accurate as each other: both on the front, marked tied.
    assert {"tflite_fp32", "tflite_fp16"} <= set(on)
    assert tie_groups([c for c in [int8, fp32, fp16] if c["id"] in on]) == [["tflite_fp32", "tflite_fp16"]]
    assert front([int8, pruned, fp32], Budgets(), "latency") == ["tflite_int8", "tflite_fp32"]


def test_accuracy_differences_need_the_paired_test_or_the_unpaired_one():
    from edgecls.selection import more_accurate_beyond_noise

    base = correct(850)
    one_more = base.copy()
    one_more[np.flatnonzero(~base)[:3]] = True  # 3 more images right: not beyond noise
    many_more = base.copy()
    many_more[np.flatnonzero(~base)[:40]] = True
    a, b, c = cand("a", 0.850, [1, 1], correct=base), cand("b", 0.853, [1, 1], correct=one_more), \
        cand("c", 0.890, [1, 1], correct=many_more)
    assert not more_accurate_beyond_noise(b, a) and more_accurate_beyond_noise(c, a) and not more_accurate_beyond_noise(a, c)
    # Without per-image results: the two-proportion test on the image counts.
    x = {"accuracy": 0.8513, "images": 10_000}
    assert not more_accurate_beyond_noise(x, {"accuracy": 0.8504, "images": 10_000})
    assert more_accurate_beyond_noise(x, {"accuracy": 0.8300, "images": 10_000})


def test_repeated_benches_recommend_the_same_file_or_say_the_two_are_tied():
    """Two files equally fast (the same distribution of p50s), one 6 points more accurate on paired
    images, and one equally fast and accurate: over simulated repeated benches the pick is the
    accurate one whenever the speeds tie, and two runs either agree or name each other as tied."""
    from edgecls.selection import Budgets, choose

    right = correct(850)
    worse = right.copy()
    worse[np.flatnonzero(right)[:60]] = False
    runs = []
    for seed in range(40):
        rng = random.Random(seed)
        a = cand("a", 0.850, [0.50 + rng.gauss(0, 0.02) for _ in range(5)], correct=right)
        b = cand("b", 0.790, [0.50 + rng.gauss(0, 0.02) for _ in range(5)], correct=worse)
        twin = cand("twin", 0.850, [0.50 + rng.gauss(0, 0.02) for _ in range(5)], correct=right)
        slow = cand("slow", 0.851, [0.90 + rng.gauss(0, 0.02) for _ in range(5)], precision="fp32", correct=right)
        for c in (a, b, twin, slow):
            c["drop"] = round(100 * (0.851 - c["accuracy"]), 4)
        choice = choose([a, b, twin, slow], Budgets(max_drop=10.0), "latency")
        assert choice.winner["id"] in ("a", "twin") or "a" not in choice.tied_with
        runs.append(choice)
    for one, two in zip(runs, runs[1:]):
        w1, w2 = one.winner["id"], two.winner["id"]
        assert w1 == w2 or (w2 in one.tied_with and w1 in two.tied_with), (w1, w2)
    assert sum(c.winner["id"] == "b" for c in runs) <= 1  # b only when it is faster beyond noise (p < 0.01)


# -- the report ----------------------------------------------------------------------------------

def test_the_demo_report_recommends_names_its_rule_and_compares_the_runner_up(tmp_path):
    from edgecls.config import ReportConfig
    from edgecls.report import Report

    report = Report.load([DEMO])
    rec = report.recommendations()[0]
    assert rec["winner"] and rec["runner_up"] and rec["baseline"]["name"] == "tflite_fp32"
    first = rec["lines"][0]
    assert first.startswith(f"Ship {rec['winner']} on ") and "over 5 processes" in first
    assert "--max-drop 1 --objective latency" in rec["lines"][1]
    runner = next(line for line in rec["lines"] if line.startswith("Runner-up:"))
    assert "McNemar p = " in runner and ("as fast as each other" in runner or "beyond noise" in runner)
    # The paired figures are the report's own per-image results.
    test = rec["comparison"]["accuracy_test"]
    assert test["images"] == 1000 and test["only_a_right"] + test["only_b_right"] > 0
    # Within 1 point of 85.00%: every variant the demo measured (all are within 0.8 points).
    assert rec["candidates"] == 8
    by_size = Report.load([DEMO], ReportConfig(max_drop=0.5, objective="size")).recommendations()[0]
    assert by_size["winner"] == "tflite_dynamic" and "smallest (file bytes)" in by_size["lines"][1]  # 93,504 bytes
    # Stricter than any int8 file: only floats and files that lose nothing qualify.
    strict = Report.load([DEMO], ReportConfig(max_drop=0.0)).recommendations()[0]
    assert Report.load([DEMO]).candidates()[0]["correct"].sum() == 850
    chosen = {c["id"]: c for c in Report.load([DEMO]).candidates()}[strict["winner"]]
    assert chosen["accuracy"] >= 0.85
    # The terminal's and the files' first lines are the recommendation.
    proc = run_cli("report", DEMO, "--out", tmp_path / "r", "--max-drop", "0.5", "--objective", "size")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Ship tflite_dynamic on ")
    assert (tmp_path / "r" / "report.md").read_text().startswith("Ship tflite_dynamic on ")
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["recommendations"][0]["winner"] == "tflite_dynamic" and saved["rule"] == {"max_drop": 0.5, "objective": "size"}
    assert_one_line_error(run_cli("report", DEMO, "--out", tmp_path / "r2", "--max-drop", "-1"), "--max-drop")
    assert run_cli("report", DEMO, "--out", tmp_path / "r3", "--objective", "speed").returncode == 2


def test_rejected_variants_and_every_warning_are_at_the_top_and_in_the_rows(tmp_path):
    data = json.loads(DEMO.read_text())
    rows = {v["name"]: v for v in data["variants"]}
    rows["tflite_int8"]["export_warning"] = "agreement 0.9820 on only 1000 images"
    rows["tflite_qat_int8"]["degenerate"] = "the model predicts 'cat' for 91% of the images: it is degenerate"
    rows["onnx_int8"]["warning"] = "agreement 84.2% here vs 98.1% at export: this CPU lacks VNNI"
    rows["tflite_dynamic"].update(status="failed", error="the backend crashed (signal 11)")
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    from edgecls.report import Report

    report = Report.load([path])
    notices = report.notices()
    for text in ("tflite_pruned_fp32: rejected at export: 10.30 points below the model you gave",
                 "tflite_int8 (at export): agreement 0.9820 on only 1000 images",
                 "tflite_qat_int8: the model predicts 'cat'", "onnx_int8: agreement 84.2% here",
                 "tflite_dynamic: failed: the backend crashed"):
        assert any(n.startswith(text) for n in notices), (text, notices)
    md = report.markdown()
    head = md.split("| variant |", 1)[0]
    assert "Warnings and rejected variants:" in head and "tflite_pruned_qat_int8: rejected at export" in head
    table = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert table["tflite_pruned_int8"].endswith("| rejected at export: 9.80 points below the model you gave > 5 "
                                                "(--fine-tuned-max-drop) |")
    assert "export warning: agreement 0.9820" in table["tflite_int8"] and "degenerate: " in table["tflite_qat_int8"]
    # Neither the warned nor the failed variant is recommended or on the front.
    rec = report.recommendations()[0]
    assert rec["winner"] not in ("onnx_int8", "tflite_dynamic") and "onnx_int8" not in report.front()
    html = report.html(plots={})
    assert html.index('id="notices"') < html.index('id="variants"') and html.count('<tr class="rejected">') == 3


def test_a_merged_pi_and_workstation_page_names_each_device_in_every_row(tmp_path):
    out = tmp_path / "merged"
    proc = run_cli("report", PI, WORKSTATION, "--out", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    pi, ws = "vm (aarch64, Raspberry Pi 4 Model B Rev 1.4), 1 thread [emulated]", "vm (x86_64, AMD EPYC), 1 thread"
    rows = [line for line in md.splitlines() if line.startswith("| vm ")]
    assert rows and all(r.startswith(f"| {pi} |") and r.count("pi-resnet8-emulated.json") == 1 or
                        r.startswith(f"| {ws} |") and r.count("workstation-resnet8.json") == 1 for r in rows)
    assert md.count("Ship ") == 2 and f"on {pi}: " in md and f"on {ws}: " in md
    # Each device in full: CPU and its int8 class, threads, runtime versions, where it came from.
    assert "Raspberry Pi 4 Model B Rev 1.4 (arm64 without dot product; asimd)" in md and "onnxruntime 1.31.1" in md
    assert "measured under a CPU emulator" in md and "timed in one process" in md
    assert f"ratio {pi} / {ws}" in md or f"ratio {ws} / {pi}" in md
    html = (out / "report.html").read_text()
    assert '<table id="devices">' in html and html.count('class="rec"') == 2
    # One machine benched twice: two devices, each named by its report file.
    a, b = tmp_path / "monday.json", tmp_path / "tuesday.json"
    a.write_text(DEMO.read_text())
    b.write_text(DEMO.read_text())
    from edgecls.report import Report

    twice = Report.load([a, b])
    assert len(twice.devices) == 2 and twice.devices[0].endswith("[monday.json]") and twice.devices[1].endswith("[tuesday.json]")


def test_malformed_per_image_results_are_one_line_errors(tmp_path):
    data = json.loads(DEMO.read_text())
    data["variants"][0]["correct_bits"] = data["variants"][0]["correct_bits"][:-8]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    assert_one_line_error(run_cli("report", bad, "--out", tmp_path / "r"), "correct_bits", "re-run the bench")
    data["variants"][0]["correct_bits"] = "<script>"
    bad.write_text(json.dumps(data))
    assert_one_line_error(run_cli("report", bad, "--out", tmp_path / "r"), "correct_bits")
    assert not (tmp_path / "r").exists()


# -- charts --------------------------------------------------------------------------------------

def _boxes(svg: str):
    return [tuple(map(float, b.split(","))) for b in re.findall(r'data-box="([^"]+)"', svg)]


def test_chart_labels_never_overlap_each_other_or_leave_the_plot():
    from edgecls.report.svg import Chart, Point, place_labels, render

    rng = random.Random(3)
    # A crowded corner: 14 variants within 0.1 ms and 1 point of each other, one far away.
    points = [Point(0.45 + rng.random() * 0.1, 84.5 + rng.random(), f"tflite_variant_{i}", "hover", "other", key=str(i))
              for i in range(14)] + [Point(24.0, 85.0, "keras_fp32", "hover", "front", key="15")]
    svg, unlabelled = render(Chart(points, "x", "y", "t", log_x=True))
    boxes = _boxes(svg)
    assert len(boxes) >= 8
    for i, a in enumerate(boxes):
        assert 64 <= a[0] and a[2] <= 680 - 16 and 34 <= a[1] and a[3] <= 420 - 74, a
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # A point whose name found no room is keyed by its number or listed under the chart.
    named = set(re.findall(r'<text class="label"[^>]*>([^<]+)</text>', svg))
    for p in points:
        assert p.name in named or p.key in named or p in unlabelled
    # place_labels on its own: nothing overlaps, and a lone point is labelled beside it.
    assert place_labels([(100, 100)], ["abc"], (0, 0, 400, 400), [(100, 100)])[0][0] > 100


def test_log_axis_ticks_are_plain_decimals_that_do_not_touch():
    from edgecls.report.svg import CHAR_W, _fmt, ticks

    assert [_fmt(v) for v in ticks(0.07, 22, True, 570)] == ["0.1", "0.2", "0.5", "1", "2", "5", "10", "20"]
    assert [_fmt(v) for v in ticks(84.05, 85.25, False, 300, vertical=True)] == ["84.2", "84.4", "84.6", "84.8", "85", "85.2"]
    narrow = ticks(0.30, 0.36, True, 570)
    assert len(narrow) >= 3 and all(0.30 <= v <= 0.36 for v in narrow)
    crowded = ticks(0.001, 1000, True, 120)  # little room: thinned until labels keep apart
    import math

    pos = [(math.log10(v) + 3) / 6 * 120 for v in crowded]
    assert all(pos[i + 1] - pos[i] >= (len(_fmt(crowded[i])) + len(_fmt(crowded[i + 1]))) * CHAR_W / 2 for i in
               range(len(pos) - 1))


def test_the_page_is_self_contained_and_escapes_what_it_draws(tmp_path):
    data = json.loads(DEMO.read_text())
    data["variants"][1]["name"] = "fp16_<img src=x onerror=alert(1)>"
    data["host"]["hostname"] = "</svg><script>alert(2)</script>"
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    from edgecls.report import Report

    page = Report.load([path]).html()
    assert "<script" not in page and "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "https://" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
