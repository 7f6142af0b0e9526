"""Every post-training quantization engine side by side on shipped models (BENCHMARKS.md
"Quantization engines").

    python tools/release/engine_table.py --data ../datasets/cifar10-jpeg.zip --out runs/engines \
        seed_cnn resnet8 mobilenet_tiny

For each model in models/: `edgecls export` of its model.keras with the float variants and the
`engines` group (the same calibration settings as the shipped bundle: 300 training images, seed 0),
validated on every test image of --data; then `edgecls bench` of the validated variants at --threads
(batch-1 p50, the median of --repeats rounds in fresh processes). Rows: engine x format; columns:
top-1 on the test images, its change in points against the same format's fp32 file, top-1 agreement
with the Keras model, bytes, gzip bytes, p50 latency. A variant that failed validation keeps its
accuracy row with the reason and no latency. Writes OUT/<model>/ (bundle, bench.json) and
OUT/engines.md; prints the table.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOATS = ("tflite_fp32", "onnx_fp32")


def _edgecls(*args: str) -> None:
    cmd = [sys.executable, "-m", "edgecls.cli", *args]
    print("$", " ".join(["edgecls", *args]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def measure(model: str, data: str, out: Path, threads: int, repeats: int) -> tuple[dict, dict]:
    folder = out / model
    bundle, bench = folder / "bundle", folder / "bench.json"
    if not (bundle / "manifest.json").is_file():
        _edgecls("export", str(ROOT / "models" / model), "--data", data, "--out", str(bundle),
                 "--formats", *FLOATS, "engines")
    if not bench.is_file():
        _edgecls("bench", str(bundle), "--threads", str(threads), "--repeats", str(repeats), "--out", str(bench))
    return json.loads((bundle / "manifest.json").read_text()), json.loads(bench.read_text())


def _int(value) -> str:
    return "-" if value is None else f"{int(value):,}"


def rows(model: str, manifest: dict, bench: dict) -> list[str]:
    from edgecls.export import VARIANTS
    from edgecls.export.engines import ENGINES

    every = {r["name"]: r for r in manifest["artifacts"] + manifest["rejected"]}
    timed = {v["name"]: v for v in bench["variants"]}
    base = {fmt: every.get(f"{fmt}_fp32", {}).get("validation", {}).get("accuracy") for fmt in ("tflite", "onnx")}
    lines = []
    for name, row in every.items():
        variant = VARIANTS.get(name)
        if variant is None:
            continue
        v = row.get("validation", {})
        acc = v.get("accuracy")
        ref = base.get(row["format"])
        delta = f"{100 * (acc - ref):+.2f}" if acc is not None and ref is not None else "-"
        latency = (timed.get(name) or {}).get("latency_ms", {}).get("p50")
        engine = ENGINES.get(variant.engine, "float") if variant.engine else "float"
        status = "" if row["status"] == "ok" else f" ({row['status']}: {row.get('reason', '')})"
        size = row.get("size", {})
        top1 = "-" if acc is None else f"{100 * acc:.2f}"
        agree = "-" if "agreement" not in v else f"{100 * v['agreement']:.2f}"
        p50 = "-" if latency is None else f"{latency:.3f}"
        lines.append(f"| {model} | {name} | {engine} | {variant.precision} | {top1} | {delta} | {agree} | "
                     f"{_int(size.get('bytes'))} | {_int(size.get('gzip_bytes'))} | {p50}{status} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", required=True, help="labelled data the models were trained on (its test split is read)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["| model | variant | engine | precision | top-1 % | Δ vs same-format fp32 | agreement % | bytes | gzip | "
             f"p50 ms ({args.threads} thread{'s' if args.threads > 1 else ''}) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    host = None
    for model in args.models:
        manifest, bench = measure(model, args.data, args.out, args.threads, args.repeats)
        host = bench.get("host", {})
        lines += rows(model, manifest, bench)
    cpu = host.get("cpu") or platform.processor()
    flags = ", ".join(host.get("cpu_flags") or [])
    text = "\n".join(lines) + f"\n\nMachine: {cpu} ({flags}); {host.get('cores', '?')} cores.\n"
    (args.out / "engines.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
