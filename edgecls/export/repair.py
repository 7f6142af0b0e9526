"""Selective repair: keep a quantized variant's most sensitive layers in float until it meets an
accuracy budget (`edgecls export --max-drop POINTS`).

The budget is top-1 accuracy against the variant's own Keras model, in points, measured on a
validation split drawn from the training data (never the calibration images, never the test
split). A variant that meets it as plain int8 is left fully quantized. Otherwise the layers of its
per-layer diagnosis (edgecls.export.diagnose), the one that adds the most error first, are tried in
float one more at a time, by the engine that made the file (TFLite converter: TensorFlow's
QuantizationDebugger with denylisted nodes; LiteRT quantizer: its scoped no-quantize recipe; ONNX:
onnxruntime's nodes_to_exclude or NNCF's ignored scope) until the budget is met, at most
`ValidationConfig.repair_max_layers` layers tried. A layer stays in float only if it makes the validation
accuracy better by at least one image: a layer whose float version does not help costs bytes and
time for nothing, and on a small split a "gain" of less than one image is noise. The record says
what was kept, each step's accuracy and bytes, or by how much the best set missed.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import EdgeclsError
from .diagnose import CAP_DB, ranked
from .validate import file_accuracy


def repair(fmt, variant, job, file: Path, diagnosis: dict, images: np.ndarray, labels: np.ndarray,
           float_accuracy: float, max_drop: float, max_layers: int):
    """Returns (record, Converted or None): the repaired file when layers had to be kept in float
    and that met the budget, None when the plain file meets it or nothing did (record["met"])."""
    layout = fmt.layout(job.config)
    timeout = job.config.validation.timeout_s
    plain = file_accuracy(file, images, labels, layout, timeout)
    drop = round(100 * (float_accuracy - plain), 4)
    record = {"budget_points": max_drop, "images": int(len(labels)), "split": "validation (training data)",
              "float_accuracy": round(float_accuracy, 6), "plain_accuracy": round(plain, 6),
              "plain_drop_points": drop, "plain_bytes": file.stat().st_size, "kept_float": [], "steps": []}
    if drop <= max_drop:
        record.update(met=True, drop_points=drop)
        return record, None
    candidates = [layer for layer in ranked(diagnosis) if layer["own_db"] < CAP_DB and layer.get("scope")][:max_layers]
    one_image = 100.0 / len(labels)
    kept, best_drop, tried = [], drop, 0
    with tempfile.TemporaryDirectory(prefix="edgecls-repair-") as tmp:
        for k, layer in enumerate(candidates, 1):
            trial_set = kept + [layer]
            step = {"step": k, "layer": layer["name"]}
            record["steps"].append(step)
            try:
                converted = fmt.requantize(variant, job, tuple(item["scope"] for item in trial_set))
                trial = Path(tmp) / f"step{k}{file.suffix}"
                trial.write_bytes(converted.data)
                accuracy = file_accuracy(trial, images, labels, layout, timeout)
            except EdgeclsError as exc:
                step.update(error=str(exc), kept=False)
                continue
            tried += 1
            step_drop = round(100 * (float_accuracy - accuracy), 4)
            helps = step_drop <= best_drop - one_image + 1e-9
            step.update(accuracy=round(accuracy, 6), drop_points=step_drop, bytes=len(converted.data), kept=helps)
            if not helps:
                continue  # this layer in float does not help: leave it quantized
            kept, best_drop = trial_set, step_drop
            if step_drop <= max_drop:
                record.update(met=True, drop_points=step_drop, kept_float=[item["name"] for item in kept],
                              bytes=len(converted.data))
                return record, converted
    if not tried:
        record.update(met=False, reason=f"no layer could be kept in float ({len(candidates)} tried)")
    else:
        record.update(met=False, kept_float=[], reason=(
            f"--max-drop {max_drop:g} not met: the plain file loses {drop:.2f} points on {len(labels)} validation "
            f"images; with up to {len(candidates)} layers tried in float the best ({len(kept)} kept) loses "
            f"{best_drop:.2f}, {best_drop - max_drop:.2f} over"))
    return record, None
