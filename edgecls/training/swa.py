"""Stochastic weight averaging (Izmailov et al., 2018, "Averaging Weights Leads to Wider Optima").

The last `swa_epochs` epochs of a run are trained at a constant learning rate and the weights at
the end of each of them are averaged. The average lies nearer the centre of the flat region that
SGD keeps circling, and usually generalizes better than any single point on the way. BatchNorm
statistics do not average (they belong to the weights that produced them), so they are recomputed
for the averaged weights with one pass over the training images.

The running average is saved in the run's staging folder after every epoch, so a resumed run
(`--resume`) keeps it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._deps import keras
from ..modelio import all_layers

log = logging.getLogger("edgecls")

STATE_FILE = "swa.npz"


class WeightAverage:
    """Running mean of a model's weights over the epochs `first_epoch`.. (0-based), saved to `path`."""

    def __init__(self, path: Path, first_epoch: int):
        self.path = Path(path)
        self.first_epoch = first_epoch
        self.count = 0
        self.epochs: list[int] = []
        self.mean: list[np.ndarray] | None = None
        if self.path.exists():
            with np.load(self.path) as state:
                self.count = int(state["count"])
                self.epochs = [int(e) for e in state["epochs"]]
                self.mean = [state[f"w{i}"] for i in range(int(state["n"]))]

    def update(self, epoch: int, weights: list[np.ndarray]) -> bool:
        """Add the weights at the end of `epoch`; False (nothing done) before the averaging window
        or for an epoch already counted (a resumed run repeating the epoch its checkpoint missed)."""
        if epoch < self.first_epoch or epoch in self.epochs:
            return False
        self.count += 1
        if self.mean is None:
            self.mean = [np.array(w, dtype=np.float64) for w in weights]
        else:
            for m, w in zip(self.mean, weights):
                m += (np.asarray(w, dtype=np.float64) - m) / self.count
        self.epochs.append(epoch)
        self._save()
        return True

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        arrays = {f"w{i}": m for i, m in enumerate(self.mean)}
        np.savez(tmp, count=self.count, epochs=np.array(self.epochs, dtype=np.int64), n=len(self.mean), **arrays)
        tmp.replace(self.path)

    def weights(self, like: list[np.ndarray]) -> list[np.ndarray]:
        return [m.astype(w.dtype) for m, w in zip(self.mean, like)]

    def callback(self, model=None):
        """A Keras callback that averages `model`'s weights (default: the model being fit; pass the
        student when fit runs a wrapper such as the distiller, which also holds the teacher)."""
        k = keras()
        average = self

        class AverageWeights(k.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if average.update(epoch, (model if model is not None else self.model).get_weights()):
                    log.info("SWA: averaged the weights of epoch %d (%d in the average)", epoch + 1, average.count)

        return AverageWeights()


def recompute_batch_norm(model, batches) -> int:
    """Set every BatchNorm layer's moving mean and variance to the average of its batch statistics
    over `batches` (an iterable of input arrays or (inputs, labels) pairs), weighted by batch size.
    Weights are not changed. Returns the number of images seen (0: no BatchNorm, nothing done)."""
    layers = [layer for layer in all_layers(model) if isinstance(layer, keras().layers.BatchNormalization)]
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    seen = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            n = int(x.shape[0])
            # moving = momentum * moving + (1 - momentum) * batch statistic: with this momentum the
            # moving value is the exact size-weighted mean of the batch statistics so far.
            for layer in layers:
                layer.momentum = seen / (seen + n)
            model(x, training=True)
            seen += n
    finally:
        for layer, m in zip(layers, saved):
            layer.momentum = m
    return seen


def mean_weights(models) -> list[np.ndarray]:
    """The element-wise mean of the weights of `models` (the same architecture: e.g. the ends of
    successive learning-rate cycles of one run, Garipov et al. 2018, "fast geometric ensembling"),
    in `get_weights()` order. BatchNorm moving statistics are averaged too; recompute them with
    `recompute_batch_norm` before trusting the result. Raises ConfigError naming the first model
    whose weights do not line up with the first one's."""
    from ..errors import ConfigError

    models = list(models)
    if len(models) < 2:
        raise ConfigError("averaging weights needs at least two models")
    first = models[0].get_weights()
    first_shapes = [np.shape(w) for w in first]
    total = [np.array(w, dtype=np.float64) for w in first]
    for i, model in enumerate(models[1:], start=1):
        weights = model.get_weights()
        if [np.shape(w) for w in weights] != first_shapes:
            raise ConfigError(f"model {i + 1} ({getattr(model, 'name', '?')}) does not have the first model's "
                              f"weight shapes; average only runs of the same architecture and classes")
        for t, w in zip(total, weights):
            t += w
    return [(t / len(models)).astype(np.asarray(w).dtype) for t, w in zip(total, first)]
