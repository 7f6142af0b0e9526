"""Export of a model given as a float ONNX file (edgecls.sources): its float file and every
post-training ONNX engine, each validated against the source's own outputs (onnxruntime on the
file the user gave) on the held-out images, in probabilities. Variants that need a Keras model are
listed as skipped with the reason."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..bundle import sha256_file, write_bundle
from ..data import calibration_subset, load_dataset, sample_indices
from ..errors import ConfigError, DataError, EdgeclsError
from .formats import VARIANTS, resolve_formats

log = logging.getLogger("edgecls")

# ONNX variants an ONNX source becomes, and the engine each is quantized by.
ONNX_VARIANTS = {"onnx_fp32": None, "onnx_int8": "percentile", "onnx_int8_minmax": "minmax",
                 "onnx_int8_entropy": "entropy", "onnx_int8_nncf": "nncf"}
NOT_FROM_ONNX = ("needs a Keras model: an ONNX source becomes ONNX variants (ONNX to TFLite conversion is not "
                 "available here), and pruning and quantization-aware training need a Keras layer graph")


def export_from_source(staging: Path, out: Path, source, data, config, dataset=None):
    """Every requested variant `source` can become, written and validated into `staging`."""
    from ..evaluation import align_labels
    from ..hostinfo import validation_host
    from ..runtime import isolated
    from . import ExportResult, _tolerance, _versions
    from .formats import formats
    from .inspect import onnx_weight_stats, size_report
    from .validate import compare

    started = time.perf_counter()
    names = resolve_formats(config.formats)
    wanted = [n for n in names if n in ONNX_VARIANTS]
    skipped = {n: NOT_FROM_ONNX for n in names if n not in ONNX_VARIANTS}
    if not wanted:
        raise ConfigError(f"{source.path}: none of the requested variants can be made from an ONNX model; choose "
                           f"among {', '.join(ONNX_VARIANTS)} (--formats onnx)")
    for name in skipped:
        log.warning("%s: skipped: %s", name, NOT_FROM_ONNX)
    spec = source.preprocessing
    if dataset is None:
        dataset = load_dataset(data, image_size=spec.input_size, seed=config.seed)
    if dataset.image_size != tuple(spec.input_size):
        raise DataError(f"the data's images are {dataset.image_size} but the model takes {spec.input_size}")
    mapping = align_labels(dataset, source.labels)
    if len(dataset.train) < config.calibration_count:
        raise DataError(f"the calibration set needs {config.calibration_count} training images but {dataset.source} "
                        f"has {len(dataset.train)}; lower --calibration-count (at least 32) or use more data")
    calibration = source.in_layout(spec.apply(calibration_subset(dataset, config.calibration_count,
                                                                 config.calibration_seed)))
    keep = sample_indices(len(dataset.test), config.max_eval_images, config.seed)
    eval_x = spec.apply(dataset.test.images[keep])
    eval_y = mapping[dataset.test.labels[keep]]
    reference = source.reference(eval_x)
    from ..training.distill import are_probabilities

    output_kind = "probabilities" if are_probabilities(reference) else "logits"
    validated_on = validation_host()
    fmt = formats()["onnx"]
    rows = []
    for name in wanted:
        variant = VARIANTS[name]
        row = {"name": name, "format": "onnx", "precision": variant.precision, "source": "source",
               "description": f"{variant.description.split(' (')[0]} of {source.path.name}", "layout": source.layout}
        try:
            data_bytes = _convert(name, source, calibration)
        except EdgeclsError as exc:
            rows.append({**row, "status": "error", "reason": str(exc)})
            log.warning("%s: %s", name, exc)
            continue
        file = staging / f"{name}.onnx"
        file.write_bytes(data_bytes)
        if ONNX_VARIANTS[name]:
            row["engine"] = "nncf" if name == "onnx_int8_nncf" else f"ort_{ONNX_VARIANTS[name]}"
            row["int8_scheme"] = "u8s8_overflow_fix" if name == "onnx_int8_nncf" else config.onnx_int8_scheme
        try:
            outputs = isolated.outputs(file, source.in_layout(eval_x), layout="NHWC", threads=None,
                                       timeout=config.validation_timeout_s)
            validation = compare(outputs, reference, eval_y, _tolerance(variant, config))
        except EdgeclsError as exc:
            validation = {"status": "failed", "reason": f"validation could not run: {exc}"}
        validation.update(reference=f"{source.kind} {source.path.name} (onnxruntime)", host=validated_on)
        weights = onnx_weight_stats(file)
        inputs, outs = fmt.describe(file)
        row.update(file=file.name, sha256=sha256_file(file), status=validation["status"],
                   reason=validation.get("reason", ""), sparsity=weights["sparsity"],
                   sparsity_source="quantization" if variant.precision == "int8" else "weights",
                   inputs=inputs, outputs=outs, weights=weights, validation=validation,
                   size=size_report(file, weights["weights"], weights["weights"] - weights["zero_weights"], 0))
        if row["status"] != "ok":
            (staging / "rejected").mkdir(exist_ok=True)
            file.rename(staging / "rejected" / file.name)
            row["file"] = f"rejected/{file.name}"
        rows.append(row)
        log.info("%s: %s%s", name, row["status"], f" ({row['reason']})" if row.get("reason") else "")
    rows += [{"name": n, "status": "skipped", "reason": why} for n, why in skipped.items()]
    shape = [spec.input_size[0], spec.input_size[1], 3]
    manifest = write_bundle(
        staging, labels=source.labels, preprocessing=spec, rows=rows,
        model={"source": str(source.path), "kind": source.kind, "name": source.path.stem,
               "input_shape": shape, "classes": len(source.labels), "output": output_kind},
        reference={"format": source.kind, "precision": "fp32", "runtime": "onnxruntime",
                   "accuracy": round(float((reference.argmax(1) == eval_y).mean()), 6), "images": int(len(eval_y)),
                   "data": dataset.source, "split": "test"},
        calibration={"images": int(len(calibration)), "seed": config.calibration_seed, "split": "train"},
        config=config.to_dict(), tools=_versions(), export_time_s=round(time.perf_counter() - started, 2))
    return ExportResult(out, manifest, rows)


def _convert(name: str, source, calibration: np.ndarray) -> bytes:
    from .engines import nncf_quantize, ort_quantize

    method = ONNX_VARIANTS[name]
    if method is None:
        return source.float_onnx
    if method == "nncf":
        return nncf_quantize(source.float_onnx, calibration, source.input_name)
    return ort_quantize(source.float_onnx, calibration, method, "u8s8_rr", source.input_name)
