"""A bundle written by `edgecls export` given as a model: its float variant (tflite_fp32, else
onnx_fp32) is the source, read from a private copy checked against the manifest's sha256, with the
bundle's own preprocessing and labels unless others are given. `tune`, `export` and `eval` take a
bundle this way; what needs the Keras model it came from (pruning, QAT) is skipped with the reason,
as for any float file."""
from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

from ..errors import ModelError

FLOAT_VARIANTS = ("tflite_fp32", "onnx_fp32")


def load(path: Path, preprocessing=None, labels=None):
    import importlib

    from ..bundle import load_bundle

    bundle = load_bundle(path)
    names = bundle.names()
    chosen = next((n for n in FLOAT_VARIANTS if n in names), None)
    if chosen is None:
        raise ModelError(f"{path}: the bundle has no validated float variant ({' or '.join(FLOAT_VARIANTS)}) to start "
                         f"from; re-export it with --formats tflite_fp32, or give the model it was exported from")
    artifact = bundle.artifact(chosen)
    spec = bundle.preprocessing()
    given = preprocessing or {"scale": spec.scale, "mean": list(spec.mean), "std": list(spec.std)}
    names_given = labels if labels else bundle.labels()
    folder = Path(tempfile.mkdtemp(prefix="edgecls-bundle-source-"))
    try:
        copy = bundle.copy_verified(artifact, folder)
        kind = "tflite" if chosen.startswith("tflite") else "onnx"
        source = importlib.import_module(f"edgecls.sources.{kind}").load(copy, given, names_given)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(source, shutil.rmtree, str(folder), True)
    source.origin = f"{path} ({chosen})"
    return source
