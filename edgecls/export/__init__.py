"""Export stage: one table of variants drives optimization, conversion, validation and the bundle.

    >>> from edgecls.export import export
    >>> result = export("runs/r8", data="cifar10-sample", out="bundles/r8")

Each variant becomes one row with a status: ok (validated, shipped), failed (exported but outside
its tolerance, kept in rejected/ and never listed as shippable) or error (could not be produced), and
the reason. One variant failing never stops the others.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from .._io import make_staging_dir, replace_dir
from ..bundle import sha256_file, write_bundle
from ..config import ExportConfig
from ..data import Dataset, calibration_indices, calibration_subset, load_dataset, sample_indices
from ..errors import ConfigError, DataError, EdgeclsError, first_line
from ..preprocess import Batches
from .formats import GROUPS, VARIANTS, ConvertJob, Variant, formats, resolve_formats  # noqa: F401
from .formats.base import QUANTIZED
from .validate import TOLERANCES, Tolerance, compare

log = logging.getLogger("edgecls")


@dataclass
class ExportResult:
    out: Path
    manifest: dict
    rows: list[dict] = field(default_factory=list)

    def format_table(self) -> str:
        """One row per variant; acc is top-1 on the held-out images, Δref its change in points against
        the variant's own Keras reference, agree the top-1 agreement with that reference. Sparsity
        is the share of zero weights in the file: pruning's for pruned variants; marked "q" where an
        unpruned variant's weights merely rounded to zero in quantization."""
        head = f"{'variant':<24}{'status':<8}{'bytes':>10}{'gzip':>10}{'sparsity':>9}{'acc':>8}{'Δref':>8}{'agree':>8}  reason"
        lines = [head]
        for r in self.rows:
            v = r.get("validation", {})
            size = r.get("size", {})
            acc = f"{v['accuracy']:.4f}" if "accuracy" in v else "-"
            delta = f"{v['accuracy_delta_points']:+.2f}" if "accuracy_delta_points" in v else "-"
            agree = f"{v['agreement']:.4f}" if "agreement" in v else "-"
            note = r.get("reason") or (f"warning: {v['warning']}" if v.get("warning") else "")
            sparsity = r.get("sparsity")
            shown = "-" if sparsity is None else f"{sparsity:g}" + ("q" if r.get("sparsity_source") == "quantization" else "")
            lines.append(
                f"{r['name']:<24}{r['status']:<8}{size.get('bytes', '-'):>10}{size.get('gzip_bytes', '-'):>10}"
                f"{shown:>9}{acc:>8}{delta:>8}{agree:>8}  {note}"
            )
        return "\n".join(lines)


def _versions() -> dict:
    out = {}
    for pkg in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert",
                "litert-quantizer", "nncf", "onnx2tf"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def export(model, data="cifar10-sample", out="bundle", config: ExportConfig | None = None, preprocessing=None,
           labels=None, safe_mode: bool = True, dataset: Dataset | None = None, **overrides) -> ExportResult:
    """Optimize, convert, validate and bundle. `model` is anything `edgecls.modelio.load_model`
    accepts (an edgecls training directory, a .keras/.h5 file, a SavedModel directory) or a float
    ONNX file (edgecls.sources: its ONNX variants, validated against its own outputs)."""
    from dataclasses import replace

    config = replace(config, **overrides) if config and overrides else (config or ExportConfig(**overrides))
    resolve_formats(config.formats)
    from ..outputs import check_output_dir

    check_output_dir(out, "bundle", inputs=(model, data if isinstance(data, (str, Path)) else None))
    out = Path(out)
    staging = make_staging_dir(out)
    try:
        from ..sources import load_source

        source = load_source(model, preprocessing, labels) if isinstance(model, (str, Path)) else None
        if source is not None:  # an ONNX model: its own variants (export/from_source.py)
            from .from_source import export_from_source

            result = export_from_source(staging, out, source, data, config, dataset)
        elif config.isolate and isinstance(model, (str, Path)):
            # A native crash while converting one variant costs that variant, not the export.
            from .worker import export_supervised

            result = export_supervised(staging, out, model, data, config, preprocessing, labels, safe_mode, dataset)
        else:
            result = export_into(staging, out, model, data, config, preprocessing, labels, safe_mode, dataset)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def export_into(staging: Path, out: Path, model, data, config: ExportConfig, preprocessing=None, labels=None,
                safe_mode: bool = True, dataset: Dataset | None = None, journal=None) -> ExportResult:
    """Load the model and data and export every variant into `staging` (in this process). `journal`
    (edgecls.export.worker.Journal) records progress for a supervising process and says which
    variants an earlier, crashed attempt already finished or lost."""
    names = resolve_formats(config.formats)
    from ..modelio import load_model

    source = load_model(model, preprocessing, labels, safe_mode=safe_mode)
    if config.optimized:
        from ..optimize.run import check_optimized

        check_optimized(config.optimized, source)
    spec = source.preprocessing
    if dataset is None:
        dataset = load_dataset(data, image_size=spec.input_size, seed=config.seed)
    if dataset.image_size != tuple(spec.input_size):
        raise DataError(f"the data's images are {dataset.image_size} but the model takes {spec.input_size}")
    from ..evaluation import align_labels

    mapping = align_labels(dataset, source.labels)
    if not config.calibration.data and len(dataset.train) < config.calibration.count:
        raise DataError(
            f"the calibration set needs {config.calibration.count} training images but {dataset.source} has "
            f"{len(dataset.train)}; lower --calibration-count (at least 32) or use more data"
        )
    skipped = {}
    if not source.tunable:
        # A model without a Keras layer graph takes every format but the fine-tuned ones: those are
        # listed as skipped with the reason, unless nothing else was asked for.
        why = "a SavedModel without a Keras layer graph cannot be pruned or quantization-aware trained"
        skipped = {n: why for n in names if VARIANTS[n].source != "base"}
        if len(skipped) == len(names):
            raise ConfigError(f"{source.path} is a SavedModel without a Keras layer graph: pruning and QAT are impossible; "
                              f"choose --formats among {', '.join(n for n in VARIANTS if VARIANTS[n].source == 'base')}")
        if journal is None or not journal.restarted:
            for name in skipped:
                log.warning("%s: skipped: %s", name, why)

    if config.calibration.data:
        from ..data.folder import read_unlabelled

        calibration, unreadable = read_unlabelled(config.calibration.data, spec.input_size, config.calibration.count,
                                                  config.calibration.seed)
        log.info("calibrating int8 on %d unlabelled images of %s%s; labels are used only to measure accuracy "
                 "(on %s's test split)", len(calibration), config.calibration.data,
                 f" ({unreadable} unreadable skipped)" if unreadable else "", dataset.source)
    else:
        calibration = calibration_subset(dataset, config.calibration.count, config.calibration.seed)
    validation, candidates = None, None
    if config.calibration.search:
        from .calibration import draws

        too_big = [c for c in config.calibration.search if c > len(dataset.train) // 2]
        if too_big:
            raise DataError(f"--calibration-search {','.join(map(str, too_big))}: {dataset.source} has "
                            f"{len(dataset.train)} training images; sizes up to half of them leave a validation split")
        candidates = draws(dataset, config.calibration.search, config.calibration.draws, config.calibration.seed)
    if config.validation.max_drop is not None or candidates:
        # Choices are checked on training images no calibration draw used (never the test split).
        used = set() if config.calibration.data else set(
            calibration_indices(dataset, config.calibration.count, config.calibration.seed).tolist())
        for _, _, index in candidates or ():
            used.update(index.tolist())
        free = np.array([i for i in range(len(dataset.train)) if i not in used], dtype=np.int64)
        if len(free) < 50:
            raise DataError(f"--max-drop and --calibration-search need a validation split from the training data: "
                            f"{dataset.source} has {len(free)} training images besides the calibration images "
                            f"(50 at least)")
        pick = free[sample_indices(len(free), config.validation.repair_images, config.seed + 1)]
        validation = (dataset.train.take(pick), mapping[dataset.train.labels[pick]])
        log.info("validation split for %s: %d training images kept out of calibration",
                 " and ".join(w for w, on in (("--max-drop", config.validation.max_drop is not None),
                                               ("--calibration-search", bool(candidates))) if on), len(pick))
    keep = sample_indices(len(dataset.test), config.validation.max_images, config.seed)
    eval_images = dataset.test.take(keep)
    eval_y = mapping[dataset.test.labels[keep]]
    return _export_into(staging, Path(out), names, source, dataset, config, calibration, eval_images, eval_y, safe_mode,
                        skipped, journal or _NoJournal(), validation, candidates)


class _NoJournal:
    """The journal of an export that runs in the caller's process: nothing to record or resume."""

    restarted = False
    rows: dict = {}
    details: dict = {}
    lost_sources: dict = {}

    def step(self, name: str | None, what: str, **extra) -> None:
        pass

    def finished(self, row: dict) -> None:
        pass

    def built(self, kind: str, details: dict) -> None:
        pass


class _Models:
    """The Keras models of one export: the model the user gave ("base") and the fine-tuned ones
    (pruned, QAT), each built the first time a variant needs it (or taken from `edgecls optimize`'s
    folder), and each model's reference outputs on the held-out images and the validation split."""

    def __init__(self, source, dataset, spec, config, journal, eval_x, repair_set, safe_mode: bool):
        self.source, self.dataset, self.spec, self.config, self.journal = source, dataset, spec, config, journal
        self.eval_x, self.repair_set, self.safe_mode = eval_x, repair_set, safe_mode
        self.models: dict[str, object] = {"base": source.model}
        self.details: dict[str, dict] = dict(journal.details)  # fine-tunes an earlier attempt finished
        self.build_errors: dict[str, str] = dict(journal.lost_sources)  # ... or crashed in
        self.current: str | None = None  # the variant being exported, for the journal
        self._references: dict[str, np.ndarray] = {}
        self._repair_references: dict[str, np.ndarray] = {}

    def get(self, kind: str):
        if kind in self.models:
            return self.models[kind]
        if kind in self.build_errors:
            raise _BuildError(self.build_errors[kind])
        from ..optimize.run import build_variant, load_optimized

        config = self.config
        if config.optimized and (Path(config.optimized) / kind).is_dir():
            # `edgecls optimize` built it already: reuse it instead of fine-tuning again.
            self.models[kind], self.details[kind] = load_optimized(config.optimized, kind, self.source,
                                                                   safe_mode=self.safe_mode)
            log.info("%s: the model from %s (no fine-tuning)", kind, Path(config.optimized) / kind)
            return self.models[kind]
        try:
            start = self.get("pruned") if kind == "pruned_qat" else self.source.model
            self.journal.step(self.current, f"building the {kind} model", source=kind)
            if kind == "pruned":
                log.info("pruning to %.0f%% sparsity, %s across layers (%d fine-tuning epochs)", 100 * config.prune.sparsity,
                         "by LAMP score" if config.prune.allocation == "lamp" else "uniform", config.prune.epochs)
            else:
                log.info("%squantization-aware training (%d epochs)",
                         "sparsity-preserving " if kind == "pruned_qat" else "", config.qat.epochs)
            opt = build_variant(kind, start, self.dataset, self.spec, config, teacher=self.source.model)
        except _BuildError:
            raise
        except EdgeclsError as exc:
            self.build_errors[kind] = str(exc)
            raise _BuildError(str(exc)) from None
        self.models[kind] = opt.model
        self.details[kind] = dict(opt.details)
        self.journal.built(kind, self.details[kind])
        return opt.model

    def reference(self, kind: str) -> np.ndarray:
        """The Keras model's outputs on the held-out images."""
        from ..evaluation import predict_in_batches

        if kind not in self._references:
            self._references[kind] = predict_in_batches(self.get(kind), self.eval_x)
        return self._references[kind]

    def repair_reference(self, kind: str) -> np.ndarray:
        """The Keras model's outputs on the validation split of --max-drop."""
        from ..evaluation import predict_in_batches

        if kind not in self._repair_references:
            self._repair_references[kind] = predict_in_batches(self.get(kind), self.repair_set[0])
        return self._repair_references[kind]


@dataclass
class _Prepared:
    """What every variant of one export shares, prepared once: the source and its models, the
    calibration images (pixels and normalized), the held-out images (pixels, and normalized a batch
    at a time) with their labels, the validation split of --max-drop and --calibration-search, the
    candidate calibration draws, and the work one variant reuses for another (the fp32 ONNX graph)."""

    staging: Path
    source: object
    dataset: Dataset
    config: ExportConfig
    calibration: np.ndarray
    representative: np.ndarray
    eval_images: np.ndarray
    eval_x: Batches
    eval_y: np.ndarray
    repair_set: tuple | None
    candidates: list | None
    models: _Models
    journal: object
    base_ref: np.ndarray
    macs: int
    validated_on: dict
    skipped: dict
    shared: dict = field(default_factory=dict)

    @property
    def spec(self):
        return self.source.preprocessing


def _export_into(staging: Path, out: Path, names, source, dataset, config, calibration, eval_images, eval_y,
                 safe_mode: bool = True, skipped: dict | None = None, journal=None, validation=None,
                 candidates=None) -> ExportResult:
    """Prepare what the variants share once, export each variant (`_export_variant`), write the
    bundle."""
    from ..hostinfo import validation_host
    from ..training.distill import are_probabilities
    from ..zoo import model_stats

    started = time.perf_counter()
    spec = source.preprocessing
    journal = journal or _NoJournal()
    # Calibration and evaluation images as the model sees them (normalized); the variants that take
    # pixels get theirs from their own input layout. The held-out images are normalized a batch at a
    # time as they are used (edgecls.preprocess.Batches), never held as float32 all at once.
    eval_x = Batches(eval_images, spec.apply)
    repair_set = None if validation is None else (Batches(validation[0], spec.apply), validation[1])
    models = _Models(source, dataset, spec, config, journal, eval_x, repair_set, safe_mode)
    journal.step(None, "computing the Keras model's reference outputs")
    base_ref = models.reference("base")
    prep = _Prepared(staging=staging, source=source, dataset=dataset, config=config, calibration=calibration,
                     representative=spec.apply(calibration), eval_images=eval_images, eval_x=eval_x, eval_y=eval_y,
                     repair_set=repair_set, candidates=candidates, models=models, journal=journal, base_ref=base_ref,
                     macs=model_stats(source.model)["macs"], validated_on=validation_host(), skipped=skipped or {})
    rows = []
    for name in names:
        if name in journal.rows:  # finished (or lost to a crash) in an earlier attempt
            rows.append(journal.rows[name])
            continue
        row = _export_variant(prep, name)
        rows.append(row)
        if row.get("status") != "skipped":
            journal.finished(row)

    base = source.model
    base_acc = float((base_ref.argmax(1) == eval_y).mean())
    journal.step(None, "writing the bundle")
    manifest = write_bundle(
        staging, labels=source.labels, preprocessing=spec, rows=rows,
        model={"source": str(source.path), "kind": source.kind, "name": getattr(base, "name", ""),
               "input_shape": [int(v) for v in base.inputs[0].shape[1:]], "classes": len(source.labels),
               "output": "probabilities" if are_probabilities(base_ref) else "logits"},
        reference={"format": "keras", "precision": "fp32", "accuracy": round(base_acc, 6), "images": int(len(eval_y)),
                   "data": dataset.source, "split": "test"},
        calibration={"images": int(len(prep.representative)), "seed": config.calibration.seed,
                     **({"data": str(config.calibration.data), "labels": False} if config.calibration.data else
                        {"split": "train"})},
        optimization=models.details, config=config.to_dict(), tools=_versions(),
        export_time_s=round(time.perf_counter() - started, 2))
    return ExportResult(out, manifest, rows)


def _export_variant(prep: _Prepared, name: str) -> dict:
    """One variant, start to end: convert (after a calibration search when asked), write, read back,
    repair under --max-drop, validate against its reference, diagnose, check under TFLite Micro;
    a file that fails goes to rejected/. Returns its manifest row."""
    config, journal, models = prep.config, prep.journal, prep.models
    variant = VARIANTS[name]
    fmt = formats()[variant.format]
    row = {"name": name, "format": variant.format, "precision": variant.precision, "source": variant.source,
           "description": variant.description}
    if name in prep.skipped:
        return {**row, "status": "skipped", "reason": prep.skipped[name]}
    t0 = time.perf_counter()
    models.current = name
    try:
        job = _convert_job(prep, variant)
        converted = None
        if prep.candidates and _searchable(variant):
            job, converted = _search_calibration(prep, variant, fmt, job, row)
        if converted is None:
            converted = fmt.convert(variant, job)
        row.update(converted.fields)
    except (_BuildError, EdgeclsError) as exc:
        row.update(status="error", reason=str(exc))
        log.warning("%s: %s", name, exc)
        return row
    file = prep.staging / f"{name}.{variant.format}"  # .tflite or .onnx
    file.write_bytes(converted.data)
    row["convert_s"] = round(time.perf_counter() - t0, 2)
    journal.step(name, "reading the converted file", file=file.name)
    try:
        weights, unreadable = fmt.weight_stats(file), None
    except Exception as exc:  # a damaged flatbuffer or protobuf: struct.error, DecodeError, IndexError ...
        weights, unreadable = {}, f"{exc.__class__.__name__}: {first_line(exc)}"
    nonfinite = weights.get("nonfinite", 0)
    inputs = prep.eval_x
    if unreadable:
        row.update(status="failed", reason=f"the converted file is unreadable ({unreadable}); not loaded")
    elif nonfinite:
        # Loading such a file can crash the interpreter; it is never a model worth shipping.
        row.update(status="failed", reason=f"the converted model holds {nonfinite} NaN or infinite constants "
                                           f"(its Keras model's weights are not finite); not loaded")
        row.update(file=file.name, sha256=sha256_file(file))
    else:
        if prep.repair_set is not None and _repairable(variant, config):
            journal.step(name, "repairing it under --max-drop", file=file.name)
            row.update(_repair(fmt, variant, job, file, prep.repair_set, models.repair_reference))
            weights = fmt.weight_stats(file)
        journal.step(name, "validating the converted file", file=file.name)
        try:
            pixels = converted.pixel_layout
            inputs = Batches(prep.eval_images, pixels.apply) if pixels is not None else prep.eval_x
            row.update(_describe_and_validate(file, variant, fmt, config, inputs, prep.eval_y,
                                              models.reference(variant.source), prep.base_ref, prep.macs, prep.source,
                                              weights))
            row["validation"]["host"] = prep.validated_on
            row["input"] = variant.input
        except EdgeclsError as exc:
            row.update(status="failed", reason=f"validation could not run: {exc}")
    row.update(fmt.manifest_fields(file, config))
    if row.get("repair", {}).get("met") is False and row["status"] == "ok":
        row.update(status="failed", reason=row["repair"]["reason"])
    if "validation" in row and _diagnosable(variant, config) and "diagnosis" not in row:
        journal.step(name, "diagnosing its layers", file=file.name)
        row.update(_diagnosis(fmt, variant, job, file))
    if config.micro.enabled and row["status"] == "ok" and variant.format == "tflite":
        journal.step(name, "running it under TFLite Micro", file=file.name)
        row.update(_micro(file, name, row, inputs, prep.eval_y, prep.base_ref, _tolerance(variant, config),
                          prep.source, prep.spec, prep.staging, config))
    if row["status"] != "ok":
        (prep.staging / "rejected").mkdir(exist_ok=True)
        file.rename(prep.staging / "rejected" / file.name)
        row["file"] = f"rejected/{file.name}"
        log.warning("%s failed validation: %s", name, row["reason"])
    log.info("%s: %s%s", name, row["status"], f" ({row['reason']})" if row.get("reason") else "")
    if row.get("validation", {}).get("warning"):
        log.warning("%s: %s", name, row["validation"]["warning"])
    return row


def _convert_job(prep: _Prepared, variant: Variant) -> ConvertJob:
    """What a format's converter takes for `variant` (its Keras model built first when needed)."""
    keras_model = prep.models.get(variant.source)
    prep.journal.step(variant.name, "converting it")
    return ConvertJob(model=keras_model, base=prep.source.model, spec=prep.spec, config=prep.config,
                      representative=prep.representative, calibration=prep.calibration, shared=prep.shared)


def _search_calibration(prep: _Prepared, variant: Variant, fmt, job: ConvertJob, row: dict):
    """--calibration-search: the variant converted with each candidate draw, the one closest to its
    float model on the validation split kept. Returns (the job with that draw, its conversion)."""
    from .calibration import search

    name, candidates = variant.name, prep.candidates
    prep.journal.step(name, f"searching its calibration ({len(candidates)} draws)")
    record, converted, chosen = search(fmt, variant, job, candidates, prep.dataset.train.images, prep.spec,
                                       prep.repair_set[0], prep.repair_set[1],
                                       prep.models.repair_reference(variant.source), _tolerance(variant, prep.config))
    row["calibration_search"] = record
    log.info("%s: calibration on %d images (seed %d) chosen from %d draws: on the validation split "
             "output mean squared difference from float %.3g, agreement %.4f, top-1 %.4f", name,
             record["chosen"]["count"], record["chosen"]["seed"], len(candidates), record["chosen"]["mse"],
             record["chosen"]["agreement"], record["chosen"]["accuracy"])
    return replace(job, representative=chosen), converted


class _BuildError(Exception):
    pass


def _post_training(variant: Variant) -> bool:
    """Quantized after training from a float Keras model and taking its normalized input (QAT files
    carry their own fake-quantized graph; pixel variants take other inputs)."""
    return variant.source in ("base", "pruned") and variant.input == "normalized"


def _searchable(variant: Variant) -> bool:
    """Post-training variants with quantized activations, calibrated on training images."""
    return variant.precision in QUANTIZED and _post_training(variant)


def _diagnosable(variant: Variant, config) -> bool:
    """Post-training quantized variants (dynamic range too) when the config asks for the diagnosis."""
    return config.validation.diagnose and variant.precision in (*QUANTIZED, "dynamic") and _post_training(variant)


def _repairable(variant: Variant, config) -> bool:
    """Variants whose activations are quantized and whose layers a quantizer can keep in float."""
    return config.validation.max_drop is not None and _searchable(variant) and _diagnosable(variant, config)


def _layers(fmt, variant: Variant, job: ConvertJob, file: Path) -> dict:
    """The per-layer error of `file` against the float file of the same model (edgecls.export.diagnose)
    on the job's calibration images; EdgeclsError when it cannot be measured."""
    import tempfile

    from .diagnose import DIAGNOSIS_IMAGES, diagnose

    with tempfile.TemporaryDirectory(prefix="edgecls-twin-") as tmp:
        twin = Path(tmp) / f"float{file.suffix}"
        twin.write_bytes(fmt.float_twin(variant, job))
        found = diagnose(twin, file, job.representative[:DIAGNOSIS_IMAGES], layout=fmt.layout(job.config))
    found["against"] = f"{variant.format} fp32 of the keras {variant.source} model"
    return found


def _repair(fmt, variant: Variant, job: ConvertJob, file: Path, repair_set, reference) -> dict:
    """Meet --max-drop on the validation split by keeping the worst layers in float (export/repair.py);
    rewrites `file` when layers were kept. The row's "repair" record, and the diagnosis of `file` when
    it was left as it was (so it is not measured twice)."""
    from .repair import repair

    images, labels = repair_set
    try:
        found = _layers(fmt, variant, job, file)
        float_accuracy = float((reference(variant.source).argmax(1) == labels).mean())
        record, converted = repair(fmt, variant, job, file, found, images, labels, float_accuracy,
                                   job.config.validation.max_drop, job.config.validation.repair_max_layers)
    except EdgeclsError as exc:
        log.warning("%s: repair under --max-drop could not run: %s", variant.name, exc)
        return {"repair": {"met": False, "reason": f"repair under --max-drop could not run: {exc}"}}
    if converted is not None:
        file.write_bytes(converted.data)
        log.info("%s: %d layer(s) kept in float to meet --max-drop %g (%s): %.2f points on the validation split",
                 variant.name, len(record["kept_float"]), record["budget_points"], ", ".join(record["kept_float"]),
                 record["drop_points"])
        return {"repair": record, **converted.fields}
    if record["met"]:
        log.info("%s: meets --max-drop %g fully quantized (%.2f points on %d validation images)", variant.name,
                 record["budget_points"], record["plain_drop_points"], record["images"])
    else:
        log.warning("%s: %s", variant.name, record["reason"])
    return {"repair": record, "diagnosis": found}  # the file stays as it was: its diagnosis holds


def _micro(file: Path, name: str, row: dict, inputs, eval_y, base_ref, tolerance, source, spec, staging: Path,
           config) -> dict:
    """The row's "micro" record (edgecls.micro) for a full-integer TFLite file, on a seeded sample of
    config.micro.images held-out images against the model the user gave; {} for other files."""
    from ..micro import full_integer, micro_target

    if not full_integer(row.get("inputs", []), row.get("outputs", [])):
        return {}
    pick = sample_indices(len(eval_y), config.micro.images, config.seed)
    try:
        record = micro_target(file, name, inputs[pick], eval_y[pick], base_ref[pick], tolerance,
                              (row["inputs"], row["outputs"]), list(source.labels), spec.to_dict(), staging)
    except EdgeclsError as exc:
        record = {"verdict": "error", "status": "error", "reason": str(exc)}
    if record.get("status") == "ok":
        log.info("%s: TFLite Micro: arena %s bytes, flash %s bytes, agreement %.4f with the model you gave", name,
                 f"{record['arena_bytes']:,}", f"{record['flash_bytes']:,}", record["validation"]["agreement"])
    else:
        log.warning("%s: TFLite Micro: %s", name, record.get("reason", record["status"]))
    return {"micro": record}


def _diagnosis(fmt, variant: Variant, job: ConvertJob, file: Path) -> dict:
    """The row's per-layer error against its float twin, or the reason it could not be measured."""
    try:
        return {"diagnosis": _layers(fmt, variant, job, file)}
    except EdgeclsError as exc:
        log.warning("%s: %s", variant.name, exc)
        return {"diagnosis_error": str(exc)}


def _tolerance(variant: Variant, config) -> Tolerance:
    """The validation tolerance of `variant`: its precision's, or the one config.validation.tolerances gives."""
    if variant.precision in config.validation.tolerances:
        return Tolerance(**config.validation.tolerances[variant.precision])
    return TOLERANCES[variant.precision]


def _against_given(conversion: dict, given: dict, config) -> dict:
    """A fine-tuned variant's validation: its accuracy change and agreement against the model the
    user gave (what they would ship instead of it), its fidelity to the fine-tuned model it was
    converted from kept under "conversion". It fails when the conversion does, or when it loses
    more than the budget (--max-drop, else FineTuneConfig.max_drop) against the user's model."""
    budget = config.validation.max_drop if config.validation.max_drop is not None else config.fine_tune.max_drop
    failures = [f"conversion: {conversion['reason']}"] if conversion["status"] != "ok" else []
    drop = -given.get("accuracy_delta_points", 0.0)
    if drop > budget:
        failures.append(f"{drop:.2f} points below the model you gave > {budget:g} "
                        f"({'--max-drop' if config.validation.max_drop is not None else '--fine-tuned-max-drop'})")
    keys = ("status", "reason", "agreement", "max_abs_diff", "accuracy", "reference_accuracy", "accuracy_delta_points",
            "tolerance", "reference", "warning")
    out = {k: v for k, v in given.items() if k not in ("status", "reason", "warning")}
    out.update(status="failed" if failures else "ok", reason="; ".join(failures), reference="keras base (the model you gave)",
               budget_points=budget, conversion={k: conversion[k] for k in keys if k in conversion})
    if "warning" in conversion:
        out["warning"] = conversion["warning"]
    return out


def _describe_and_validate(file: Path, variant: Variant, fmt, config, eval_x, eval_y, ref, base_ref, macs, source,
                           weights: dict) -> dict:
    """The row fields of a written artifact: its outputs (computed in a child process) against its
    reference, its tensors, and its sizes; `weights` is `fmt.weight_stats(file)`, read once."""
    from ..runtime import isolated
    from . import inspect as art

    # In a child process: a converted file that crashes its runtime fails this row, not the export.
    outputs = isolated.outputs(file, eval_x, layout=fmt.layout(config), threads=None, timeout=config.validation.timeout_s)
    inputs, outs = fmt.describe(file)
    validation = compare(outputs, ref, eval_y, _tolerance(variant, config))
    validation["reference"] = f"keras {variant.source}"
    if variant.source != "base":
        validation = _against_given(validation, compare(outputs, base_ref, eval_y, _tolerance(variant, config)),
                                    config)
    base_acc = float((base_ref.argmax(1) == eval_y).mean())
    validation["accuracy_delta_vs_fp32_points"] = round((validation.get("accuracy", base_acc) - base_acc) * 100, 4)
    params = int(sum(int(np.prod(w.shape)) for w in source.model.weights))
    nonzero = params - weights["zero_weights"]
    return {
        "file": file.name,
        "sha256": sha256_file(file),
        "status": validation["status"],
        "reason": validation.get("reason", ""),
        "sparsity": weights["sparsity"],
        # Zeros of a pruned model are pruning's; an unpruned model's are weights that rounded to zero.
        "sparsity_source": "pruning" if variant.source in ("pruned", "pruned_qat") else
                           ("quantization" if variant.precision in ("int8", "int16x8", "dynamic", "fp16") else "weights"),
        "inputs": inputs,
        "outputs": outs,
        "size": art.size_report(file, params, nonzero, macs),
        "weights": weights,
        "validation": validation,
    }
