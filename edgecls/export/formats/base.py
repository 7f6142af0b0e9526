"""What a format is to the export stage, and the table of variants that drives it.

A format (tflite.py, onnx.py) implements `Format`: `convert` a Keras model into the bytes of one
variant (with the manifest fields that say how), `describe` a written file's inputs and outputs,
count its weights, and add its own manifest fields. The variant table names, per variant, its
format, precision, the Keras model it starts from and what it takes as input; export, validation,
the bundle and the bench rows are all driven by it. Adding a format is a module with a Format
subclass registered in FORMATS; adding a variant (a quantization engine, a precision) is a row in
VARIANTS that its format's `convert` knows; the engines themselves live in export/engines.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import ConfigError


@dataclass(frozen=True)
class Variant:
    name: str
    format: str  # a key of FORMATS
    precision: str  # "fp32", "fp16", "dynamic", "int8", "int16x8" (int16 activations, int8 weights)
    source: str  # which Keras model it is converted from: "base", "pruned", "qat", "pruned_qat"
    description: str
    input: str = "normalized"  # "normalized": float input after preprocessing; "pixels": raw RGB pixels
    engine: str = ""  # the quantization engine (export/engines.py ENGINES); "" for float variants


VARIANTS = {v.name: v for v in (
    Variant("tflite_fp32", "tflite", "fp32", "base", "TFLite float32"),
    Variant("tflite_fp16", "tflite", "fp16", "base", "TFLite float16 weights"),
    Variant("tflite_dynamic", "tflite", "dynamic", "base", "TFLite dynamic range (int8 weights, float activations)",
            engine="converter"),
    Variant("tflite_int8", "tflite", "int8", "base", "TFLite full-integer int8, post-training quantization",
            engine="converter"),
    Variant("tflite_int8_pixels", "tflite", "int8", "base",
            "TFLite int8 PTQ taking pixels (normalization folded into the first convolution, or in the graph)",
            input="pixels", engine="converter"),
    Variant("tflite_qat_int8", "tflite", "int8", "qat", "TFLite int8 from quantization-aware training",
            engine="converter"),
    Variant("tflite_pruned_fp32", "tflite", "fp32", "pruned", "TFLite float32 of the pruned model"),
    Variant("tflite_pruned_int8", "tflite", "int8", "pruned", "TFLite int8 PTQ of the pruned model", engine="converter"),
    Variant("tflite_pruned_qat_int8", "tflite", "int8", "pruned_qat", "TFLite int8, pruned then sparsity-preserving QAT",
            engine="converter"),
    Variant("onnx_fp32", "onnx", "fp32", "base", "ONNX float32 (tf2onnx)"),
    Variant("onnx_int8", "onnx", "int8", "base",
            "ONNX int8 QDQ (onnxruntime static quantization, Percentile calibration)", engine="ort_percentile"),
    # Other post-training engines, side by side with the two above (group "engines").
    Variant("tflite_int8_aeq", "tflite", "int8", "base",
            "TFLite int8 by LiteRT quantizer (int8 weights and activations, float I/O)", engine="aeq"),
    Variant("tflite_int16x8_aeq", "tflite", "int16x8", "base",
            "TFLite int16 activations with int8 weights, by LiteRT quantizer", engine="aeq"),
    Variant("tflite_dynamic_aeq", "tflite", "dynamic", "base",
            "TFLite dynamic range (int8 weights, float activations) by LiteRT quantizer", engine="aeq"),
    Variant("onnx_int8_entropy", "onnx", "int8", "base", "ONNX int8 QDQ, onnxruntime Entropy calibration",
            engine="ort_entropy"),
    Variant("onnx_int8_minmax", "onnx", "int8", "base", "ONNX int8 QDQ, onnxruntime MinMax calibration",
            engine="ort_minmax"),
    Variant("onnx_int8_nncf", "onnx", "int8", "base", "ONNX int8 QDQ by NNCF post-training quantization",
            engine="nncf"),
)}
QUANTIZED = ("int8", "int16x8")
# What `edgecls export` builds unless told otherwise: every optimization, one post-training engine
# per format (the best measured on the shipped models; BENCHMARKS.md "Quantization engines").
DEFAULT = ("tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8", "tflite_int8_pixels", "tflite_qat_int8",
           "tflite_pruned_fp32", "tflite_pruned_int8", "tflite_pruned_qat_int8", "onnx_fp32", "onnx_int8")
GROUPS = {
    "default": DEFAULT,
    "all": tuple(VARIANTS),
    "engines": tuple(n for n, v in VARIANTS.items() if v.engine and v.source == "base" and v.input == "normalized"),
    "tflite": tuple(n for n in DEFAULT if VARIANTS[n].format == "tflite"),
    "onnx": tuple(n for n in DEFAULT if VARIANTS[n].format == "onnx"),
    "int8": tuple(n for n in DEFAULT if VARIANTS[n].precision == "int8"),
    "float": tuple(n for n in DEFAULT if VARIANTS[n].precision not in QUANTIZED),
}


def resolve_formats(formats) -> list[str]:
    """Variant names from names and groups (comma-separated or not), in order, without repeats."""
    names: list[str] = []
    for item in formats:
        for token in str(item).split(","):
            token = token.strip()
            if not token:
                continue
            for name in GROUPS.get(token, (token,)):
                if name not in VARIANTS:
                    raise ConfigError(
                        f"unknown format {token!r}; known: {', '.join(VARIANTS)} or groups {', '.join(GROUPS)}"
                    )
                if name not in names:
                    names.append(name)
    if not names:
        raise ConfigError("no formats given")
    return names


@dataclass
class ConvertJob:
    """Everything a format needs to convert one variant."""

    model: object  # the tf_keras model of the variant's source (base, pruned, qat, pruned_qat)
    base: object  # the uncompressed tf_keras model
    spec: object  # PreprocessingSpec
    config: object  # ExportConfig
    representative: np.ndarray  # calibration images as the model sees them (normalized float32)
    calibration: np.ndarray  # the same images as uint8 pixels
    shared: dict = field(default_factory=dict)  # work one variant can reuse for another (the fp32 ONNX bytes)


@dataclass
class Converted:
    data: bytes
    fields: dict = field(default_factory=dict)  # manifest fields saying how it was made
    pixel_layout: object = None  # a PixelInput for variants that take pixels


class Format:
    """One artifact format. Subclasses set `name` and implement the methods."""

    name: str = ""

    def convert(self, variant: Variant, job: ConvertJob) -> Converted:
        raise NotImplementedError

    def layout(self, config) -> str:
        """The input layout its files take: "NHWC" or "NCHW"."""
        return "NHWC"

    def requantize(self, variant: Variant, job: ConvertJob, keep_float: tuple[str, ...]) -> Converted:
        """The quantized variant again, with the layers `keep_float` (diagnosis scopes) in float."""
        raise ConfigError(f"{self.name} files cannot keep layers in float")

    def float_twin(self, variant: Variant, job: ConvertJob) -> bytes:
        """The float file of the variant's Keras model in this format, with the settings its
        quantized file was made with: what the per-layer diagnosis measures it against."""
        raise NotImplementedError

    def describe(self, path: Path) -> tuple[list[dict], list[dict]]:
        """The file's input and output tensors (name, shape, dtype, quantization)."""
        raise NotImplementedError

    def weight_stats(self, path: Path) -> dict:
        """Weight counts of the file (weights, zero weights, sparsity)."""
        raise NotImplementedError

    def manifest_fields(self, path: Path, config) -> dict:
        """Fields of the written file the manifest records beyond the common ones."""
        return {}


def formats() -> dict[str, Format]:
    """The registered formats by name (imported on first use: they need TensorFlow to convert)."""
    from .onnx import ONNXFormat
    from .tflite import TFLiteFormat

    return {f.name: f for f in (TFLiteFormat(), ONNXFormat())}
