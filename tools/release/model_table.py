"""The BENCHMARKS.md table of one shipped model, from the bench reports tools/release/ship_model.sh wrote.

    python tools/release/model_table.py docs/benchmarks/models/resnet8

Rows: the Keras fp32 model and every exported variant. Columns: bytes, gzip bytes, top-1 on the
10,000 JPEG test images and on the 1,017 lossless ones, agreement with the fp32 TFLite model, p50 and
p99 batch-1 latency at 1 and 2 threads, throughput at batch 32 (1 and 2 threads), peak memory and
load time (1 thread).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _rows(report: dict) -> dict:
    return {v["name"]: v for v in report["variants"]}


def fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "ms":
        return f"{value:.3f}"
    return f"{value:,.0f}" if kind == "ips" else f"{value:,.1f}"


def table(folder: Path) -> str:
    one, two = _load(folder / "bench-1thread.json"), _load(folder / "bench-2threads.json")
    lossless_path = folder / "bench-lossless.json"
    lossless = _rows(_load(lossless_path)) if lossless_path.exists() else {}
    r1, r2 = _rows(one), _rows(two)
    host = one["host"]
    s = one["settings"]
    lines = [
        f"Machine: {host.get('cpu')}, {host.get('cores')} cores, {host.get('arch')}, {host.get('os')}; Python "
        f"{host.get('python')}, LiteRT {host.get('runtime', {}).get('ai-edge-litert', '-')}, onnxruntime "
        f"{host.get('runtime', {}).get('onnxruntime', '-')}. Latency: batch 1, {s['runs']} runs after {s['warmup']} "
        f"warm-up, through `runner.predict` (preprocessing included); Keras row: `model(x)` on the fp32 model. "
        f"Accuracy: {one['variants'][0].get('images', '?')} JPEG test images"
        + (f" and {next(iter(lossless.values())).get('images', '?')} lossless ones" if lossless else "") + ".",
        "",
        "| variant | bytes | gzip bytes | top-1 % (JPEG) | top-1 % (lossless) | agreement % | p50 ms 1t | p99 ms 1t "
        "| p50 ms 2t | p99 ms 2t | img/s b32 1t | img/s b32 2t | peak MB | load ms |",
        "|---|" + "---:|" * 13,
    ]
    for name, a in r1.items():
        b = r2.get(name, {})
        if a.get("status") != "ok":
            lines.append(f"| {name} | failed: {a.get('error')} |" + " |" * 12)
            continue
        la, lb = a.get("latency_ms") or {}, b.get("latency_ms") or {}
        cells = [name, fmt(a["size_bytes"], "int"), fmt(a["size_gzip_bytes"], "int"), fmt(a.get("accuracy"), "pct"),
                 fmt(lossless.get(name, {}).get("accuracy"), "pct"), fmt(a.get("agreement"), "pct"),
                 fmt(la.get("p50"), "ms"), fmt(la.get("p99"), "ms"), fmt(lb.get("p50"), "ms"), fmt(lb.get("p99"), "ms"),
                 fmt(a.get("throughput_ips"), "ips"), fmt(b.get("throughput_ips"), "ips"), fmt(a.get("peak_rss_mb"), "mb"),
                 fmt(a.get("load_ms"), "mb")]
        lines.append("| " + " | ".join(cells) + " |")
    keras = r1.get("keras_fp32")
    if keras and keras.get("latency_predict_ms"):
        lines += ["", f"Keras `model.predict(x)` on one image (what most tutorials call): p50 "
                      f"{keras['latency_predict_ms']['p50']:.1f} ms at 1 thread."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/release/model_table.py docs/benchmarks/models/NAME")
    print(table(Path(sys.argv[1])), end="")
