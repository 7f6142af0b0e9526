"""Which onnxruntime int8 scheme is right on every CPU class: build each candidate from a bundle's
onnx_fp32, then measure top-1 and agreement with onnx_fp32 (and latency at 1 thread) wherever the
measuring half runs (this host, `qemu-x86_64-static -cpu Haswell`, the emulated Pi userland).

    python experiments/onnx_int8_schemes.py build BUNDLE --data cifar10.zip --out DIR
    python experiments/onnx_int8_schemes.py measure DIR --out RESULT.json   # runtime only: runs under emulation

`build` calibrates every scheme on the bundle's own calibration draw (its manifest: count and seed,
from the training split) and writes the images it measures on: a validation draw from the training
split (disjoint from the calibration images) and the test split.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

SCHEMES = {
    # name: (activation type, weight type, reduce_range)
    "s8s8": ("QInt8", "QInt8", False),
    "s8s8_rr": ("QInt8", "QInt8", True),
    "u8s8": ("QUInt8", "QInt8", False),
    "u8s8_rr": ("QUInt8", "QInt8", True),
    "u8u8": ("QUInt8", "QUInt8", False),
}


def build(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgecls.data import calibration_subset, load_dataset, stratified_split
    from edgecls.preprocess import PreprocessingSpec

    bundle = Path(args.bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = PreprocessingSpec.load(bundle / "preprocessing.json")
    dataset = load_dataset(args.data)
    cal = manifest["calibration"]
    representative = spec.apply(calibration_subset(dataset, cal["images"], cal["seed"]))
    # a validation draw disjoint from the calibration draw: another seed's stratified hold-out, minus calibration rows
    train = dataset.train
    _, cal_rows = stratified_split(train.labels, cal["images"] / len(train), cal["seed"])
    pool = np.setdiff1d(np.arange(len(train)), cal_rows)
    val_rows = np.sort(np.random.default_rng(1234).permutation(pool)[: args.val_images])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "val_x.npy", spec.apply(train.images[val_rows]))
    np.save(out / "val_y.npy", train.labels[val_rows])
    test = dataset.test
    rows = np.arange(len(test)) if args.test_images is None else np.sort(np.random.default_rng(7).permutation(len(test))[: args.test_images])
    np.save(out / "test_x.npy", spec.apply(test.images[rows]))
    np.save(out / "test_y.npy", test.labels[rows])
    fp32 = bundle / "onnx_fp32.onnx"
    (out / "fp32.onnx").write_bytes(fp32.read_bytes())

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(representative[i:i + 1] for i in range(len(representative)))

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {"input": batch}

    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(str(fp32), pre, skip_symbolic_shape=True)
        for name, (act, weight, rr) in SCHEMES.items():
            quantize_static(pre, str(out / f"{name}.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=getattr(QuantType, act), weight_type=getattr(QuantType, weight),
                            per_channel=True, reduce_range=rr)
            print(f"built {name}", file=sys.stderr)
    (out / "built.json").write_text(json.dumps({"bundle": str(bundle), "data": str(args.data), "schemes": SCHEMES,
                                                "validation_rows": int(len(val_rows)), "test_rows": int(len(rows))}))


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "asimd", "sve", "i8mm", "fma"))]
    return []


def measure(args) -> None:
    import onnxruntime as ort

    work = Path(args.dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1

    def session(name):
        return ort.InferenceSession(str(work / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])

    result = {"machine": platform.machine(), "onnxruntime": ort.__version__, "flags": cpu_flags(),
              "emulated": os.environ.get("EDGECLS_EMULATED", ""), "splits": {}}
    for split in ("val", "test"):
        x, y = np.load(work / f"{split}_x.npy"), np.load(work / f"{split}_y.npy")
        ref = session("fp32").run(None, {"input": x})[0].argmax(1)
        rows = {"fp32": {"accuracy": float((ref == y).mean())}}
        for name in SCHEMES:
            pred = session(name).run(None, {"input": x})[0].argmax(1)
            rows[name] = {"accuracy": float((pred == y).mean()), "agreement": float((pred == ref).mean())}
        result["splits"][split] = {"images": int(len(y)), "rows": rows}
    if args.latency:
        one = np.load(work / "test_x.npy")[:1]
        for name in ["fp32", *SCHEMES]:
            sess = session(name)
            for _ in range(20):
                sess.run(None, {"input": one})
            times = []
            for _ in range(args.latency):
                t = time.perf_counter()
                sess.run(None, {"input": one})
                times.append(time.perf_counter() - t)
            result["splits"]["test"]["rows"][name]["p50_ms"] = float(np.median(times) * 1000)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for split, block in result["splits"].items():
        for name, row in block["rows"].items():
            print(split, name, " ".join(f"{k}={v:.4f}" for k, v in row.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("bundle")
    b.add_argument("--data", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--val-images", type=int, default=2000)
    b.add_argument("--test-images", type=int, default=None)
    m = sub.add_parser("measure")
    m.add_argument("dir")
    m.add_argument("--out", required=True)
    m.add_argument("--latency", type=int, default=0, help="timed single-image calls per scheme (0: none)")
    args = parser.parse_args()
    build(args) if args.cmd == "build" else measure(args)


if __name__ == "__main__":
    main()
