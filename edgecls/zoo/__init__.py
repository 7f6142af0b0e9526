"""Model zoo: a registry of compact CNN builders (name -> builder).

    >>> from edgecls.zoo import create_model, list_models
    >>> model = create_model("resnet8", input_shape=(32, 32, 3), num_classes=10)

Every builder returns a tf_keras (Keras 2) functional model whose input is the normalized float
image (preprocessing stays outside the model, which keeps quantization-aware training working)
and whose output is class probabilities. Conv -> BatchNorm -> ReLU are separate layers.
"""
from .registry import ModelInfo, create_model, get_model_info, list_models, model_stats, register_model

# Importing the family modules fills the registry.
from . import compact  # noqa: F401,E402  (fills the registry)

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "model_stats", "register_model"]
