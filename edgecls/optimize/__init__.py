"""Optimization stage: magnitude pruning and quantization-aware training (tfmot, Keras 2).

    >>> from edgecls.optimize import prune, quantize_aware
    >>> pruned = prune(model, dataset, spec, sparsity=0.75)
    >>> qat = quantize_aware(pruned.model, dataset, spec, preserve_sparsity=True)

Each returns an `Optimized` record: the (stripped) tf_keras model and what was done to it.
"""
from .common import Optimized, layer_sparsity
from .prune import prune
from .qat import quantize_aware

__all__ = ["Optimized", "layer_sparsity", "prune", "quantize_aware"]
