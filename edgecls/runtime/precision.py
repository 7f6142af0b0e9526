"""The precision of a model file edgecls did not make, read from the file (runtime extras only):
what a lone file's bench row says instead of a guess.

TFLite (its tensors and operators): int16 activations -> "int16x8"; int8 activations (an int8 input,
or QUANTIZE ops feeding int8 tensors) -> "int8"; int8 weights with float activations -> "dynamic";
float16 weights -> "fp16"; otherwise "fp32".
ONNX (its nodes and initializers): dynamic quantization ops -> "dynamic"; QuantizeLinear /
DequantizeLinear or QLinear ops -> "int8"; float16 initializers -> "fp16"; otherwise "fp32"."""
from __future__ import annotations

from pathlib import Path

import numpy as np

_ONNX_DYNAMIC = {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul"}
_ONNX_STATIC = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QGemm"}
_ONNX_FLOAT16 = 10  # onnx.TensorProto.FLOAT16


def file_precision(backend) -> str:
    """The precision of the file an open backend (edgecls.runtime.backends) runs."""
    if backend.format == "onnx":
        from .onnxfile import graph_summary

        ops, dtypes = graph_summary(Path(backend.path).read_bytes(), str(backend.path))
        if ops & _ONNX_DYNAMIC and not ops & _ONNX_STATIC - {"DequantizeLinear"}:
            return "dynamic"
        if ops & _ONNX_STATIC:
            return "int8"
        return "fp16" if _ONNX_FLOAT16 in dtypes else "fp32"
    interpreter = backend.interpreter
    tensors = interpreter.get_tensor_details()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}  # noqa: SLF001 (LiteRT's analyzer data)
    quantized = [np.dtype(t["dtype"]) for t in tensors if _quantized(t)]
    if np.dtype(np.int16) in quantized:
        return "int16x8"
    if backend.input_dtype in (np.int8, np.uint8) or ("QUANTIZE" in ops and np.dtype(np.int8) in quantized
                                                      and _int8_activations(tensors, interpreter)):
        return "int8"
    if np.dtype(np.int8) in quantized:
        return "dynamic"
    if any(np.dtype(t["dtype"]) == np.float16 for t in tensors):
        return "fp16"
    return "fp32"


def _int8_activations(tensors, interpreter) -> bool:
    """Whether some operator's output tensor is quantized int8 (weights are inputs, never outputs)."""
    by_index = {t["index"]: t for t in tensors}
    for op in interpreter._get_ops_details():  # noqa: SLF001
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        for i in op["outputs"]:
            t = by_index.get(int(i))
            if t is not None and np.dtype(t["dtype"]) == np.int8 and _quantized(t):
                return True
    return False


def _quantized(tensor) -> bool:
    """Whether a tensor carries quantization parameters (per tensor, or per channel: LiteRT then
    leaves the legacy (scale, zero point) pair at zero)."""
    params = tensor.get("quantization_parameters") or {}
    return bool(tensor["quantization"][0]) or len(params.get("scales", ())) > 0
