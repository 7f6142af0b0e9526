"""Safe mode: a model file is refused before Keras or TensorFlow open it when loading it could run
Python code stored in it or named by it.

The decision is made from the model's configuration parsed as data, for every container edgecls
loads (Keras 3 and Keras 2 `.keras` zips, `.h5` files, SavedModel directories, `edgecls train`
directories), by walking every serialized object in it: the layers of nested models, the layers
inside wrappers (`TimeDistributed`, `Bidirectional`, tfmot's), shared layers, initializers,
regularizers, constraints, activations and dtype policies. Refused:

- `Lambda` layers (Python bytecode stored in the file);
- any class that is not a Keras built-in: a registered custom object, a class named by a module
  outside Keras, an unknown class name;
- `TFOpLambda` layers (a TensorFlow function called by name) outside TensorFlow's math, nn and
  array operations;
- SavedModels whose graphs call Python (`PyFunc`, `EagerPyFunc`) or read and write files.

The training configuration (`compile_config`, `training_config`) is not checked: edgecls loads
models with `compile=False`, so Keras never builds what it names.
"""
from __future__ import annotations

import inspect
import json
import zipfile
from functools import lru_cache
from pathlib import Path

from .errors import ModelError, first_line

UNSAFE_HINT = "load it only if you trust the file and its author: --unsafe (Python: safe_mode=False)"

# Serialized values that are data, not classes (Keras 3 and tf_keras).
_STRUCTURAL = frozenset({"__keras_tensor__", "__tuple__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__",
                         "__typespec__", "__tensor__", "__sparse_tensor__", "__ragged_tensor__", "__list__",
                         "Functional", "Sequential", "Model", "TensorShape", "TypeSpec", "InputSpec"})
# tfmot's wrappers and quantizers as edgecls writes them (pruned and QAT models).
_TFMOT = frozenset({"PruneLowMagnitude", "QuantizeWrapper", "QuantizeWrapperV2", "QuantizeAnnotate", "QuantizeLayer",
                    "Default8BitQuantizeConfig", "Default8BitConvQuantizeConfig", "NoOpQuantizeConfig",
                    "Default8BitOutputQuantizeConfig", "Default8BitActivationQuantizeConfig",
                    "Default8BitConvWeightsQuantizer", "AllValuesQuantizer", "LastValueQuantizer",
                    "MovingAverageQuantizer", "FixedQuantizer"})
_CODE_LAYERS = frozenset({"Lambda", "__lambda__"})
_OP_LAYERS = frozenset({"TFOpLambda", "SlicingOpLambda"})
# TensorFlow functions a TFOpLambda may name: arithmetic and array operations, nothing with I/O.
_OP_PREFIXES = ("math.", "nn.", "__operators__.", "linalg.", "image.resize", "compat.v1.nn.", "compat.v1.math.")
_OP_NAMES = frozenset({
    "reshape", "concat", "transpose", "expand_dims", "squeeze", "identity", "cast", "clip_by_value", "stack",
    "unstack", "split", "pad", "gather", "shape", "tile", "where", "maximum", "minimum", "reduce_mean", "reduce_sum",
    "reduce_max", "reduce_min", "abs", "exp", "sqrt", "square", "add", "multiply", "subtract", "truediv", "divide",
    "sigmoid", "tanh", "ones_like", "zeros_like", "broadcast_to", "slice", "strided_slice", "einsum", "matmul",
    "roll", "reverse", "argmax", "argmin", "one_hot", "cumsum", "round", "floor", "sign", "pow", "rsqrt",
    "depth_to_space", "space_to_depth", "stop_gradient", "convert_to_tensor", "__operators__.getitem",
})
# Graph ops that run Python or touch files (a serving function has no business with either).
_UNSAFE_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc", "WriteFile", "ReadFile", "MatchingFiles"})
_SKIPPED_KEYS = frozenset({"compile_config", "training_config"})
# Libraries whose own classes may appear in a model: Keras, and tfmot (pruned and QAT models).
_TRUSTED_MODULES = ("keras.", "tf_keras.", "tensorflow_model_optimization.")


def check_model_file(path: str | Path) -> None:
    """Raise ModelError naming the first object in the model at `path` that safe mode refuses,
    and how to proceed; return quietly when the file holds only Keras built-ins. Reads the file as
    data: nothing in it is imported, deserialized or run."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    configs = model_configs(path)
    problem = first_problem(configs)
    if problem:
        where, why = problem
        raise ModelError(f"{path}: {describe(where)}{why}; refused in safe mode: {UNSAFE_HINT}")
    if path.is_dir() and (path / "saved_model.pb").is_file():
        op = _saved_model_unsafe_op(path)
        if op:
            raise ModelError(f"{path}: the SavedModel's graph calls {op} (Python code or file access); refused in "
                             f"safe mode: {UNSAFE_HINT}")


def model_configs(path: Path) -> list:
    """The parsed configuration(s) of the model at `path`: one JSON object for a Keras file, the
    metadata of every saved layer for a Keras SavedModel, none for a plain SavedModel."""
    if path.is_dir():
        if (path / "model.keras").is_file():
            return model_configs(path / "model.keras")
        if (path / "saved_model.pb").is_file():
            return _saved_model_configs(path)
        raise ModelError(f"{path}: neither an edgecls model directory (model.keras) nor a SavedModel (saved_model.pb)")
    if path.suffix in (".h5", ".hdf5"):
        return [_parse(_h5_config(path), path, "model_config")]
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a valid .keras file (corrupt or truncated); re-save the model")
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("config.json")
            if info.file_size > 64 << 20:
                raise ModelError(f"{path}: its config.json is {info.file_size} bytes; not a model configuration")
            text = zf.read(info)
    except KeyError:
        raise ModelError(f"{path}: no config.json in the .keras file; re-save the model with model.save()") from None
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise ModelError(f"{path}: unreadable .keras file ({first_line(exc)})") from None
    return [_parse(text, path, "config.json")]


def _parse(text, path: Path, what: str):
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        config = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{path}: its {what} is not valid JSON ({first_line(exc)}); the file is damaged") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: its {what} is not a model configuration (a JSON object)")
    return config


def _h5_config(path: Path):
    try:
        import h5py

        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
    except OSError as exc:
        raise ModelError(f"{path} is not a readable HDF5 model (corrupt or truncated): {first_line(exc)}") from None
    if config is None:
        raise ModelError(f"{path} holds weights only (no model_config); save the whole model")
    return config


def _saved_model_configs(path: Path) -> list:
    meta = path / "keras_metadata.pb"
    if not meta.is_file():
        return []
    try:
        from tf_keras.protobuf import saved_metadata_pb2

        saved = saved_metadata_pb2.SavedMetadata()
        saved.ParseFromString(meta.read_bytes())
    except ImportError:
        raise ModelError(f"{path}: reading its Keras metadata needs tf_keras; pip install 'edgecls[train]'") from None
    except Exception as exc:  # protobuf's DecodeError
        raise ModelError(f"{path}: unreadable keras_metadata.pb ({first_line(exc)}); the SavedModel is damaged") from None
    return [_parse(node.metadata, path, f"metadata of {node.node_path or 'a layer'}") for node in saved.nodes
            if node.metadata]


def _saved_model_unsafe_op(path: Path) -> str | None:
    try:
        from tensorflow.core.protobuf import saved_model_pb2
    except ImportError:
        raise ModelError(f"{path}: reading a SavedModel needs TensorFlow; pip install 'edgecls[train]'") from None
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as exc:
        raise ModelError(f"{path}: unreadable saved_model.pb ({first_line(exc)}); the SavedModel is damaged") from None
    for graph in saved.meta_graphs:
        nodes = list(graph.graph_def.node)
        for function in graph.graph_def.library.function:
            nodes.extend(function.node_def)
        for node in nodes:
            if node.op in _UNSAFE_OPS:
                return f"{node.op} (node {node.name!r})"
    return None


def first_problem(configs) -> tuple[list[str], str] | None:
    """(layer path, reason) of the first serialized object safe mode refuses, or None."""
    for config in configs:
        found = _walk(config, [])
        if found:
            return found
    return None


def _walk(obj, where: list[str]):
    stack = [(obj, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                at = _here(node, at)
                why = _judge(node)
                if why:
                    return at, why
            for key, value in reversed(list(node.items())):
                if key not in _SKIPPED_KEYS and isinstance(value, (dict, list)):
                    stack.append((value, at))
        elif isinstance(node, list):
            stack.extend((value, at) for value in reversed(node))
    return None


def _here(node: dict, at: list[str]) -> list[str]:
    config = node.get("config")
    name = node.get("name") or (config.get("name") if isinstance(config, dict) else None)
    return [*at, str(name)] if isinstance(name, str) and name else at


def _judge(node: dict) -> str | None:
    cls = node.get("class_name")
    if not isinstance(cls, str):
        return f"holds a serialized object whose class_name is {type(cls).__name__}, not a name"
    if cls in _CODE_LAYERS:
        return "is a Lambda layer (Python code stored in the file)"
    module = node.get("module")
    if module is not None and not (isinstance(module, str) and (module in ("keras", "tf_keras") or
                                                                module.startswith(_TRUSTED_MODULES))):
        return f"is a {cls} from the module {module!r}, not a Keras built-in"
    registered = node.get("registered_name")
    if registered is not None and registered != cls and not (cls == "function" and isinstance(registered, str)
                                                             and registered in _activation_names()):
        return f"is a custom object {registered!r} (class {cls}), not a Keras built-in"
    if cls in _OP_LAYERS:
        config = node.get("config")
        fn = config.get("function") if isinstance(config, dict) else None
        if cls == "SlicingOpLambda" and fn == "__operators__.getitem":
            return None
        if not isinstance(fn, str) or not (fn in _OP_NAMES or fn.startswith(_OP_PREFIXES)):
            return f"calls the TensorFlow function {fn!r} by name ({cls}), which is not a math or array operation"
        return None
    if cls == "function":  # a Keras 3 serialized activation function
        name = node.get("config")
        if not (isinstance(name, str) and name in _activation_names()):
            return f"names the function {name!r}, which is not a Keras activation"
        return None
    if cls in _STRUCTURAL or cls in _TFMOT or cls in _builtin_classes() or _defined_in_keras(module, cls):
        return None
    return f"is of class {cls!r}, which is not a Keras built-in (a custom class)"


@lru_cache(maxsize=256)
def _defined_in_keras(module, cls: str) -> bool:
    """Whether `module` (already known to be inside Keras) defines the class `cls`, as Keras's
    applications do for their own layers (ConvNeXt's LayerScale)."""
    if not isinstance(module, str) or not module.startswith(("keras.src.", "tf_keras.src.", "tensorflow_model_optimization.")):
        return False
    import importlib

    try:
        return inspect.isclass(getattr(importlib.import_module(module), cls, None))
    except Exception:  # not importable: Keras would not find it either
        return False


@lru_cache(maxsize=1)
def _keras_modules() -> list:
    mods = []
    try:
        from ._deps import keras

        k = keras()
        mods += [k.layers, k.initializers, k.regularizers, k.constraints, k.activations, k.mixed_precision, k.models]
    except ImportError:
        pass
    try:
        import keras as keras3

        mods += [keras3.layers, keras3.initializers, keras3.regularizers, keras3.constraints, keras3.activations,
                 keras3.dtype_policies, keras3.models]
    except ImportError:
        pass
    return mods


@lru_cache(maxsize=1)
def _builtin_classes() -> frozenset:
    names = set()
    for module in _keras_modules():
        names.update(n for n in dir(module) if not n.startswith("_") and inspect.isclass(getattr(module, n, None)))
    return frozenset(names - _CODE_LAYERS)


@lru_cache(maxsize=1)
def _activation_names() -> frozenset:
    names = set()
    for module in _keras_modules():
        if module.__name__.endswith("activations"):
            names.update(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None)))
    return frozenset(names - {"get", "serialize", "deserialize"})


def describe(where: list[str]) -> str:
    if not where:
        return "the model "
    return "layer " + " > ".join(repr(w) for w in where) + " "
