"""What an artifact really holds: weight sparsity measured in the converted file itself (so a claim
that pruning survived quantization is checked, not assumed), and size accounting."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle import gzip_size

_TFLITE_WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}
_ONNX_WEIGHT_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1, "ConvInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3}


def tflite_weight_stats(path) -> dict:
    from .._deps import tensorflow

    tensorflow()
    from tensorflow.lite.tools import flatbuffer_utils as fu

    model = fu.read_model(str(path))
    total = zeros = 0
    for sg in model.subgraphs:
        for op in sg.operators:
            name = fu.opcode_to_name(model, op.opcodeIndex)
            slot = _TFLITE_WEIGHT_OPS.get(name)
            if slot is None or len(op.inputs) <= slot or op.inputs[slot] < 0:
                continue
            tensor = sg.tensors[op.inputs[slot]]
            data = model.buffers[tensor.buffer].data
            if data is None or len(data) == 0:
                continue
            dtype = {9: np.int8, 0: np.float32, 1: np.float16, 3: np.uint8}.get(tensor.type)
            if dtype is None:
                continue
            values = np.frombuffer(bytes(np.asarray(data, dtype=np.uint8)), dtype=dtype)
            zero_point = 0
            q = tensor.quantization
            if q is not None and q.zeroPoint is not None and len(q.zeroPoint):
                zero_point = int(q.zeroPoint[0])
            total += values.size
            zeros += int((values == zero_point).sum())
    return {"weights": total, "zero_weights": zeros, "sparsity": round(zeros / total, 4) if total else 0.0,
            "nonfinite": _tflite_nonfinite(model)}


def _tflite_nonfinite(model) -> int:
    """NaN and infinite values in every float32/float16 constant of a TFLite model."""
    count = 0
    for sg in model.subgraphs:
        for tensor in sg.tensors:
            dtype = {0: np.float32, 1: np.float16}.get(tensor.type)
            data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
            if dtype is None or data is None or len(data) == 0:
                continue
            values = np.frombuffer(bytes(np.asarray(data, dtype=np.uint8)), dtype=dtype)
            count += int((~np.isfinite(values)).sum())
    return count


def onnx_weight_stats(path) -> dict:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    total = zeros = 0
    seen = set()
    for node in model.graph.node:
        slot = _ONNX_WEIGHT_OPS.get(node.op_type)
        if slot is None or len(node.input) <= slot:
            continue
        name = node.input[slot]
        zero_point = 0
        # QDQ graphs feed weights through DequantizeLinear(weight, scale, zero_point).
        prod = producers.get(name)
        if prod is not None and prod.op_type == "DequantizeLinear":
            name = prod.input[0]
            if len(prod.input) > 2 and prod.input[2] in inits:
                zp = numpy_helper.to_array(inits[prod.input[2]])
                zero_point = int(zp.ravel()[0]) if zp.size else 0
        if name not in inits or name in seen:
            continue
        seen.add(name)
        values = numpy_helper.to_array(inits[name])
        total += values.size
        zeros += int((values == zero_point).sum())
    nonfinite = 0
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype.kind == "f":
            nonfinite += int((~np.isfinite(values)).sum())
    return {"weights": total, "zero_weights": zeros, "sparsity": round(zeros / total, 4) if total else 0.0,
            "nonfinite": nonfinite}


def size_report(path: Path, params: int, nonzero_params: int, macs: int) -> dict:
    data = Path(path).read_bytes()
    return {"bytes": len(data), "gzip_bytes": gzip_size(data), "params": int(params),
            "nonzero_params": int(nonzero_params), "macs": int(macs)}
