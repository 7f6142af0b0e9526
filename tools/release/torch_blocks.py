"""The ONNX-to-TFLite routes on PyTorch exports of the blocks small image classifiers are made of.

    # 1. in a virtual environment with torch (not the project's: the suite never needs torch)
    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 onnx onnxscript numpy litert-torch
    /tmp/torchvenv/bin/python tools/release/torch_blocks.py make --out runs/torch-blocks
    # 2. in the project's environment
    .venv/bin/python tools/release/torch_blocks.py check --out runs/torch-blocks

`make` builds one small classifier per block (seeded random weights, BatchNorm statistics set away
from their defaults so folding them is tested; 3 x 32 x 32 input, 10 logits; each block followed by
adaptive average pooling, Flatten and Linear unless the block is the head) and writes, per block,
the file torch's default (dynamo) exporter writes, `BLOCK.onnx` (+ `.onnx.data`), and, when
`litert_torch` imports, LiteRT Torch's float TFLite file of the same module with channels-last input
(`litert_torch.to_channel_last_io`), `BLOCK.litert.tflite`, with versions.json.

`check` runs, per block, `edgecls export BLOCK.onnx --formats tflite_fp32 tflite_int8_aeq onnx_int8`
on the built-in sample (200 held-out images), which takes edgecls's route (onnx2tf to a float TFLite
file, the LiteRT quantizer for int8, onnxruntime for ONNX int8), and reads from its manifest whether
each file was made and validated, the largest probability difference of the float TFLite file from
the ONNX model, and the TRANSPOSE operators left in each TFLite file. For LiteRT Torch's file it
compares its outputs with onnxruntime's on the same images and counts its TRANSPOSE operators.
Writes blocks.json and blocks.md to --out.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LABELS = ROOT / "tests" / "fixtures" / "torch" / "labels.json"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
BLOCKS = {
    "conv_bn_relu": "3x3 convolution, BatchNorm, ReLU",
    "residual": "two 3x3 convolutions with BatchNorm, identity shortcut, Add, ReLU",
    "residual_projection": "strided residual block with a 1x1 projection shortcut",
    "depthwise_separable": "3x3 depthwise convolution, BatchNorm, ReLU6, 1x1 pointwise convolution",
    "inverted_residual": "MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, Add",
    "squeeze_excitation": "SE: global pool, 1x1 convolutions, ReLU, Hardsigmoid, Mul (MobileNetV3)",
    "hardswish_silu": "Hardswish and SiLU activations (MobileNetV3, EfficientNet)",
    "pooling": "MaxPool2d and AvgPool2d 2x2",
    "concat": "two branches concatenated on channels (SqueezeNet fire, Inception)",
    "flatten_spatial": "Flatten of a 4x4x16 map straight into Linear (no pooling)",
}


# -- make (torch) -------------------------------------------------------------------------------

def build(name: str):
    import torch
    from torch import nn

    def cbr(cin, cout, k=3, s=1, groups=1, act=nn.ReLU):
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act()]

    class Residual(nn.Module):
        def __init__(self, c, cout=None, stride=1):
            super().__init__()
            cout = cout or c
            self.body = nn.Sequential(*cbr(c, cout, s=stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(cout))
            self.short = (nn.Identity() if stride == 1 and cout == c else
                          nn.Sequential(nn.Conv2d(c, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    class Inverted(nn.Module):
        def __init__(self, c, expand=4):
            super().__init__()
            h = c * expand
            self.body = nn.Sequential(*cbr(c, h, 1, act=nn.ReLU6), *cbr(h, h, 3, groups=h, act=nn.ReLU6),
                                      nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.body(x)

    class SE(nn.Module):
        def __init__(self, c, r=4):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

        def forward(self, x):
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))

    class Concat(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.squeeze = nn.Sequential(*cbr(c, c // 2, 1))
            self.a, self.b = nn.Sequential(*cbr(c // 2, c, 1)), nn.Sequential(*cbr(c // 2, c, 3))

        def forward(self, x):
            s = self.squeeze(x)
            return torch.cat([self.a(s), self.b(s)], dim=1)

    stem = cbr(3, 16, s=2)  # 16 x 16 x 16
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)]
    blocks = {
        "conv_bn_relu": [*cbr(16, 16)],
        "residual": [Residual(16)],
        "residual_projection": [Residual(16, 32, stride=2)],
        "depthwise_separable": [*cbr(16, 16, groups=16, act=nn.ReLU6), *cbr(16, 16, 1, act=nn.ReLU6)],
        "inverted_residual": [Inverted(16)],
        "squeeze_excitation": [*cbr(16, 16, act=nn.Hardswish), SE(16)],
        "hardswish_silu": [*cbr(16, 16, act=nn.Hardswish), *cbr(16, 16, act=nn.SiLU)],
        "pooling": [nn.MaxPool2d(2), *cbr(16, 16), nn.AvgPool2d(2)],
        "concat": [Concat(16), *cbr(32, 16, 1)],
        "flatten_spatial": [*cbr(16, 16, s=2), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10)],
    }
    layers = [*stem, *blocks[name]]
    if name == "residual_projection":
        head[-1] = nn.Linear(32, 10)
    elif name == "concat":
        head[-1] = nn.Linear(16, 10)
    if name != "flatten_spatial":
        layers += head
    model = nn.Sequential(*layers)
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics and affine terms away from 0 and 1
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def make(out: Path) -> int:
    import importlib.metadata as md

    import torch

    out.mkdir(parents=True, exist_ok=True)
    try:
        import litert_torch
    except Exception as exc:  # not installed, or it does not import beside this torch
        litert_torch, why = None, f"{exc.__class__.__name__}: {exc}"
    versions = {p: md.version(p) for p in ("torch", "onnx", "onnxscript", "numpy")}
    if litert_torch is not None:
        versions["litert-torch"] = md.version("litert-torch")
    else:
        versions["litert-torch"] = f"not used ({why[:200]})"
    sample = torch.rand(1, 3, 32, 32)
    for name in BLOCKS:
        torch.manual_seed(0)
        model = build(name)
        torch.onnx.export(model, (sample,), str(out / f"{name}.onnx"), input_names=["image"], output_names=["logits"])
        print(f"{name}: wrote {name}.onnx", flush=True)
        if litert_torch is not None:
            try:
                nhwc = litert_torch.to_channel_last_io(model, args=[0])
                edge = litert_torch.convert(nhwc, (sample.permute(0, 2, 3, 1).contiguous(),))
                edge.export(str(out / f"{name}.litert.tflite"))
                print(f"{name}: wrote {name}.litert.tflite", flush=True)
            except Exception as exc:
                (out / f"{name}.litert.error").write_text(f"{exc.__class__.__name__}: {str(exc)[:500]}\n")
                print(f"{name}: LiteRT Torch failed: {exc.__class__.__name__}: {str(exc)[:200]}", flush=True)
    (out / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    return 0


# -- check (edgecls) ----------------------------------------------------------------------------

def _litert_torch_row(out: Path, name: str, images, onnx_probs) -> dict:
    import numpy as np

    from edgecls.export.validate import softmax
    from edgecls.runtime.backends import TFLiteBackend
    from edgecls.sources.convert import tflite_ops

    path = out / f"{name}.litert.tflite"
    if not path.is_file():
        error = out / f"{name}.litert.error"
        return {"made": False, "reason": error.read_text().strip() if error.is_file() else "not made"}
    backend = TFLiteBackend(path)
    if tuple(backend.input_shape[1:]) != (32, 32, 3):
        return {"made": True, "input": list(backend.input_shape), "reason": "input is not NHWC"}
    probs = softmax(np.concatenate([backend.run(images[i:i + 1]) for i in range(len(images))]))
    return {"made": True, "max_prob_diff": float(np.abs(probs - onnx_probs).max()),
            "agreement": float((probs.argmax(1) == onnx_probs.argmax(1)).mean()),
            "transposes": tflite_ops(path.read_bytes()).count("TRANSPOSE"), "bytes": path.stat().st_size}


def check(out: Path, images_count: int) -> int:
    import numpy as np
    import onnxruntime as ort

    from edgecls.data import load_dataset
    from edgecls.export.validate import softmax
    from edgecls.preprocess import PreprocessingSpec

    spec = PreprocessingSpec(input_size=(32, 32), scale=1 / 255, mean=MEAN, std=STD)
    test = load_dataset("cifar10-sample").test
    nhwc = spec.apply(test.images[:images_count])
    rows = {}
    for name, what in BLOCKS.items():
        onnx_file = out / f"{name}.onnx"
        bundle = out / f"bundle-{name}"
        cmd = [sys.executable, "-m", "edgecls.cli", "export", str(onnx_file), "--scale", "1/255",
               "--mean", *map(str, MEAN), "--std", *map(str, STD), "--labels", str(LABELS), "--data", "cifar10-sample",
               "--max-eval-images", str(images_count), "--formats", "tflite_fp32", "tflite_int8_aeq", "onnx_int8",
               "--out", str(bundle)]
        shutil.rmtree(bundle, ignore_errors=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        row = {"block": what, "export_exit": proc.returncode}
        if proc.returncode != 0:
            row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        manifest = bundle / "manifest.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            for a in data["artifacts"] + data.get("rejected", []):
                v = a.get("validation", {})
                row[a["name"]] = {"status": a.get("status"), "reason": a.get("reason", "")[:200],
                                  "max_prob_diff": v.get("max_abs_diff"), "agreement": v.get("agreement"),
                                  "transposes": a.get("conversion", {}).get("transposes")}
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name  # torch exports a fixed batch of 1
        onnx_probs = softmax(np.concatenate([session.run(None, {feed: nhwc[i:i + 1].transpose(0, 3, 1, 2).copy()})[0]
                                             for i in range(len(nhwc))]))
        row["litert_torch"] = _litert_torch_row(out, name, nhwc, onnx_probs)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    (out / "blocks.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| block | onnx2tf float TFLite: max prob. diff, TRANSPOSE | int8 (LiteRT quantizer): status, TRANSPOSE | "
             "onnx_int8 | LiteRT Torch float TFLite: max prob. diff, TRANSPOSE |", "|---|---|---|---|---|"]

    def cell(r, key):
        v = r.get(key)
        if not v:
            return "not made"
        diff = f"{v['max_prob_diff']:.1e}" if v.get("max_prob_diff") is not None else "-"
        return f"{v['status']}, {diff}, {v.get('transposes')}" if key == "tflite_fp32" else (
            f"{v['status']}, {v.get('transposes')}" if key == "tflite_int8_aeq" else v["status"])

    for name, r in rows.items():
        lt = r["litert_torch"]
        lt_cell = (f"{lt['max_prob_diff']:.1e}, {lt['transposes']}" if "max_prob_diff" in lt else lt.get("reason", "-")[:80])
        lines.append(f"| {name}: {r['block']} | {cell(r, 'tflite_fp32')} | {cell(r, 'tflite_int8_aeq')} | "
                     f"{cell(r, 'onnx_int8')} | {lt_cell} |")
    (out / "blocks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["make", "check"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    return make(args.out) if args.mode == "make" else check(args.out, args.images)


if __name__ == "__main__":
    sys.exit(main())
