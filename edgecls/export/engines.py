"""Post-training quantization engines: each takes a float file of its format and calibration images
and returns the quantized file's bytes with the manifest fields that say how it was made.

TFLite
  converter   the TFLite converter's built-in quantizer (from the Keras model; formats/tflite.py)
  aeq         Google's LiteRT quantizer (`litert-quantizer`, formerly `ai-edge-quantizer`; no
              TensorFlow) on any float .tflite: static int8 (int8 weights per channel, int8
              activations), int16 activations with int8 weights, dynamic range and float16
              weights; float input and output tensors. Google's migration guide moves
              quantization out of the TFLite converter to this two-step workflow.
ONNX (QDQ, uint8 activations and 7-bit int8 weights unless the scheme says otherwise: the same
outputs on every x86 class, see formats/onnx.py)
  ort_minmax, ort_entropy, ort_percentile
              onnxruntime static quantization with that calibration method
  nncf        NNCF post-training quantization (fast bias correction; overflow fix on every layer:
              7-bit weights, NNCF's own remedy for x86 CPUs without VNNI)

Every engine's file goes through the same validation, manifest and bench as every other variant;
`tools/release/engine_table.py` measures them side by side.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .._deps import optional, require
from ..errors import ConfigError, ExportError, first_line

ENGINES = {
    "converter": "TFLite converter",
    "aeq": "LiteRT quantizer",
    "ort_minmax": "onnxruntime static, MinMax calibration",
    "ort_entropy": "onnxruntime static, Entropy calibration",
    "ort_percentile": "onnxruntime static, Percentile calibration",
    "nncf": "NNCF post-training quantization",
}
AEQ_RECIPES = {"int8": "static_wi8_ai8", "int16x8": "static_wi8_ai16", "dynamic": "dynamic_wi8_afp32",
               "fp16": "float16 weights (float casting, weight only)"}


@contextlib.contextmanager
def _quiet():
    """The engines print progress bars and summaries on stdout and stderr; edgecls logs instead."""
    from .._deps import native_logs_hidden

    if os.environ.get("EDGECLS_NATIVE_LOGS"):
        yield
        return
    sink = io.StringIO()
    with native_logs_hidden(), warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def aeq_quantize(float_tflite: bytes, precision: str, representative: np.ndarray | None,
                 keep_float: tuple[str, ...] = ()) -> bytes:
    """LiteRT quantizer on a float .tflite: `precision` int8 (static, int8 activations), int16x8
    (static, int16 activations) or dynamic; calibrated on `representative` (the model's float
    input, NHWC) for the static recipes. `keep_float`: output tensor names of layers left in float
    (AEQ's scoped recipe with its no-quantize algorithm), for selective repair."""
    if precision not in AEQ_RECIPES:
        raise ConfigError(f"LiteRT quantizer has no {precision} recipe; choose one of {', '.join(AEQ_RECIPES)}")
    optional("litert_quantizer", "train")
    from litert_quantizer import quantizer, recipe

    float_tflite = with_signature(float_tflite)

    try:
        with _quiet():
            qt = quantizer.Quantizer(bytearray(float_tflite))
            qt.load_quantization_recipe(_fp16_recipe() if precision == "fp16" else getattr(recipe, AEQ_RECIPES[precision])())
            if keep_float:
                from litert_quantizer.algorithm_manager import AlgorithmName
                from litert_quantizer.qtyping import TFLOperationName

                for name in keep_float:
                    # An op's scope is its output tensor names, each followed by ";" (litert-quantizer 0.11).
                    qt.update_quantization_recipe(regex=f"(^|;){re.escape(name)};", operation_name=TFLOperationName.ALL_SUPPORTED,
                                                  algorithm_key=AlgorithmName.NO_QUANTIZE)
            calibration = None
            if qt.need_calibration:
                if representative is None or len(representative) == 0:
                    raise ConfigError("static quantization needs representative images (none given)")
                key, name = _signature_input(float_tflite)
                images = np.asarray(representative, dtype=np.float32)
                calibration = qt.calibrate({key: [{name: images[i:i + 1]} for i in range(len(images))]})
            result = qt.quantize(calibration)
    except ConfigError:
        raise
    except Exception as exc:  # AEQ raises ValueError/KeyError/RuntimeError for ops or graphs it cannot take
        raise ExportError(f"LiteRT quantizer {precision} failed: {first_line(exc)}") from None
    return bytes(result.quantized_model)


def _fp16_recipe():
    """Every supported op's weights cast to float16 (the quantizer's float-casting algorithm, weight
    only: the op computes in float32 after a Dequantize)."""
    from litert_quantizer import recipe_manager
    from litert_quantizer.algorithm_manager import AlgorithmName
    from litert_quantizer.qtyping import TFLOperationName

    manager = recipe_manager.RecipeManager()
    manager.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                   algorithm_key=AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe()


def with_signature(tflite: bytes) -> bytes:
    """The file with a "serving_default" signature naming its one subgraph's inputs and outputs when
    it has none (files from older converters, such as MLPerf Tiny's): the LiteRT quantizer keys its
    calibration data by signature. A file that has signatures is returned as it is."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(tflite))
    if model.signatureDefs or len(model.subgraphs) != 1:
        return tflite
    graph = model.subgraphs[0]

    def tensor_map(index: int):
        entry = schema.TensorMapT()
        name = graph.tensors[index].name
        entry.name = name.decode() if isinstance(name, bytes) else str(name)
        entry.tensorIndex = int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(i) for i in graph.inputs]
    signature.outputs = [tensor_map(i) for i in graph.outputs]
    model.signatureDefs = [signature]
    return bytes(fu.convert_object_to_bytearray(model))


def _signature_input(tflite: bytes) -> tuple[str, str]:
    """The (signature key, input name) AEQ's calibration data is keyed by."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=tflite).get_signature_list()
    if len(signatures) != 1:
        raise ExportError(f"LiteRT quantizer needs a float model with one signature; it has {len(signatures)}")
    key, sig = next(iter(signatures.items()))
    if len(sig["inputs"]) != 1:
        raise ExportError(f"LiteRT quantizer: the model's signature has {len(sig['inputs'])} inputs; edgecls takes one")
    return key, sig["inputs"][0]


def image_reader(images: np.ndarray, input_name: str):
    """onnxruntime's CalibrationDataReader over `images`, one image per call, fed as `input_name`."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(images[i:i + 1] for i in range(len(images)))

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    return Reader()


def ort_quantize(fp32_onnx: bytes, representative: np.ndarray, method: str, scheme: str, input_name: str,
                 per_channel: bool = True, keep_float: tuple[str, ...] = ()) -> bytes:
    """onnxruntime static QDQ quantization with calibration `method` ("minmax", "entropy",
    "percentile") in `scheme` (formats.onnx.INT8_SCHEMES); `representative` in the file's layout;
    `keep_float`: node names left in float (onnxruntime's nodes_to_exclude). Runs in a child process
    (see `in_child`)."""
    from .formats.onnx import INT8_SCHEMES

    if method not in ORT_METHODS:
        raise ConfigError(f"unknown onnxruntime calibration method {method!r}; choose one of {', '.join(ORT_METHODS)}")
    if representative is None or len(representative) == 0:
        raise ConfigError("ONNX int8 quantization needs representative images (none given)")
    if scheme not in INT8_SCHEMES:
        raise ConfigError(f"unknown ONNX int8 scheme {scheme!r}; choose one of {', '.join(INT8_SCHEMES)}")
    return in_child("ort", fp32_onnx, representative, f"ONNX int8 quantization ({method} calibration)",
                    method=method, scheme=scheme, input_name=input_name, per_channel=per_channel,
                    keep_float=list(keep_float))


ORT_METHODS = ("minmax", "entropy", "percentile")


def _ort_here(fp32_onnx: bytes, images: np.ndarray, method: str, scheme: str, input_name: str,
              per_channel: bool, keep_float: list[str]) -> bytes:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .formats.onnx import INT8_SCHEMES

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    activations, weights, reduce_range = INT8_SCHEMES[scheme]
    # Entropy and Percentile keep a histogram per tensor; their defaults are onnxruntime's own
    # (Percentile 99.999, 2048 bins for Entropy's KL search).
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        Path(src).write_bytes(fp32_onnx)
        try:
            with _quiet():
                quant_pre_process(src, pre, skip_symbolic_shape=True)
                quantize_static(pre, dst, image_reader(images, input_name), quant_format=QuantFormat.QDQ,
                                activation_type=getattr(QuantType, activations), weight_type=getattr(QuantType, weights),
                                per_channel=per_channel, reduce_range=reduce_range, calibrate_method=methods[method],
                                nodes_to_exclude=list(keep_float))
        except Exception as exc:
            raise ExportError(f"ONNX int8 quantization ({method} calibration) failed: {first_line(exc)}") from None
        return Path(dst).read_bytes()


def nncf_quantize(fp32_onnx: bytes, representative: np.ndarray, input_name: str,
                  keep_float: tuple[str, ...] = ()) -> bytes:
    """NNCF post-training quantization of an ONNX model (QDQ; fast bias correction; 7-bit weights on
    every layer through NNCF's overflow fix, so the file is exact on x86 CPUs without VNNI too).
    Runs in a child process (see `in_child`)."""
    if representative is None or len(representative) == 0:
        raise ConfigError("NNCF quantization needs representative images (none given)")
    require("nncf", "train")
    return in_child("nncf", fp32_onnx, representative, "NNCF quantization", input_name=input_name,
                    keep_float=list(keep_float))


def _nncf_here(fp32_onnx: bytes, images: np.ndarray, input_name: str, keep_float: list[str]) -> bytes:
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    model = onnx.load_from_string(fp32_onnx)
    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))], lambda x: {input_name: x})
    try:
        with _quiet():
            quantized = nncf.quantize(model, dataset, subset_size=len(images),
                                      ignored_scope=nncf.IgnoredScope(names=list(keep_float)) if keep_float else None,
                                      advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))
    except Exception as exc:
        raise ExportError(f"NNCF quantization failed: {first_line(exc)}") from None
    return quantized.SerializeToString()


# The quantizers that run in a child process: their memory (onnxruntime's calibration keeps every
# intermediate output of every calibration image: ~750 MB for mobilenet_tiny) is returned to the
# system when the child ends instead of raising the export's peak, and a native crash in them
# becomes a failed row instead of ending the export.
_IN_CHILD = {"ort": _ort_here, "nncf": _nncf_here}


def in_child(kind: str, float_bytes: bytes, calibration: np.ndarray, what: str, **options) -> bytes:
    """`_IN_CHILD[kind](float_bytes, calibration, **options)` run in `python -m edgecls.export.engines`
    (numpy, onnx, onnxruntime, NNCF: no TensorFlow); ExportError with the reason when it fails."""
    from ..runtime.isolated import run_job

    with tempfile.TemporaryDirectory(prefix="edgecls-quantize-") as tmp:
        model, images, out = (Path(tmp) / n for n in ("float.onnx", "calibration.npy", "quantized.bin"))
        model.write_bytes(float_bytes)
        np.save(images, np.ascontiguousarray(calibration, dtype=np.float32))
        payload = {"kind": kind, "model": str(model), "calibration": str(images), "out": str(out), "options": options}
        run_job(__name__, payload, out, what, CHILD_TIMEOUT_S)
        return out.read_bytes()


CHILD_TIMEOUT_S = 3600.0


def _child_work(payload: dict) -> None:
    """`in_child`'s work, in the child."""
    run = _IN_CHILD[payload["kind"]]
    images = np.load(payload["calibration"], allow_pickle=False)
    Path(payload["out"]).write_bytes(run(Path(payload["model"]).read_bytes(), images, **payload["options"]))


def _aeq(float_bytes, calibration, precision, input_name, scheme, keep_float):
    return aeq_quantize(float_bytes, precision, calibration, keep_float)


def _ort(method: str):
    def run(float_bytes, calibration, precision, input_name, scheme, keep_float):
        return ort_quantize(float_bytes, calibration, method, scheme, input_name, keep_float=keep_float)

    return run


def _nncf(float_bytes, calibration, precision, input_name, scheme, keep_float):
    return nncf_quantize(float_bytes, calibration, input_name, keep_float)


# Engines that quantize a float file: engine -> (the format of the file it takes, its function).
POST_TRAINING = {
    "aeq": ("tflite", _aeq),
    "ort_minmax": ("onnx", _ort("minmax")),
    "ort_entropy": ("onnx", _ort("entropy")),
    "ort_percentile": ("onnx", _ort("percentile")),
    "nncf": ("onnx", _nncf),
}


def post_training(engine: str, float_bytes: bytes, calibration: np.ndarray, precision: str, input_name: str = "",
                  scheme: str = "u8s8_rr", keep_float: tuple[str, ...] = ()) -> bytes:
    """The bytes of the float file `float_bytes` quantized by `engine` to `precision`, calibrated on
    `calibration` (normalized images in the file's own layout). One signature for every engine of
    POST_TRAINING; `input_name` names the ONNX input, `scheme` the ONNX int8 scheme
    (formats.onnx.INT8_SCHEMES; NNCF has its own), `keep_float` layer or node names left in float."""
    if engine not in POST_TRAINING:
        raise ConfigError(f"unknown post-training engine {engine!r}; choose one of {', '.join(POST_TRAINING)}")
    return POST_TRAINING[engine][1](float_bytes, calibration, precision, input_name, scheme, keep_float)


if __name__ == "__main__":
    import sys

    from ..runtime.isolated import child_main

    sys.exit(child_main(sys.argv[1:], _child_work))
