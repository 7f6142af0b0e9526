"""edgecls: small image classifiers from training to edge devices.

Importing edgecls imports no TensorFlow. Training-side functions import it on first use.
"""
import os as _os

# tensorflow-model-optimization works only with Keras 2 (tf_keras). TensorFlow reads this
# variable once, when it is first imported, so it is set here, before anything can import it.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"

from .errors import ConfigError, DataError, DependencyError, EdgeclsError, ModelError  # noqa: E402
from .preprocess import PreprocessingSpec, load_image  # noqa: E402

__all__ = [
    "__version__",
    "EdgeclsError",
    "ConfigError",
    "DataError",
    "ModelError",
    "DependencyError",
    "PreprocessingSpec",
    "load_image",
    "load_dataset",
    "train",
    "evaluate",
    "create_model",
    "list_models",
    "TrainConfig",
]


_LAZY = {
    "load_dataset": (".data", "load_dataset"),
    "train": (".training.run", "train"),
    "evaluate": (".evaluation", "evaluate"),
    "create_model": (".zoo", "create_model"),
    "list_models": (".zoo", "list_models"),
    "TrainConfig": (".config", "TrainConfig"),
}


def __getattr__(name):
    # Progressive disclosure without eager imports: these load their modules on first use.
    if name not in _LAZY:
        raise AttributeError(f"module 'edgecls' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value
    return value
