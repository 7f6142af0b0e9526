"""Conversions between float files with maintained converters, for sources that are not Keras
models (the Keras routes are in export/formats):

  ONNX -> TFLite   onnx2tf (NCHW inputs become NHWC; its transposes are folded into the layers),
                   run in a child process: it writes in its working folder, prints its own logs and
                   would otherwise fetch sample images from the network (it is given the user's
                   calibration images instead)
  TFLite -> ONNX   tf2onnx, which reads TFLite flatbuffers

onnx2tf's package metadata pins old TensorFlow, onnx and numpy releases; the versions it actually
runs with are the project's own (it is installed without its declared dependencies:
requirements-onnx2tf.txt), checked by the ONNX-source tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import DependencyError, ExportError, first_line

ONNX2TF_INSTALL = "pip install --no-deps -r requirements-onnx2tf.txt (in the edgecls source tree; make setup does it)"
# onnx2tf compares its layers with onnxruntime's on this many sample images of 128x128 (its own file name).
_SAMPLE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"


def onnx2tf_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx2tf") is not None


def onnx_to_tflite(onnx_bytes: bytes, sample_nhwc: np.ndarray, timeout: float = 600) -> tuple[bytes, dict]:
    """The float TFLite file onnx2tf makes of a float ONNX model, and what the conversion did
    (route, version, the TRANSPOSE ops left in the file). `sample_nhwc`: a few normalized images
    in NHWC, given to onnx2tf for its own layer-by-layer checks."""
    if not onnx2tf_available():
        raise DependencyError(f"ONNX to TFLite conversion needs onnx2tf, which is not installed; {ONNX2TF_INSTALL}")
    with tempfile.TemporaryDirectory(prefix="edgecls-onnx2tf-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.onnx").write_bytes(onnx_bytes)
        np.save(tmp / _SAMPLE_NAME, _sample_images(sample_nhwc))
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        try:
            proc = subprocess.run([sys.executable, "-m", "edgecls.sources.convert", str(tmp)], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ExportError(f"onnx2tf did not finish the ONNX to TFLite conversion in {timeout:.0f} s") from None
        files = sorted((tmp / "out").glob("*_float32.tflite")) if (tmp / "out").is_dir() else []
        if proc.returncode != 0 or not files:
            why = _last_error(proc.stdout + "\n" + proc.stderr)
            raise ExportError(f"onnx2tf could not convert the ONNX model to TFLite: {why}")
        data = files[0].read_bytes()
    from importlib import metadata

    ops = tflite_ops(data)
    return data, {"route": "onnx2tf", "converter_version": metadata.version("onnx2tf"),
                  "transposes": ops.count("TRANSPOSE"), "ops": len(ops)}


def tflite_to_onnx(tflite_bytes: bytes, opset: int = 17) -> tuple[bytes, dict]:
    """The float ONNX file tf2onnx makes of a float TFLite model."""
    from .._deps import native_logs_hidden, optional, tensorflow

    tensorflow()
    tf2onnx = optional("tf2onnx")
    import logging

    with tempfile.TemporaryDirectory(prefix="edgecls-tf2onnx-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite_bytes)
        logging.getLogger("tf2onnx").setLevel(logging.ERROR)
        _keep_fully_connected_bias()
        try:
            with native_logs_hidden(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TensorFlow's deprecation notice for tf.lite.Interpreter
                model, _ = tf2onnx.convert.from_tflite(str(path), opset=opset)
        except Exception as exc:  # tf2onnx raises many kinds for ops it does not map
            raise ExportError(f"tf2onnx could not convert the TFLite model to ONNX: {first_line(exc, 200)}") from None
    from importlib import metadata

    return model.SerializeToString(), {"route": "tf2onnx", "converter_version": metadata.version("tf2onnx")}


def _keep_fully_connected_bias() -> None:
    """tf2onnx 1.17's FULLY_CONNECTED handler drops the bias when the op's input has more than two
    dimensions and keep_num_dims is false (its flattening Reshape replaces the op's inputs with two;
    tflite_handlers/tfl_math.py): an onnx2tf or Keras file ending in global pooling and a Dense layer
    then loses its last bias. The handler is wrapped to add the bias back after it; every converted
    file is still validated against the source's outputs."""
    import tf2onnx.tflite_handlers  # noqa: F401 (registers the handlers)
    from tf2onnx.handler import tf_op

    table = tf_op._OPSETS.get("com.google.tensorflow", [{}])[0]  # noqa: SLF001 (the handler registry)
    entry = table.get("TFL_FULLY_CONNECTED")
    if entry is None or getattr(entry[0], "edgecls_keeps_bias", False):
        return
    handler, kwargs = entry

    def keep_bias(ctx, node, **kw):
        flattens = (len(node.input) == 3 and node.attr["keep_num_dims"].i == 0
                    and ctx.get_rank(node.input[0]) not in (2, None))
        bias = node.input[2] if flattens else None
        handler(ctx, node, **kw)
        if bias is not None and bias not in node.input:
            add = ctx.insert_new_node_on_output("Add", node.output[0], inputs=[node.output[0], bias])
            add.skip_conversion = True

    keep_bias.edgecls_keeps_bias = True
    table["TFL_FULLY_CONNECTED"] = (keep_bias, kwargs)


def tflite_ops(data: bytes) -> list[str]:
    """The builtin op names of a TFLite file's operators, in order (LiteRT's own analysis)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    return [op["op_name"] for op in interpreter._get_ops_details()]  # noqa: SLF001 (LiteRT's documented analyzer data)


def _sample_images(images: np.ndarray) -> np.ndarray:
    """20 images at onnx2tf's 128x128 (nearest-neighbour; it resizes them to the model's input)."""
    x = np.asarray(images[:20], np.float32)
    if len(x) < 20:
        x = np.concatenate([x] * (20 // max(len(x), 1) + 1))[:20]
    rows = np.arange(128) * x.shape[1] // 128
    cols = np.arange(128) * x.shape[2] // 128
    return np.ascontiguousarray(x[:, rows][:, :, cols])


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else "no message"


def _worker(folder: Path) -> int:
    """In the child process: convert folder/model.onnx into folder/out."""
    import onnx2tf

    onnx2tf.convert(input_onnx_file_path=str(folder / "model.onnx"), output_folder_path=str(folder / "out"),
                    non_verbose=True, not_use_onnxsim=True)
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1])))
