"""ONNX conversion. Converters return bytes and leave writing to the caller.

fp32 goes through tf2onnx with an explicit input signature (needed with TF >= 2.16). int8 has two
routes: onnxruntime static quantization to QDQ (calibrated on the same representative training
images as TFLite, in one of INT8_SCHEMES), or tf2onnx from the int8 TFLite model (float I/O
variant, signed int8 activations). `edgecls export` uses ort_qdq by default; see README.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..._deps import optional, tensorflow
from ...config import ExportConfig
from ...errors import ConfigError, ExportError, first_line
from .base import Format

DEFAULT_OPSET = 17
INT8_METHODS = ("ort_qdq", "tflite")
# onnxruntime QDQ schemes: (activation type, weight type, reduce_range). On x86 CPUs without VNNI
# (AVX2, AVX-512 without VNNI) onnxruntime multiplies uint8 activations by int8 weights with
# VPMADDUBSW, whose 16-bit pair sums saturate once weights use all 8 bits (255 * 127 * 2 > 32767):
# "s8s8" and a full-range "u8s8" lose points there and are exact only on VNNI and arm64. Weights
# of 7 bits (reduce_range) keep every pair sum in range (255 * 64 * 2 < 32767), so "u8s8_rr"
# gives the same outputs on every CPU class at int8 speed; "u8u8" is exact everywhere too but runs
# no faster than fp32 on x86. README "int8 on every CPU" has the measurements.
INT8_SCHEMES = {
    "u8s8_rr": ("QUInt8", "QInt8", True),
    "u8u8": ("QUInt8", "QUInt8", False),
    "s8s8": ("QInt8", "QInt8", False),
}
INT8_SCHEME_TEXT = {
    "u8s8_rr": "uint8 activations, 7-bit int8 weights: the same outputs on every CPU",
    "u8u8": "uint8 activations and weights: the same outputs on every CPU, fp32 speed on x86",
    "s8s8": "int8 activations and weights: exact only on x86 with VNNI and on arm64",
}
DEFAULT_INT8_SCHEME = ExportConfig.convert.onnx_int8_scheme
INPUT_NAME = "input"


def _tf2onnx():
    tensorflow()
    return optional("tf2onnx")


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


def quantize_qdq(fp32_bytes: bytes, representative: np.ndarray, nchw: bool = False, per_channel: bool = True,
                 scheme: str = DEFAULT_INT8_SCHEME, method: str = "minmax", keep_float: tuple[str, ...] = ()) -> bytes:
    """onnxruntime static quantization to QDQ in `scheme` (INT8_SCHEMES) calibrated by `method` on
    `representative` (normalized float32 NHWC training images)."""
    from ..engines import ort_quantize

    images = np.asarray(representative, dtype=np.float32)
    if nchw and images.ndim == 4:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return ort_quantize(fp32_bytes, images, method, scheme, INPUT_NAME, per_channel=per_channel, keep_float=keep_float)


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


class ONNXFormat(Format):
    """The ONNX format: fp32 through tf2onnx; int8 by onnxruntime static QDQ in the configured scheme,
    or through tf2onnx from the int8 TFLite model (`ConvertConfig.onnx_int8_method="tflite"`)."""

    name = "onnx"

    def convert(self, variant, job):
        from .base import Converted

        config = job.config
        if "onnx_fp32" not in job.shared:
            job.shared["onnx_fp32"] = convert_fp32(job.base, opset=config.convert.onnx_opset, nchw=config.convert.nchw)
        fp32 = job.shared["onnx_fp32"]
        if variant.precision == "fp32":
            return Converted(fp32)
        if variant.precision != "int8":
            raise ConfigError(f"ONNX has no {variant.precision} variant")
        if variant.name != "onnx_int8" or config.convert.onnx_int8_method == "ort_qdq":
            return self._quantize(variant, fp32, job)
        if config.convert.nchw:
            raise ConfigError("onnx_int8_method 'tflite' keeps the TFLite NHWC layout; use ort_qdq with --nchw")
        from .tflite import convert as tflite_convert

        float_io = tflite_convert(job.base, "int8", job.representative, int8_io=False)
        data = convert_from_tflite(float_io, opset=config.convert.onnx_opset)
        return Converted(data, {"int8_scheme": "s8s8",
                                "description": "ONNX int8 via tf2onnx from the int8 TFLite model (int8 activations: "
                                               "exact only on x86 with VNNI and on arm64)"})

    def requantize(self, variant, job, keep_float: tuple[str, ...]):
        """The variant again with the nodes `keep_float` left in float (selective repair)."""
        if variant.engine not in ("ort_minmax", "ort_entropy", "ort_percentile", "nncf"):
            raise ConfigError(f"{variant.name} cannot keep layers in float (engine {variant.engine})")
        return self._quantize(variant, self.float_twin(variant, job), job, keep_float)

    def _quantize(self, variant, fp32: bytes, job, keep_float: tuple[str, ...] = ()):
        """int8 by the variant's post-training engine (export/engines.py) on the fp32 file."""
        from ..engines import nncf_quantize
        from .base import Converted

        config = job.config
        if variant.engine == "nncf":
            images = np.asarray(job.representative, dtype=np.float32)
            if config.convert.nchw:
                images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
            data = nncf_quantize(fp32, images, INPUT_NAME, keep_float)
            return Converted(data, {"engine": "nncf", "int8_scheme": "u8s8_overflow_fix",
                                    "description": f"{variant.description}; uint8 activations, int8 weights with NNCF's "
                                                   f"overflow fix (7-bit weights, its remedy for x86 without VNNI)"})
        data = quantize_qdq(fp32, job.representative, nchw=config.convert.nchw, scheme=config.convert.onnx_int8_scheme,
                            method=variant.engine.removeprefix("ort_"), keep_float=keep_float)
        return Converted(data, {"engine": variant.engine, "int8_scheme": config.convert.onnx_int8_scheme,
                                "description": f"{variant.description}; {INT8_SCHEME_TEXT[config.convert.onnx_int8_scheme]}"})

    def layout(self, config) -> str:
        return "NCHW" if config.convert.nchw else "NHWC"

    def float_twin(self, variant, job) -> bytes:
        if variant.source == "base":
            return job.shared["onnx_fp32"]
        key = f"onnx_fp32:{variant.source}"
        if key not in job.shared:
            job.shared[key] = convert_fp32(job.model, opset=job.config.convert.onnx_opset, nchw=job.config.convert.nchw)
        return job.shared[key]

    def describe(self, path):
        return describe(path)

    def weight_stats(self, path):
        from ..inspect import onnx_weight_stats

        return onnx_weight_stats(path)

    def manifest_fields(self, path, config) -> dict:
        return {"opset": opset_of(path), "layout": self.layout(config)}
