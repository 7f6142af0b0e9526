"""Does a fresh bench reproduce a committed one? Compare two `edgecls bench` reports variant by variant.

    edgecls bench models/resnet8 --data ../shared/datasets/cifar10-jpeg.zip --keras --threads 1 --runs 300 \
        --out runs/repro-resnet8.json
    python tools/release/compare_reports.py models/resnet8/report.json runs/repro-resnet8.json

Accuracy, agreement and file sizes must match (to --accuracy-tolerance points, default 0: the
runtimes are deterministic on the same images and files); a variant missing from either report, or
measured on a different number of images, is a difference too. Latency and throughput depend on the
host, so they are printed as ratios (new / committed) and never decide the verdict.
Prints one line per variant and a verdict; exits 0 if the accuracy side reproduces, 1 if not,
2 on unreadable input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class ReportError(Exception):
    pass


def load_report(path: str) -> dict[str, dict]:
    p = Path(path)
    try:
        report = json.loads(p.read_text())
        rows = {v["name"]: v for v in report["variants"]}
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file; pass the report.json an 'edgecls bench --out' wrote") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise ReportError(f"{path}: not an 'edgecls bench' report (JSON with a 'variants' list); "
                          f"pass the report.json an 'edgecls bench --out' wrote") from None
    return rows


def _ratio(new, old):
    return None if not new or not old else new / old


def compare(old: dict[str, dict], new: dict[str, dict], tolerance_points: float = 0.0) -> tuple[list[dict], bool]:
    """One row per variant in either report, and whether every accuracy-side figure reproduces."""
    rows, ok = [], True
    for name in list(old) + [n for n in new if n not in old]:
        a, b = old.get(name), new.get(name)
        row = {"variant": name, "problems": []}
        if a is None or b is None:
            row["problems"].append("only in the " + ("new" if a is None else "committed") + " report")
        else:
            if a.get("images") != b.get("images"):
                row["problems"].append(f"images {a.get('images')} -> {b.get('images')}")
            for key in ("accuracy", "agreement"):
                x, y = a.get(key), b.get(key)
                if (x is None) != (y is None) or (x is not None and abs(100 * (y - x)) > tolerance_points + 1e-9):
                    row["problems"].append(f"{key} {x} -> {y}")
            if a.get("size_bytes") != b.get("size_bytes"):
                row["problems"].append(f"bytes {a.get('size_bytes')} -> {b.get('size_bytes')}")
            row.update(accuracy=b.get("accuracy"),
                       p50_ratio=_ratio((b.get("latency_ms") or {}).get("p50"), (a.get("latency_ms") or {}).get("p50")),
                       ips_ratio=_ratio(b.get("throughput_ips"), a.get("throughput_ips")))
        ok = ok and not row["problems"]
        rows.append(row)
    return rows, ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("committed", help="the report to reproduce (e.g. models/resnet8/report.json)")
    ap.add_argument("new", help="a fresh report of the same bundle on the same data")
    ap.add_argument("--accuracy-tolerance", type=float, default=0.0, metavar="POINTS",
                    help="allowed top-1/agreement difference in percentage points (default 0)")
    args = ap.parse_args(argv)
    try:
        old, new = load_report(args.committed), load_report(args.new)
    except ReportError as e:
        print(f"compare_reports: error: {e}", file=sys.stderr)
        return 2
    rows, ok = compare(old, new, args.accuracy_tolerance)
    for r in rows:
        if r["problems"]:
            print(f"DIFF  {r['variant']:24s} " + "; ".join(r["problems"]))
        else:
            p50 = f"{r['p50_ratio']:.2f}" if r["p50_ratio"] else "-"
            ips = f"{r['ips_ratio']:.2f}" if r["ips_ratio"] else "-"
            print(f"same  {r['variant']:24s} top-1 {100 * r['accuracy']:.2f}%  p50 x{p50}  img/s b32 x{ips} (new / committed)")
    ratios = [r["p50_ratio"] for r in rows if r.get("p50_ratio")]
    span = f"; p50 latency x{min(ratios):.2f}-{max(ratios):.2f} of the committed (host-dependent)" if ratios else ""
    print(("REPRODUCED: accuracy, agreement and sizes identical" if ok else "NOT REPRODUCED: see the DIFF lines") + span)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
