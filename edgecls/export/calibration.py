"""Calibration chosen by measurement (`edgecls export --calibration-search 100,300,1000`).

int8 accuracy depends on which training images calibrate it: another random draw of the same size
moves top-1 by up to a point on small models. For each post-training int8 variant, every candidate
size is drawn `--calibration-draws` times (seeds calibration_seed, +1, ...), each draw is quantized
by the variant's engine and run on the validation split (training images that no candidate draw
uses; never the test split) beside the float Keras model.

The choice is made on fidelity to the float model, not on accuracy. Measured on two disjoint
validation sets of 4,000 and 6,000 training images (BENCHMARKS.md, "The calibration search"), a
draw's accuracy change against float on one set does not predict it on the other (rank correlation
over twelve draws: -0.28, -0.01 and +0.39 for the converter on resnet8, seed_cnn and mobilenet_tiny,
-0.33 for onnxruntime Percentile on resnet8): choosing on it picks noise. Its mean squared output
difference from float repeats on all four (+0.87, +0.75, +0.50, +0.28); its top-1 agreement less
(+0.71, +0.67, +0.26, -0.39). So the size with the lowest mean squared difference wins (higher mean
agreement, then the smaller size, on a tie), and of its draws the one with the lowest difference
ships (higher agreement, then the lower seed). Candidates outside the variant's validation tolerance
on these images (agreement, largest output difference) are left out of the choice while any
candidate is within it. The record keeps every candidate's accuracy, agreement and error, each
size's spread (mean, min, max over its draws) and the choice, so the user sees how much the draw
matters beside the setting that was picked.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import EdgeclsError


def draws(dataset, counts, draws_per_count: int, seed: int) -> list[tuple[int, int, np.ndarray]]:
    """(count, seed, training indices) of every candidate calibration draw."""
    from ..data import calibration_indices

    return [(count, seed + d, calibration_indices(dataset, count, seed + d))
            for count in counts for d in range(draws_per_count)]


def fidelity(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1 accuracy, top-1 agreement with `reference`, the mean squared and the largest output
    difference (in probabilities, as validation measures them)."""
    from .validate import in_probabilities

    outputs, reference, _ = in_probabilities(outputs, reference)
    if outputs.shape != reference.shape:
        raise EdgeclsError(f"output shape {outputs.shape} differs from the float model's {reference.shape}")
    pred = outputs.argmax(1)
    return {"accuracy": round(float((pred == labels).mean()), 6),
            "agreement": round(float((pred == reference.argmax(1)).mean()), 6),
            "mse": float(np.mean((outputs - reference) ** 2)),
            "max_abs_diff": float(np.abs(outputs - reference).max())}


def _spread(values) -> dict:
    return {"mean": round(float(np.mean(values)), 6), "min": min(values), "max": max(values)}


def within(candidate: dict, tolerance) -> bool:
    """Whether a measured candidate meets `tolerance` (an export.validate.Tolerance) on agreement and
    largest output difference; True when there is no tolerance."""
    return tolerance is None or (candidate["agreement"] >= tolerance.min_agreement
                                 and candidate["max_abs_diff"] <= tolerance.max_abs_diff)


def choose(measured: list[dict], tolerance=None) -> tuple[int, dict]:
    """(chosen size, chosen candidate) among measured candidates (dicts with count, seed, agreement,
    mse, max_abs_diff): those within `tolerance` if any are, then the size with the lowest mean
    squared difference (higher mean agreement, then smaller size on a tie), then its draw with the
    lowest difference (higher agreement, then lower seed)."""
    measured = [m for m in measured if within(m, tolerance)] or measured

    def score(count):
        rows = [m for m in measured if m["count"] == count]
        return (-np.mean([m["mse"] for m in rows]), np.mean([m["agreement"] for m in rows]), -count)

    count = max(dict.fromkeys(m["count"] for m in measured), key=score)
    best = max((m for m in measured if m["count"] == count), key=lambda m: (-m["mse"], m["agreement"], -m["seed"]))
    return count, best


def search(fmt, variant, job, candidates, train_images: np.ndarray, spec, images: np.ndarray, labels: np.ndarray,
           reference: np.ndarray, tolerance=None):
    """Convert `variant` with each candidate draw and run it on (`images`, `labels`), the validation
    split as the model sees it, beside `reference`, the float Keras model's outputs there;
    `tolerance` is the variant's validation Tolerance. Returns (record, Converted of the chosen draw,
    its normalized representative images)."""
    from ..runtime import isolated

    layout = fmt.layout(job.config)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgecls-calib-") as tmp:
        for count, seed, index in candidates:
            representative = spec.apply(train_images[index])
            trial_job = replace(job, representative=representative, calibration=train_images[index])
            entry = {"count": int(count), "seed": int(seed)}
            try:
                converted = fmt.convert(variant, trial_job)
                path = Path(tmp) / f"{count}-{seed}.{variant.format}"
                path.write_bytes(converted.data)
                outputs = isolated.outputs(path, images, layout=layout, threads=None,
                                           timeout=job.config.validation.timeout_s)
                entry.update(fidelity(outputs, reference, labels))
                entry["within_tolerance"] = within(entry, tolerance)
                results.append((entry, converted, representative))
            except EdgeclsError as exc:
                entry["error"] = str(exc)
                results.append((entry, None, None))
    measured = [r for r in results if r[1] is not None]
    if not measured:
        raise EdgeclsError(f"calibration search: no candidate could be quantized ({results[0][0].get('error')})")
    by_count = {}
    for count in dict.fromkeys(e["count"] for e, _, _ in measured):
        rows = [e for e, _, _ in measured if e["count"] == count]
        by_count[str(count)] = {"draws": len(rows), "agreement": _spread([e["agreement"] for e in rows]),
                                "accuracy": _spread([e["accuracy"] for e in rows]),
                                "mse": float(np.mean([e["mse"] for e in rows]))}
    _, best = choose([e for e, _, _ in measured], tolerance)
    entry, converted, representative = next(r for r in measured if r[0] is best)
    record = {"split": "validation (training data)", "images": int(len(labels)), "criterion": "mean squared output difference from float",
              "float_accuracy": round(float((np.asarray(reference).argmax(1) == labels).mean()), 6),
              "candidates": [e for e, _, _ in results], "by_count": by_count,
              "chosen": {k: entry[k] for k in ("count", "seed", "accuracy", "agreement", "mse")}}
    return record, converted, representative
