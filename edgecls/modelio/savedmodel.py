"""SavedModel directories: as a tf_keras model when Keras 2 wrote them, else their serving signature
wrapped in a tf_keras model (convertible, not prunable)."""
from __future__ import annotations

import logging
from pathlib import Path

from .._deps import keras, tensorflow
from ..errors import ModelError, first_line

log = logging.getLogger("edgecls")


def load_saved_model(path: Path, safe_mode: bool = True):
    """A SavedModel: as a tf_keras model if Keras 2 wrote it, else its serving signature wrapped in a
    tf_keras model (convertible, not prunable)."""
    tf = tensorflow()
    k = keras()
    if (path / "keras_metadata.pb").exists():
        try:
            return k.models.load_model(path, compile=False, safe_mode=safe_mode)
        except Exception as exc:
            log.info("SavedModel %s did not load as Keras (%s); using its serving signature", path, first_line(exc))
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable SavedModel ({first_line(exc)})") from None
    signature = loaded.signatures.get("serving_default") if hasattr(loaded, "signatures") else None
    if signature is None:
        raise ModelError(f"{path}: the SavedModel has no 'serving_default' signature")
    specs = list(signature.structured_input_signature[1].values())
    if len(specs) != 1:
        raise ModelError(f"{path}: the serving signature has {len(specs)} inputs; edgecls needs one image input")
    spec = specs[0]
    outputs = signature.structured_outputs
    if len(outputs) != 1:
        raise ModelError(f"{path}: the serving signature has {len(outputs)} outputs; edgecls needs one")
    out_key = next(iter(outputs))
    in_key = next(iter(signature.structured_input_signature[1]))

    class ServingSignature(k.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._loaded = loaded  # keeps the variables alive

        def call(self, x):
            return signature(**{in_key: x})[out_key]

    inputs = k.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype, name="image")
    outputs_t = ServingSignature(name="saved_model")(inputs)
    model = k.Model(inputs, outputs_t, name=path.name)
    return model
