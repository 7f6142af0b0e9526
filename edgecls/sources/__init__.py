"""Models the user gives that are not Keras models: one module per kind, each answering what the
export needs from a source (its preprocessing and labels, its own float outputs on a batch of
images, and the float files it can become: edgecls.sources.base.Source). Keras models (edgecls runs, .keras, .h5, SavedModels)
enter through edgecls.modelio.load_model."""
from __future__ import annotations

from pathlib import Path

from ..modelio.kinds import model_kind

# kind (edgecls.modelio.kinds.model_kind) -> the module that reads it
SOURCE_KINDS = {"onnx": "edgecls.sources.onnx", "tflite": "edgecls.sources.tflite", "bundle": "edgecls.sources.bundle"}


def load_source(path, preprocessing=None, labels=None):
    """The source at `path` for a kind in SOURCE_KINDS (None for a Keras model, which
    edgecls.modelio.load_model reads)."""
    import importlib

    kind = model_kind(Path(path)) if Path(path).exists() else None
    if kind not in SOURCE_KINDS:
        return None
    return importlib.import_module(SOURCE_KINDS[kind]).load(Path(path), preprocessing, labels)
