"""Quantization-aware training with tensorflow-model-optimization (8-bit, fake-quantized)."""
from __future__ import annotations

import re

import numpy as np

from ..data import Dataset, calibration_subset
from ..errors import ConfigError, ModelError, first_line
from ..modelio import all_layers
from ..preprocess import PreprocessingSpec
from ..training.distill import Distillation
from .common import Optimized, fine_tune, layer_sparsity
from .prune import _tfmot


def quantize_aware(model, dataset: Dataset, spec: PreprocessingSpec, epochs: int = 1, batch_size: int = 128,
                   learning_rate: float = 0.005, preserve_sparsity: bool = False, seed: int = 0,
                   calibration_count: int = 300, calibration_seed: int = 0, verbose: int = 0,
                   distillation: Distillation | None = None) -> Optimized:
    """Wrap `model` for 8-bit QAT and fine-tune it. With `preserve_sparsity` (for a pruned model)
    tfmot's prune-preserving scheme keeps the zeros through quantization.

    Before the fine-tune, the activation ranges are calibrated on `calibration_count` real training
    images (see `calibrate_ranges`); 0 leaves tfmot's initial ranges of [-6, 6]. `distillation`
    fine-tunes against a teacher's soft outputs too (usually the float model before any compression)."""
    if epochs < 1:
        raise ConfigError(f"QAT needs at least one fine-tuning epoch, got {epochs}")
    tfmot = _tfmot()

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
    calibrated = 0
    if calibration_count:
        images = calibration_subset(dataset, min(calibration_count, len(dataset.train)), calibration_seed)
        calibrate_ranges(q_model, spec.apply(images), batch_size)
        calibrated = len(images)
    history = fine_tune(q_model, dataset, spec, epochs, batch_size, learning_rate, seed, verbose=verbose,
                        distillation=distillation, what="QAT fine-tune",
                        hint=("a lower --qat-lr" + (", or --no-qat-calibration (tfmot's initial ranges)"
                                                    if calibration_count else "")))
    details = {"epochs": epochs, "learning_rate": learning_rate, "preserve_sparsity": preserve_sparsity,
               "distillation": distillation.describe() if distillation else None,
               "ranges_calibrated_on": calibrated, "history": history, **layer_sparsity(q_model)}
    return Optimized(q_model, "pruned_qat" if preserve_sparsity else "qat", details)


def calibrate_ranges(q_model, x: np.ndarray, batch_size: int = 128) -> None:
    """Start every activation range of a tfmot QAT model at the mean, over batches of real
    images, of the batch's min and max: the value its moving average converges to in training.

    tfmot starts each activation range at [-6, 6] and moves it by an exponential moving average
    with decay 0.999 per step, without bias correction. After a one-epoch fine-tune (~350 steps)
    the ranges are still ~70% the initial ones: ReLU outputs keep a negative range they never use,
    and outputs beyond 6 are clipped. On resnet8 that cost about a point of top-1 (BENCHMARKS.md).

    This runs the model in training mode over `x` (already normalized) with the moving average's
    decay set to (k - 1) / k at batch k, which makes each range the exact mean of the batch values.
    BatchNormalization layers are frozen for the pass, so only the quantization ranges change
    (and the weight ranges, which tfmot sets from the weights on every training step)."""
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    if len(x) == 0:
        return
    original = quant_ops.MovingAvgQuantize
    state = {"decay": 0.0}

    def mean_of_batches(*args, **kwargs):
        kwargs["ema_decay"] = state["decay"]
        return original(*args, **kwargs)

    frozen = [layer for layer in all_layers(q_model)
              if type(layer).__name__ in ("BatchNormalization", "SyncBatchNormalization") and layer.trainable]
    quant_ops.MovingAvgQuantize = mean_of_batches
    try:
        for layer in frozen:
            layer.trainable = False
        for k, start in enumerate(range(0, len(x), batch_size), start=1):
            state["decay"] = (k - 1) / k
            q_model(x[start:start + batch_size], training=True)
    finally:
        quant_ops.MovingAvgQuantize = original
        for layer in frozen:
            layer.trainable = True


def _explain(exc: Exception) -> str:
    text = first_line(exc, limit=2000)
    # tfmot: "Layer rescale:<class 'tf_keras.src.layers....Rescaling'> is not supported. You can quantize ..."
    match = re.search(r"Layer ([^:\s]+):\s*<class '([\w.]+)'>", text)
    if match:
        layer, cls = match.group(1), match.group(2).rsplit(".", 1)[-1]
        return (f"quantization-aware training does not support layer {layer!r} ({cls}); keep preprocessing "
                f"(Rescaling, Normalization) out of the model and use Conv -> BatchNorm -> ReLU as separate layers, "
                f"or export without the QAT variants (--formats)")
    sentence = text.split(". ")[0].rstrip(".")
    return f"quantization-aware training failed: {sentence}"
