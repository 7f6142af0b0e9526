"""Export of a model given as a float ONNX or TFLite file (edgecls.sources). Float files are the
hub: the source becomes a float TFLite file and a float ONNX file (as given, or by a maintained
converter: edgecls.sources.convert), and each post-training engine quantizes the float file of its
format (export/engines.py POST_TRAINING). Every file is validated against the source's own float
outputs (onnxruntime for ONNX, LiteRT for TFLite) on the held-out images, in probabilities.
Variants that need a Keras model are listed as skipped with the reason."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bundle import sha256_file, write_bundle
from ..data import calibration_subset, load_dataset, sample_indices
from ..errors import ConfigError, DataError, EdgeclsError
from ..preprocess import Batches
from .formats import VARIANTS, resolve_formats

log = logging.getLogger("edgecls")

# The variants a source becomes: name -> (format, engine in engines.POST_TRAINING or None for the float file).
SOURCE_VARIANTS = {
    "tflite_fp32": ("tflite", None),
    "tflite_fp16": ("tflite", "aeq"),
    "tflite_dynamic_aeq": ("tflite", "aeq"),
    "tflite_int8_aeq": ("tflite", "aeq"),
    "tflite_int16x8_aeq": ("tflite", "aeq"),
    "onnx_fp32": ("onnx", None),
    "onnx_int8": ("onnx", "ort_percentile"),
    "onnx_int8_minmax": ("onnx", "ort_minmax"),
    "onnx_int8_entropy": ("onnx", "ort_entropy"),
    "onnx_int8_nncf": ("onnx", "nncf"),
}
# Why the LiteRT quantizer's int8 file of a model ending in logits keeps its last layer in float.
LOGITS_KEPT = ("the model ends in logits: an int8 output tensor rounds them in steps too coarse for the softmax "
               "after it (the last layer adds the most error in the per-layer diagnosis); kept in float, the "
               "PyTorch ResNet-8 of BENCHMARKS.md validates (agreement 98.75%, largest difference 0.24) where the "
               "all-int8 file fails (0.66)")
# Variants whose engine (the TFLite converter's quantizer) needs a Keras model: the same precision
# from the float file, by the LiteRT quantizer.
INSTEAD = {"tflite_int8": "tflite_int8_aeq", "tflite_dynamic": "tflite_dynamic_aeq"}
NEEDS_KERAS = {
    "pruned": "pruning needs a Keras layer graph; {kind} models are optimized after training only",
    "qat": "quantization-aware training needs a Keras layer graph",
    "pruned_qat": "pruning and quantization-aware training need a Keras layer graph",
    "pixels": "folding the normalization into the first layer needs a Keras model",
}


def source_variants(formats) -> tuple[list[str], dict[str, str]]:
    """The variants (in order) a source makes for `formats`, and those it skips with the reason."""
    wanted: list[str] = []
    skipped: dict[str, str] = {}
    for name in resolve_formats(formats):
        name = INSTEAD.get(name, name)
        if name in SOURCE_VARIANTS:
            if name not in wanted:
                wanted.append(name)
            continue
        variant = VARIANTS[name]
        key = "pixels" if variant.input == "pixels" else variant.source
        skipped[name] = NEEDS_KERAS.get(key, "needs a Keras model").format(kind="ONNX and TFLite")
    return wanted, skipped


def export_from_source(staging: Path, out: Path, source, data, config, dataset=None):
    """Every requested variant `source` can become, written and validated into `staging`."""
    from ..evaluation import align_labels
    from ..hostinfo import validation_host
    from . import ExportResult, _versions

    started = time.perf_counter()
    wanted, skipped = source_variants(config.formats)
    if not wanted:
        kind = {"onnx": "an ONNX", "tflite": "a TFLite"}.get(source.kind, f"a {source.kind}")
        raise ConfigError(f"{source.given}: none of the requested variants can be made from {kind} model; "
                          f"choose among {', '.join(SOURCE_VARIANTS)}")
    for name, why in skipped.items():
        log.warning("%s: skipped: %s", name, why)
    spec = source.preprocessing
    if dataset is None:
        dataset = load_dataset(data, image_size=spec.input_size, seed=config.seed)
    if dataset.image_size != tuple(spec.input_size):
        raise DataError(f"the data's images are {dataset.image_size} but the model takes {spec.input_size}")
    mapping = align_labels(dataset, source.labels)
    if len(dataset.train) < config.calibration.count:
        raise DataError(f"the calibration set needs {config.calibration.count} training images but {dataset.source} "
                        f"has {len(dataset.train)}; lower --calibration-count (at least 32) or use more data")
    calibration = spec.apply(calibration_subset(dataset, config.calibration.count, config.calibration.seed))
    repair_set = _repair_set(dataset, mapping, config, source) if config.validation.max_drop is not None else None
    keep = sample_indices(len(dataset.test), config.validation.max_images, config.seed)
    eval_x = Batches(dataset.test.take(keep), spec.apply)  # normalized a batch at a time
    eval_y = mapping[dataset.test.labels[keep]]
    reference = source.reference(eval_x)
    from ..training.distill import are_probabilities

    output_kind = "probabilities" if are_probabilities(reference) else "logits"
    validated_on = validation_host()
    prep = _SourcePrepared(source=source, config=config, staging=staging, calibration=calibration,
                           output_kind=output_kind, repair_set=repair_set, eval_x=eval_x, eval_y=eval_y,
                           reference=reference, spec=spec, validated_on=validated_on)
    rows = [_source_variant(prep, name) for name in wanted]
    rows += [{"name": n, "status": "skipped", "reason": why} for n, why in skipped.items()]
    shape = [spec.input_size[0], spec.input_size[1], 3]
    manifest = write_bundle(
        staging, labels=source.labels, preprocessing=spec, rows=rows,
        model={"source": source.given, "kind": source.kind, "name": source.path.stem,
               "input_shape": shape, "classes": len(source.labels), "output": output_kind},
        reference={"format": source.kind, "precision": "fp32", "runtime": source.runtime,
                   "accuracy": round(float((reference.argmax(1) == eval_y).mean()), 6), "images": int(len(eval_y)),
                   "data": dataset.source, "split": "test"},
        calibration={"images": int(len(calibration)), "seed": config.calibration.seed, "split": "train"},
        config=config.to_dict(), tools=_versions(), export_time_s=round(time.perf_counter() - started, 2))
    return ExportResult(out, manifest, rows)


@dataclass
class _SourcePrepared:
    """What every variant of a source's export shares, prepared once."""

    source: object
    config: object
    staging: Path
    calibration: np.ndarray
    output_kind: str
    repair_set: tuple | None
    eval_x: object
    eval_y: np.ndarray
    reference: np.ndarray
    spec: object
    validated_on: dict
    floats: dict = field(default_factory=dict)  # format -> (bytes, conversion) or the EdgeclsError that stopped it


def _source_variant(prep: _SourcePrepared, name: str) -> dict:
    """One variant of a source, start to end: its float file (made once per format and shared),
    quantized by the variant's engine, written, diagnosed and repaired under --max-drop, validated
    against the source's own outputs, checked under TFLite Micro. Returns its manifest row."""
    source, config = prep.source, prep.config
    from ..runtime import isolated
    from . import _tolerance
    from .formats import formats
    from .inspect import onnx_weight_stats, size_report, tflite_weight_stats
    from .validate import compare

    fmt_name, engine = SOURCE_VARIANTS[name]
    variant = VARIANTS[name]
    layout = source.layout_of(fmt_name)
    row = {"name": name, "format": fmt_name, "precision": variant.precision, "source": "source",
           "description": _description(variant, source), "layout": layout}
    try:
        if fmt_name not in prep.floats:
            prep.floats[fmt_name] = _float_file(source, fmt_name, prep.calibration)
        if isinstance(prep.floats[fmt_name], EdgeclsError):
            raise prep.floats[fmt_name]
        float_bytes, conversion = prep.floats[fmt_name]
        keep = _logits_layer(engine, variant, float_bytes, prep.output_kind)
        data_bytes = float_bytes if engine is None else _quantize(engine, variant, float_bytes,
                                                                    source.in_layout(prep.calibration, fmt_name),
                                                                    source, config, keep)
    except EdgeclsError as exc:
        log.warning("%s: %s", name, exc)
        return {**row, "status": "error", "reason": str(exc)}
    file = prep.staging / f"{name}.{fmt_name}"
    file.write_bytes(data_bytes)
    row["conversion"] = dict(conversion)
    if keep:
        row["kept_float"] = {"layers": list(keep), "why": LOGITS_KEPT}
    if fmt_name == "tflite":
        from ..sources.convert import tflite_ops

        row["conversion"]["transposes"] = tflite_ops(data_bytes).count("TRANSPOSE")
    if engine:
        row["engine"] = engine
        if fmt_name == "onnx":
            row["int8_scheme"] = "u8s8_overflow_fix" if engine == "nncf" else config.convert.onnx_int8_scheme
    if engine and (config.validation.diagnose or prep.repair_set) and variant.precision in ("int8", "int16x8", "dynamic"):
        row.update(_diagnosis(name, fmt_name, float_bytes, file, source.in_layout(prep.calibration, fmt_name), source))
        if prep.repair_set and "diagnosis" in row and variant.precision in ("int8", "int16x8"):
            # May rewrite the file with layers kept in float: what is validated below.
            _repair(variant, engine, float_bytes, file, row, prep.repair_set, prep.calibration, source, config, keep)
    try:
        outputs = isolated.outputs(file, source.in_layout(prep.eval_x, fmt_name), layout="NHWC", threads=None,
                                   timeout=config.validation.timeout_s)
        validation = compare(outputs, prep.reference, prep.eval_y, _tolerance(variant, config))
    except EdgeclsError as exc:
        validation = {"status": "failed", "reason": f"validation could not run: {exc}"}
    validation.update(reference=f"{source.kind} {source.path.name} ({source.runtime})", host=prep.validated_on)
    weights = onnx_weight_stats(file) if fmt_name == "onnx" else tflite_weight_stats(file)
    inputs, outs = formats()[fmt_name].describe(file)
    row.update(file=file.name, sha256=sha256_file(file), status=validation["status"],
               reason=validation.get("reason", ""), sparsity=weights["sparsity"],
               sparsity_source="quantization" if variant.precision in ("int8", "int16x8") else "weights",
               inputs=inputs, outputs=outs, weights=weights, validation=validation,
               size=size_report(file, weights["weights"], weights["weights"] - weights["zero_weights"], 0))
    if row["status"] != "ok":
        (prep.staging / "rejected").mkdir(exist_ok=True)
        file.rename(prep.staging / "rejected" / file.name)
        row["file"] = f"rejected/{file.name}"
    if config.micro.enabled and row["status"] == "ok" and fmt_name == "tflite":
        from . import _micro  # TFLite Micro for a full-integer file, against the source's own outputs

        row.update(_micro(file, name, row, source.in_layout(prep.eval_x, fmt_name), prep.eval_y, prep.reference,
                          _tolerance(variant, config), source, prep.spec, prep.staging, config))
    log.info("%s: %s%s", name, row["status"], f" ({row['reason']})" if row.get("reason") else "")
    return row


def _description(variant, source) -> str:
    what = {"tflite_fp32": "TFLite float32", "onnx_fp32": "ONNX float32",
            "tflite_fp16": "TFLite float16 weights, by the LiteRT quantizer"}.get(variant.name)
    return f"{what or variant.description} of {source.path.name}"


def _float_file(source, fmt: str, calibration: np.ndarray):
    """(bytes, conversion) of the source's float file of `fmt`, or the error that stopped it."""
    try:
        return source.float_tflite(calibration) if fmt == "tflite" else source.float_onnx(calibration)
    except EdgeclsError as exc:
        return exc


def _diagnosis(name: str, fmt: str, float_bytes: bytes, file: Path, images: np.ndarray, source) -> dict:
    """The per-layer error of a quantized file against the float file it was quantized from
    (edgecls.export.diagnose), or the reason it could not be measured."""
    import tempfile

    from .diagnose import DIAGNOSIS_IMAGES, diagnose

    try:
        with tempfile.TemporaryDirectory(prefix="edgecls-twin-") as tmp:
            twin = Path(tmp) / f"float.{fmt}"
            twin.write_bytes(float_bytes)
            found = diagnose(twin, file, images[:DIAGNOSIS_IMAGES], layout="NHWC")  # images already in the file's layout
    except EdgeclsError as exc:
        log.warning("%s: %s", name, exc)
        return {"diagnosis_error": str(exc)}
    found["against"] = f"{fmt} fp32 of your {source.kind} model"
    return {"diagnosis": found}


def _repair_set(dataset, mapping, config, source):
    """Training images no calibration draw used, normalized and in NHWC, with their labels and the
    source's own accuracy on them: what --max-drop is judged on (never the test split)."""
    from ..data import calibration_indices

    used = set(calibration_indices(dataset, config.calibration.count, config.calibration.seed).tolist())
    free = np.array([i for i in range(len(dataset.train)) if i not in used], dtype=np.int64)
    if len(free) < 50:
        raise DataError(f"--max-drop needs a validation split from the training data: {dataset.source} has {len(free)} "
                        f"training images besides the calibration images (50 at least)")
    pick = free[sample_indices(len(free), config.validation.repair_images, config.seed + 1)]
    images = Batches(dataset.train.take(pick), source.preprocessing.apply)
    labels = mapping[dataset.train.labels[pick]]
    log.info("validation split for --max-drop: %d training images kept out of calibration", len(pick))
    return images, labels, float((source.reference(images).argmax(1) == labels).mean())


class _Requantize:
    """What edgecls.export.repair needs of a format, for a source's float file: the file quantized
    again by the same engine with some layers kept in float; images come in the file's layout."""

    def __init__(self, engine: str, float_bytes: bytes, calibration: np.ndarray, input_name: str, scheme: str,
                 keep: tuple[str, ...] = ()):
        self.engine, self.float_bytes, self.calibration = engine, float_bytes, calibration
        self.input_name, self.scheme, self.keep = input_name, scheme, tuple(keep)

    def layout(self, config) -> str:
        return "NHWC"  # the images are given already in the file's layout

    def requantize(self, variant, job, scopes):
        from types import SimpleNamespace

        from .engines import post_training

        return SimpleNamespace(data=post_training(self.engine, self.float_bytes, self.calibration, variant.precision,
                                                  input_name=self.input_name, scheme=self.scheme,
                                                  keep_float=self.keep + tuple(scopes)))


def _repair(variant, engine, float_bytes, file: Path, row: dict, repair_set, calibration, source, config,
            keep=()) -> None:
    """--max-drop for a source's quantized file (edgecls.export.repair): its worst layers kept in
    float, by the engine that made it, until the budget is met on the validation split. Rewrites
    `file` when layers were kept; records row["repair"]."""
    from types import SimpleNamespace

    from .repair import repair

    images, labels, float_accuracy = repair_set
    fmt = variant.format
    input_name = _input_name(variant, float_bytes, source)
    adapter = _Requantize(engine, float_bytes, source.in_layout(calibration, fmt), input_name, config.convert.onnx_int8_scheme,
                          keep)
    job = SimpleNamespace(config=config)
    try:
        record, converted = repair(adapter, variant, job, file, row["diagnosis"], source.in_layout(images, fmt), labels,
                                   float_accuracy, config.validation.max_drop, config.validation.repair_max_layers)
    except EdgeclsError as exc:
        row["repair"] = {"met": False, "reason": f"repair could not run: {exc}"}
        return
    row["repair"] = record
    log.info("%s: --max-drop %g %s", variant.name, config.validation.max_drop,
             f"met with {len(record['kept_float'])} layer(s) in float" if record.get("met") and record["kept_float"]
             else ("met" if record.get("met") else "not met"))
    if converted is not None:
        file.write_bytes(converted.data)


def _input_name(variant, float_bytes: bytes, source) -> str:
    if variant.format != "onnx":
        return ""
    if source.kind == "onnx":
        return source.input_name
    import onnx  # tf2onnx names the input after the TFLite tensor

    return onnx.load_from_string(float_bytes).graph.input[0].name


def _quantize(engine: str, variant, float_bytes: bytes, calibration: np.ndarray, source, config,
              keep: tuple[str, ...] = ()) -> bytes:
    from .engines import post_training

    return post_training(engine, float_bytes, calibration, variant.precision, input_name=_input_name(variant, float_bytes, source),
                         scheme=config.convert.onnx_int8_scheme, keep_float=keep)


def _logits_layer(engine, variant, float_bytes: bytes, output_kind: str) -> tuple[str, ...]:
    """The output tensor of a logits model's TFLite file, for the LiteRT quantizer's int8 files to
    keep in float (LOGITS_KEPT says why); () otherwise."""
    if engine != "aeq" or output_kind != "logits" or variant.precision not in ("int8", "int16x8"):
        return ()
    from ai_edge_litert.interpreter import Interpreter

    return (Interpreter(model_content=float_bytes).get_output_details()[0]["name"],)
