"""`edgecls tune`: the budget logic with exact numbers, and the search end to end on the tiny real
fixture (export, latency, choice on the validation split, the test split read once, resume)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgecls.config import BenchConfig, CalibrationConfig, ExportConfig, PruneConfig, QATConfig, TuneConfig
from edgecls.errors import ConfigError
from edgecls.selection import Budgets, choose, closest, explain, fine_tune_reason, misses

from .conftest import ROOT, TINY_ZIP


def cand(artifact, threads, accuracy, drop, nbytes, latency, gzip=None, precision="int8", status="ok"):
    return {"id": f"{artifact}@{threads}t", "artifact": artifact, "threads": threads, "accuracy": accuracy, "drop": drop,
            "bytes": nbytes, "gzip_bytes": gzip if gzip is not None else nbytes // 2, "latency_ms": latency,
            "precision": precision, "status": status}


GRID = [
    cand("tflite_fp32", 1, 0.850, 0.00, 317_000, 0.320, precision="fp32"),
    cand("tflite_int8", 1, 0.843, 0.70, 94_000, 0.088),   # fastest, loses 0.7 points
    cand("tflite_int8", 2, 0.843, 0.70, 94_000, 0.070),
    cand("onnx_int8", 1, 0.848, 0.20, 108_000, 0.150),    # within 0.5 points
    cand("onnx_int8", 2, 0.848, 0.20, 108_000, 0.120),
    cand("tflite_dynamic", 1, 0.851, -0.10, 93_000, 0.110, precision="dynamic"),
    cand("broken", 1, 0.99, -5.0, 1_000, 0.001, status="failed"),  # never chosen: not validated
]


def test_the_fastest_candidate_within_every_budget_wins_and_over_budget_ones_never_do():
    budgets = Budgets(max_drop=0.5)
    choice = choose(GRID, budgets, "latency")
    assert choice.winner["id"] == "tflite_dynamic@1t"  # 0.110 ms; the two faster int8 rows lose 0.7 points
    assert choice.feasible == 4 and choice.compared == 6  # the failed row is not a candidate
    assert choice.bound_by == {"max_drop": 2} and choice.better_excluded == ["tflite_int8@2t", "tflite_int8@1t"]
    assert choice.runner_up["id"] == "onnx_int8@2t"  # the next feasible candidate of another file
    # A budget on latency as well: 0.110 ms is over 0.1, the only survivor at 0.07 loses too much.
    none = choose(GRID, Budgets(max_drop=0.5, max_latency_ms=0.1), "latency")
    assert none.winner is None and none.feasible == 0
    assert none.closest["id"] == "tflite_dynamic@1t"
    assert none.message == ("no candidate meets --max-drop 0.5 and --max-latency-ms 0.1 (6 compared); the closest is "
                            "tflite_dynamic@1t: p50 0.110 ms, 0.010 ms over --max-latency-ms 0.1; within the other budgets, "
                            "the nearest to --max-drop is tflite_int8@1t: loses 0.70 points, 0.20 over --max-drop 0.5")
    # Without a drop budget the fastest wins outright.
    assert choose(GRID, Budgets(), "latency").winner["id"] == "tflite_int8@2t"


def test_size_and_accuracy_objectives_and_the_size_measure():
    assert choose(GRID, Budgets(max_drop=0.5), "size").winner["id"] == "tflite_dynamic@1t"  # 93,000 bytes
    assert choose(GRID, Budgets(max_drop=0.5), "accuracy").winner["id"] == "tflite_dynamic@1t"  # 85.1%
    # Counted in gzip bytes, a file at 40,000 gzip bytes fits where its 94,000 file bytes do not.
    grid = GRID + [cand("tflite_pruned_int8:75", 1, 0.840, 1.0, 94_000, 0.09, gzip=40_000)]
    assert choose(grid, Budgets(max_bytes=45_000, size_measure="gzip"), "size").winner["artifact"] == "tflite_pruned_int8:75"
    assert choose(grid, Budgets(max_bytes=45_000), "size").winner is None
    # Nothing within both: the closest overall, and the one nearest the drop budget among those that fit.
    both = choose(grid, Budgets(max_bytes=45_000, max_drop=0.5, size_measure="gzip"), "accuracy")
    assert both.winner is None and both.message.endswith(
        "the closest is tflite_dynamic@1t: 46,500 gzip bytes, 1,500 over --max-bytes 45,000; within the other budgets, "
        "the nearest to --max-drop is tflite_pruned_int8:75@1t: loses 1.00 points, 0.50 over --max-drop 0.5")
    miss = closest(grid, Budgets(max_bytes=45_000, max_drop=2.0))
    assert miss["artifact"] == "tflite_dynamic" and misses(miss, Budgets(max_bytes=45_000)) == {"max_bytes": 48_000}


def test_ties_are_broken_by_accuracy_then_name_not_by_order():
    a = cand("a", 1, 0.80, 0.0, 100, 0.1)
    b = cand("b", 1, 0.81, 0.0, 100, 0.1)
    assert choose([a, b], Budgets(), "latency").winner["id"] == choose([b, a], Budgets(), "latency").winner["id"] == "b@1t"


def test_fine_tuning_is_tried_only_where_it_can_win():
    budgets = Budgets(max_drop=0.5)
    # A faster int8 file missed only the accuracy budget: QAT may recover it.
    assert "tflite_int8@2t beats the choice on latency but loses 0.70 points" in fine_tune_reason(GRID, budgets, "latency")
    # When the fastest candidate is within budget, nothing fine-tuned can run faster.
    assert fine_tune_reason(GRID, Budgets(max_drop=1.0), "latency") is None
    # Nothing meets the budgets: try them.
    assert fine_tune_reason(GRID, Budgets(max_drop=0.5, max_latency_ms=0.01), "latency") == (
        "no candidate so far meets --max-drop 0.5 and --max-latency-ms 0.01: pruned or quantization-aware trained ones may")
    # Only pruning shrinks gzip size.
    assert "gzip" in fine_tune_reason(GRID, Budgets(size_measure="gzip"), "size")
    assert fine_tune_reason(GRID, Budgets(), "size") is None


def test_the_answer_names_the_pick_its_figures_and_the_reason():
    choice = choose(GRID, Budgets(max_drop=0.5), "latency")
    first, why = explain(choice, Budgets(max_drop=0.5), "latency")
    assert first.startswith("tflite_dynamic@1t: top-1 85.10% on validation (+0.10 points against the float model), "
                            "93,000 bytes (46,500 gzip), p50 0.110 ms")
    assert why.startswith("fastest of 4 candidates within --max-drop 0.5 (6 compared); bound by --max-drop "
                          "(2 better candidates excluded); next: onnx_int8@2t")


def micro(c, ram_kb, flash_kb, status="ok"):
    return {**c, "micro_status": status, "ram_bytes": int(ram_kb * 1024), "flash_bytes": int(flash_kb * 1024),
            "arena_bytes": int(ram_kb * 1024) - 3082}


MICRO_GRID = [
    cand("tflite_fp32", 1, 0.850, 0.00, 317_000, 0.320, precision="fp32"),     # float: not a TFLM target
    micro(cand("tflite_int8", 1, 0.843, 0.70, 94_000, 0.088), 57.7, 92.2),
    micro(cand("tflite_int8_pixels", 1, 0.842, 0.80, 94_500, 0.085), 57.9, 92.3),
    micro(cand("tflite_int8:75", 1, 0.820, 3.00, 94_000, 0.087), 57.7, 92.2),
    micro(cand("tflite_qat_int8", 1, 0.845, 0.50, 94_000, 0.090), 57.7, 92.2, status="failed"),  # TFLM disagrees
]


def test_microcontroller_budgets_keep_only_files_tflite_micro_runs_and_name_the_board():
    budgets = Budgets(max_drop=1.0, max_ram_bytes=64 * 1024, max_flash_bytes=128 * 1024, board="Arduino Nano 33 BLE")
    assert budgets.micro and not Budgets(max_drop=1.0).micro
    choice = choose(MICRO_GRID, budgets, "latency")
    # The float file is faster than nothing here but is no TFLM target; the QAT file failed under TFLM.
    assert choice.winner["id"] == "tflite_int8_pixels@1t" and choice.compared == 3 and choice.feasible == 2
    first, why = explain(choice, budgets, "latency")
    assert first.endswith("under TFLite Micro: RAM 57.9 KB (arena 56,207 bytes), flash 92.3 KB, fits Arduino Nano 33 BLE")
    assert "--max-ram-kb 64 and --max-flash-kb 128 (Arduino Nano 33 BLE)" in why
    # A tighter board: nothing fits, and the answer says by how much.
    tight = Budgets(max_ram_bytes=32 * 1024, max_flash_bytes=128 * 1024)
    none = choose(MICRO_GRID, tight, "latency")
    assert none.winner is None and misses(none.closest, tight) == {"max_ram_bytes": int(57.7 * 1024) - 32 * 1024}
    assert "RAM 57.7 KB, 25.7 KB over --max-ram-kb 32" in none.message
    # Pruning and QAT change neither the arena nor the dense file: no fine-tuning for a memory miss,
    # but still for an accuracy miss within the memory budgets.
    assert fine_tune_reason(MICRO_GRID, tight, "latency") is None
    assert fine_tune_reason(MICRO_GRID, Budgets(max_drop=0.1, max_ram_bytes=64 * 1024), "latency").startswith(
        "no candidate so far meets --max-drop 0.1 and --max-ram-kb 64")
    # No TFLM target at all: said as such.
    floats = choose(MICRO_GRID[:1], budgets, "latency")
    assert floats.winner is None and floats.message.startswith("no candidate runs under TFLite Micro within")
    with pytest.raises(ConfigError, match="max_ram_kb"):
        TuneConfig(max_ram_kb=-1)


def test_speeds_are_tied_when_their_repeated_p50s_overlap():
    from edgecls.selection import speed_tie

    fast, slow = {"latency_rounds_ms": [0.080, 0.083, 0.090]}, {"latency_rounds_ms": [0.086, 0.088, 0.095]}
    assert speed_tie(fast, slow) and speed_tie(slow, fast)
    assert not speed_tie(fast, {"latency_rounds_ms": [0.100, 0.110, 0.105]})
    assert not speed_tie({"latency_rounds_ms": [0.08]}, {"latency_rounds_ms": [0.08]})  # one process: no spread known


def test_bad_budgets_are_one_line_errors():
    for kwargs, text in (({"max_bytes": -5}, "max_bytes"), ({"objective": "speed"}, "objective"),
                         ({"threads": (0,)}, "threads"), ({"variants": ("tflite_qat_int8",)}, "post-training"),
                         ({"size_measure": "zip"}, "size_measure"), ({"validation_images": 10}, "validation_images"),
                         ({"export": {"prune_epochs": 1}}, "ExportConfig"), ({"bench": BenchConfig}, "BenchConfig")):
        with pytest.raises(ConfigError, match=text):
            TuneConfig(**kwargs)


SMALL = dict(variants=("tflite_fp32", "tflite_int8", "onnx_fp32", "onnx_int8"), validation_images=100, sparsities=(0.5,),
             export=ExportConfig(calibration=CalibrationConfig(count=64), prune=PruneConfig(epochs=1), qat=QATConfig(epochs=1)),
             bench=BenchConfig(runs=20, warmup=2, repeats=1))


def test_tune_end_to_end_then_resume_with_another_budget(trained_tiny, tmp_path):
    """Post-training and fine-tuned candidates on the real fixture: every candidate measured, the
    winner within budget, its bundle runs, the test split read for the winner only; the same
    command again redoes nothing, and another budget re-chooses from the recorded measurements."""
    from edgecls import runtime
    from edgecls.bundle import load_bundle
    from edgecls.tune import tune

    out = tmp_path / "t"
    result = tune(trained_tiny.out, data=str(TINY_ZIP), out=out,
                  config=TuneConfig(max_drop=5.0, fine_tune="always", keep_frontier=True, **SMALL))
    rec = json.loads((out / "tune.json").read_text())
    assert set(rec["stages"]) == {"tflite", "onnx", "qat", "pruned50"}
    assert rec["validation"]["images"] == 100 and rec["validation"]["train_images_left"] == 100
    arts = {c["artifact"] for c in rec["candidates"]}
    assert {"tflite_int8", "onnx_int8", "tflite_qat_int8", "tflite_pruned_int8:50", "tflite_pruned_qat_int8:50"} <= arts
    ok = [c for c in rec["candidates"] if c["status"] == "ok"]
    assert ok and all(c["latency_ms"] > 0 and 0 <= c["accuracy"] <= 1 for c in ok)
    w = result.winner
    assert w is not None and w["drop"] <= 5.0 and w["status"] == "ok"
    feasible = [c for c in ok if c["drop"] <= 5.0]
    assert w["latency_ms"] == min(c["latency_ms"] for c in feasible)
    test = rec["choice"]["test"]
    assert test["images"] == 100 and 0 < test["accuracy"] <= 1  # the fixture's 100 test images, read for the winner
    # The winner first, then the rest of the front (accuracy against latency), each renamed to a plain name.
    front = [a for a in rec["front"] if a != w["artifact"]]
    assert load_bundle(out / "bundle").names() == [a.replace(":", "_s").replace("+", "_") for a in [w["artifact"], *front]]
    probs = runtime.load(out / "bundle").predict(np.zeros((2, 32, 32, 3), np.uint8))
    assert probs.shape == (2, 10)
    html = (out / "tune.html").read_text()
    assert html.count("<svg") == 2 and html.count("data:image/png") == 0 and w["id"] in html  # latency and size charts
    stamps = {p: p.stat().st_mtime_ns for p in (out / "work").glob("*/manifest.json")}

    again = tune(trained_tiny.out, data=str(TINY_ZIP), out=out,
                 config=TuneConfig(max_drop=5.0, max_bytes=120_000, fine_tune="always", keep_frontier=True, **SMALL))
    assert {p: p.stat().st_mtime_ns for p in (out / "work").glob("*/manifest.json")} == stamps  # nothing re-exported
    rec2 = json.loads((out / "tune.json").read_text())
    assert rec2["resumed"] == 1
    assert [c["latency_ms"] for c in rec2["candidates"]] == [c["latency_ms"] for c in rec["candidates"]]
    if again.winner is not None:
        assert again.winner["bytes"] <= 120_000
    else:  # the earlier winner's bundle does not stay as if it were this run's answer
        assert "no candidate meets" in again.answer[0] and not (out / "bundle").exists()


@pytest.mark.skipif(__import__("importlib").util.find_spec("tflite_micro") is None, reason="tflite-micro not installed")
def test_tune_under_microcontroller_budgets_with_real_tflite_micro_figures(tmp_path):
    """The TFLite files run under TFLite Micro during the search: with room enough the pick is a
    full-integer file that fits; with an arena budget below every file's, nothing is picked and the
    answer says by how much the closest misses (the same search resumed: nothing re-exported)."""
    from edgecls.tune import tune

    out = tmp_path / "m"
    small = {**SMALL, "variants": ("tflite_fp32", "tflite_int8", "tflite_int8_pixels"), "validation_images": 200}
    model = ROOT / "models" / "seed_cnn"  # a real model: its int8 files validate
    result = tune(model, data="cifar10-sample", out=out,
                  config=TuneConfig(max_ram_kb=512, max_flash_kb=1024, board="a 512 KB board", fine_tune="never", **small))
    rec = json.loads((out / "tune.json").read_text())
    assert set(rec["stages"]) == {"tflite"} and rec["space"]["micro"] is True  # no ONNX stage under these budgets
    w = result.winner
    assert w is not None and w["variant"] in ("tflite_int8", "tflite_int8_pixels") and w["micro_status"] == "ok"
    manifest = json.loads((out / "work" / "tflite" / "manifest.json").read_text())
    micro = next(a for a in manifest["artifacts"] if a["name"] == w["variant"])["micro"]
    assert w["ram_bytes"] == micro["ram_bytes"] <= 512 * 1024 and w["flash_bytes"] == micro["flash_bytes"]
    assert "under TFLite Micro: RAM" in result.answer[0] and ", fits a 512 KB board" in result.answer[0]
    floats = [c for c in rec["candidates"] if c["variant"] == "tflite_fp32"]
    assert floats and all(c.get("ram_bytes") is None for c in floats)  # not a TFLM target: never picked
    arena = min(c["arena_bytes"] for c in rec["candidates"] if c.get("arena_bytes"))
    tight = (arena // 2) / 1024
    again = tune(model, data="cifar10-sample", out=out,
                 config=TuneConfig(max_ram_kb=tight, max_flash_kb=1024, fine_tune="never", **small))
    assert again.winner is None
    assert f"over --max-ram-kb {tight:g}" in again.answer[0]


def test_a_search_with_another_space_is_not_resumed_over(trained_tiny, tmp_path):
    from edgecls.tune import tune

    out = tmp_path / "t"
    tune(trained_tiny.out, data=str(TINY_ZIP), out=out, config=TuneConfig(fine_tune="never", test=False, **SMALL))
    with pytest.raises(ConfigError, match="other settings \\(threads\\)"):
        tune(trained_tiny.out, data=str(TINY_ZIP), out=out, config=TuneConfig(fine_tune="never", threads=(1, 2), **SMALL))


@pytest.mark.slow
def test_ctrl_c_then_the_same_command_resumes_without_repeating_work(trained_tiny, tmp_path):
    out = tmp_path / "t"
    cmd = [sys.executable, "-m", "edgecls.cli", "tune", str(trained_tiny.out), "--data", str(TINY_ZIP), "--out", str(out),
           "--variants", "tflite_fp32", "tflite_int8", "onnx_fp32", "onnx_int8", "--validation-images", "100",
           "--calibration-count", "64", "--runs", "20", "--repeats", "1", "--sparsities", "0.5", "--prune-epochs", "1",
           "--qat-epochs", "1", "--fine-tune", "always", "--max-drop", "5"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    record = out / "tune.json"
    deadline = time.time() + 300
    while time.time() < deadline:  # interrupt once the post-training stages are recorded
        if record.is_file():
            try:
                if {"tflite", "onnx"} <= set(json.loads(record.read_text())["stages"]):
                    break
            except ValueError:
                pass
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].endswith("run the same command to resume")
    first = json.loads(record.read_text())
    stamps = {p: p.stat().st_mtime_ns for p in (out / "work").glob("*/manifest.json")}
    assert {"tflite", "onnx"} <= set(first["stages"]) and not (out / "bundle").exists()

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming the search" in done.stderr or "resuming" in done.stderr
    after = {p: p.stat().st_mtime_ns for p in (out / "work").glob("*/manifest.json")}
    assert all(after[p] == t for p, t in stamps.items())  # finished stages were not exported again
    lines = done.stdout.strip().splitlines()
    assert lines[-2].split("@")[0] in {c["artifact"] for c in json.loads(record.read_text())["candidates"]}
    assert (out / "bundle" / "manifest.json").is_file()


def test_tune_bad_input_is_one_line_before_any_work(trained_tiny, tmp_path):
    from .conftest import assert_one_line_error, run_cli

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    base = ("tune", trained_tiny.out, "--data", TINY_ZIP)
    assert_one_line_error(run_cli(*base, "--out", foreign), "edgecls did not write")
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    assert_one_line_error(run_cli(*base, "--out", tmp_path / "a", "--threads", "1,two"), "comma-separated integers")
    assert_one_line_error(run_cli(*base, "--out", tmp_path / "b", "--max-bytes", "0"), "--max-bytes: 0 is out of range")
    assert_one_line_error(run_cli(*base, "--out", tmp_path / "c", "--validation-images", "150"), "at most half")
    assert not any((tmp_path / n).exists() for n in "abc")
    # A tune.json whose stage would lead out of OUT/work is refused, not followed.
    hostile = tmp_path / "d"
    hostile.mkdir()
    (hostile / "tune.json").write_text(json.dumps({"kind": "edgecls-tune", "schema": 1, "candidates": [],
                                                   "stages": {"../../elsewhere": {"bundle": "/etc"}}}))
    assert_one_line_error(run_cli(*base, "--out", hostile), "not a tune record edgecls wrote")


@pytest.mark.slow
def test_the_readme_quick_tour_search_on_the_built_in_sample(tmp_path):
    """The README's `edgecls tune` line, as written, on the built-in sample: it ends with the
    two-line answer and a bundle of the pick within the budget."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("edgecls tune models/seed_cnn"))
    args = shlex.split(line.split("#")[0])[1:]
    out = tmp_path / "tune"
    args[args.index("--out") + 1] = str(out)
    budget = float(args[args.index("--max-drop") + 1])
    proc = subprocess.run([sys.executable, "-m", "edgecls.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pick, why = proc.stdout.strip().splitlines()[-2:]
    assert re.match(r"\S+@1t: top-1 [\d.]+% on validation", pick) and why.startswith("fastest of ")
    record = json.loads((out / "tune.json").read_text())
    winner = record["choice"]["winner"]
    assert winner["drop"] <= budget and (out / "bundle" / "manifest.json").is_file()
    assert record["choice"]["test"]["images"] == 1000  # the sample's test split, read once
