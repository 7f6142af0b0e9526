"""Lazy access to heavy optional dependencies.

TensorFlow is imported only here, and only when a training-side function needs it, so that
`import edgecls` and `edgecls.runtime` stay free of it. TF_USE_LEGACY_KERAS is set before the
first TensorFlow import so that tensorflow-model-optimization sees Keras 2 (tf_keras).
"""
from __future__ import annotations

import os

from .errors import DependencyError

_TRAIN_HINT = "install the training extra: pip install 'edgecls[train]'"


def tensorflow():
    """Return the tensorflow module, configured for tf_keras."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise DependencyError(f"TensorFlow is not installed ({exc}); {_TRAIN_HINT}") from None
    return tf


def keras():
    """Return tf_keras (Keras 2), the Keras that tensorflow-model-optimization works with."""
    tensorflow()
    try:
        import tf_keras
    except ImportError as exc:
        raise DependencyError(f"tf_keras is not installed ({exc}); {_TRAIN_HINT}") from None
    return tf_keras
