"""`edgecls optimize`: prune and/or QAT a model and save the resulting Keras models, each with its
accuracy on the held-out split and its sparsity per layer."""
from __future__ import annotations

import shutil
from pathlib import Path

from .._io import atomic_write_json, make_staging_dir, replace_dir
from ..config import ExportConfig
from ..data import load_dataset
from ..modelio import LABELS_FILE, MODEL_FILE, save_labels
from ..preprocess import SPEC_FILE
from .common import layer_sparsity

KINDS = ("pruned", "qat", "pruned_qat")


def build_variant(kind: str, model, dataset, spec, config: ExportConfig, teacher=None):
    """One optimized model with `config`'s settings: "pruned" and "qat" start from the base model,
    "pruned_qat" from the pruned one (sparsity-preserving QAT). With `config.fine_tune.distill` the fine-tune
    distills from `teacher` (pass the base model; default `model`). Returns an `Optimized` record."""
    from . import prune, quantize_aware
    from ..training.distill import Distillation

    distillation = None
    if config.fine_tune.distill:
        distillation = Distillation(teacher if teacher is not None else model, config.fine_tune.distill_alpha, config.fine_tune.distill_temperature)

    if kind == "pruned":
        return prune(model, dataset, spec, sparsity=config.prune.sparsity, epochs=config.prune.epochs,
                     learning_rate=config.prune.learning_rate, batch_size=config.fine_tune.batch_size,
                     structured_2x4=config.prune.structured_2x4, skip_layers=config.prune.skip_layers, seed=config.seed,
                     verbose=config.verbose, distillation=distillation, allocation=config.prune.allocation)
    return quantize_aware(model, dataset, spec, epochs=config.qat.epochs, learning_rate=config.qat.learning_rate,
                          batch_size=config.fine_tune.batch_size, preserve_sparsity=kind == "pruned_qat",
                          seed=config.seed, calibration_count=config.calibration.count if config.qat.calibrate else 0,
                          calibration_seed=config.calibration.seed, verbose=config.verbose, distillation=distillation)


def check_optimized(folder, source) -> dict:
    """The optimize.json of an `edgecls optimize` folder, after checking it was made from `source`;
    ConfigError otherwise."""
    from .._io import read_json
    from ..errors import ConfigError

    folder = Path(folder)
    report = read_json(folder / "optimize.json", "optimize report", ConfigError, "optimize")
    if not isinstance(report, dict) or not isinstance(report.get("variants"), dict):
        raise ConfigError(f"{folder}: not a folder written by 'edgecls optimize' (no optimize.json of its own)")
    if Path(str(report.get("source", ""))).resolve() != Path(source.path).resolve():
        raise ConfigError(f"--optimized {folder} was optimized from {report.get('source')}, not {source.path}; pass "
                          f"that model or optimize this one")
    return report


def load_optimized(folder, kind: str, source, safe_mode: bool = True):
    """The `kind` model an `edgecls optimize` run wrote into `folder`, checked to come from `source`
    (a LoadedModel: same model path, classes and preprocessing), and its optimize.json details."""
    from ..errors import ConfigError
    from ..modelio import load_keras_model, load_labels
    from ..preprocess import PreprocessingSpec
    from .prune import _tfmot

    folder = Path(folder)
    report = check_optimized(folder, source)
    sub = folder / kind
    if load_labels(sub / LABELS_FILE) != tuple(source.labels) or PreprocessingSpec.load(sub / SPEC_FILE) != source.preprocessing:
        raise ConfigError(f"{sub}: its classes or preprocessing differ from {source.path}'s")
    path = sub / (MODEL_FILE if kind == "pruned" else "model.h5")
    if kind == "pruned":
        model = load_keras_model(path, safe_mode=safe_mode)
    else:
        with _tfmot().quantization.keras.quantize_scope():
            model = load_keras_model(path, safe_mode=safe_mode)
    details = dict(report["variants"].get(kind) or {})
    details.pop("accuracy", None)  # measured on optimize's images; export measures its own
    return model, {**details, "from": str(sub)}


def optimize(model, data="cifar10-sample", out="optimized", kinds=KINDS, config: ExportConfig | None = None,
             preprocessing=None, labels=None, safe_mode: bool = True) -> dict:
    """Build the requested optimized Keras models and write them to `out/<kind>/`."""
    from ..errors import ConfigError
    from ..evaluation import align_labels, predict_in_batches
    from ..modelio import load_model

    config = config or ExportConfig()
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ConfigError(f"unknown optimization {unknown or kinds}; choose from {', '.join(KINDS)}")
    from ..outputs import check_output_dir

    check_output_dir(out, "optimize", inputs=(model, data if isinstance(data, (str, Path)) else None))
    source = load_model(model, preprocessing, labels, safe_mode=safe_mode)
    if not source.tunable:
        raise ConfigError(f"{source.path} is a SavedModel without a Keras layer graph; pruning and QAT need a Keras model")
    spec = source.preprocessing
    dataset = load_dataset(data, image_size=spec.input_size, seed=config.seed)
    mapping = align_labels(dataset, source.labels)
    x, y = spec.apply(dataset.test.images), mapping[dataset.test.labels]

    def accuracy(m):
        return float((predict_in_batches(m, x).argmax(1) == y).mean())

    report = {"source": str(source.path), "base_accuracy": accuracy(source.model), "test_images": len(y), "variants": {}}
    built = {}
    if "pruned" in kinds or "pruned_qat" in kinds:
        built["pruned"] = build_variant("pruned", source.model, dataset, spec, config)
    if "qat" in kinds:
        built["qat"] = build_variant("qat", source.model, dataset, spec, config)
    if "pruned_qat" in kinds:
        built["pruned_qat"] = build_variant("pruned_qat", built["pruned"].model, dataset, spec, config, teacher=source.model)
    staging = make_staging_dir(out)
    try:
        for kind in kinds:
            opt = built[kind]
            folder = staging / kind
            folder.mkdir()
            opt.model.save(folder / (MODEL_FILE if kind == "pruned" else "model.h5"))
            save_labels(folder / LABELS_FILE, source.labels)
            spec.save(folder / SPEC_FILE)
            entry = {"accuracy": accuracy(opt.model), **{k: v for k, v in opt.details.items()}}
            entry.update(layer_sparsity(opt.model) if kind == "pruned" else {})
            report["variants"][kind] = entry
            atomic_write_json(folder / "optimize.json", entry)
        atomic_write_json(staging / "optimize.json", report)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report
