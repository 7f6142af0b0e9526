"""What a model path holds, decided from its content (the first bytes of a file, the record files of a
folder), not its name: the loader and safe mode dispatch on it, and a file of a kind they do not
take gets the message that fits it. Standard library only."""
from __future__ import annotations

from pathlib import Path

from ..errors import ModelError

TAKES = "an 'edgecls train' folder, a .keras or .h5 file, or a SavedModel folder"


def model_kind(path: str | Path) -> str:
    """One of "edgecls" (a train folder), "savedmodel", "keras" (a zip), "h5", "tflite", "onnx",
    "bundle" (an export folder), "folder" (any other folder), "empty", "unknown"."""
    path = Path(path)
    if path.is_dir():
        if (path / "model.keras").is_file():
            return "edgecls"
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        if (path / "manifest.json").is_file():
            return "bundle"
        return "folder"
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise ModelError(f"cannot read {path} ({exc.strerror or exc})") from None
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "keras"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:1] == b"\x08" and path.suffix.lower() == ".onnx":  # ModelProto: field 1 (ir_version), a varint
        return "onnx"
    return "unknown"


def refuse(path: Path, kind: str, command: str = "this command") -> None:
    """A ModelError fitting a model path of `kind` that the Keras loader does not take."""
    if kind in ("tflite", "onnx"):
        name = "a TFLite" if kind == "tflite" else "an ONNX"
        raise ModelError(f"{path} is {name} file; {command} takes {TAKES}. {name[0].upper()}{name[1:]} file runs as "
                         f"it is: 'edgecls bench {path}' and 'edgecls predict' (with --scale/--mean/--std outside a bundle)")
    if kind == "bundle":
        raise ModelError(f"{path} is a bundle written by 'edgecls export'; {command} takes {TAKES} (the bundle's "
                         f"source model, or 'edgecls bench {path}')")
    if kind == "empty":
        raise ModelError(f"{path} is an empty file, not a model; give {TAKES}")
    if kind == "folder":
        raise ModelError(f"{path}: neither an edgecls model folder (model.keras) nor a SavedModel (saved_model.pb)")
    raise ModelError(f"{path} is not a model file edgecls reads (neither a .keras zip nor HDF5 .h5); give {TAKES}")
