"""Compare a bundle's outputs on two machines (or CPU classes) on the same images: the part of
tools/device/arm64_check.py and tools/device/cpu_class_check.py that judges the results. numpy only."""
from __future__ import annotations

import sys

import numpy as np

FLOAT_TOL = 1e-5
# onnxruntime's int8 (QDQ) kernels are not bit-exact between x86 and arm64: the resnet8 bundles'
# onnx_int8 came out 0, 3, 4 and 3 output steps apart (the 100-, 185-, 345- and 445-epoch models; at most 2%
# of outputs, top-1 identical on every image; this x86 host has VNNI, so it is not the u8s8
# saturation of AVX2-only CPUs; BENCHMARKS.md, the emulated Pi). LiteRT's XNNPACK int8 kernels stay within one step.
ORT_INT8_STEPS = 4
# The least top-1 agreement an int8 variant should keep with the fp32 model it was made from, on
# every CPU class. Judged with --min-agreement on enough images (the sample's 1,000 test images):
# on 100 images one disagreement is a point.
MIN_AGREEMENT = 0.98
# Dynamic-range models quantize their activations at run time, so their float outputs carry the
# int8 kernels' rounding: x86 and arm64 differ by more than float noise (mobilenet_tiny: up to
# 2.6e-3 in a probability on 1,000 images, top-1 identical), x86 with and without VNNI by nothing.
DYNAMIC_TOL = 1e-2


def _level_step(values: np.ndarray) -> float:
    """The quantization step of a dequantized output (its values are multiples of the scale)."""
    levels = np.unique(values.astype(np.float64))
    gaps = np.diff(levels)
    return float(gaps[gaps > 1e-9].min()) if (gaps > 1e-9).any() else 0.0


def compare(here, there, precisions: dict, ort_int8_steps: int = ORT_INT8_STEPS) -> dict:
    """Per variant: float models within FLOAT_TOL (dynamic-range ones within DYNAMIC_TOL); TFLite
    int8 models within one quantization step
    of their raw output, ONNX int8 (dequantized output) within `ort_int8_steps`; top-1 identical on
    every image."""
    names = sorted({k.rsplit(".", 1)[0] for k in here.files})
    out = {}
    for name in names:
        raw_a, raw_b = here[f"{name}.raw"], there[f"{name}.raw"]
        p_a, p_b = here[f"{name}.probs"], there[f"{name}.probs"]
        row = {"precision": precisions.get(name), "images": int(len(p_a)),
               "top1_identical": int((p_a.argmax(1) == p_b.argmax(1)).sum()),
               "raw_dtype": str(raw_a.dtype), "max_prob_diff": float(np.abs(p_a - p_b).max())}
        if raw_a.dtype.kind in "iu":
            steps = np.abs(raw_a.astype(np.int32) - raw_b.astype(np.int32))
            row.update(max_raw_step_diff=int(steps.max()), raw_equal_fraction=float((steps == 0).mean()))
            row["ok"] = bool(row["max_raw_step_diff"] <= 1)
        elif precisions.get(name) == "int8":  # quantized inside, dequantized output (ONNX QDQ)
            step = _level_step(raw_a)
            diff = np.abs(raw_a.astype(np.float64) - raw_b.astype(np.float64))
            row.update(max_raw_diff=float(diff.max()), output_step=step,
                       max_raw_step_diff=int(np.round(diff.max() / step)) if step else None,
                       raw_equal_fraction=float((diff == 0).mean()))
            row["ok"] = bool(step and diff.max() <= step * (ort_int8_steps + 0.001))
        else:
            row["max_raw_diff"] = float(np.abs(raw_a.astype(np.float64) - raw_b.astype(np.float64)).max())
            tol = DYNAMIC_TOL if precisions.get(name) == "dynamic" else FLOAT_TOL
            row["ok"] = bool(row["max_raw_diff"] <= tol and row["max_prob_diff"] <= tol)
        row["ok"] = row["ok"] and row["top1_identical"] == row["images"]
        out[name] = row
    return out




def fp32_counterpart(artifact: dict, artifacts: dict) -> str | None:
    """The fp32 file of the same format made from the same Keras model as an int8 variant (a pruned
    int8's pruned fp32), or None: QAT models have no fp32 file in a bundle."""
    return next((a["name"] for a in artifacts.values() if a["format"] == artifact["format"] and a["precision"] == "fp32"
                 and a.get("source") == artifact.get("source")), None)


def class_figures(outputs, labels: np.ndarray, manifest: dict) -> dict:
    """Per variant on one machine: top-1 accuracy and, for an int8 variant, top-1 agreement with its
    fp32 file when the bundle has one; without one (QAT, or a pruned fp32 left out of the bundle) the
    agreement with its own Keras model measured at export (manifest), which carries over to this
    machine when its top-1 answers are identical to the exporting machine's."""
    artifacts = {a["name"]: a for a in manifest["artifacts"]}
    rows = {}
    for name, art in artifacts.items():
        pred = outputs[f"{name}.probs"].argmax(1)
        row = {"accuracy": float((pred == labels).mean())}
        if art["precision"] == "int8":
            ref = fp32_counterpart(art, artifacts)
            if ref:
                row.update(fp32=ref, agreement_with_fp32=float((pred == outputs[f"{ref}.probs"].argmax(1)).mean()))
            else:
                row.update(fp32=f"keras {art.get('source')} (at export)",
                           export_agreement=(art.get("validation") or {}).get("agreement"))
        rows[name] = row
    return rows


def judge(rows: dict, figures: dict, min_agreement: float | None = None) -> None:
    """Merge each machine's class_figures ({machine: {variant: figures}}) into compare()'s rows, with
    a one-line summary of each int8 variant's agreement ("agreement"); with `min_agreement`, an int8
    variant also needs that much agreement with its fp32 on every machine (or, without an fp32
    file, at export)."""
    floor = -1.0 if min_agreement is None else min_agreement
    for variant, row in rows.items():
        parts = []
        for where, per_variant in figures.items():
            mine = per_variant[variant]
            row[f"{where}_accuracy"] = mine["accuracy"]
            if "agreement_with_fp32" in mine:
                row["fp32"] = mine["fp32"]
                row[f"{where}_agreement_with_fp32"] = mine["agreement_with_fp32"]
                parts.append(f"{where} {100 * mine['agreement_with_fp32']:.1f}%")
                if mine["agreement_with_fp32"] < floor:
                    row["ok"] = False
            elif "export_agreement" in mine:
                row["fp32"], row["export_agreement"] = mine["fp32"], mine["export_agreement"]
                if (mine["export_agreement"] or 0.0) < floor:
                    row["ok"] = False
        if "export_agreement" in row:
            row["agreement"] = f"agreement with {row['fp32']} {100 * (row['export_agreement'] or 0):.1f}%"
        elif parts:
            row["agreement"] = f"agreement with {row['fp32']}: {', '.join(dict.fromkeys(parts))}"


def emulation_gate(reason: str | None, check_only: bool, what: str) -> int | None:
    """The exit status for --check-only (0: emulation possible, 77: not, the reason on stdout), or
    77 with the reason on stderr when emulation is impossible; None to go on."""
    if check_only:
        print(reason or "ok")
        return 77 if reason else 0
    if reason:
        print(f"cannot emulate {what} here: {reason}", file=sys.stderr)
        return 77
    return None
