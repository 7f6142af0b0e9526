"""Models to optimize and export: one trained by edgecls, or a user's own classifier.

Accepted: a directory written by `edgecls train`; a Keras 3 `.keras` file (bridged to tf_keras so
tfmot can prune and quantize it); a Keras 2 `.keras` or `.h5` file; a SavedModel directory.
A user's model needs its preprocessing (`(pixel * scale - mean) / std`; the input size is read
from the model) and optionally its labels (default: class indices).

Models load in safe mode (edgecls.safety): a model holding a Lambda layer, a class that is not a
Keras built-in, or (SavedModel) a graph that calls Python is refused before it is opened, unless
`safe_mode=False`.
"""
from __future__ import annotations

import json
import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._deps import keras, tensorflow
from .errors import ModelError, first_line
from .modelio import LABELS_FILE, MODEL_FILE, load_error, load_keras_model, load_labels
from .preprocess import SPEC_FILE, PreprocessingSpec

log = logging.getLogger("edgecls")


@dataclass
class SourceModel:
    model: object  # tf_keras.Model
    preprocessing: PreprocessingSpec
    labels: tuple[str, ...]
    path: Path
    kind: str  # "edgecls", "keras3", "keras2", "h5", "savedmodel"
    tunable: bool = True  # pruning/QAT possible (a real tf_keras layer graph)
    info: dict = field(default_factory=dict)


def load_source(path: str | Path, preprocessing: PreprocessingSpec | dict | None = None, labels=None,
                safe_mode: bool = True) -> SourceModel:
    """Load a model to export. `preprocessing` may be a PreprocessingSpec or a dict with
    scale/mean/std (the input size comes from the model). `labels` a list or a JSON file path."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if safe_mode:
        from .safety import check_model_file

        check_model_file(path)  # every container, before Keras or TensorFlow opens it
    if path.is_dir() and (path / MODEL_FILE).exists():
        kind = "edgecls"
        model = load_keras_model(path / MODEL_FILE, safe_mode=safe_mode)
        folder = path
    elif path.is_dir() and (path / "saved_model.pb").exists():
        kind = "savedmodel"
        model = _load_saved_model(path, safe_mode)
        folder = None
    elif path.is_dir():
        raise ModelError(f"{path}: neither an edgecls model directory (model.keras) nor a SavedModel (saved_model.pb)")
    elif path.suffix == ".keras":
        version = _keras_file_version(path)
        if version.startswith("3"):
            kind, model = "keras3", _bridge_keras3(path, safe_mode)
        else:
            kind, model = "keras2", load_keras_model(path, safe_mode=safe_mode)
        folder = path.parent
    elif path.suffix in (".h5", ".hdf5"):
        kind = "h5"
        model = load_keras_model(path, safe_mode=safe_mode)
        folder = path.parent
    else:
        raise ModelError(f"{path}: unsupported model file; expected .keras, .h5 or a SavedModel directory")

    shape = _check_image_classifier(model, path)
    spec = _resolve_preprocessing(preprocessing, folder if kind == "edgecls" else None, shape, path)
    resolved_labels = _resolve_labels(labels, folder if kind == "edgecls" else None, int(model.outputs[0].shape[-1]))
    tunable = kind != "savedmodel"
    return SourceModel(model, spec, resolved_labels, path, kind, tunable)


def _keras_file_version(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a valid .keras file (corrupt or truncated); re-save the model")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json"))
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: unreadable .keras metadata ({first_line(exc)})") from None
    return str(meta.get("keras_version", ""))


def _check_image_classifier(model, path: Path) -> tuple[int, int]:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path}: the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; edgecls needs one image input and one class-score output")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise ModelError(f"{path}: the model input is {shape}, not an image; edgecls needs (batch, height, width, 3) with a fixed size")
    out = tuple(model.outputs[0].shape)
    if len(out) != 2 or (out[-1] or 0) < 2:
        raise ModelError(f"{path}: the model output is {out}; edgecls needs (batch, classes) class scores")
    return int(shape[1]), int(shape[2])


def _resolve_preprocessing(preprocessing, folder, size, path) -> PreprocessingSpec:
    if isinstance(preprocessing, PreprocessingSpec):
        spec = preprocessing
    elif preprocessing:
        spec = PreprocessingSpec(input_size=size, **preprocessing)
    elif folder is not None and (folder / SPEC_FILE).exists():
        spec = PreprocessingSpec.load(folder / SPEC_FILE)
    else:
        raise ModelError(f"{path}: no preprocessing given; pass --scale, --mean and --std (the model sees (pixel * scale - mean) / std)")
    if tuple(spec.input_size) != tuple(size):
        raise ModelError(f"{path}: the preprocessing says {spec.input_size} but the model takes {size}")
    return spec


def _resolve_labels(labels, folder, classes) -> tuple[str, ...]:
    if isinstance(labels, (str, Path)):
        labels = load_labels(labels)
    elif labels is None and folder is not None and (folder / LABELS_FILE).exists():
        labels = load_labels(folder / LABELS_FILE)
    if labels is None:
        return tuple(str(i) for i in range(classes))
    labels = tuple(labels)
    if len(labels) != classes:
        raise ModelError(f"{len(labels)} labels given but the model outputs {classes} classes")
    return labels


def _load_saved_model(path: Path, safe_mode: bool = True):
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


# --- Keras 3 -> tf_keras ------------------------------------------------------------------------

def _bridge_keras3(path: Path, safe_mode: bool):
    """Rebuild a Keras 3 model in tf_keras from its cleaned config and copy the weights over,
    then check both give the same outputs."""
    try:
        import keras as keras3
    except ImportError:
        raise ModelError(f"{path} was saved by Keras 3, which is not installed; pip install keras>=3") from None
    try:
        k3_model = keras3.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:
        raise load_error(path, exc) from None
    k = keras()
    config = k3_model.get_config()
    try:
        if k3_model.__class__.__name__ == "Sequential":
            layers = [_clean_layer(layer) for layer in config["layers"]]
            model = k.Sequential.from_config({"name": config.get("name", "sequential"), "layers": layers})
        else:
            model = k.Model.from_config(_functional_config(config), custom_objects=None)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: could not rebuild the Keras 3 model in tf_keras ({first_line(exc)})") from None
    for layer in model.layers:
        try:
            source = k3_model.get_layer(layer.name)
        except ValueError:
            continue
        weights = source.get_weights()
        if weights:
            layer.set_weights(weights)
    probe = np.random.default_rng(0).normal(size=(4, *model.inputs[0].shape[1:])).astype(np.float32)
    diff = float(np.abs(np.asarray(k3_model(probe, training=False)) - model(probe, training=False).numpy()).max())
    if diff > 1e-4:
        raise ModelError(f"{path}: the tf_keras rebuild of this Keras 3 model differs from it (max diff {diff:.2g}); export it as a SavedModel with model.export()")
    return model


def _clean(obj):
    """Keras 3 serialized objects -> Keras 2 form: drop module/registered_name, dtype policies to names."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "DTypePolicy" or obj.get("class_name") == "FloatDTypePolicy":
            return obj.get("config", {}).get("name", "float32")
        if "class_name" in obj and "config" in obj and ("module" in obj or "registered_name" in obj):
            return {"class_name": obj["class_name"], "config": _clean(obj["config"])}
        return {k: _clean(v) for k, v in obj.items() if k not in ("module", "registered_name", "build_config", "compile_config")}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _clean_layer(layer_cfg: dict) -> dict:
    """Clean one layer config and drop keys the tf_keras class does not accept (e.g. Keras 3's
    initializer `input_axes` or InputLayer `optional`)."""
    k = keras()
    class_name = layer_cfg["class_name"]
    config = _clean(layer_cfg["config"])
    if class_name == "InputLayer":
        if "batch_shape" in config:
            config["batch_input_shape"] = config.pop("batch_shape")
        config.pop("optional", None)
        if config.get("ragged") is None:
            config.pop("ragged", None)
    cls = getattr(k.layers, class_name, None)
    if cls is None:
        raise ModelError(f"layer {layer_cfg.get('name', config.get('name'))!r} is a {class_name}, which tf_keras does not have; export this model as a SavedModel (model.export()) instead")
    for _ in range(50):
        try:
            cls.from_config(dict(config))
            break
        except TypeError as exc:
            match = re.search(r"unexpected keyword argument '(\w+)'|Unrecognized keyword arguments[^']*'(\w+)'"
                              r"|Keyword argument not understood:', '(\w+)'", str(exc))
            key = next((g for g in match.groups() if g), None) if match else None
            if key is None or not _drop_key(config, key):
                raise ModelError(f"cannot rebuild layer {config.get('name')!r} ({class_name}) in tf_keras: {first_line(exc)}") from None
        except ValueError:
            break
    out = {"class_name": class_name, "config": config}
    if "name" in layer_cfg:
        out["name"] = layer_cfg["name"]
    return out


def _drop_key(config: dict, key: str) -> bool:
    """Remove `key` from the config or from the first nested object config holding it."""
    if key in config:
        config.pop(key)
        return True
    for value in config.values():
        if isinstance(value, dict):
            inner = value.get("config") if isinstance(value.get("config"), dict) else value
            if _drop_key(inner, key):
                return True
    return False


def _history(t) -> list:
    h = t["config"]["keras_history"]
    return [h[0], h[1], h[2], {}]


def _collect_tensors(obj, out):
    if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
        out.append(_history(obj))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_tensors(v, out)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_tensors(v, out)


def _functional_config(config: dict) -> dict:
    layers = []
    for layer in config["layers"]:
        cleaned = _clean_layer(layer)
        nodes = []
        for node in layer.get("inbound_nodes", []):
            tensors = []
            _collect_tensors(node.get("args", []), tensors)
            nodes.append(tensors)
        cleaned["inbound_nodes"] = nodes
        cleaned["name"] = layer["name"]
        layers.append(cleaned)

    def io(entries):
        if entries and not isinstance(entries[0], list):
            entries = [entries]
        return [list(e[:3]) for e in entries]

    return {"name": config.get("name", "model"), "layers": layers,
            "input_layers": io(config["input_layers"]), "output_layers": io(config["output_layers"])}
