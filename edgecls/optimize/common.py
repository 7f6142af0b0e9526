"""Shared pieces of the optimization stage: fine-tuning and sparsity accounting."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._deps import keras
from ..data import Dataset, stratified_split
from ..preprocess import PreprocessingSpec


@dataclass(frozen=True)
class Distillation:
    """Fine-tune against a teacher's softened outputs as well as the labels (Hinton et al., 2015):
    loss = (1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T), where _T is the
    softmax at temperature T. Here the teacher is the model being optimized, before pruning or
    quantization, so the fine-tune pulls the compressed model back toward the function it had."""

    teacher: object
    alpha: float = 0.9
    temperature: float = 4.0

    def describe(self) -> dict:
        return {"teacher": getattr(self.teacher, "name", "teacher"), "alpha": self.alpha, "temperature": self.temperature}


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
              distillation: Distillation | None = None) -> dict:
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
        trainer = _distiller(model, distillation, hard_loss, from_logits, teacher_logits)
        trainer.compile(optimizer=optimizer)  # the loss and metrics are the distiller's
    history = trainer.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=list(callbacks), verbose=verbose)
    return {k_: [float(v) for v in vals] for k_, vals in history.history.items()}


def are_probabilities(y) -> bool:
    """Whether model outputs `y` (N x classes) are probabilities (>= 0, rows summing to 1), not logits."""
    y = np.asarray(y, dtype=np.float64)
    return bool((y >= 0).all() and np.allclose(y.sum(-1), 1.0, atol=1e-3))


def outputs_are_probabilities(model, x) -> bool:
    """Whether `model` ends in a softmax, judged from its outputs on `x`."""
    return are_probabilities(model(x, training=False))


def distillation_loss(student, teacher, temperature: float, student_logits: bool = False, teacher_logits: bool = False):
    """T^2 * KL(teacher_T || student_T) per example. Outputs are probabilities unless flagged as
    logits (log p are logits up to a constant, so softmax(log p / T) is the distribution at T)."""
    from .._deps import tensorflow

    tf = tensorflow()

    def tempered(y, logits):
        z = y if logits else tf.math.log(tf.clip_by_value(y, 1e-7, 1.0))
        return tf.nn.log_softmax(z / temperature)

    t_log, s_log = tempered(teacher, teacher_logits), tempered(student, student_logits)
    return temperature ** 2 * tf.reduce_sum(tf.exp(t_log) * (t_log - s_log), axis=-1)


def _distiller(student, distillation: Distillation, hard_loss, student_logits: bool, teacher_logits: bool):
    """A Keras model that trains `student` (fit's callbacks reach its layers, pruning's included)
    on (1 - alpha) * `hard_loss` (the labels' loss) plus alpha times the distillation loss;
    evaluation and predictions are the student's own."""
    from .._deps import tensorflow

    k, tf = keras(), tensorflow()
    alpha, temperature = float(distillation.alpha), float(distillation.temperature)

    class Distiller(k.Model):
        def __init__(self):
            super().__init__(name=f"{student.name}_distiller")
            self.student = student
            self.teacher = distillation.teacher
            self.loss_tracker = k.metrics.Mean(name="loss")
            self.accuracy = k.metrics.CategoricalAccuracy(name="accuracy")

        @property
        def metrics(self):
            return [self.loss_tracker, self.accuracy]

        def call(self, x, training=False):
            return self.student(x, training=training)

        def train_step(self, data):
            x, y = data
            soft = self.teacher(x, training=False)
            with tf.GradientTape() as tape:
                pred = self.student(x, training=True)
                loss = ((1 - alpha) * hard_loss(y, pred) + alpha * tf.reduce_mean(distillation_loss(pred, soft, temperature, student_logits, teacher_logits))
                        + tf.add_n([0.0, *self.student.losses]))
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            self.loss_tracker.update_state(loss)
            self.accuracy.update_state(y, pred)
            return {m.name: m.result() for m in self.metrics}

        def test_step(self, data):
            x, y = data
            pred = self.student(x, training=False)
            self.loss_tracker.update_state(hard_loss(y, pred))
            self.accuracy.update_state(y, pred)
            return {m.name: m.result() for m in self.metrics}

    return Distiller()
