"""The training stage.

    >>> from edgecls import TrainConfig, train
    >>> result = train(TrainConfig(data="cifar10-sample", arch="resnet8", epochs=5, out="runs/r8"))

Work in progress lives in `<out>.partial/` (per-epoch checkpoints, history). Only a finished run
is moved to `<out>`, so an interrupted or failed run never leaves half-written files there; the
checkpoints stay behind for `resume=True`.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .._deps import keras, tensorflow
from .._io import atomic_write_json, read_json, replace_dir
from ..config import TrainConfig
from ..data import Dataset, load_dataset, stratified_split
from ..errors import ConfigError, DataError, Interrupted, ModelError
from ..hostinfo import host_info
from ..modelio import (LABELS_FILE, MODEL_FILE, TRAIN_FILE, TrainedModel, read_finished_run, save_labels,
                      save_model_file)
from ..preprocess import SPEC_FILE, PreprocessingSpec
from ..zoo import create_model, get_model_info, model_stats
from .distribute import select_placement
from .guards import finite_loss_guard

log = logging.getLogger("edgecls")

_RESUME_KEYS = ("data", "arch", "recipe", "epochs", "batch_size", "image_size", "seed", "val_fraction", "augment", "cutout", "cutmix", "init_from",
                "swa_epochs", "swa_learning_rate", "teacher", "distill_alpha", "distill_temperature")
# What a run.json written before a key existed meant by it.
_RESUME_DEFAULTS = {"cutout": 0, "cutmix": 0.0, "swa_epochs": 0, "swa_learning_rate": None, "teacher": None, "distill_alpha": 0.9, "distill_temperature": 4.0}
# Temperatures when TrainConfig.distill_temperature is None: low for a teacher trained with label smoothing.
AUTO_TEMPERATURE_SMOOTHED, AUTO_TEMPERATURE = 1.0, 4.0


@dataclass
class TrainResult:
    out: Path
    model_path: Path
    metrics: dict
    model: object = None


def preprocessing_for(config: TrainConfig, dataset: Dataset, train_index: np.ndarray) -> PreprocessingSpec:
    size = dataset.image_size
    if config.recipe == "tutorial":
        return PreprocessingSpec(input_size=size, scale=1 / 255.0)
    # Standardize with the per-channel statistics of the training images actually used.
    pixels = dataset.train.images[train_index].reshape(-1, 3).astype(np.float64) / 255.0
    return PreprocessingSpec(input_size=size, scale=1 / 255.0, mean=tuple(pixels.mean(0)), std=tuple(pixels.std(0)))


def _finished_run(path: Path, flag: str, dataset: Dataset) -> tuple[TrainedModel, dict]:
    """A finished 'edgecls train' run named on the command line by `flag` (--init, --teacher) and
    its train.json, checked against this run's classes and image size."""
    run, about = read_finished_run(path, flag)
    if tuple(run.labels) != tuple(dataset.class_names):
        raise ConfigError(f"{flag} {path}: its classes {list(run.labels)} differ from {dataset.source}'s "
                          f"{list(dataset.class_names)}; it must know the same classes in the same order")
    if tuple(run.preprocessing.input_size) != tuple(dataset.image_size):
        raise ConfigError(f"{flag} {path}: it takes {tuple(run.preprocessing.input_size)} images, not "
                          f"{tuple(dataset.image_size)}; pass --image-size {run.preprocessing.input_size[0]}")
    return run, about


def _load_start(config: TrainConfig, dataset: Dataset) -> tuple[TrainedModel, dict]:
    """The finished run that `init_from` names, checked against this run's arch, classes and image size."""
    start, before = _finished_run(Path(config.init_from), "--init", dataset)
    if before.get("arch", config.arch) != config.arch:
        raise ConfigError(f"--init {config.init_from}: that run trained {before['arch']!r}, not {config.arch!r}; pass --arch {before['arch']}")
    return start, before


def _load_teacher(config: TrainConfig, dataset: Dataset) -> tuple[TrainedModel, dict]:
    """The finished run that `teacher` names, checked against this run's classes and image size."""
    teacher, about = _finished_run(Path(config.teacher), "--teacher", dataset)
    if teacher.preprocessing.layout != "NHWC":
        raise ConfigError(f"--teacher {config.teacher}: its input layout is {teacher.preprocessing.layout}; a teacher must take NHWC images")
    return teacher, about


def _make_optimizer(config: TrainConfig, steps_per_epoch: int):
    k = keras()
    total = max(1, config.epochs * steps_per_epoch)
    if config.recipe == "tutorial":
        return k.optimizers.Adam(learning_rate=config.peak_learning_rate)
    # With weight averaging the decay ends swa_epochs before the end, at the averaging rate, and
    # stays there (CosineDecay holds its last value past decay_steps).
    decay_end = total - config.swa_epochs * steps_per_epoch
    warmup = min(int(config.warmup_epochs * steps_per_epoch), decay_end - 1)
    schedule = k.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.peak_learning_rate,
        decay_steps=decay_end - warmup,
        alpha=config.swa_lr / config.peak_learning_rate if config.swa_epochs else 0.0,
        warmup_target=config.peak_learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    optimizer = k.optimizers.SGD(
        learning_rate=schedule, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay or None
    )
    if config.weight_decay:
        # Decay only convolution and dense kernels: shrinking BatchNorm scales or biases hurts.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "moving_"])
    return optimizer


def _apply_average(model, average, config: TrainConfig, x_train, y_train, spec, num_classes, test_ds, val_ds,
                   augment: bool) -> dict:
    """Replace the model's weights by their average over the last epochs and recompute BatchNorm
    statistics with one pass over the training stream. Returns what was done and, for comparison,
    the last epoch's own accuracy.

    The pass sees the images as training did (augmented when training was): the layers after each
    BatchNorm learned with batch statistics of augmented images, and the padded crops' black
    borders move the early layers' statistics a lot (experiments/recompute_bn.py compares both)."""
    from ..data.pipeline import make_dataset
    from .swa import recompute_batch_norm

    if average.count < 2:
        raise ModelError(f"weight averaging: only {average.count} epoch(s) were averaged; nothing to average")
    info = {"epochs": config.swa_epochs, "lr": config.swa_lr, "averaged_epochs": [e + 1 for e in average.epochs]}
    info["last_epoch_test_accuracy"] = float(model.evaluate(test_ds, verbose=0)[1])
    if val_ds is not None:
        info["last_epoch_val_accuracy"] = float(model.evaluate(val_ds, verbose=0)[1])
    model.set_weights(average.weights(model.get_weights()))
    stream = make_dataset(x_train, y_train, spec, config.batch_size, num_classes, training=True, augment=augment,
                          seed=config.seed + 1, cache=False, cutout=config.cutout, cutmix=config.cutmix)
    start = time.perf_counter()
    info["batch_norm_images"] = recompute_batch_norm(model, stream)
    info["batch_norm_augmented"] = augment
    info["batch_norm_s"] = round(time.perf_counter() - start, 2)
    if val_ds is not None:
        info["val_accuracy"] = float(model.evaluate(val_ds, verbose=0)[1])
    log.info("SWA: averaged %d epochs; BatchNorm statistics recomputed on %d training images",
             average.count, info["batch_norm_images"])
    return info


def distill_temperature_for(config: TrainConfig, teacher_metrics: dict) -> tuple[float, str]:
    """The distillation temperature and why: the one given, or (None) one chosen from how the teacher
    was trained. A teacher trained with label smoothing puts nearly equal probability on every wrong
    class; a high temperature flattens that further and the student learns little beyond the label
    (Chandrasegaran et al., ICML 2022), so such a teacher is distilled at T = 1, any other at T = 4."""
    if config.distill_temperature is not None:
        return float(config.distill_temperature), "given"
    trained = teacher_metrics.get("config") or {}
    smoothing = 0.0 if trained.get("recipe") == "tutorial" else trained.get("label_smoothing")
    if smoothing is None:
        return AUTO_TEMPERATURE, "default: the teacher's train.json does not say whether it used label smoothing"
    if smoothing > 0:
        return AUTO_TEMPERATURE_SMOOTHED, f"default for a teacher trained with label smoothing {smoothing:g}"
    return AUTO_TEMPERATURE, "default for a teacher trained without label smoothing"


def _distiller_for(model, teacher: TrainedModel, teacher_metrics: dict, config: TrainConfig, spec: PreprocessingSpec,
                   hard_loss, x_train, test_ds):
    """The Keras model that trains `model` toward `teacher`'s soft outputs (and the labels), and
    what train.json records about it. The teacher's own test accuracy is measured first, on the
    same test images, so a weak teacher shows before hours of training."""
    from .distill import Distillation, distiller, on_student_inputs, outputs_are_probabilities

    k = keras()
    # Rebuilt here, inside the distribution strategy's scope, so its variables live where the student's do.
    rebuilt = k.models.clone_model(teacher.model)
    rebuilt.set_weights(teacher.model.get_weights())
    teacher_model = on_student_inputs(rebuilt, teacher.preprocessing, spec)
    teacher_model.trainable = False
    teacher_model.compile(loss=hard_loss, metrics=[k.metrics.CategoricalAccuracy(name="accuracy")])
    teacher_accuracy = float(teacher_model.evaluate(test_ds, verbose=0)[1])
    probe = spec.apply(x_train[:64])
    temperature, why = distill_temperature_for(config, teacher_metrics)
    info = {
        "teacher": str(config.teacher),
        "teacher_arch": teacher_metrics.get("arch"),
        "teacher_params": int(teacher.model.count_params()),
        "teacher_test_accuracy": teacher_accuracy,
        "teacher_preprocessing_adapted": teacher_model is not rebuilt,
        "alpha": config.distill_alpha,
        "temperature": temperature,
        "temperature_from": why,
    }
    log.info("distilling from %s (%s, %d parameters, test accuracy %.4f here), alpha %g, temperature %g (%s)",
             teacher.path, info["teacher_arch"] or "unknown arch", info["teacher_params"], teacher_accuracy,
             config.distill_alpha, temperature, why)
    trainer = distiller(model, Distillation(teacher_model, config.distill_alpha, temperature), hard_loss,
                        student_logits=not outputs_are_probabilities(model, probe),
                        teacher_logits=not outputs_are_probabilities(teacher_model, probe))
    trainer(probe[:1])  # built before fit, so BackupAndRestore can restore the optimizer's state on --resume
    return trainer, info


class _EpochRecorder:
    """Per-epoch metrics and timings, saved after each epoch so a resumed run keeps its history."""

    def __init__(self, path: Path, n_train: int):
        k = keras()
        recorder = self

        class Callback(k.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                recorder._start = time.perf_counter()
                recorder._train_end = None

            def on_test_begin(self, logs=None):
                if recorder._train_end is None:
                    recorder._train_end = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                recorder.record(epoch, logs or {})

        self.callback = Callback()
        self.path = path
        self.n_train = n_train
        self.epochs: dict[int, dict] = {}
        if path.exists():
            for row in read_json(path, "training history", ConfigError, "history"):
                self.epochs[int(row["epoch"])] = row

    def record(self, epoch: int, logs: dict) -> None:
        end = time.perf_counter()
        train_end = self._train_end or end
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in logs.items() if np.isscalar(v)})
        row["epoch_time_s"] = round(end - self._start, 3)
        row["train_time_s"] = round(train_end - self._start, 3)
        row["images_per_s"] = round(self.n_train / max(train_end - self._start, 1e-9), 1)
        self.epochs[epoch + 1] = row
        atomic_write_json(self.path, [self.epochs[e] for e in sorted(self.epochs)])

    def rows(self) -> list[dict]:
        return [self.epochs[e] for e in sorted(self.epochs)]


def _check_resume(staging: Path, config: TrainConfig) -> None:
    run_file = staging / "run.json"
    if staging.is_symlink() or (staging.exists() and not (staging.is_dir() and run_file.is_file())):
        # Only a folder carrying edgecls's own run record is resumed (and deleted once the run is done).
        raise ConfigError(f"{staging} is in the way: it is not a run edgecls started (no run.json of its own), and edgecls "
                          f"neither resumes nor deletes it; move or rename it, or choose another --out")
    if not staging.exists():
        if config.resume:
            log.warning("nothing to resume in %s; starting a new run", staging)
        return
    if not config.resume:
        raise ConfigError(
            f"an interrupted run is waiting in {staging}; pass --resume to continue it, or delete that folder to start over"
        )
    if run_file.exists():
        before = read_json(run_file, "interrupted run record", ConfigError, "run")
        now = config.to_dict()
        # Without a teacher, before or now, the distillation settings mean nothing.
        distilled = before.get("teacher") is not None or now.get("teacher") is not None
        changed = [k for k in _RESUME_KEYS if (distilled or not k.startswith("distill_"))
                   and before.get(k, _RESUME_DEFAULTS.get(k)) != now.get(k)]
        if changed:
            raise ConfigError(
                f"cannot resume {staging}: {', '.join(f'{k} was {before.get(k)!r}, now {now.get(k)!r}' for k in changed)}; "
                f"use the original options or delete that folder"
            )


def train(config: TrainConfig | None = None, callbacks=(), dataset: Dataset | None = None, **overrides) -> TrainResult:
    """Train a zoo model. Options come from `config` (a TrainConfig) and/or keyword overrides.

    Writes `<out>/model.keras`, `labels.json`, `preprocessing.json` and `train.json`.
    `callbacks` are extra Keras callbacks (progress reporting, for example). `dataset` may be
    passed pre-loaded; otherwise `config.data` is loaded.
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        from dataclasses import replace

        config = replace(config, **overrides)
    out = Path(config.out)
    staging = out.with_name(out.name + ".partial")
    existed = staging.exists()
    try:
        return _train(config, callbacks, dataset)
    except BaseException as exc:
        # What stays behind: only a checkpoint with a finished epoch to resume from. A folder this
        # call did not create (an earlier run's, or not edgecls's) is left as it was.
        epochs = _finished_epochs(staging)
        ours = staging.is_dir() and not existed
        if ours and not epochs:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, KeyboardInterrupt) and epochs:
            raise Interrupted(f"interrupted after {epochs} finished epoch(s); the checkpoint is in {staging}: run the "
                              f"same command with --resume to continue, or delete that folder to start over",
                              getattr(exc, "signum", None)) from None
        raise


def _finished_epochs(staging: Path) -> int:
    try:
        rows = read_json(staging / "history.json", "training history", ConfigError, "history")
    except (OSError, ConfigError):
        return 0
    return len(rows) if isinstance(rows, list) else 0


def _train(config: TrainConfig, callbacks, dataset) -> TrainResult:
    get_model_info(config.arch)  # fail on an unknown name before any data is read
    from ..outputs import check_output_dir

    out = check_output_dir(config.out, "train", inputs=(config.data, config.init_from, config.teacher))
    staging = out.with_name(out.name + ".partial")
    tf = tensorflow()
    k = keras()
    placement = select_placement(tf)
    if placement.is_chief:
        _check_resume(staging, config)
    started = time.perf_counter()
    if dataset is None:
        dataset = load_dataset(config.data, image_size=config.image_size, seed=config.seed)
    if dataset.skipped:
        log.warning("%d unreadable files were skipped in %s", dataset.skipped, dataset.source)
    train_index, val_index = stratified_split(dataset.train.labels, config.val_fraction, config.seed)
    if len(train_index) < config.batch_size // 4 or len(train_index) < 2:
        raise DataError(f"{dataset.source}: only {len(train_index)} training images; at least {max(2, config.batch_size // 4)} are needed")
    start, start_metrics = _load_start(config, dataset) if config.init_from else (None, {})
    teacher, teacher_metrics = _load_teacher(config, dataset) if config.teacher else (None, {})
    # A continued run keeps the preprocessing its weights were trained with.
    spec = start.preprocessing if start else preprocessing_for(config, dataset, train_index)
    num_classes = dataset.num_classes

    k.utils.set_random_seed(config.seed)
    if os.environ.get("EDGECLS_DETERMINISTIC"):
        tf.config.experimental.enable_op_determinism()
    if placement.mixed_precision:
        k.mixed_precision.set_global_policy("mixed_float16")

    from ..data.pipeline import make_dataset

    augment = config.augment and config.recipe != "tutorial"
    x_train, y_train = dataset.train.images[train_index], dataset.train.labels[train_index]
    train_ds = make_dataset(x_train, y_train, spec, config.batch_size, num_classes, training=True,
                            augment=augment, seed=config.seed, cutout=config.cutout, cutmix=config.cutmix)
    val_ds = None
    if len(val_index):
        val_ds = make_dataset(dataset.train.images[val_index], dataset.train.labels[val_index], spec,
                              config.batch_size, num_classes)
    test_ds = make_dataset(dataset.test.images, dataset.test.labels, spec, config.batch_size, num_classes, cache=False)
    steps_per_epoch = math.ceil(len(train_index) / config.batch_size)

    staging.mkdir(parents=True, exist_ok=True)
    if placement.is_chief:
        atomic_write_json(staging / "run.json", config.to_dict())
    input_shape = (*spec.input_size, 3)
    with placement.strategy.scope():
        model = create_model(config.arch, input_shape=input_shape, num_classes=num_classes)
        if start is not None:
            try:
                model.set_weights(start.model.get_weights())
            except ValueError as e:
                raise ConfigError(f"--init {config.init_from}: its weights do not fit {config.arch} ({str(e).splitlines()[0]})") from None
            del start
        hard_loss = k.losses.CategoricalCrossentropy(label_smoothing=0.0 if config.recipe == "tutorial" else config.label_smoothing)
        optimizer = _make_optimizer(config, steps_per_epoch)
        model.compile(optimizer=optimizer, loss=hard_loss, metrics=[k.metrics.CategoricalAccuracy(name="accuracy")])
        trainer, distill_info = model, None
        if teacher is not None:
            trainer, distill_info = _distiller_for(model, teacher, teacher_metrics, config, spec, hard_loss, x_train, test_ds)
            trainer.compile(optimizer=optimizer)  # the loss and metrics are the distiller's
    # Only the chief keeps the history; other workers record in memory.
    recorder = _EpochRecorder(staging / ("history.json" if placement.is_chief else f".history-{os.getpid()}.json"), len(train_index))
    nan_guard = finite_loss_guard(k)
    cbs = [nan_guard, k.callbacks.BackupAndRestore(str(staging / "backup"), save_freq="epoch", delete_checkpoint=False),
           recorder.callback]
    average = None
    if config.swa_epochs:
        from .swa import STATE_FILE, WeightAverage

        if placement.replicas > 1 or not placement.is_chief:
            raise ConfigError("weight averaging (--swa-epochs) runs on one device only for now; drop --swa-epochs "
                              "or train without a distribution strategy")
        average = WeightAverage(staging / STATE_FILE, first_epoch=config.epochs - config.swa_epochs)
        # Before BackupAndRestore: an epoch is averaged before its checkpoint is written, and a
        # resumed run that repeats it does not count it twice.
        cbs.insert(1, average.callback(model))
        if config.patience and val_ds is not None:
            log.info("weight averaging: early stopping is off (the average needs the last %d epochs)", config.swa_epochs)
    elif config.patience and val_ds is not None:
        cbs.append(k.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=config.patience,
                                             restore_best_weights=True, verbose=1))
    cbs.extend(callbacks)
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    log.info("training %s on %s (%d train / %d val / %d test images) on %s", config.arch, dataset.name,
             len(train_index), len(val_index), len(dataset.test), placement.device)
    fit_start = time.perf_counter()
    trainer.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=cbs, verbose=verbose)
    fit_time = time.perf_counter() - fit_start
    if nan_guard.at is not None:
        # The checkpoints hold NaN weights too: resuming from them cannot help.
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelError(f"training diverged: the loss became NaN in epoch {nan_guard.at[0] + 1} at a peak learning "
                         f"rate of {config.peak_learning_rate:g}; start again with a lower --lr")
    swa_info = None
    if average is not None:
        swa_info = _apply_average(model, average, config, x_train, y_train, spec, num_classes, test_ds, val_ds, augment)
    test_loss, test_acc = model.evaluate(test_ds, verbose=0)

    if placement.mixed_precision:
        # Ship a float32 model: rebuild without the mixed policy and copy the weights over.
        k.mixed_precision.set_global_policy("float32")
        trained = model
        model = create_model(config.arch, input_shape=input_shape, num_classes=num_classes)
        model.set_weights(trained.get_weights())

    rows = recorder.rows()
    train_s = sum(r["train_time_s"] for r in rows)
    # What the run this one continued (--init) had behind it, its own predecessors included.
    prior_epochs = start_metrics.get("total_epochs", start_metrics.get("epochs_run"))
    prior_train_s = start_metrics.get("total_train_time_s", start_metrics.get("train_time_s"))
    stats = model_stats(model)
    best = max(rows, key=lambda r: r.get("val_accuracy", -1)) if rows and "val_accuracy" in rows[0] else None
    metrics = {
        "edgecls_version": __version__,
        "arch": config.arch,
        "config": config.to_dict(),
        "dataset": dataset.summary(),
        "split": {"train": int(len(train_index)), "val": int(len(val_index)), "test": len(dataset.test)},
        "model": stats,
        "epochs_run": len(rows),
        # Epochs behind the shipped weights, counting the runs this one continued (--init).
        "total_epochs": len(rows) + (prior_epochs or 0),
        "init_from": {
            "path": str(config.init_from),
            "epochs": prior_epochs,
            "test_accuracy": start_metrics.get("test_accuracy"),
            "train_time_s": prior_train_s,
            "config": start_metrics.get("config"),
        } if config.init_from else None,
        "stopped_early": bool(rows) and len(rows) < config.epochs,
        "swa": swa_info,
        "distillation": distill_info,
        "history": rows,
        # Of the shipped weights: the average's when weights were averaged.
        "val_accuracy": (swa_info or {}).get("val_accuracy", rows[-1].get("val_accuracy") if rows else None),
        "best_val_accuracy": best.get("val_accuracy") if best else None,
        "best_epoch": best.get("epoch") if best else None,
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "wall_time_s": round(time.perf_counter() - started, 2),
        "fit_time_s_this_session": round(fit_time, 2),
        "train_time_s": round(train_s, 2),
        "total_train_time_s": round(train_s + (prior_train_s or 0), 2),
        "mean_epoch_time_s": round(float(np.mean([r["epoch_time_s"] for r in rows])), 2) if rows else None,
        "images_per_s": round(float(np.mean([r["images_per_s"] for r in rows])), 1) if rows else None,
        "device": placement.device,
        "strategy": placement.kind,
        "replicas": placement.replicas,
        "mixed_precision": placement.mixed_precision,
        "host": host_info(),
        "versions": {"tensorflow": tf.__version__, "tf_keras": k.__version__, "numpy": np.__version__},
    }
    if not placement.is_chief:
        # Saving reads distributed variables through collective ops, so every worker must save;
        # only the chief's copy is kept.
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            save_model_file(model, Path(scratch) / MODEL_FILE)
        return TrainResult(out, out / MODEL_FILE, metrics, model)
    final = staging / "final"
    if final.exists():
        shutil.rmtree(final)
    final.mkdir()
    # The optimizer's state would double the file; a resumed run restores it from its checkpoints.
    save_model_file(model, final / MODEL_FILE)
    save_labels(final / LABELS_FILE, dataset.class_names)
    spec.save(final / SPEC_FILE)
    atomic_write_json(final / TRAIN_FILE, metrics)
    replace_dir(final, out)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("test accuracy %.4f; wrote %s", test_acc, out)
    return TrainResult(out, out / MODEL_FILE, metrics, model)
