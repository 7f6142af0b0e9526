"""Shared pieces of the optimization stage: fine-tuning and sparsity accounting."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._deps import keras
from ..data import Dataset, stratified_split
from ..errors import ModelError
from ..training.distill import Distillation, distiller, outputs_are_probabilities
from ..training.guards import finite_loss_guard
from ..preprocess import PreprocessingSpec


@dataclass
class Optimized:
    model: object  # tf_keras.Model, ready to convert
    kind: str  # "pruned", "qat", "pruned_qat"
    details: dict = field(default_factory=dict)


def kernel_layers(model):
    """(layer, kernel) pairs of the layers whose kernels pruning acts on."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from kernel_layers(layer)
            continue
        for w in layer.weights:
            name = w.name.split("/")[-1].split(":")[0]
            if name in ("kernel", "depthwise_kernel", "pointwise_kernel"):  # not tfmot's kernel_min/kernel_max
                yield layer, w


def layer_sparsity(model) -> dict:
    """Fraction of exact zeros per kernel, overall, and parameter counts."""
    per_layer, zeros, total = {}, 0, 0
    for layer, w in kernel_layers(model):
        values = np.asarray(w.numpy())
        z = int((values == 0).sum())
        per_layer[f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}"] = round(z / values.size, 4)
        zeros += z
        total += values.size
    all_params = int(sum(int(np.prod(w.shape)) for w in model.weights))
    all_zero = int(sum(int((np.asarray(w.numpy()) == 0).sum()) for w in model.weights))
    return {
        "kernel_sparsity": round(zeros / total, 4) if total else 0.0,
        "per_layer": per_layer,
        "params": all_params,
        "nonzero_params": all_params - all_zero,
    }


def fine_tune(model, dataset: Dataset, spec: PreprocessingSpec, epochs: int, batch_size: int, learning_rate: float,
              seed: int = 0, callbacks=(), verbose: int = 0, val_fraction: float = 0.1,
              distillation: Distillation | None = None, what: str = "fine-tune",
              hint: str = "a lower learning rate") -> dict:
    """A short fine-tune on the training split (augmented), SGD with cosine decay; against a
    teacher's soft outputs too when `distillation` is given. Models may end in a softmax or in
    logits (many users' models do): which, is read from their outputs on real training images."""
    from ..data.pipeline import make_dataset

    k = keras()
    train_index, val_index = stratified_split(dataset.train.labels, val_fraction, seed)
    x, y = dataset.train.images[train_index], dataset.train.labels[train_index]
    train_ds = make_dataset(x, y, spec, batch_size, dataset.num_classes, training=True, seed=seed)
    val_ds = None
    if len(val_index):
        val_ds = make_dataset(dataset.train.images[val_index], dataset.train.labels[val_index], spec, batch_size,
                              dataset.num_classes)
    probe = spec.apply(x[:64])
    from_logits = not outputs_are_probabilities(model, probe)
    hard_loss = k.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=0.1)
    steps = max(1, epochs * math.ceil(len(x) / batch_size))
    schedule = k.optimizers.schedules.CosineDecay(learning_rate, steps)
    optimizer = k.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    if distillation is None:
        trainer = model
        trainer.compile(optimizer=optimizer, loss=hard_loss, metrics=[k.metrics.CategoricalAccuracy(name="accuracy")])
    else:
        teacher_logits = not outputs_are_probabilities(distillation.teacher, probe)
        trainer = distiller(model, distillation, hard_loss, from_logits, teacher_logits)
        trainer.compile(optimizer=optimizer)  # the loss and metrics are the distiller's
    guard = finite_loss_guard(k)
    history = trainer.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[guard, *callbacks], verbose=verbose)
    if guard.at is not None:
        epoch, step, value = guard.at
        raise ModelError(f"the {what}'s loss became {value} in epoch {epoch + 1}, step {step + 1} (peak learning rate "
                         f"{learning_rate:g}); the model is unusable and was not kept: try {hint}")
    return {k_: [float(v) for v in vals] for k_, vals in history.history.items()}

