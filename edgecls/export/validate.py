"""Parity validation: an artifact against its Keras reference on real held-out images."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Limits a variant must meet to ship. Agreement is top-1 agreement with the reference;
    max_abs_diff bounds the largest difference of the (dequantized) output probabilities;
    max_accuracy_drop is in accuracy points (percent) against the reference."""

    min_agreement: float
    max_abs_diff: float
    max_accuracy_drop: float

    def to_dict(self) -> dict:
        return asdict(self)


# Why these numbers: fp32 conversion changes only the order of float operations; fp16 weights
# round to 11 significant bits; dynamic range quantizes weights to int8 with float math; int8
# quantizes every tensor (output step 1/256), which flips top-1 on a few borderline images.
TOLERANCES = {
    "fp32": Tolerance(min_agreement=0.999, max_abs_diff=1e-4, max_accuracy_drop=0.1),
    "fp16": Tolerance(min_agreement=0.99, max_abs_diff=0.02, max_accuracy_drop=0.5),
    "dynamic": Tolerance(min_agreement=0.97, max_abs_diff=0.15, max_accuracy_drop=1.5),
    "int8": Tolerance(min_agreement=0.95, max_abs_diff=0.5, max_accuracy_drop=2.0),
}


def compare(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray, tolerance: Tolerance) -> dict:
    """Every check is evaluated and every failure reported (not just the first)."""
    outputs = np.asarray(outputs, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if outputs.shape != reference.shape:
        return {"status": "failed", "reason": f"output shape {outputs.shape} differs from the reference {reference.shape}"}
    pred, ref_pred = outputs.argmax(1), reference.argmax(1)
    agreement = float((pred == ref_pred).mean())
    max_abs = float(np.abs(outputs - reference).max())
    accuracy = float((pred == labels).mean())
    ref_accuracy = float((ref_pred == labels).mean())
    delta = (accuracy - ref_accuracy) * 100
    failures = []
    if agreement < tolerance.min_agreement:
        failures.append(f"top-1 agreement {agreement:.4f} < {tolerance.min_agreement}")
    if max_abs > tolerance.max_abs_diff:
        failures.append(f"max abs diff {max_abs:.3g} > {tolerance.max_abs_diff}")
    if -delta > tolerance.max_accuracy_drop:
        failures.append(f"accuracy drop {-delta:.2f} points > {tolerance.max_accuracy_drop}")
    return {
        "status": "failed" if failures else "ok",
        "reason": "; ".join(failures),
        "images": int(len(labels)),
        "agreement": round(agreement, 6),
        "max_abs_diff": max_abs,
        "mean_abs_diff": float(np.abs(outputs - reference).mean()),
        "accuracy": round(accuracy, 6),
        "reference_accuracy": round(ref_accuracy, 6),
        "accuracy_delta_points": round(delta, 4),
        "tolerance": tolerance.to_dict(),
    }
