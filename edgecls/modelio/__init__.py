"""Models in and out: the one loader every stage uses, and saving trained models.

`load_model(path)` takes anything edgecls works on and returns one record, `LoadedModel` (the
tf_keras model, its preprocessing, its labels, where it came from):

- a directory written by `edgecls train` (model.keras, preprocessing.json, labels.json, train.json);
- a Keras 3 `.keras` file (rebuilt in tf_keras so tfmot can prune and quantize it; keras3.py);
- a Keras 2 `.keras` or `.h5` file;
- a SavedModel directory (savedmodel.py; convertible, not prunable unless Keras 2 wrote it).

A model file's preprocessing (`(pixel * scale - mean) / std`; the input size is read from the model)
and labels come from the arguments, else, for a file beside its own preprocessing.json (as `edgecls
train` writes them), from that folder's preprocessing.json and labels.json; labels default to class
indices. Every model is checked in safe mode first (edgecls.safety) unless
`safe_mode=False`. `read_finished_run` reads a finished training run (its model and train.json), for
the stages that start from one (--init, --teacher, ensembles).
"""
from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .._deps import keras
from .._io import atomic_path, atomic_write_json, read_json
from ..schema import parse as parse_json
from ..errors import ConfigError, ModelError, first_line
from ..preprocess import SPEC_FILE, PreprocessingSpec

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
TRAIN_FILE = "train.json"


@dataclass
class LoadedModel:
    """A model with what edgecls needs to feed and read it."""

    model: object  # tf_keras.Model
    preprocessing: PreprocessingSpec
    labels: tuple[str, ...]
    path: Path
    kind: str = "edgecls"  # "edgecls", "keras3", "keras2", "h5", "savedmodel"
    tunable: bool = True  # pruning/QAT possible (a real tf_keras layer graph)
    info: dict = field(default_factory=dict)


def load_model(path: str | Path, preprocessing: PreprocessingSpec | dict | None = None, labels=None,
               safe_mode: bool = True) -> LoadedModel:
    """Load a model (see the module docstring). `preprocessing` may be a PreprocessingSpec or a dict
    with scale/mean/std (the input size comes from the model); `labels` a list or a JSON file path."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"no model at {path}; pass a directory written by 'edgecls train', a .keras or .h5 file, "
                         f"or a SavedModel directory")
    from .kinds import model_kind, refuse

    kind = model_kind(path)
    if kind not in ("edgecls", "savedmodel", "keras", "h5"):
        refuse(path, kind)
    if safe_mode:
        from ..safety import check_model_file

        check_model_file(path)  # every container, before Keras or TensorFlow opens it
    if path.is_dir() and (path / MODEL_FILE).exists():
        kind, folder = "edgecls", path
        model = load_keras_model(path / MODEL_FILE, safe_mode=safe_mode)
    elif path.is_dir() and (path / "saved_model.pb").exists():
        from .savedmodel import load_saved_model

        kind, folder = "savedmodel", None
        model = load_saved_model(path, safe_mode)
    elif path.is_dir():
        raise ModelError(f"{path}: neither an edgecls model directory (model.keras) nor a SavedModel (saved_model.pb)")
    elif kind == "keras":
        folder = path.parent
        if _keras_file_version(path).startswith("3"):
            from .keras3 import bridge_keras3

            kind, model = "keras3", bridge_keras3(path, safe_mode)
        else:
            kind, model = "keras2", load_keras_model(path, safe_mode=safe_mode)
    elif kind == "h5":
        kind, folder = "h5", path.parent
        model = load_keras_model(path, safe_mode=safe_mode)
    else:
        raise ModelError(f"{path}: unsupported model file; expected .keras, .h5 or a SavedModel directory")

    shape = _check_image_classifier(model, path)
    if folder is not None and kind != "edgecls" and not (folder / SPEC_FILE).exists():
        folder = None  # a user's file: its labels and preprocessing come from the arguments
    spec = _resolve_preprocessing(preprocessing, folder, shape, path)
    resolved_labels = _resolve_labels(labels, folder, int(model.outputs[0].shape[-1]))
    return LoadedModel(model, spec, resolved_labels, path, kind, tunable=kind != "savedmodel")


def load_trained(path: str | Path, safe_mode: bool = True) -> LoadedModel:
    """A model with its own preprocessing.json (a directory written by `edgecls train`, or a model
    file beside its preprocessing.json and labels.json)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.exists() and not (folder / SPEC_FILE).exists():
        raise ModelError(f"no {SPEC_FILE} beside {path}; edgecls needs the preprocessing the model was trained with")
    return load_model(path, safe_mode=safe_mode)


# Kept for code written against the names before the loader was one.
TrainedModel = LoadedModel


def require_same_classes_and_inputs(names, runs, what: str) -> None:
    """Raise ConfigError naming the first of `runs` (TrainedModel, named by `names`) whose classes or
    preprocessing differ from the first one's; `what` says what they are ("ensemble members")."""
    for name, run in zip(names[1:], runs[1:]):
        if tuple(run.labels) != tuple(runs[0].labels):
            raise ConfigError(f"{name}: its classes differ from {names[0]}'s; {what} must know the same classes in the same order")
        if run.preprocessing != runs[0].preprocessing:
            raise ConfigError(f"{name}: its preprocessing differs from {names[0]}'s; {what} must take the same inputs")


def save_labels(path: str | Path, labels) -> None:
    atomic_write_json(path, list(labels))


def all_layers(model):
    """Every layer of a Keras model, depth first: nested models' layers and the layers inside
    tfmot's pruning/quantization wrappers included."""
    for layer in getattr(model, "layers", ()):
        yield layer
        inner = getattr(layer, "layer", None)  # a tfmot wrapper
        if inner is not None:
            yield inner
            yield from all_layers(inner)
        else:
            yield from all_layers(layer)


def save_model_file(model, path: str | Path) -> None:
    """Save a Keras model for inference: without optimizer state (which the native .keras format
    keeps for a compiled model and which doubles the file; a resumed run has its own checkpoints),
    compressed (Keras stores the zip's members uncompressed: deflate took 12-27% off the shipped models),
    written to a temporary file and renamed, so an interrupted save leaves no half-written model."""
    if getattr(model, "optimizer", None) is not None:
        k = keras()
        plain = k.models.clone_model(model)
        plain.set_weights(model.get_weights())
        model = plain
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="edgecls-save-") as scratch:
        saved = Path(scratch) / path.name  # Keras picks the format from the suffix
        model.save(saved)
        with atomic_path(path) as tmp:
            if zipfile.is_zipfile(saved):
                with zipfile.ZipFile(saved) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
                    for member in src.infolist():
                        dst.writestr(member.filename, src.read(member))
            else:
                shutil.copyfile(saved, tmp)


def load_labels(path: str | Path) -> tuple[str, ...]:
    data = read_json(path, "labels file", ModelError, "labels")
    if not isinstance(data, list) or not data or not all(isinstance(x, str) for x in data):
        raise ModelError(f"labels file {path} must hold a JSON list of class names")
    return tuple(data)


def load_keras_model(path: str | Path, safe_mode: bool = True):
    """Load a Keras model file without its training configuration.

    In safe mode (the default) the file is refused before Keras opens it when it holds a Lambda
    layer or any class that is not a Keras built-in (see edgecls.safety).
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a valid .keras file (corrupt or truncated); re-export the model")
    if safe_mode:
        from ..safety import check_model_file

        check_model_file(path)
    k = keras()
    try:
        return k.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # h5py / zip / deserialization errors of a damaged or foreign file
        raise load_error(path, exc) from None


def load_error(path: Path, exc: BaseException) -> ModelError:
    """The one-line ModelError for a model Keras could not load (after safe mode let it through,
    or with safe mode off)."""
    from ..safety import describe, first_problem, model_configs

    text = str(exc)
    try:
        problem = first_problem(model_configs(Path(path)))
    except ModelError:
        problem = None
    if problem and "Lambda" not in problem[1]:
        where, why = problem
        return ModelError(f"{path}: {describe(where)}{why}, and this Python does not define it, so Keras cannot build "
                          f"the model: convert it from the Python that defines it (import that code, then call "
                          f"edgecls.export), or save it as a SavedModel with model.export()")
    if "safe_mode" in text or "Lambda" in text:
        return ModelError(f"{path} holds a Lambda layer (arbitrary code); refused in safe mode. Load it only if you trust it (--unsafe)")
    if isinstance(exc, ValueError):
        return ModelError(f"cannot load {path}: {first_line(exc)}")
    return ModelError(f"cannot load {path} ({exc.__class__.__name__}: {first_line(exc)}); the file may be corrupt")


def _keras_file_version(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a valid .keras file (corrupt or truncated); re-save the model")
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("metadata.json")
            if info.file_size > 1 << 20:
                raise ModelError(f"{path}: its metadata.json is {info.file_size:,} bytes; not a Keras file")
            meta = parse_json(zf.read(info), f"{path}: its metadata.json", ModelError)
    except (KeyError, ValueError, zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise ModelError(f"{path}: unreadable .keras metadata ({first_line(exc)})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: its metadata.json is not a JSON object; the file is damaged")
    return str(meta.get("keras_version", ""))[:64]


def _check_image_classifier(model, path: Path) -> tuple[int, int]:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path}: the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; edgecls needs one image input and one class-score output")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise ModelError(f"{path}: the model input is {shape}, not an image; edgecls needs (batch, height, width, 3) with a fixed size")
    from ..schema import MAX_CLASSES, MAX_INPUT_SIDE

    if max(shape[1], shape[2]) > MAX_INPUT_SIDE:
        raise ModelError(f"{path}: the model takes {shape[1]}x{shape[2]} images; edgecls handles small classifiers up "
                         f"to {MAX_INPUT_SIDE} pixels a side")
    out = tuple(model.outputs[0].shape)
    if len(out) != 2 or (out[-1] or 0) < 2:
        raise ModelError(f"{path}: the model output is {out}; edgecls needs (batch, classes) class scores")
    if out[-1] > MAX_CLASSES:
        raise ModelError(f"{path}: the model has {out[-1]} classes; edgecls handles up to {MAX_CLASSES}")
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




# --- finished training runs ----------------------------------------------------------------------

def require_finished_run(path: Path, flag: str) -> None:
    """Raise a one-line ConfigError unless `path` (named by `flag`) holds a finished run's model."""
    if not (Path(path) / MODEL_FILE).is_file():
        raise ConfigError(f"{flag} {path}: not a finished 'edgecls train' directory (no {MODEL_FILE}); pass the --out of a finished run")


def read_finished_run(path: Path, flag: str) -> tuple[LoadedModel, dict]:
    """A finished 'edgecls train' run named by `flag` (--init, --teacher, ...) and its train.json
    ({} when it has none)."""
    path = Path(path)
    require_finished_run(path, flag)
    return load_trained(path), read_run_record(path, flag)


def read_run_record(path: Path, flag: str) -> dict:
    """The train.json of the run directory `path` (named by `flag`); {} when it has none (a bare
    model file, or a run from before train.json). An unreadable one is a one-line ConfigError."""
    record = Path(path) / TRAIN_FILE
    if not record.is_file():
        return {}
    try:
        return read_json(record, TRAIN_FILE, ConfigError, "train")
    except ConfigError as e:
        raise ConfigError(f"{flag} {path}: cannot read {TRAIN_FILE} ({e}); pass the --out of a finished run") from None
