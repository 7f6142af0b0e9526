"""Calibration chosen by measurement (`edgecls export --calibration-search 100,300,1000`).

int8 accuracy depends on which training images calibrate it: another random draw of the same size
moves top-1 by up to a point on small models. For each post-training int8 variant, every candidate
size is drawn `--calibration-draws` times (seeds calibration_seed, +1, ...), each draw is quantized
by the variant's engine and run on the validation split (training images that no candidate draw
uses; never the test split). The size with the best mean validation accuracy is chosen (the smaller
on a tie), and of its draws the best one is shipped. The record keeps every candidate, the spread of
each size (mean, min, max over its draws) and the choice, so the user sees how much the draw matters
beside the setting that was picked.
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


def search(fmt, variant, job, candidates, train_images: np.ndarray, spec, images: np.ndarray, labels: np.ndarray,
           float_accuracy: float):
    """Convert `variant` with each candidate draw and measure it on (`images`, `labels`), the
    validation split as the model sees it. Returns (record, Converted of the chosen draw, its
    normalized representative images)."""
    from .validate import file_accuracy

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
                entry["accuracy"] = round(file_accuracy(path, images, labels, layout, job.config.validation_timeout_s), 6)
                results.append((entry, converted, representative))
            except EdgeclsError as exc:
                entry["error"] = str(exc)
                results.append((entry, None, None))
    measured = [r for r in results if r[1] is not None]
    if not measured:
        raise EdgeclsError(f"calibration search: no candidate could be quantized ({results[0][0].get('error')})")
    by_count = {}
    for count in dict.fromkeys(e["count"] for e, _, _ in measured):
        accs = [e["accuracy"] for e, _, _ in measured if e["count"] == count]
        by_count[str(count)] = {"draws": len(accs), "mean": round(float(np.mean(accs)), 6),
                                "min": min(accs), "max": max(accs)}
    chosen_count = max(by_count, key=lambda c: (by_count[c]["mean"], -int(c)))
    entry, converted, representative = max((r for r in measured if r[0]["count"] == int(chosen_count)),
                                           key=lambda r: (r[0]["accuracy"], -r[0]["seed"]))
    record = {"split": "validation (training data)", "images": int(len(labels)),
              "float_accuracy": round(float_accuracy, 6), "candidates": [e for e, _, _ in results],
              "by_count": by_count, "chosen": {"count": entry["count"], "seed": entry["seed"],
                                               "accuracy": entry["accuracy"]}}
    return record, converted, representative
