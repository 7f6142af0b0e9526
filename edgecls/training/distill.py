"""Knowledge distillation (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network"):
a student learns a teacher's softened outputs as well as the labels. Used by training
(`edgecls train --teacher DIR`) and by the pruning and QAT fine-tunes (`edgecls export --distill`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._deps import keras


@dataclass(frozen=True)
class Distillation:
    """Fine-tune against a teacher's softened outputs as well as the labels (Hinton et al., 2015):
    loss = (1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T), where _T is the
    softmax at temperature T. In the optimization stage the teacher is the model being optimized,
    before pruning or quantization, so the fine-tune pulls the compressed model back toward the
    function it had; in training (`edgecls train --teacher`) it is a larger trained model."""

    teacher: object
    alpha: float = 0.9
    temperature: float = 4.0

    def describe(self) -> dict:
        return {"teacher": getattr(self.teacher, "name", "teacher"), "alpha": self.alpha, "temperature": self.temperature}


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

    # float32 whatever the models compute in (mixed precision): log-softmax at T in float16 loses the tail.
    teacher, student = tf.cast(teacher, tf.float32), tf.cast(student, tf.float32)
    t_log, s_log = tempered(teacher, teacher_logits), tempered(student, student_logits)
    return temperature ** 2 * tf.reduce_sum(tf.exp(t_log) * (t_log - s_log), axis=-1)


def distiller(student, distillation: Distillation, hard_loss, student_logits: bool, teacher_logits: bool):
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
                # Replicas' gradients are summed: each contributes its share of the global mean.
                scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
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


def on_student_inputs(teacher, teacher_spec, student_spec):
    """`teacher` as a model of the student's inputs, when the two were trained with different
    preprocessing. Both are per-channel affine maps of the pixels p: the student sees
    x = (p * s_s - m_s) / d_s, the teacher wants (p * s_t - m_t) / d_t = x * a + b with
    a = d_s * s_t / (s_s * d_t) and b = (m_s * s_t / s_s - m_t) / d_t. Same preprocessing: `teacher` itself."""
    a = np.array(student_spec.std) * teacher_spec.scale / (student_spec.scale * np.array(teacher_spec.std))
    b = (np.array(student_spec.mean) * teacher_spec.scale / student_spec.scale - np.array(teacher_spec.mean)) / np.array(teacher_spec.std)
    if np.allclose(a, 1.0, rtol=0, atol=1e-6) and np.allclose(b, 0.0, rtol=0, atol=1e-6):
        return teacher
    k = keras()
    inputs = k.Input(shape=tuple(teacher.input_shape[1:]), name="student_input")
    adapted = k.layers.Rescaling(scale=a.astype(np.float32), offset=b.astype(np.float32), name="to_teacher_preprocessing")(inputs)
    return k.Model(inputs, teacher(adapted, training=False), name=f"{teacher.name}_on_student_inputs")


def save_ensemble_teacher(members, out) -> dict:
    """Write an 'edgecls train'-shaped directory whose model is the mean of the probabilities of
    `members` (finished 'edgecls train' directories with the same classes and preprocessing), for
    `edgecls train --teacher OUT`: an ensemble is a better teacher than any of its members
    (Hinton et al., 2015, section 3). Members ending in logits get a softmax first. The directory
    is written beside `out` and renamed; train.json records the members and, for the temperature
    default, label smoothing only if every member trained with it. Returns that record."""
    import shutil
    from pathlib import Path

    from .._io import atomic_write_json, make_staging_dir, replace_dir
    from ..errors import ConfigError
    from ..modelio import (MODEL_FILE, TRAIN_FILE, read_finished_run, require_finished_run, require_same_classes_and_inputs,
                          save_labels, save_model_file)

    members = [Path(m) for m in members]
    out = Path(out)
    if len(members) < 2:
        raise ConfigError("an ensemble teacher needs at least two finished 'edgecls train' directories")
    if out.exists():
        raise ConfigError(f"{out} exists; pass a new output directory")
    for m in members:  # every member before loading any (loading starts TensorFlow)
        require_finished_run(m, "ensemble member")
    runs, about = zip(*(read_finished_run(m, "ensemble member") for m in members))
    first = runs[0]
    require_same_classes_and_inputs(members, runs, "ensemble members")
    k = keras()
    inputs = k.Input(tuple(first.model.input_shape[1:]), name="image")
    probe = np.zeros((2, *first.model.input_shape[1:]), np.float32)
    outputs = []
    for i, run in enumerate(runs):
        member = run.model
        member._name = f"member_{i}"
        y = member(inputs, training=False)
        if not outputs_are_probabilities(member, probe):
            y = k.layers.Softmax(name=f"softmax_{i}")(y)
        outputs.append(y)
    model = k.Model(inputs, k.layers.Average(name="mean_probability")(outputs), name="ensemble_teacher")
    smoothing = [float((a.get("config") or {}).get("label_smoothing") or 0.0) for a in about]
    record = {"arch": "ensemble(" + ", ".join(str(a.get("arch", "?")) for a in about) + ")",
              "ensemble_of": [str(m) for m in members],
              "member_test_accuracy": [a.get("test_accuracy") for a in about],
              "config": {"label_smoothing": min(smoothing)}}
    staging = make_staging_dir(out)
    try:
        save_model_file(model, staging / MODEL_FILE)
        save_labels(staging / "labels.json", first.labels)
        first.preprocessing.save(staging / "preprocessing.json")
        atomic_write_json(staging / TRAIN_FILE, record)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record
