"""Peak resident memory of `edgecls export`, measured with GNU time (`/usr/bin/time -v`: the largest
resident set of the export process and every process it started), against a target per case.

    python tools/release/export_memory.py --data ../datasets/cifar10-jpeg.zip --out runs/memory

Cases (each an ordinary export of the post-training variants, validated on the data's test split):
  resnet8-32      the shipped models/resnet8 (32x32), every test image;       target 1.5 GB
  mobilenet-32    the shipped models/mobilenet_tiny (32x32), every test image; target 1.5 GB
  mobilenetv2-96  a Keras 3 MobileNetV2 (alpha 0.35, 96x96 input, 10 classes, untrained weights:
                  memory does not depend on them) saved as .keras, 2,000 evaluation images;
                                                                                target 2.0 GB
Beside GNU time's figure (the largest single process) it samples the resident memory of the export
and all its processes together every 0.2 s: "tree peak", what the machine must hold at once.
Each case runs twice with a decode cache of its own (EDGECLS_CACHE under --out): "cold", the first
run, decodes the data set into the cache; "warm" reads it back memory-mapped. Prints one row per
case and run (peak MB, wall seconds, variants validated) and exits 1 when a run exceeds its case's
target. --cases picks some.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PTQ = ["tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8", "onnx_fp32", "onnx_int8"]
CASES = {
    "resnet8-32": (str(ROOT / "models" / "resnet8"), [], 1500),
    "mobilenet-32": (str(ROOT / "models" / "mobilenet_tiny"), [], 1500),
    "mobilenetv2-96": (None, ["--scale", "1/127.5", "--mean", "1", "--std", "1", "--max-eval-images", "2000"], 2000),
}


def mobilenetv2(folder: Path) -> str:
    """A Keras 3 MobileNetV2 0.35 at 96x96 with 10 classes, saved as .keras (no weights downloaded)."""
    path = folder / "mobilenetv2_035_96.keras"
    if not path.is_file():
        code = ("import keras; keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, "
                f"classes=10).save({str(path)!r})")
        subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return str(path)


def tree_rss_kb(pid: int) -> int:
    """The resident kB of process `pid` and all its descendants now (/proc; shared library pages
    count once per process, so this is an upper bound of what they hold together)."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            total = next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        return total
    return total + sum(tree_rss_kb(child) for child in children)


def measure(name: str, model: str, extra: list[str], data: str, out: Path, cache: str) -> dict:
    bundle = out / f"{name}-{cache}"
    log = out / f"{name}-{cache}.log"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "edgecls.cli", "export", model, "--data", data,
           "--out", str(bundle), "--formats", *PTQ, *extra]
    started = time.time()
    with open(log, "w") as fh:
        env = {**os.environ, "EDGECLS_CACHE": str(out / f"cache-{name}")}
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        tree_peak = 0
        while proc.poll() is None:
            tree_peak = max(tree_peak, tree_rss_kb(proc.pid))
            time.sleep(0.2)
        code = proc.returncode
    text = log.read_text()
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    validated = None
    if (bundle / "manifest.json").is_file():
        validated = len(json.loads((bundle / "manifest.json").read_text())["artifacts"])
    return {"case": name, "cache": cache, "exit": code, "peak_mb": round(int(peak.group(1)) / 1024) if peak else None,
            "tree_peak_mb": round(tree_peak / 1024),
            "seconds": round(time.time() - started, 1), "validated": validated, "variants": len(PTQ)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, over = [], []
    for name in args.cases:
        model, extra, target = CASES[name]
        model = model or mobilenetv2(args.out)
        if (args.out / f"cache-{name}").exists():
            raise SystemExit(f"{args.out / f'cache-{name}'} exists: choose a new --out")
        for cache in ("cold", "warm"):
            row = {**measure(name, model, extra, args.data, args.out, cache), "target_mb": target}
            rows.append(row)
            if row["exit"] != 0 or row["peak_mb"] is None or row["peak_mb"] > target:
                over.append(f"{name} ({cache})")
            print(f"{name:16} {cache:5} peak {row['peak_mb']} MB (target {target}; all processes together at most "
                  f"{row['tree_peak_mb']} MB), {row['seconds']} s, "
                  f"{row['validated']}/{row['variants']} validated, exit {row['exit']}", flush=True)
    (args.out / "memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    if over:
        print(f"over target or failed: {', '.join(over)}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
