"""Keras 3 models rebuilt in tf_keras (Keras 2), the Keras tensorflow-model-optimization works with:
the cleaned configuration rebuilt, the weights copied, the rebuild checked against the original."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .._deps import keras
from ..errors import ModelError, first_line

def bridge_keras3(path: Path, safe_mode: bool):
    """Rebuild a Keras 3 model in tf_keras from its cleaned config and copy the weights over,
    then check both give the same outputs."""
    try:
        import keras as keras3
    except ImportError:
        raise ModelError(f"{path} was saved by Keras 3, which is not installed; pip install keras>=3") from None
    try:
        k3_model = keras3.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:
        from . import load_error

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
