"""The registry: builders register themselves with a decorator; lookups of unknown names list the
known ones. Metadata travels as a typed record."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ModelError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    description: str
    reference: str
    default_input_shape: tuple[int, int, int] = (32, 32, 3)
    builder: Callable | None = None
    # Peak SGD learning rate at batch 128 for the edgecls recipe. Networks with BatchNorm take 0.1;
    # a plain CNN without it diverges there (its loss turns NaN) and needs less.
    sgd_lr: float = 0.1
    # A teacher: too large for the devices edgecls targets, trained to distill smaller models
    # from; not shipped as a bundle.
    teacher: bool = False


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, family: str, description: str, reference: str = "", sgd_lr: float = 0.1,
                   teacher: bool = False):
    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, family, description, reference, builder=fn, sgd_lr=sgd_lr, teacher=teacher)
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r}; known architectures: {', '.join(list_models())}") from None


def create_model(name: str, input_shape=(32, 32, 3), num_classes: int = 10, **kwargs):
    """Build a registered model. Raises ModelError for an unknown name, listing the known ones."""
    info = get_model_info(name)
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or shape[-1] != 3 or min(shape) < 1:
        raise ModelError(f"input_shape must be (height, width, 3), got {input_shape!r}")
    if num_classes < 2:
        raise ModelError(f"num_classes must be at least 2, got {num_classes}")
    return info.builder(input_shape=shape, num_classes=int(num_classes), **kwargs)


def model_stats(model) -> dict:
    """Parameters and multiply-accumulates per inference (batch 1) of a built Keras model.

    MACs count Conv2D, DepthwiseConv2D, SeparableConv2D and Dense layers, the layers that hold
    essentially all of a CNN's arithmetic; pooling, BatchNorm and activations are not counted.
    """
    macs = 0
    for layer in _flat_layers(model):
        kind = layer.__class__.__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense"):
            continue
        out_shape = layer.output_shape if hasattr(layer, "output_shape") else layer.output.shape
        in_shape = layer.input_shape if hasattr(layer, "input_shape") else layer.input.shape
        if kind == "Dense":
            macs += int(in_shape[-1]) * int(out_shape[-1])
            continue
        oh, ow = int(out_shape[1]), int(out_shape[2])
        kh, kw = layer.kernel_size
        cin = int(in_shape[-1])
        if kind == "Conv2D":
            macs += oh * ow * kh * kw * cin * int(out_shape[-1]) // layer.groups
        elif kind == "DepthwiseConv2D":
            macs += oh * ow * kh * kw * cin * layer.depth_multiplier
        else:  # SeparableConv2D: depthwise then pointwise
            macs += oh * ow * kh * kw * cin * layer.depth_multiplier
            macs += oh * ow * cin * layer.depth_multiplier * int(out_shape[-1])
    trainable = int(sum(int(w.shape.num_elements()) for w in model.trainable_weights))
    total = int(sum(int(w.shape.num_elements()) for w in model.weights))
    return {"params": total, "trainable_params": trainable, "macs": int(macs)}


def _flat_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _flat_layers(layer)
        else:
            yield layer
