"""Lazy access to heavy optional dependencies.

TensorFlow is imported only here, and only when a training-side function needs it, so that
`import edgecls` and `edgecls.runtime` stay free of it. TF_USE_LEGACY_KERAS is set before the
first TensorFlow import so that tensorflow-model-optimization sees Keras 2 (tf_keras).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

from .errors import DependencyError

_TRAIN_HINT = "install the training extra: pip install 'edgecls[train]'"


def tensorflow():
    """Return the tensorflow module, configured for tf_keras."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    try:
        with native_logs_hidden():  # CUDA probing, CPU-feature and oneDNN notices
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery (cuInit) logs here, not at the first op
    except ImportError as exc:
        raise DependencyError(f"TensorFlow is not installed ({exc}); {_TRAIN_HINT}") from None
    return tf


def optional(module: str, extra: str = "train"):
    """Import an optional dependency by name, or raise a DependencyError naming the extra that
    installs it (tfmot, tf2onnx, onnx, matplotlib: the train extra)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(f"{module} is not installed ({exc}); install the {extra} extra: "
                              f"pip install 'edgecls[{extra}]'") from None


def require(module: str, extra: str = "train") -> None:
    """`optional`'s check without the import, for a dependency a child process will import:
    DependencyError naming the extra when `module` cannot be found."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        optional(module, extra)


# Lines native code (absl, TensorFlow's C++ runtime, the MLIR converter) writes to stderr.
_NATIVE_LINE = re.compile(r"^([IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]|WARNING: All log messages before absl|"
                          r"To enable the following instructions|This TensorFlow binary is optimized|"
                          r"Could not find cuda drivers|Unable to register cu|fully_quantize: \d|"
                          r"INFO: Created TensorFlow Lite .* delegate)")


@contextlib.contextmanager
def native_logs_hidden():
    """Drop what native code logs to stderr inside the block (TensorFlow's start-up chatter, the
    converter's internals); every other line written to stderr meanwhile is passed on afterwards.
    EDGECLS_NATIVE_LOGS=1 (`edgecls --verbose`) shows everything as it comes."""
    if os.environ.get("EDGECLS_NATIVE_LOGS"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (captured by a test or a notebook)
        fd = 2
    sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode("utf-8", "replace").splitlines() if not _NATIVE_LINE.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def keras():
    """Return tf_keras (Keras 2), the Keras that tensorflow-model-optimization works with."""
    tensorflow()
    try:
        import tf_keras
    except ImportError as exc:
        raise DependencyError(f"tf_keras is not installed ({exc}); {_TRAIN_HINT}") from None
    return tf_keras
