"""Magnitude pruning with tensorflow-model-optimization, to a target sparsity, stripped afterwards."""
from __future__ import annotations

import math

import numpy as np

from .._deps import keras, optional, tensorflow
from ..data import Dataset
from ..errors import ConfigError, ModelError, first_line
from ..preprocess import PreprocessingSpec
from ..training.distill import Distillation
from ..config import SPARSITY_ALLOCATIONS
from .common import Optimized, fine_tune, kernel_layers, layer_sparsity


def lamp_scores(kernel) -> np.ndarray:
    """Layer-adaptive magnitude scores (Lee et al., ICLR 2021, "Layer-adaptive Sparsity for the
    Magnitude-based Pruning"), in ascending order: each weight's square over the sum of the squares
    of the weights at least as large in its tensor. Scale-free, so layers compare with each other
    whatever their weight scales (BatchNorm makes them arbitrary), and the largest weight of a
    tensor scores 1, so no layer is ever pruned away."""
    v = np.sort(np.square(np.asarray(kernel, np.float64)).ravel())
    tail = np.cumsum(v[::-1])[::-1]
    return v / np.maximum(tail, np.finfo(np.float64).tiny)


def lamp_allocation(model, sparsity: float, skip_layers=()) -> dict[str, float]:
    """Per-layer sparsities that prune `sparsity` of all the kernel weights of the prunable layers
    not in `skip_layers` together: the weights with the lowest LAMP scores across those layers.
    Layer name -> fraction of its kernel weights (a layer with several kernels: all of them)."""
    groups: dict[str, list[np.ndarray]] = {}
    for layer, w in kernel_layers(model):
        if layer.name not in skip_layers:
            groups.setdefault(layer.name, []).append(lamp_scores(w.numpy()))
    if not groups:
        return {}
    every = np.sort(np.concatenate([sc for scores in groups.values() for sc in scores]))
    count = int(round(sparsity * every.size))
    if count == 0:
        return {name: 0.0 for name in groups}
    threshold = every[count - 1]
    # Ties at the threshold (rare with float weights) may prune a few more than `count`.
    return {name: float(sum(int((sc <= threshold).sum()) for sc in scores) / sum(sc.size for sc in scores))
            for name, scores in groups.items()}


def _tfmot():
    tensorflow()
    return optional("tensorflow_model_optimization")


def prune(model, dataset: Dataset, spec: PreprocessingSpec, sparsity: float = 0.5, epochs: int = 2,
          batch_size: int = 128, learning_rate: float = 0.01, structured_2x4: bool = False,
          skip_layers: tuple[str, ...] = (), seed: int = 0, verbose: int = 0,
          distillation: Distillation | None = None, allocation: str = "uniform") -> Optimized:
    """Prune the kernels of every prunable layer to `sparsity` (a polynomial schedule from 0 over
    the first 70% of a short fine-tune), then strip the pruning wrappers.

    structured_2x4 prunes 2 of every 4 consecutive weights instead (50% sparsity, the pattern sparse
    tensor cores and some NPUs accelerate); layers whose shape does not allow it stay dense.
    `skip_layers` names layers to leave unpruned (the way out for a layer tfmot cannot prune).
    `distillation` fine-tunes against a teacher's soft outputs too (usually the unpruned model).

    `allocation` says how `sparsity` is spread over the layers: "uniform" prunes every layer to
    `sparsity`; "lamp" gives each layer the sparsity that global pruning by LAMP score would
    (`lamp_allocation`, from the trained weights): large layers lose more, small ones (the first
    convolution, 1x1 shortcuts, the classifier) less, and the pruned layers together reach `sparsity`.
    Each layer then follows the same polynomial schedule to its own final sparsity.
    """
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"sparsity must be between 0 and 1 (exclusive), got {sparsity}")
    if epochs < 1:
        raise ConfigError(f"pruning needs at least one fine-tuning epoch, got {epochs}")
    if allocation not in SPARSITY_ALLOCATIONS:
        raise ConfigError(f"sparsity allocation must be one of {', '.join(SPARSITY_ALLOCATIONS)}, got {allocation!r}")
    if structured_2x4 and allocation != "uniform":
        raise ConfigError("2:4 structured sparsity is 50% in every layer; drop --sparsity-allocation or --structured-2x4")
    tfmot = _tfmot()
    k = keras()
    sk = tfmot.sparsity.keras
    names = {layer.name for layer in model.layers}
    unknown = sorted(set(skip_layers) - names)
    if unknown:
        raise ConfigError(f"--skip-layers names layers the model does not have: {unknown}")
    steps = max(1, epochs * math.ceil(len(dataset.train) * 0.9 / batch_size))

    def schedule_to(final):
        return sk.PolynomialDecay(initial_sparsity=0.0, final_sparsity=final, begin_step=0,
                                  end_step=max(1, int(steps * 0.7)), frequency=max(1, steps // 50))

    schedule = schedule_to(sparsity)
    targets = lamp_allocation(model, sparsity, skip_layers) if allocation == "lamp" else None
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    registry = prune_registry.PruneRegistry
    skipped_2x4 = []

    def wrap(layer):
        # A fresh copy: wrapping the original layer would fine-tune the caller's model in place.
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.name in skip_layers or not layer.weights:
            return fresh
        if not (registry.supports(layer) or isinstance(layer, sk.PrunableLayer)):
            raise ModelError(
                f"pruning does not support layer {layer.name!r} ({layer.__class__.__name__}); leave it unpruned with "
                f"--skip-layers {layer.name}"
            )
        kwargs = {"pruning_schedule": schedule}
        if targets is not None:
            if targets.get(layer.name, 0.0) <= 0.0:
                return fresh
            kwargs = {"pruning_schedule": schedule_to(targets[layer.name])}
        if structured_2x4:
            kernel = next((w for w in layer.weights if "kernel" in w.name), None)
            # m-by-n sparsity runs along the input-channel axis, which needs a multiple of 4.
            if kernel is None or kernel.shape[-2] % 4 or layer.__class__.__name__ == "DepthwiseConv2D":
                skipped_2x4.append(layer.name)
                return fresh
            kwargs = {"pruning_schedule": sk.ConstantSparsity(0.5, begin_step=0, frequency=max(1, steps // 50)),
                      "sparsity_m_by_n": (2, 4)}
        return sk.prune_low_magnitude(fresh, **kwargs)

    try:
        wrapped = k.models.clone_model(model, clone_function=wrap)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"pruning failed: {first_line(exc)}") from None
    _copy_weights(model, wrapped)
    history = fine_tune(wrapped, dataset, spec, epochs, batch_size, learning_rate, seed,
                        callbacks=[sk.UpdatePruningStep()], verbose=verbose, distillation=distillation,
                        what="pruning fine-tune", hint="a lower --prune-lr or fewer --prune-epochs")
    stripped = sk.strip_pruning(wrapped)
    counts = layer_sparsity(stripped)
    details = {
        "target_sparsity": 0.5 if structured_2x4 else sparsity,
        "structure": "2:4" if structured_2x4 else "unstructured",
        "allocation": allocation,
        "target_per_layer": {name: round(v, 4) for name, v in targets.items()} if targets is not None else None,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "distillation": distillation.describe() if distillation else None,
        "skipped_layers": sorted(set(skip_layers)),
        "dense_for_2x4": skipped_2x4,
        "history": history,
        **counts,
    }
    return Optimized(stripped, "pruned", details)


def _copy_weights(src, dst):
    """Copy weights layer by layer by name (pruning wrappers add mask/threshold variables)."""
    by_name = {layer.name: layer for layer in src.layers}
    for layer in dst.layers:
        inner = getattr(layer, "layer", layer)
        original = by_name.get(inner.name) or by_name.get(layer.name)
        if original is not None and original.weights:
            inner.set_weights(original.get_weights())
