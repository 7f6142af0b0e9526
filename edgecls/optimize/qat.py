"""Quantization-aware training with tensorflow-model-optimization (8-bit, fake-quantized)."""
from __future__ import annotations

import re

from .._deps import tensorflow
from ..data import Dataset
from ..errors import ConfigError, ModelError, first_line
from ..preprocess import PreprocessingSpec
from .common import Optimized, fine_tune, layer_sparsity


def quantize_aware(model, dataset: Dataset, spec: PreprocessingSpec, epochs: int = 1, batch_size: int = 128,
                   learning_rate: float = 0.005, preserve_sparsity: bool = False, seed: int = 0,
                   verbose: int = 0) -> Optimized:
    """Wrap `model` for 8-bit QAT and fine-tune it. With `preserve_sparsity` (for a pruned model)
    tfmot's prune-preserving scheme keeps the zeros through quantization."""
    if epochs < 1:
        raise ConfigError(f"QAT needs at least one fine-tuning epoch, got {epochs}")
    tensorflow()
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras
    try:
        if preserve_sparsity:
            from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
                default_8bit_prune_preserve_quantize_scheme as pqat,
            )

            annotated = qk.quantize_annotate_model(model)
            q_model = qk.quantize_apply(annotated, pqat.Default8BitPrunePreserveQuantizeScheme())
        else:
            q_model = qk.quantize_model(model)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelError(_explain(exc)) from None
    history = fine_tune(q_model, dataset, spec, epochs, batch_size, learning_rate, seed, verbose=verbose)
    details = {"epochs": epochs, "learning_rate": learning_rate, "preserve_sparsity": preserve_sparsity,
               "history": history, **layer_sparsity(q_model)}
    return Optimized(q_model, "pruned_qat" if preserve_sparsity else "qat", details)


def _explain(exc: Exception) -> str:
    text = first_line(exc)
    match = re.search(r"Layer (\S+?):?\s*<?(?:class )?'?([\w.]+)?", text)
    layer = match.group(1).strip(":'\"") if match else None
    if layer:
        return (f"quantization-aware training does not support layer {layer!r} ({text[:160]}); keep preprocessing "
                f"(Rescaling, Normalization) out of the model and use Conv -> BatchNorm -> ReLU as separate layers, "
                f"or export without the QAT variants (--formats)")
    return f"quantization-aware training failed: {text[:200]}"
