"""Saving and loading a trained model directory: model.keras, labels.json, preprocessing.json."""
from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ._deps import keras
from ._io import atomic_path, atomic_write_json, read_json
from .errors import ConfigError, ModelError, first_line
from .preprocess import SPEC_FILE, PreprocessingSpec

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"


@dataclass
class TrainedModel:
    model: object  # tf_keras.Model
    labels: tuple[str, ...]
    preprocessing: PreprocessingSpec
    path: Path


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
    data = read_json(path, "labels file", ModelError)
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
        from .safety import check_model_file

        check_model_file(path)
    k = keras()
    try:
        return k.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # h5py / zip / deserialization errors of a damaged or foreign file
        raise load_error(path, exc) from None


def load_error(path: Path, exc: BaseException) -> ModelError:
    """The one-line ModelError for a model Keras could not load (after safe mode let it through,
    or with safe mode off)."""
    from .safety import describe, first_problem, model_configs

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


def load_trained(path: str | Path, safe_mode: bool = True) -> TrainedModel:
    """Load a directory written by `edgecls train` (or a model file beside its labels.json and
    preprocessing.json)."""
    path = Path(path)
    if path.is_dir():
        model_path = path / MODEL_FILE
        folder = path
    else:
        model_path = path
        folder = path.parent
    if not model_path.exists():
        raise ModelError(f"no model at {model_path}; pass a directory written by 'edgecls train' or a .keras file")
    spec_path, labels_path = folder / SPEC_FILE, folder / LABELS_FILE
    if not spec_path.exists():
        raise ModelError(f"no {SPEC_FILE} beside {model_path}; edgecls needs the preprocessing the model was trained with")
    spec = PreprocessingSpec.load(spec_path)
    model = load_keras_model(model_path, safe_mode=safe_mode)
    out_classes = int(model.outputs[0].shape[-1])
    if labels_path.exists():
        labels = load_labels(labels_path)
    else:
        labels = tuple(str(i) for i in range(out_classes))
    if len(labels) != out_classes:
        raise ModelError(f"{labels_path} lists {len(labels)} classes but the model outputs {out_classes}")
    return TrainedModel(model, labels, spec, model_path)
