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
import re
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
# The layers an image classifier is built from: convolution, dense, pooling, normalization,
# activation, merging, reshaping, regularization, image preprocessing and augmentation. A layer
# outside this list (a lookup table or text vectorizer reading a vocabulary file, an RNN, a layer
# that names a file) is refused even though it is a Keras built-in.
LAYERS = frozenset({
    "InputLayer", "Dense", "EinsumDense", "Activation", "Identity",
    *(f"{kind}{d}D" for kind in ("Conv", "Convolution", "SeparableConv", "SeparableConvolution", "DepthwiseConv",
                                 "MaxPooling", "AveragePooling", "MaxPool", "AvgPool", "GlobalAveragePooling",
                                 "GlobalMaxPooling", "GlobalAvgPool", "GlobalMaxPool", "Cropping", "ZeroPadding",
                                 "UpSampling", "SpatialDropout") for d in (1, 2, 3)),
    *(f"{kind}{d}DTranspose" for kind in ("Conv", "Convolution") for d in (1, 2, 3)),
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization", "SyncBatchNormalization",
    "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
    "Flatten", "Reshape", "Permute", "RepeatVector",
    "Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "Rescaling", "Resizing", "CenterCrop", "Normalization",
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomCrop",
    "RandomBrightness", "RandomHeight", "RandomWidth", "RandomHue", "RandomSaturation", "RandomGrayscale",
    "RandomColorJitter", "RandomColorDegeneration", "RandomSharpness", "RandomShear", "RandomErasing",
    "RandomGaussianBlur", "RandomPerspective", "RandomInvert", "RandomPosterization", "Solarization", "AutoContrast",
    "Equalization", "MixUp", "CutMix", "AugMix", "RandAugment",
    "MultiHeadAttention", "Attention", "AdditiveAttention", "GroupQueryAttention", "Embedding", "RMSNormalization",
    "SpectralNormalization", "Masking", "TimeDistributed", "Bidirectional",
    *(f"Adaptive{kind}Pooling{d}D" for kind in ("Average", "Max") for d in (1, 2, 3)),
    "TFOpLambda", "SlicingOpLambda",
})
# Layer arguments that are names, not data: the only strings a layer's configuration may hold that
# look like paths.
_NAME_KEYS = frozenset({"name", "layers", "input_layers", "output_layers", "inbound_nodes", "layer", "module",
                        "registered_name", "class_name", "shared_object_id"})
# The graph ops a SavedModel classifier's functions use (measured on the zoo, MobileNetV2 and
# EfficientNetB0, widened to the math, array and pooling ops of the layers above). Nothing here
# runs Python or reads or writes a file.
GRAPH_OPS = frozenset({
    "Const", "Identity", "IdentityN", "NoOp", "Placeholder", "PlaceholderWithDefault", "StopGradient",
    "PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf", "VarHandleOp", "ReadVariableOp",
    "AssignVariableOp", "ResourceGather", "Conv2D", "Conv3D", "Conv2DBackpropInput", "Conv3DBackpropInputV2",
    "DepthwiseConv2dNative", "BiasAdd", "MatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "FusedBatchNorm",
    "FusedBatchNormV3", "MaxPool", "MaxPoolV2", "MaxPool3D", "AvgPool", "AvgPool3D", "Mean", "Sum", "Max", "Min",
    "Prod", "All", "Any", "ArgMax", "ArgMin", "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Softplus", "Softsign",
    "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Erf", "Exp", "Log", "Log1p", "Sqrt", "Rsqrt", "Square",
    "SquaredDifference", "Reciprocal", "Abs", "Neg", "Sign", "Floor", "Ceil", "Round", "Pow", "Add", "AddV2", "AddN",
    "Sub", "Mul", "Div", "RealDiv", "DivNoNan", "FloorDiv", "FloorMod", "Mod", "Maximum", "Minimum", "ClipByValue",
    "Less", "LessEqual", "Greater", "GreaterEqual", "Equal", "NotEqual", "LogicalAnd", "LogicalOr", "LogicalNot",
    "Select", "SelectV2", "Where", "Cast", "Reshape", "Shape", "ShapeN", "Size", "Rank", "Squeeze", "ExpandDims",
    "Transpose", "ConcatV2", "Pack", "Unpack", "Split", "SplitV", "Slice", "StridedSlice", "Pad", "PadV2",
    "MirrorPad", "Tile", "Fill", "Range", "BroadcastTo", "BroadcastArgs", "ZerosLike", "OnesLike", "OneHot",
    "Cumsum", "GatherV2", "ReverseV2", "SpaceToDepth", "DepthToSpace", "ResizeBilinear", "ResizeNearestNeighbor",
    "ResizeBicubic", "ResizeArea", "ScaleAndTranslate", "RandomUniform", "RandomStandardNormal",
    "StatelessRandomUniformV2", "StatelessRandomNormalV2", "StatelessRandomGetKeyCounter", "LRN", "Bitcast",
    "EnsureShape", "CheckNumerics",
})
# What a SavedModel's own save and restore functions (named __inference__traced_save_N and
# __inference__traced_restore_N by TensorFlow, called by TensorFlow with the checkpoint's path)
# use beside GRAPH_OPS. No other function may use them, nor call those two.
SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin",
                       "StaticRegexFullMatch", "DisableCopyOnRead"})
_SAVER_FUNCTION = re.compile(r"__inference__traced_(save|restore)_\d+")
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
        why = _saved_model_problem(path)
        if why:
            raise ModelError(f"{path}: the SavedModel {why}; refused in safe mode: {UNSAFE_HINT}")


def model_configs(path: Path) -> list:
    """The parsed configuration(s) of the model at `path`: one JSON object for a Keras file, the
    metadata of every saved layer for a Keras SavedModel, none for a plain SavedModel."""
    from .modelio.kinds import model_kind, refuse

    kind = model_kind(path)
    if kind == "edgecls":
        return model_configs(path / "model.keras")
    if kind == "savedmodel":
        return _saved_model_configs(path)
    if kind == "h5":
        return [_parse(_h5_config(path), path, "model_config")]
    if kind != "keras":
        refuse(path, kind)
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
    from .schema import parse

    if not isinstance(text, (str, bytes)):
        raise ModelError(f"{path}: its {what} is a {type(text).__name__}, not a model configuration (JSON text); the "
                         f"file is damaged or not a Keras model")
    config = parse(text, f"{path}: its {what}", ModelError, max_depth=512)
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


def _saved_model_problem(path: Path) -> str | None:
    """Why the SavedModel at `path` is refused: an asset file (a vocabulary or table read from a
    path), or a graph op outside GRAPH_OPS (SAVER_OPS only in TensorFlow's own save and restore
    functions, which no other function calls); None for a plain classifier graph."""
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
        if graph.asset_file_def or any(node.WhichOneof("kind") == "asset" for node in graph.object_graph_def.nodes):
            names = [a.filename for a in graph.asset_file_def] or ["an asset"]
            return f"reads asset files ({', '.join(repr(n) for n in names[:3])}: a vocabulary or table, not part of an image classifier)"
        for node in graph.graph_def.node:
            if node.op not in GRAPH_OPS:
                return f"graph runs {node.op} (node {node.name!r}), which is not an operation of an image classifier"
        savers = {f.signature.name for f in graph.graph_def.library.function if _SAVER_FUNCTION.fullmatch(f.signature.name)}
        for function in graph.graph_def.library.function:
            allowed = GRAPH_OPS | SAVER_OPS if function.signature.name in savers else GRAPH_OPS
            for node in function.node_def:
                if node.op not in allowed:
                    return (f"function {function.signature.name!r} runs {node.op} (node {node.name!r}), which is not "
                            f"an operation of an image classifier (Python code or file access)")
                called = {value.func.name for value in node.attr.values() if value.HasField("func")}
                if called & savers:
                    return f"function {function.signature.name!r} calls TensorFlow's save or restore function"
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
    if cls in _layer_names() and cls not in LAYERS and cls not in _STRUCTURAL and cls not in _CODE_LAYERS:
        return f"is a {cls} layer, which is not a layer of an image classifier (edgecls.safety.LAYERS)"
    if cls in _STRUCTURAL or cls in _TFMOT or cls in _builtin_classes() or _defined_in_keras(module, cls):
        return _names_a_file(node.get("config"))
    return f"is of class {cls!r}, which is not a Keras built-in (a custom class)"


def _names_a_file(config) -> str | None:
    """Why a layer's arguments are refused: one that looks like a file path (a vocabulary, a table,
    weights to read); None when none does."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node and node is not config:
                continue  # a nested object: judged on its own
            stack.extend(v for k, v in node.items() if k not in _NAME_KEYS)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and (node.startswith(("/", "~", "file:", "gs:", "s3:", "http:", "https:"))
                                        or "/" in node or "\\" in node or re.match(r"^[A-Za-z]:", node)):
            return f"has an argument that names a file ({node[:80]!r}); layers of an image classifier read no file"
    return None


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
def _layer_names() -> frozenset:
    names = set()
    for module in _keras_modules():
        if module.__name__.endswith("layers"):
            names.update(n for n in dir(module) if not n.startswith("_") and inspect.isclass(getattr(module, n, None)))
    return frozenset(names)


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
