"""ONNX conversion. Converters return bytes and leave writing to the caller.

fp32 goes through tf2onnx with an explicit input signature (needed with TF >= 2.16). int8 has two
routes: onnxruntime static quantization to QDQ (signed int8 activations and per-channel int8
weights, calibrated on the same representative training images as TFLite), or tf2onnx from the
int8 TFLite model (float I/O variant). `edgecls export` uses ort_qdq by default; see README.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .._deps import tensorflow
from ..errors import ConfigError, DependencyError, ExportError, first_line

DEFAULT_OPSET = 17
INT8_METHODS = ("ort_qdq", "tflite")
INPUT_NAME = "input"


def _tf2onnx():
    tensorflow()
    try:
        import tf2onnx
    except ImportError:
        raise DependencyError("tf2onnx is not installed; install the training extra: pip install 'edgecls[train]'") from None
    return tf2onnx


def convert_fp32(model, opset: int = DEFAULT_OPSET, nchw: bool = False) -> bytes:
    """A tf_keras model -> ONNX fp32 (NHWC input, or NCHW when `nchw`)."""
    tf = tensorflow()
    tf2onnx = _tf2onnx()
    shape = (None, *model.inputs[0].shape[1:])
    signature = (tf.TensorSpec(shape, tf.float32, name=INPUT_NAME),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset,
                                              inputs_as_nchw=[INPUT_NAME] if nchw else None)
    except Exception as exc:  # tf2onnx raises assorted errors for unsupported graphs
        raise ExportError(f"ONNX conversion failed: {first_line(exc)}") from None
    return _rename_io(proto).SerializeToString()


def _rename_io(proto):
    """Name the graph's single output 'probs' (tf2onnx names it after the Keras layer)."""
    out = proto.graph.output[0]
    old = out.name
    if old != "probs":
        for node in proto.graph.node:
            node.output[:] = ["probs" if o == old else o for o in node.output]
        out.name = "probs"
    return proto


def convert_from_tflite(tflite_bytes: bytes, opset: int = DEFAULT_OPSET) -> bytes:
    """A (float-I/O) int8 TFLite model -> ONNX with quantized operators, through tf2onnx."""
    tf2onnx = _tf2onnx()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite_bytes)
        try:
            import warnings

            with warnings.catch_warnings():
                # tf2onnx reads the flatbuffer with tf.lite.Interpreter, which warns of its deprecation.
                warnings.simplefilter("ignore", UserWarning)
                proto, _ = tf2onnx.convert.from_tflite(str(path), opset=opset)
        except Exception as exc:
            raise ExportError(f"ONNX conversion from TFLite failed: {first_line(exc)}") from None
    return proto.SerializeToString()


def quantize_qdq(fp32_bytes: bytes, representative: np.ndarray, nchw: bool = False, per_channel: bool = True) -> bytes:
    """onnxruntime static quantization (QDQ, signed int8 activations and weights) calibrated on
    `representative` (normalized float32 NHWC training images)."""
    if representative is None or len(representative) == 0:
        raise ConfigError("ONNX int8 quantization needs representative images (none given)")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = np.asarray(representative, dtype=np.float32)
    if nchw:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(images[i:i + 1] for i in range(len(images)))

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        Path(src).write_bytes(fp32_bytes)
        try:
            quant_pre_process(src, pre, skip_symbolic_shape=True)
            quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, per_channel=per_channel)
        except Exception as exc:
            raise ExportError(f"ONNX int8 quantization failed: {first_line(exc)}") from None
        return Path(dst).read_bytes()


def describe(path) -> tuple[list[dict], list[dict]]:
    import onnx

    model = onnx.load(str(path))

    def shape(value):
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]

    def dtype(value):
        return onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name

    ins = [{"name": v.name, "shape": shape(v), "dtype": dtype(v)} for v in model.graph.input]
    outs = [{"name": v.name, "shape": shape(v), "dtype": dtype(v)} for v in model.graph.output]
    return ins, outs


def opset_of(path) -> int:
    import onnx

    model = onnx.load(str(path))
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
