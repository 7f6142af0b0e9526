"""Check the optimization/export targets on a trained model and real held-out data.

    python experiments/bench_export.py --model runs/full/resnet8 --data ../shared/datasets/cifar10-jpeg.zip \
        --out runs/bench-export

1. Exports every variant (75% pruning, QAT, PTQ, ONNX) and validates each on the full test split.
2. Measures how the choice of calibration images moves int8 PTQ top-1: several random draws
   (seeds) at several sizes, all from the training split.
3. Compares the two ONNX int8 routes (onnxruntime static QDQ vs tf2onnx from the int8 TFLite):
   accuracy, agreement, size and single-thread batch-1 latency.
Writes results.json and results.md to --out and prints the Markdown, with PASS/FAIL per target.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edgecls.bench import time_calls  # noqa: E402
from edgecls.config import ConvertConfig, ExportConfig, FineTuneConfig, PruneConfig, QATConfig  # noqa: E402
from edgecls.data import calibration_subset, load_dataset  # noqa: E402
from edgecls.export import export  # noqa: E402
from edgecls.export.formats.tflite import convert  # noqa: E402
from edgecls.hostinfo import host_info  # noqa: E402
from edgecls.runtime.backends import open_backend  # noqa: E402
from edgecls.modelio import load_model as load_source  # noqa: E402


def accuracy_of(path, x, y, layout="NHWC"):
    backend = open_backend(path, threads=1, layout=layout)
    probs = backend.run(x)
    return probs, float((probs.argmax(1) == y).mean())


def single_latency(path, x, runs):
    backend = open_backend(path, threads=1)
    tensor = x[:1]
    if backend.format == "tflite":
        prepared = backend.prepare(tensor)
        return time_calls(lambda: backend.invoke_raw(prepared), warmup=50, runs=runs)
    return time_calls(lambda: backend.invoke_raw(tensor), warmup=50, runs=runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/bench-export")
    ap.add_argument("--sparsity", type=float, default=0.75)
    ap.add_argument("--sparsity-allocation", default="uniform", help="uniform or lamp (edgecls export --sparsity-allocation)")
    ap.add_argument("--skip-layers", nargs="+", default=(), help="layers left unpruned (edgecls export --skip-layers)")
    ap.add_argument("--prune-epochs", type=int, default=5)
    ap.add_argument("--prune-lr", type=float, default=0.01)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--distill", action="store_true", help="pruning and QAT fine-tunes distill from the model (edgecls export --distill)")
    ap.add_argument("--calibration-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--calibration-counts", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--latency-runs", type=int, default=500)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("edgecls").setLevel(logging.INFO)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    source = load_source(args.model)
    dataset = load_dataset(args.data, image_size=source.preprocessing.input_size)
    spec = source.preprocessing
    x, y = spec.apply(dataset.test.images), dataset.test.labels

    # 1. every variant
    config = ExportConfig(prune=PruneConfig(sparsity=args.sparsity, allocation=args.sparsity_allocation,
                                            skip_layers=tuple(args.skip_layers), epochs=args.prune_epochs,
                                            learning_rate=args.prune_lr),
                          qat=QATConfig(epochs=args.qat_epochs), fine_tune=FineTuneConfig(distill=args.distill), verbose=2)
    result = export(args.model, dataset=dataset, out=out / "bundle", config=config)
    rows = {r["name"]: r for r in result.rows}
    ref_acc = result.manifest["reference"]["accuracy"]
    fp32_bytes = rows["tflite_fp32"]["size"]["bytes"]

    # 2. calibration spread (int8 PTQ)
    spread = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.calibration_counts:
            accs = []
            for seed in args.calibration_seeds:
                rep = spec.apply(calibration_subset(dataset, count, seed))
                path = Path(tmp) / f"int8_{count}_{seed}.tflite"
                path.write_bytes(convert(source.model, "int8", rep))
                accs.append(accuracy_of(path, x, y)[1])
            spread.append({"count": count, "seeds": args.calibration_seeds, "accuracies": accs,
                           "mean": float(np.mean(accs)), "min": float(np.min(accs)), "max": float(np.max(accs)),
                           "std": float(np.std(accs))})

        # The small-file options (--int8-weights per-tensor --strip-names): what they save, what they cost.
        small = export(args.model, dataset=dataset, out=Path(tmp) / "small", formats=("tflite_fp32", "tflite_int8"),
                       convert=ConvertConfig(int8_weights="per-tensor", strip_names=True))
        small_rows = {r["name"]: r for r in small.rows}
        per_tensor = {name: {"status": r["status"], "bytes": r["size"]["bytes"], "accuracy": r["validation"]["accuracy"],
                             "agreement": r["validation"]["agreement"]} for name, r in small_rows.items()}
        per_tensor["ratio"] = per_tensor["tflite_int8"]["bytes"] / per_tensor["tflite_fp32"]["bytes"]

        # 3. ONNX int8 routes
        via_tflite = export(args.model, dataset=dataset, out=Path(tmp) / "via", formats=("onnx_int8",),
                            convert=ConvertConfig(onnx_int8_method="tflite"))
        via_row = via_tflite.rows[0]
        onnx_routes = {}
        for label, row, folder in (("ort_qdq", rows["onnx_int8"], out / "bundle"), ("tflite", via_row, Path(tmp) / "via")):
            file = folder / row["file"]
            onnx_routes[label] = {"status": row["status"], "accuracy": row["validation"]["accuracy"],
                                  "agreement": row["validation"]["agreement"], "bytes": row["size"]["bytes"],
                                  "latency_ms": single_latency(file, x, args.latency_runs)}
    latency = {}
    for name in ("tflite_fp32", "tflite_int8", "onnx_fp32", "onnx_int8"):
        if rows[name]["status"] == "ok":
            latency[name] = single_latency(out / "bundle" / rows[name]["file"], x, args.latency_runs)

    def acc(name):
        return rows[name]["validation"]["accuracy"]

    targets = [
        ("int8 PTQ top-1 within 0.5 points of fp32", (acc("tflite_int8") - ref_acc) * 100, ">= -0.5"),
        ("int8 QAT top-1 within 0.3 points of fp32", (acc("tflite_qat_int8") - ref_acc) * 100, ">= -0.3"),
        (f"{args.sparsity:.0%}-pruned + QAT within 1.5 points", (acc("tflite_pruned_qat_int8") - ref_acc) * 100, ">= -1.5"),
        ("int8 TFLite bytes / fp32 TFLite bytes (defaults: per-channel, names kept)",
         rows["tflite_int8"]["size"]["bytes"] / fp32_bytes, "<= 0.27"),
        ("int8 TFLite bytes / fp32 TFLite bytes (--int8-weights per-tensor --strip-names)", per_tensor["ratio"], "<= 0.27"),
        ("int8 PTQ per-tensor top-1 within 0.5 points of fp32",
         (per_tensor["tflite_int8"]["accuracy"] - ref_acc) * 100, ">= -0.5"),
        (f"{args.sparsity:.0%}-pruned int8 TFLite gzip bytes / fp32 bytes",
         rows["tflite_pruned_qat_int8"]["size"]["gzip_bytes"] / fp32_bytes, "<= 0.15"),
        ("lowest int8 agreement", min(r["validation"]["agreement"] for r in rows.values()
                                      if r["precision"] == "int8" and "validation" in r), ">= 0.98"),
    ]
    checked = []
    for name, value, rule in targets:
        op, bound = rule.split()
        ok = value >= float(bound) if op == ">=" else value <= float(bound)
        checked.append({"target": name, "value": round(value, 4), "rule": rule, "pass": bool(ok)})

    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": args.model, "data": args.data, "test_images": int(len(y)),
        "host": host_info(), "python": platform.python_version(),
        "reference_accuracy": ref_acc, "variants": result.rows, "targets": checked,
        "calibration_spread": spread, "int8_per_tensor": per_tensor, "onnx_int8_routes": onnx_routes, "latency_ms_1thread_batch1": latency,
        "optimization": result.manifest["optimization"], "tools": result.manifest["tools"],
        "wall_time_s": round(time.time() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = render(report)
    (out / "results.md").write_text(md)
    print(md)


def render(r) -> str:
    lines = [f"Command: `{r['command']}`", "",
             f"Machine: {r['host']['cpu']}, {r['host']['cores']} cores, {r['host']['os']}; Python {r['python']}",
             f"Data: {r['data']} (test split, {r['test_images']} images). Keras fp32 reference top-1: {r['reference_accuracy']:.4f}", "",
             "| variant | status | bytes | gzip bytes | sparsity | top-1 | Δ vs reference (pts) | Δ vs fp32 (pts) | agreement | max abs diff |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v in r["variants"]:
        val = v.get("validation", {})
        if not val:
            lines.append(f"| {v['name']} | {v['status']} | | | | | | | | {v.get('reason', '')} |")
            continue
        lines.append(f"| {v['name']} | {v['status']} | {v['size']['bytes']:,} | {v['size']['gzip_bytes']:,} | {v['sparsity']:.2f} | "
                     f"{val['accuracy']:.4f} | {val['accuracy_delta_points']:+.2f} | {val['accuracy_delta_vs_fp32_points']:+.2f} | "
                     f"{val['agreement']:.4f} | {val['max_abs_diff']:.3g} |")
    lines += ["", "| target | value | rule | result |", "|---|---:|---|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {t['rule']} | {'PASS' if t['pass'] else 'FAIL'} |")
    lines += ["", "int8 PTQ top-1 by calibration draw (training images only):", "",
              "| images | seeds | mean | min | max | std |", "|---:|---|---:|---:|---:|---:|"]
    for s in r["calibration_spread"]:
        lines.append(f"| {s['count']} | {','.join(map(str, s['seeds']))} | {s['mean']:.4f} | {s['min']:.4f} | {s['max']:.4f} | {s['std']:.4f} |")
    pt = r["int8_per_tensor"]
    lines += ["", "Small-file export (`--formats tflite_fp32 tflite_int8 --int8-weights per-tensor --strip-names`):", "",
              "| variant | status | bytes | top-1 | agreement |", "|---|---|---:|---:|---:|"]
    for name in ("tflite_fp32", "tflite_int8"):
        lines.append(f"| {name} | {pt[name]['status']} | {pt[name]['bytes']:,} | {pt[name]['accuracy']:.4f} | {pt[name]['agreement']:.4f} |")
    lines += ["", f"int8 / fp32 bytes: {pt['ratio']:.4f}."]
    lines += ["", "ONNX int8 routes (latency: 1 thread, batch 1):", "",
              "| route | top-1 | agreement | bytes | p50 ms | mean ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, o in r["onnx_int8_routes"].items():
        lines.append(f"| {name} | {o['accuracy']:.4f} | {o['agreement']:.4f} | {o['bytes']:,} | {o['latency_ms']['p50']} | {o['latency_ms']['mean']} |")
    lines += ["", "Latency, 1 thread, batch 1 (bare invoke on a prepared tensor):", "", "| artifact | p50 ms | p99 ms | mean ms |", "|---|---:|---:|---:|"]
    for name, l in r["latency_ms_1thread_batch1"].items():
        lines.append(f"| {name} | {l['p50']} | {l['p99']} | {l['mean']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
