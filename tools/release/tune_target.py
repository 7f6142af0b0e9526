"""`edgecls tune` on a shipped model and the full CIFAR-10 training data: the pick against today's
fixed export grid, and a compressed-size budget (BENCHMARKS.md "Choosing a variant: edgecls tune").

    python tools/release/tune_target.py --model models/resnet8 --data ../datasets/cifar10-jpeg.zip --out runs/tune-resnet8

One search folder, three runs of the same command line with different budgets (the later ones
resume the first: nothing measured is measured again):

1. `--max-drop 0.5 --objective latency`, fine-tuning left to the search (`--fine-tune auto`): what a
   user gets, and how long it takes;
2. the same with `--fine-tune always` (pruning at each sparsity, QAT, pruning with QAT): the search
   space then holds every variant of the default export grid (`edgecls export` without --formats,
   pruned at 50%), so the pick can be checked against each grid variant within the same budget,
   measured in the same run;
3. `--max-bytes 40000 --size gzip --max-drop 2 --objective accuracy`: the most accurate file within
   40,000 gzip bytes and 2 points of the float model (a pruned int8 file, since nothing else is that
   small), or the closest candidate and by how much it misses.

Latency is measured here at 1 thread. Exit status 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _tune(common, *extra) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "edgecls.cli", "tune", *common, *extra]
    print("$ edgecls", " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    code = subprocess.run(cmd, cwd=ROOT).returncode
    return code, time.perf_counter() - t0


def grid_names() -> set[str]:
    """Today's fixed grid: the default export group, its pruned variants at the default sparsity."""
    from edgecls.config import ExportConfig
    from edgecls.export import resolve_formats
    from edgecls.tune import artifact_id

    out = set()
    for name in resolve_formats(ExportConfig.formats):
        stage = f"pruned{round(100 * ExportConfig.prune.sparsity)}" if "pruned" in name else ""
        out.add(artifact_id(stage, name) if stage else name)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "resnet8"))
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sparsities", default="0.5,0.75,0.85")
    ap.add_argument("--max-drop", default="0.5")
    ap.add_argument("--max-gzip", default="40000")
    args = ap.parse_args(argv)
    common = [args.model, "--data", args.data, "--out", str(args.out), "--sparsities", args.sparsities, "--threads", "1"]
    timing = {}
    code, timing["auto"] = _tune(common, "--max-drop", args.max_drop, "--objective", "latency")
    auto = json.loads((args.out / "tune.json").read_text())
    code2, timing["always"] = _tune(common, "--max-drop", args.max_drop, "--objective", "latency", "--fine-tune", "always")
    full = json.loads((args.out / "tune.json").read_text())
    code3, timing["gzip"] = _tune(common, "--max-bytes", args.max_gzip, "--size", "gzip", "--max-drop", "2",
                                  "--objective", "accuracy")
    size = json.loads((args.out / "tune.json").read_text())

    (args.out / "timing.json").write_text(json.dumps(timing, indent=2))
    print(f"\nsearch 1 (--fine-tune auto): {timing['auto'] / 60:.1f} min, fine-tuning: {auto['fine_tune']}")
    print(f"search 2 (--fine-tune always, resumed): {timing['always'] / 60:.1f} more min; "
          f"{full['elapsed_s'] / 60:.1f} min of search in all")
    pick = full["choice"]["winner"]
    grid = grid_names()
    rows = {c["id"]: c for c in full["candidates"]}
    limit = float(args.max_drop)
    print(f"\nthe pick: {pick['id']}, p50 {pick['latency_ms']:.4f} ms, drop {pick['drop']:+.2f} points on validation")
    print("| grid variant | drop (points, validation) | p50 ms 1t | within budget | pick as fast |")
    print("|---|---:|---:|---|---|")
    slower = []
    for art in sorted(grid):
        c = rows.get(f"{art}@1t")
        if c is None or c["status"] != "ok":
            print(f"| {art} | | | {'not validated' if c else 'not in the search'} | |")
            continue
        within = c["drop"] <= limit
        ok = (not within) or pick["latency_ms"] <= c["latency_ms"]
        if not ok:
            slower.append(art)
        print(f"| {art} | {c['drop']:+.2f} | {c['latency_ms']:.4f} | {'yes' if within else 'no'} | {'yes' if ok else 'NO'} |")
    t1 = not slower
    print(f"target 1 (pick at least as fast as every grid variant within --max-drop {args.max_drop}): "
          f"{'met' if t1 else 'missed: ' + ', '.join(slower)}; whole search {full['elapsed_s'] / 60:.1f} min (limit 120)")
    w = size["choice"]["winner"]
    if w is not None:
        t2 = "pruned" in w["variant"] and w["precision"] == "int8" and w["drop"] <= 2.0
        test = size["choice"].get("test", {})
        print(f"target 2 (within {args.max_gzip} gzip bytes, pruned int8 within 2 points): {'met' if t2 else 'missed'}: "
              f"{w['id']} {w['gzip_bytes']:,} gzip bytes, drop {w['drop']:+.2f} on validation; test {test.get('accuracy')}"
              f" against {test.get('float_accuracy')}")
    else:
        t2 = False
        print(f"target 2: missed: {size['choice']['message']}")

    return 0 if t1 and t2 and code2 == 0 and full["elapsed_s"] <= 7200 else 1


if __name__ == "__main__":
    sys.exit(main())
