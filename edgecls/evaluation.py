"""Evaluation: top-1, per-class accuracy and the confusion matrix on a labelled split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Dataset, load_dataset
from .errors import DataError


@dataclass
class EvalResult:
    top1: float
    count: int
    class_names: tuple[str, ...]
    per_class: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    data: str
    split: str
    model: str
    warning: str | None = None  # a degenerate model: one class predicted for most images

    def to_dict(self) -> dict:
        return {
            **({"warning": self.warning} if self.warning else {}),
            "model": self.model,
            "data": self.data,
            "split": self.split,
            "images": self.count,
            "top1": self.top1,
            "per_class": self.per_class,
            "classes": list(self.class_names),
            "confusion_matrix": self.confusion,
        }

    def format(self) -> str:
        width = max(len(n) for n in self.class_names)
        lines = [f"top-1 accuracy: {self.top1:.4f} on {self.count} {self.split} images of {self.data}", "", "per-class accuracy:"]
        for name in self.class_names:
            lines.append(f"  {name:<{width}}  {self.per_class[name]:.4f}")
        lines += ["", "confusion matrix (rows: true, columns: predicted):"]
        cell = max(4, len(str(max(max(r) for r in self.confusion))) + 1)
        lines.append(" " * (width + 2) + "".join(f"{i:>{cell}}" for i in range(len(self.class_names))))
        for i, (name, row) in enumerate(zip(self.class_names, self.confusion)):
            lines.append(f"  {name:<{width}}" + "".join(f"{v:>{cell}}" for v in row) + f"   ({i})")
        if self.warning:
            lines += ["", f"warning: {self.warning}"]
        return "\n".join(lines)


# A model is degenerate when it predicts one class for at least this share of the images (and twice
# as often as the most frequent true class), or when its probabilities vary by less than
# CONSTANT_STD across images.
DEGENERATE_SHARE = 0.5
CONSTANT_STD = 1e-3


def runner_correct(runner, dataset: Dataset, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> np.ndarray:
    """Per image: is an `edgecls.runtime` runner's top-1 the label? `labels` are indices into
    `dataset`'s classes, mapped onto the model's own class order (align_labels) as bench and eval do."""
    y = align_labels(dataset, runner.labels)[labels]
    pred = np.concatenate([runner.predict(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])
    return pred == y


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: binomial(n = only_a + only_b, 1/2) tail at min(only_a, only_b)."""
    import math

    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def paired(correct_a, correct_b) -> dict:
    """Two classifiers on the same images (per-image correctness): each one's top-1, the images only
    one of them gets right, and the exact McNemar p-value of the difference."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())
    return {"images": int(correct_a.size), "top1_a": round(float(correct_a.mean()), 6), "top1_b": round(float(correct_b.mean()), 6),
            "only_a_right": only_a, "only_b_right": only_b, "mcnemar_p": mcnemar_exact(only_a, only_b)}


def degenerate(outputs: np.ndarray, labels: np.ndarray | None = None) -> str | None:
    """Why the outputs (N x classes) are degenerate, or None: one class predicted for most images,
    or outputs that barely depend on the input."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if len(outputs) < 2:
        return None
    if not np.isfinite(outputs).all():
        return "its outputs are not finite"
    spread = float(outputs.std(axis=0).max())
    if spread < CONSTANT_STD:
        return f"its outputs barely depend on the input (largest spread across images {spread:.2g})"
    pred = outputs.argmax(1)
    counts = np.bincount(pred, minlength=outputs.shape[1])
    top = int(counts.argmax())
    share = counts[top] / len(pred)
    true_share = (np.bincount(labels).max() / len(labels)) if labels is not None and len(labels) else 0.0
    if share >= DEGENERATE_SHARE and share >= 2 * true_share:
        return f"it predicts class {top} for {share:.0%} of the images"
    return None


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def summarize(labels, predictions, class_names, data: str, split: str, model: str) -> EvalResult:
    matrix = confusion_matrix(np.asarray(labels), np.asarray(predictions), len(class_names))
    totals = matrix.sum(1)
    per_class = {n: (float(matrix[i, i] / totals[i]) if totals[i] else float("nan")) for i, n in enumerate(class_names)}
    predicted = matrix.sum(0)
    warning = None
    if matrix.sum() >= 2:
        top = int(predicted.argmax())
        share, true_share = predicted[top] / matrix.sum(), totals.max() / matrix.sum()
        if share >= DEGENERATE_SHARE and share >= 2 * true_share:
            warning = (f"the model predicts {class_names[top]!r} for {share:.0%} of the images (the most frequent true "
                       f"class is {true_share:.0%}): it is degenerate, whatever its accuracy")
    return EvalResult(
        top1=float(np.trace(matrix) / max(1, matrix.sum())),
        count=int(matrix.sum()),
        class_names=tuple(class_names),
        per_class=per_class,
        confusion=matrix.tolist(),
        data=data,
        split=split,
        model=model,
        warning=warning,
    )


def align_labels(dataset: Dataset, model_labels) -> np.ndarray:
    """Map the dataset's label indices onto the model's class order: by class name, or by position
    for a model whose labels are bare class indices ("0", "1", ...) with as many classes. A model
    without labels (None or empty, e.g. a bare .tflite file) is taken to have bare index labels."""
    model_labels = list(model_labels or [str(i) for i in range(dataset.num_classes)])
    model_index = {n: i for i, n in enumerate(model_labels)}
    missing = [n for n in dataset.class_names if n not in model_index]
    if not missing:
        return np.array([model_index[n] for n in dataset.class_names], dtype=np.int64)
    if list(model_labels) == [str(i) for i in range(len(model_labels))] and len(model_labels) == dataset.num_classes:
        return np.arange(dataset.num_classes, dtype=np.int64)
    raise DataError(
        f"the dataset has classes the model does not know: {missing}; the model's classes are {list(model_labels)} "
        f"(pass --labels to name them)"
    )


BATCH_PIXELS = 256 * 32 * 32  # pixels per batch: 256 images at 32x32, 28 at 96x96


def predict_in_batches(model, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """A Keras model's outputs on x, in inference mode, a batch at a time. The default batch holds
    BATCH_PIXELS pixels (at most 256 images, at least 8): a layer's activations grow with the image's
    area, and at 96x96 a batch of 256 kept about 600 MB of them alive."""
    if batch is None:
        batch = max(8, min(256, BATCH_PIXELS // max(1, int(np.prod(x.shape[1:3])))))
    return np.concatenate([np.asarray(model(x[i:i + batch], training=False)) for i in range(0, len(x), batch)])


def evaluate(model, data="cifar10-sample", split: str = "test", batch_size: int = 256, safe_mode: bool = True,
             preprocessing=None, labels=None) -> EvalResult:
    """Top-1, per-class accuracy and confusion matrix of a model on a dataset split.

    `model` is anything `edgecls.modelio.load_model` takes (an `edgecls train` directory, a Keras
    file with `preprocessing` given or beside it, a SavedModel) or an ONNX file (edgecls.sources,
    run by onnxruntime); `data` anything `load_dataset` accepts, or a loaded Dataset.
    """
    from .modelio import load_model
    from .sources import load_source

    if split not in ("test", "train"):
        raise DataError(f"split must be 'test' or 'train', got {split!r}")
    source = load_source(model, preprocessing, labels) if isinstance(model, (str, Path)) else None
    trained = source or load_model(model, preprocessing, labels, safe_mode=safe_mode)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, image_size=trained.preprocessing.input_size)
    if dataset.image_size != trained.preprocessing.input_size:
        raise DataError(f"images are {dataset.image_size} but the model expects {trained.preprocessing.input_size}")
    mapping = align_labels(dataset, trained.labels)
    part = dataset.test if split == "test" else dataset.train
    predictions = np.empty(len(part), dtype=np.int64)
    for start in range(0, len(part), batch_size):
        # Normalize a batch at a time: the whole split as float32 would be 4x the uint8 images.
        x = trained.preprocessing.apply(part.images[start:start + batch_size])
        scores = source.reference(x) if source is not None else predict_in_batches(trained.model, x, batch_size)
        predictions[start:start + batch_size] = scores.argmax(1)
    return summarize(mapping[part.labels], predictions, trained.labels, dataset.name, split, str(Path(model)))
