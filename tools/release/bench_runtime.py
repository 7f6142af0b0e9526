"""Runtime overhead and repeatability on one real image (the runtime targets; never a timed test).

    python tools/release/bench_runtime.py --bundle runs/bench-export/bundle --keras runs/full/resnet8 \
        --out runs/bench-runtime

Measures, single thread, same process, on the same preprocessed tensor of one held-out image:
  bare   LiteRT set_tensor + invoke + get_tensor on the already quantized tensor,
  runner edgecls.runtime's runner.predict(uint8 image) (preprocessing, quantization, dequantization),
  keras  the fp32 Keras model: model.predict(x) and model(x) (what leaving TensorFlow buys).
After --warmup-s seconds of untimed calls and a --probe-s host probe (is the CPU steady?), three rounds, each timing the two calls alternately;
reports each round's p50 and the spread (max - min) / median.

With --processes N it runs all of that in N fresh processes, one after the other (a process is
what a user's run is: its own interpreter, allocations and cache state), and writes
summary.json/summary.md beside them: per variant, each process's p50 (the median of its rounds),
the spread across the processes, and the targets judged over all of them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edgecls import runtime  # noqa: E402
from edgecls.bench import latency_stats, time_calls  # noqa: E402
from edgecls.hostinfo import runtime_versions  # noqa: E402
from edgecls.data import load_dataset  # noqa: E402
from edgecls.hostinfo import host_info  # noqa: E402
from edgecls.runtime.backends import tflite_interpreter_class  # noqa: E402


def interleaved(bare_call, runner_call, runs: int, warmup: int = 200) -> dict:
    """Time the two calls alternately (ABBA order) so that drift in the machine's speed (frequency
    changes, a neighbour's load on a shared host) hits both equally."""
    for _ in range(warmup):
        bare_call()
        runner_call()
    bare_ms, runner_ms = np.empty(runs), np.empty(runs)
    clock = time.perf_counter
    for i in range(runs):
        first, second = (bare_call, runner_call) if i % 2 == 0 else (runner_call, bare_call)
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        a, b = (t1 - t0, t2 - t1) if i % 2 == 0 else (t2 - t1, t1 - t0)
        bare_ms[i], runner_ms[i] = a * 1000, b * 1000
    return {"bare": latency_stats(bare_ms), "runner": latency_stats(runner_ms)}


def settle(bare_call, runner_call, seconds: float) -> int:
    """Run both calls alternately for `seconds` before anything is timed, so that the first round
    does not pay for what the later ones find ready (CPU frequency ramp-up, caches, lazily
    allocated buffers). Returns the number of pairs run."""
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        bare_call()
        runner_call()
        n += 1
    return n


def host_probe(call, seconds: float, window: float = 0.1) -> dict:
    """Is the CPU this process runs on steady? The same call, timed for `seconds` in windows of
    `window` seconds: the spread of the windows' medians. On a quiet machine they agree within a
    few percent; on a shared VM whose core's other hyperthread belongs to a busy neighbour they
    switch between two levels (here 82.5 and ~130 us for the same invoke) that `top` does not show
    as steal time, and no repeatability target can be checked."""
    medians, clock = [], time.perf_counter
    end = clock() + seconds
    while clock() < end:
        times, stop = [], clock() + window
        while clock() < stop:
            t0 = clock()
            call()
            times.append(clock() - t0)
        medians.append(float(np.median(times)) * 1000)
    m = np.array(medians)
    fastest = float(m.min())
    return {"seconds": seconds, "windows": len(m), "fastest_ms": round(fastest, 4), "median_ms": round(float(np.median(m)), 4),
            "slowest_ms": round(float(m.max()), 4),
            "share_within_5pct_of_fastest": round(float((m <= fastest * 1.05).mean()), 3),
            "share_over_20pct_slower": round(float((m > fastest * 1.2).mean()), 3)}


def relative_spread(values) -> float:
    """(max - min) / median: how far a series' p50s are from repeating."""
    return round((max(values) - min(values)) / float(np.median(values)), 4)


def measure_variant(bundle, variant, data, runs, rounds, warmup_s: float = 0.0, probe_s: float = 0.0) -> dict:
    runner = runtime.load(bundle, variant=variant, threads=1)
    image = load_dataset(data, image_size=runner.preprocessing.input_size).test.images[:1]
    prepared = runner.backend.prepare(runner.preprocess(image))
    Interpreter, package = tflite_interpreter_class()
    bare = Interpreter(model_path=str(runner.backend.path), num_threads=1)
    bare.allocate_tensors()
    inp, out = bare.get_input_details()[0], bare.get_output_details()[0]

    def bare_call():
        bare.set_tensor(inp["index"], prepared)
        bare.invoke()
        return bare.get_tensor(out["index"])

    def runner_call():
        return runner.predict(image)

    # Same answer first: the runner's output is the bare output, dequantized.
    scale, zero = out["quantization"]
    expected = (bare_call().astype(np.float32) - np.float32(zero)) * np.float32(scale) if scale else bare_call()
    np.testing.assert_array_equal(runner_call(), expected)
    settled = settle(bare_call, runner_call, warmup_s)
    probe = host_probe(bare_call, probe_s) if probe_s > 0 else None
    measured = [interleaved(bare_call, runner_call, runs) for _ in range(rounds)]

    def spread(key):
        p50 = [r[key]["p50"] for r in measured]
        return {"p50_per_round": p50, "spread": relative_spread(p50)}

    ratios = [r["runner"]["p50"] / r["bare"]["p50"] for r in measured]
    return {"variant": variant, "input": runner.input_kind, "input_dtype": runner.backend.input_dtype.name,
            "interpreter": package, "host_probe": probe, "settle_s": warmup_s, "settle_pairs": settled, "rounds": measured, "bare": spread("bare"), "runner": spread("runner"),
            "runner_over_bare_p50": [round(x, 4) for x in ratios], "runner_over_bare_median": round(float(np.median(ratios)), 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--variants", nargs="+", default=["tflite_int8", "tflite_int8_pixels"])
    ap.add_argument("--keras", help="the fp32 Keras model directory (edgecls train output) to compare against")
    ap.add_argument("--data", default="cifar10-sample", help="where the held-out image comes from")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--keras-runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup-s", type=float, default=3.0,
                    help="seconds of untimed alternating calls before the first round (default 3)")
    ap.add_argument("--probe-s", type=float, default=10.0,
                    help="seconds of bare calls in 0.1 s windows before the rounds, to show whether the host is "
                         "steady enough for the repeatability target (default 10; 0: skip)")
    ap.add_argument("--out", default="runs/bench-runtime")
    ap.add_argument("--cpu", type=int, default=1,
                    help="pin the process to this CPU (fewer migrations, steadier numbers); -1: no pinning")
    ap.add_argument("--processes", type=int, default=1,
                    help="run the whole measurement in this many fresh processes, one after the other, and "
                         "summarize the spread across them (default 1)")
    args = ap.parse_args()
    if args.processes < 1:
        ap.error("--processes must be at least 1")
    if args.processes > 1:
        return run_processes(args)
    host = host_info()  # before pinning, which would make it count one core
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    variants = [measure_variant(args.bundle, v, args.data, args.runs, args.rounds, args.warmup_s, args.probe_s) for v in args.variants]
    keras = None
    if args.keras:
        from edgecls._deps import tensorflow
        from edgecls.modelio import load_trained

        tf = tensorflow()
        # Before any TensorFlow op runs: one intra-op thread, like the runtime.
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        trained = load_trained(args.keras)
        x = trained.preprocessing.apply(load_dataset(args.data).test.images[:1])
        keras = {"predict": time_calls(lambda: trained.model.predict(x, verbose=0), warmup=20, runs=args.keras_runs),
                 "call": time_calls(lambda: trained.model(x, training=False), warmup=20, runs=args.keras_runs)}
    targets = []
    for v in variants:
        targets += [
            {"target": f"{v['variant']}: runner.predict / bare invoke (p50, median of rounds)",
             "value": v["runner_over_bare_median"], "rule": "<= 1.10", "pass": v["runner_over_bare_median"] <= 1.10},
            {"target": f"{v['variant']}: p50 spread across rounds (bare)", "value": v["bare"]["spread"], "rule": "<= 0.05",
             "pass": v["bare"]["spread"] <= 0.05},
            {"target": f"{v['variant']}: p50 spread across rounds (runner)", "value": v["runner"]["spread"], "rule": "<= 0.05",
             "pass": v["runner"]["spread"] <= 0.05},
        ]
    report = {
        "command": " ".join(["python", *sys.argv]), "bundle": args.bundle, "image": f"first test image of {args.data}",
        "host": host, "runtime": runtime_versions(), "threads": 1, "pinned_cpu": args.cpu,
        "variants": variants, "keras_fp32": keras,
        "targets": targets, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    md = render(report)
    (outdir / "results.md").write_text(md)
    print(md)


def _without_option(argv: list[str], name: str) -> list[str]:
    """argv without `name VALUE` / `name=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def run_processes(args) -> None:
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    child_argv = _without_option(_without_option(sys.argv[1:], "--processes"), "--out")
    reports = []
    for i in range(1, args.processes + 1):
        child_out = outdir / f"process-{i}"
        print(f"process {i}/{args.processes} -> {child_out}", flush=True)
        subprocess.run([sys.executable, str(Path(__file__).resolve()), *child_argv, "--out", str(child_out)],
                       check=True, stdout=subprocess.DEVNULL)
        reports.append(json.loads((child_out / "results.json").read_text()))
    summary = summarize(reports)
    summary["command"] = " ".join(["python", *sys.argv])
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = render_summary(summary)
    (outdir / "summary.md").write_text(md)
    print(md)


def summarize(reports: list[dict]) -> dict:
    """Targets over several processes' results: runner / bare in every process, and each series'
    p50 (a process's median of its rounds) repeating across processes within 5%."""
    variants, targets = [], []
    for name in [v["variant"] for v in reports[0]["variants"]]:
        per = [next(v for v in r["variants"] if v["variant"] == name) for r in reports]
        bare = [round(float(np.median(v["bare"]["p50_per_round"])), 4) for v in per]
        runner = [round(float(np.median(v["runner"]["p50_per_round"])), 4) for v in per]
        ratios = [v["runner_over_bare_median"] for v in per]
        steady = [v["host_probe"]["share_over_20pct_slower"] <= 0.05 for v in per if v.get("host_probe")]
        bare_spread, runner_spread = relative_spread(bare), relative_spread(runner)
        variants.append({"variant": name, "bare_p50_per_process": bare, "runner_p50_per_process": runner,
                         "bare_spread": bare_spread, "runner_spread": runner_spread,
                         "runner_over_bare_per_process": ratios,
                         "within_process_spreads": [[v["bare"]["spread"], v["runner"]["spread"]] for v in per],
                         "host_steady_per_process": steady})
        targets += [
            {"target": f"{name}: runner.predict / bare invoke, every process", "value": max(ratios), "rule": "<= 1.10",
             "pass": max(ratios) <= 1.10},
            {"target": f"{name}: p50 spread across processes (bare)", "value": bare_spread, "rule": "<= 0.05",
             "pass": bare_spread <= 0.05},
            {"target": f"{name}: p50 spread across processes (runner)", "value": runner_spread, "rule": "<= 0.05",
             "pass": runner_spread <= 0.05},
        ]
    first = reports[0]
    return {"processes": len(reports), "host": first["host"], "runtime": first["runtime"], "pinned_cpu": first["pinned_cpu"],
            "image": first["image"], "variants": variants, "targets": targets,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def render_summary(s: dict) -> str:
    lines = [f"Command: `{s['command']}`", "",
             f"Machine: {s['host']['cpu']}, {s['host']['cores']} cores, {s['host']['os']}; ai-edge-litert "
             f"{s['runtime'].get('ai-edge-litert', '')}, 1 thread, pinned to CPU {s['pinned_cpu']}; {s['image']}; "
             f"{s['processes']} processes one after the other (p50 of a process: the median of its rounds)", "",
             "| variant | bare p50 ms per process | spread | runner p50 ms per process | spread | runner / bare per process | host steady |",
             "|---|---|---:|---|---:|---|---|"]
    for v in s["variants"]:
        steady = v["host_steady_per_process"]
        lines.append(f"| {v['variant']} | {', '.join(f'{x:.4f}' for x in v['bare_p50_per_process'])} | {v['bare_spread']:.1%} "
                     f"| {', '.join(f'{x:.4f}' for x in v['runner_p50_per_process'])} | {v['runner_spread']:.1%} "
                     f"| {', '.join(f'{x:.3f}' for x in v['runner_over_bare_per_process'])} "
                     f"| {sum(steady)} of {len(steady)} |")
    lines += ["", "Host steady: the process's probe found at most 5% of its 0.1 s windows more than 20% slower than "
                  "the fastest; only steady processes speak to repeatability.", "",
              "| target | value | rule | result |", "|---|---:|---|---|"]
    for t in s["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {t['rule']} | {'PASS' if t['pass'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def render(r) -> str:
    lines = [f"Command: `{r['command']}`", "",
             f"Machine: {r['host']['cpu']}, {r['host']['cores']} cores, {r['host']['os']}; ai-edge-litert "
             f"{r['runtime'].get('ai-edge-litert', '')}, 1 thread, pinned to CPU {r['pinned_cpu']}; {r['image']}", ""]
    for v in r["variants"]:
        n = len(v["rounds"])
        lines += [f"{v['variant']} (input {v['input']}, {v['input_dtype']}; {v.get('settle_s', 0):g} s of untimed calls "
                  f"({v.get('settle_pairs', 0):,} pairs) before round 1):", "",
                  "| what | " + " | ".join(f"round {i + 1} p50 ms" for i in range(n)) + " | spread |", "|---|" + "---:|" * (n + 1)]
        for key, label in (("bare", "bare LiteRT set_tensor + invoke + get_tensor"), ("runner", "runner.predict(uint8 image)")):
            lines.append(f"| {label} | " + " | ".join(f"{p:.4f}" for p in v[key]["p50_per_round"]) + f" | {v[key]['spread']:.1%} |")
        lines += ["", f"runner / bare (p50): {', '.join(f'{x:.3f}' for x in v['runner_over_bare_p50'])}; "
                      f"median {v['runner_over_bare_median']:.3f}", ""]
        probe = v.get("host_probe")
        if probe:
            lines += [f"Host probe before the rounds ({probe['seconds']:g} s of bare calls, {probe['windows']} windows of "
                      f"0.1 s): window p50 {probe['fastest_ms']:.4f}-{probe['slowest_ms']:.4f} ms, median "
                      f"{probe['median_ms']:.4f}; {probe['share_within_5pct_of_fastest']:.0%} of windows within 5% of "
                      f"the fastest, {probe['share_over_20pct_slower']:.0%} more than 20% slower"
                      + (" (the host was not steady: repeatability cannot be judged from this run)."
                         if probe["share_over_20pct_slower"] > 0.05 else "."), ""]
    if r["keras_fp32"]:
        k = r["keras_fp32"]
        lines += ["| Keras fp32 (TensorFlow, 1 intra-op thread) | p50 ms | p99 ms |", "|---|---:|---:|",
                  f"| model.predict(x) | {k['predict']['p50']:.3f} | {k['predict']['p99']:.3f} |",
                  f"| model(x, training=False) | {k['call']['p50']:.3f} | {k['call']['p99']:.3f} |", ""]
    lines += ["| target | value | rule | result |", "|---|---:|---|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {t['rule']} | {'PASS' if t['pass'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
