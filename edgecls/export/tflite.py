"""TFLite conversion. Converters return bytes and leave writing to the caller.

Precisions: fp32; fp16 (float16 weights); dynamic (int8 weights, float activations); int8
(full-integer post-training quantization calibrated on a representative dataset of real training
images; int8 input/output tensors unless float I/O is asked for). A QAT model converts to int8
from its learned ranges, without calibration.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._deps import tensorflow
from ..errors import ConfigError, ExportError, first_line

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")


def convert(model=None, precision: str = "fp32", representative: np.ndarray | None = None, int8_io: bool = True,
            quantization_aware: bool = False, saved_model_dir: str | None = None, per_channel: bool = True,
            uint8_input: bool = False) -> bytes:
    """Convert a tf_keras model (or a SavedModel directory) to a TFLite flatbuffer.

    `representative` holds normalized float32 NHWC calibration images (needed for int8 PTQ).
    `per_channel=False` quantizes each weight tensor with one scale (smaller file, usually less
    accurate); per-channel is the default.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown TFLite precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    tf = tensorflow()
    if precision == "int8" and not quantization_aware:
        if representative is None or len(representative) == 0:
            raise ConfigError("int8 post-training quantization needs representative images (none given)")
    if saved_model_dir is not None:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not quantization_aware:
            images = np.asarray(representative, dtype=np.float32)

            def representative_dataset():
                for i in range(len(images)):
                    yield [images[i:i + 1]]

            converter.representative_dataset = representative_dataset
            if not per_channel:
                converter._experimental_disable_per_channel = True
            # Fail rather than silently keep float ops in an "int8" model.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.uint8 if uint8_input else tf.int8
            converter.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings():
            # "Statistics for quantized inputs were expected": int8 input ranges come from the
            # representative data (PTQ) or the fake-quant nodes (QAT), as intended.
            warnings.simplefilter("ignore", UserWarning)
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError ...
        raise ExportError(f"TFLite {precision} conversion failed: {first_line(exc)}") from None


def strip_names(data: bytes) -> bytes:
    """`data` without the strings the interpreter does not need: tensor and subgraph names, the model
    description and the signature defs (TensorFlow's `flatbuffer_utils.strip_strings`, as used for
    microcontrollers). Operators, weights and quantization parameters are untouched; the runtime
    addresses tensors by index, so it runs the stripped file the same way."""
    tensorflow()  # TF_USE_LEGACY_KERAS and logging set up before TF's own modules load
    from tensorflow.lite.tools import flatbuffer_utils

    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
        flatbuffer_utils.strip_strings(model)
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    except Exception as exc:  # a flatbuffer the schema cannot read
        raise ExportError(f"could not strip the TFLite file's names: {first_line(exc)}") from None


def with_pixel_input(model, spec):
    """`model` preceded by its normalization, so it takes raw RGB pixels (0..255, as float).

    Converted to int8 with uint8 input, the pixels go into the interpreter as they are: the
    per-channel `(pixel * scale - mean) / std` runs inside the quantized graph (one Mul/Add).
    Conv zero padding then pads normalized values, exactly as in the original model."""
    from .._deps import keras

    k = keras()
    scale = np.float32(spec.scale) / np.asarray(spec.std, np.float32)
    offset = -np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)
    inputs = k.Input(shape=tuple(model.inputs[0].shape[1:]), name="pixels")
    x = k.layers.Rescaling(scale=scale.tolist(), offset=offset.tolist(), name="normalize")(inputs)
    return k.Model(inputs, model(x), name=f"{model.name}_pixels")


def describe(path) -> tuple[list[dict], list[dict]]:
    """Input and output tensor descriptions (name, shape, dtype, quantization) of a .tflite file."""
    from ..runtime.backends import TFLiteBackend

    backend = TFLiteBackend(path)
    details = backend.interpreter
    return ([_tensor(t) for t in details.get_input_details()], [_tensor(t) for t in details.get_output_details()])


def _tensor(t) -> dict:
    scale, zero = t["quantization"]
    d = {"name": t["name"], "shape": [int(v) for v in t.get("shape_signature", t["shape"])], "dtype": np.dtype(t["dtype"]).name}
    if scale:
        d["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
    return d
