"""Parity validation: an artifact against its Keras reference on real held-out images.

Besides the tolerances, two rules keep a validation honest:

- **Degenerate outputs.** A model that predicts one class for most images (the most frequent
  predicted class at least DEGENERATE_SHARE of the images, and twice as often as the most frequent
  true class), or whose outputs barely depend on the input (probabilities varying by less than
  CONSTANT_STD across images), is flagged: a variant degenerate where its reference is not fails;
  agreement with a degenerate reference proves nothing, so such a variant is warned.
- **Few images.** Agreement on n images is a sample: when some images disagree and the exact
  one-sided 95% (Clopper-Pearson) lower bound of the agreement falls below the tolerance while the
  observed value passes, the variant is warned that its validation cannot certify it (validate on
  more images).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..evaluation import CONSTANT_STD, DEGENERATE_SHARE, degenerate  # noqa: F401

CONFIDENCE = 0.95


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
    # int16 activations with int8 weights: the weights round as in int8 and, on the shipped models,
    # dominate the error (measured: no closer to float than int8; BENCHMARKS.md), so int8's limits.
    "int16x8": Tolerance(min_agreement=0.95, max_abs_diff=0.5, max_accuracy_drop=2.0),
}


def file_accuracy(path, images: np.ndarray, labels: np.ndarray, layout: str, timeout: float | None) -> float:
    """Top-1 of the model file `path` on `images` (the float input it takes), run in a child process
    (edgecls.runtime.isolated) so that a file that crashes its runtime costs an EdgeclsError only."""
    from ..runtime import isolated

    outputs = isolated.outputs(path, images, layout=layout, threads=None, timeout=timeout)
    return float((outputs.argmax(1) == labels).mean())


def softmax(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def in_probabilities(outputs: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(outputs, reference, converted): a model ending in logits (its reference outputs are not
    probabilities) is compared after the softmax the runtime applies, so the output tolerances
    always bound differences of probabilities, never of raw logits."""
    from ..training.distill import are_probabilities

    outputs = np.asarray(outputs, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if outputs.shape == reference.shape and outputs.ndim == 2 and not are_probabilities(reference):
        return softmax(outputs), softmax(reference), True
    return outputs, reference, False


def compare(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray, tolerance: Tolerance) -> dict:
    """Every check is evaluated and every failure reported (not just the first). Outputs and
    reference are compared as probabilities (see in_probabilities)."""
    outputs, reference, converted = in_probabilities(outputs, reference)
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
    warnings = []
    mine, theirs = degenerate(outputs, labels), degenerate(reference, labels)
    if mine and not theirs:
        failures.append(f"degenerate: {mine} (its reference is not)")
    elif theirs:
        warnings.append(f"the reference is degenerate ({theirs}): agreement with it proves little")
    n = len(labels)
    bound = agreement_lower_bound(int(round(agreement * n)), n)
    if not failures and agreement < 1.0 and bound < tolerance.min_agreement:
        warnings.append(f"agreement {agreement:.4f} on only {n} images: with {CONFIDENCE:.0%} confidence it is above "
                        f"{bound:.4f}, below the {tolerance.min_agreement} required; validate on more images")
    result = {
        "status": "failed" if failures else "ok",
        "reason": "; ".join(failures),
        "images": int(len(labels)),
        "agreement": round(agreement, 6),
        "max_abs_diff": max_abs,
        "mean_abs_diff": float(np.abs(outputs - reference).mean()),
        "accuracy": round(accuracy, 6),
        "reference_accuracy": round(ref_accuracy, 6),
        "accuracy_delta_points": round(delta, 4),
        "agreement_lower_bound": round(bound, 6),
        "tolerance": tolerance.to_dict(),
        "compared": "probabilities (softmax of the logits)" if converted else "probabilities",
    }
    if warnings:
        result["warning"] = "; ".join(warnings)
    return result


def agreement_lower_bound(agree: int, n: int, confidence: float = CONFIDENCE) -> float:
    """The exact one-sided lower confidence bound (Clopper-Pearson) of a proportion: the smallest p
    for which observing `agree` or more of `n` has probability at least 1 - confidence."""
    if n <= 0:
        return 0.0
    if agree <= 0:
        return 0.0
    alpha = 1.0 - confidence

    def tail(p: float) -> float:  # P(X >= agree) for X ~ Binomial(n, p)
        if p <= 0.0:
            return 0.0
        if p >= 1.0:
            return 1.0
        logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
                for k in range(agree, n + 1)]
        top = max(logs)
        return math.exp(top) * sum(math.exp(v - top) for v in logs)

    lo, hi = 0.0, agree / n
    for _ in range(60):
        mid = (lo + hi) / 2
        if tail(mid) < alpha:
            lo = mid
        else:
            hi = mid
    return hi
