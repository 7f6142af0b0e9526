"""int8 of a model nobody here trained against its authors' own int8 file: MLPerf Tiny's ResNet-8
(BENCHMARKS.md "Quantization engines").

    python tools/release/mlperf_int8_target.py --h5 pretrainedResnet.h5 \
        --reference pretrainedResnet_quant.tflite --data ../datasets/cifar-10-batches-py-subset --out runs/mlperf

The two files are mlcommons/tiny's benchmark/training/image_classification/trained_models/
pretrainedResnet.h5 and pretrainedResnet_quant.tflite (MLPerf's int8). Their preprocessing is raw
pixels (`--scale 1 --mean 0 --std 1`). edgecls exports the .h5 with the float variants and every
post-training engine, calibrated on training images of --data (the lossless CIFAR-10 subset: 5,170
training and 1,017 test images) and validated on its test images; MLPerf's int8 file is measured on
the same test images as a lone file. Targets: a full-integer int8 TFLite (int8 activations) no larger
than MLPerf's file and at least as accurate; the ONNX int8 within 0.3 points of the ONNX fp32.
Exit status 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RAW = ("--scale", "1", "--mean", "0", "--std", "1")


def _edgecls(*args) -> None:
    print("$ edgecls", " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "edgecls.cli", *map(str, args)], check=True, cwd=ROOT)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h5", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="MLPerf's own int8 .tflite")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-drop", help="also pass --max-drop to the export")
    parser.add_argument("--calibration-search", metavar="N,N,...",
                        help="also pass --calibration-search to the export (e.g. 100,300,1000)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    labels = args.out / "labels.json"
    labels.write_text(json.dumps(LABELS))
    bundle = args.out / "bundle"
    if not (bundle / "manifest.json").is_file():
        extra = (("--max-drop", args.max_drop) if args.max_drop else ()) + (
            ("--calibration-search", args.calibration_search) if args.calibration_search else ())
        _edgecls("export", args.h5, *RAW, "--labels", labels, "--data", args.data, "--out", bundle,
                 "--formats", "tflite_fp32", "onnx_fp32", "engines", *extra)
    reference = args.out / "reference.json"
    if not reference.is_file():
        _edgecls("bench", args.reference, *RAW, "--labels", labels, "--data", args.data, "--runs", "50",
                 "--out", reference)
    manifest = json.loads((bundle / "manifest.json").read_text())
    theirs = json.loads(reference.read_text())["variants"][0]
    rows = {r["name"]: r for r in manifest["artifacts"] + manifest["rejected"]}
    their_acc, their_bytes = theirs["accuracy"], theirs["size_bytes"]
    print(f"\nMLPerf int8 ({args.reference.name}): top-1 {100 * their_acc:.2f}% on {theirs['images']} images, "
          f"{their_bytes:,} bytes")
    print("| variant | engine | status | top-1 % | bytes | full-integer int8 |")
    print("|---|---|---|---:|---:|---|")
    for name, row in rows.items():
        acc = row.get("validation", {}).get("accuracy")
        full = row.get("precision") == "int8" and row["format"] == "tflite"
        print(f"| {name} | {row.get('engine', '')} | {row['status']} | {'-' if acc is None else f'{100 * acc:.2f}'} | "
              f"{row.get('size', {}).get('bytes', '-')} | {'yes' if full else ''} |")
    best = [r for n, r in rows.items() if r["status"] == "ok" and r["format"] == "tflite" and r["precision"] == "int8"
            and r["size"]["bytes"] <= their_bytes and r["validation"]["accuracy"] >= their_acc]
    def validated(name):  # accuracy of a variant that passed validation, else None
        row = rows.get(name, {})
        return row.get("validation", {}).get("accuracy") if row.get("status") == "ok" else None

    fp32, onnx = validated("onnx_fp32"), validated("onnx_int8")
    tflite_ok = bool(best)
    onnx_ok = fp32 is not None and onnx is not None and onnx >= fp32 - 0.003
    print(f"\ntarget 1 (int8 TFLite <= {their_bytes:,} bytes and >= {100 * their_acc:.2f}%): "
          f"{'met by ' + ', '.join(r['name'] for r in best) if tflite_ok else 'missed'}")
    print(f"target 2 (onnx_int8 >= onnx_fp32 - 0.3 points): "
          f"{'met' if onnx_ok else 'missed'} ({'-' if onnx is None else f'{100 * onnx:.2f}'} vs "
          f"{'-' if fp32 is None else f'{100 * fp32:.2f}'})"
          + ("" if onnx is not None else f"; onnx_int8 {rows.get('onnx_int8', {}).get('status', 'absent')}: "
                                         f"{rows.get('onnx_int8', {}).get('reason', '')}"))
    return 0 if tflite_ok and onnx_ok else 1


if __name__ == "__main__":
    sys.exit(main())
