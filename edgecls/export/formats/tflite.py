"""TFLite conversion. Converters return bytes and leave writing to the caller.

Precisions: fp32; fp16 (float16 weights); dynamic (int8 weights, float activations); int8
(full-integer post-training quantization calibrated on a representative dataset of real training
images; int8 input/output tensors unless float I/O is asked for). A QAT model converts to int8
from its learned ranges, without calibration.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..._deps import tensorflow
from ...errors import ConfigError, ExportError, first_line
from ...preprocess import PixelInput
from .base import QUANTIZED, Converted, Format

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")


def convert(model=None, precision: str = "fp32", representative: np.ndarray | None = None, int8_io: bool = True,
            quantization_aware: bool = False, saved_model_dir: str | None = None, per_channel: bool = True,
            uint8_input: bool = False, float_output: bool = False) -> bytes:
    """Convert a tf_keras model (or a SavedModel directory) to a TFLite flatbuffer.

    `representative` holds normalized float32 NHWC calibration images (needed for int8 PTQ).
    `per_channel=False` quantizes each weight tensor with one scale (smaller file, usually less
    accurate); per-channel is the default. With int8 I/O, `uint8_input` makes the input uint8 and
    `float_output` keeps a float32 output (the graph dequantizes it).
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
            converter.inference_output_type = tf.float32 if float_output else tf.int8
    from ..._deps import native_logs_hidden

    try:
        with warnings.catch_warnings(), native_logs_hidden():
            # "Statistics for quantized inputs were expected": int8 input ranges come from the
            # representative data (PTQ) or the fake-quant nodes (QAT), as intended.
            warnings.simplefilter("ignore", UserWarning)
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError ...
        raise ExportError(f"TFLite {precision} conversion failed: {first_line(exc)}") from None


def convert_selective(model, representative: np.ndarray, keep_float: tuple[str, ...], per_channel: bool = True) -> bytes:
    """int8 post-training quantization by the converter with the layers `keep_float` (output tensor
    names, as the converter names them) left in float: TensorFlow's QuantizationDebugger with
    `denylisted_nodes`. Float input and output (the graph quantizes and dequantizes)."""
    tf = tensorflow()
    images = np.asarray(representative, dtype=np.float32)

    def representative_dataset():
        for i in range(len(images)):
            yield [images[i:i + 1]]

    from ..._deps import native_logs_hidden

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    if not per_channel:
        converter._experimental_disable_per_channel = True
    try:
        with warnings.catch_warnings(), native_logs_hidden():
            warnings.simplefilter("ignore")
            options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(keep_float))
            debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative_dataset,
                                                                 debug_options=options)
            return bytes(debugger.get_nondebug_quantized_model())
    except Exception as exc:
        raise ExportError(f"TFLite int8 with {len(keep_float)} layer(s) in float failed: {first_line(exc)}") from None


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
    from ..._deps import keras

    k = keras()
    scale = np.float32(spec.scale) / np.asarray(spec.std, np.float32)
    offset = -np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)
    inputs = k.Input(shape=tuple(model.inputs[0].shape[1:]), name="pixels")
    x = k.layers.Rescaling(scale=scale.tolist(), offset=offset.tolist(), name="normalize")(inputs)
    return k.Model(inputs, model(x), name=f"{model.name}_pixels")


@dataclass(frozen=True)
class PixelModel:
    """A model that takes pixels (`layout` says how: offset and padding); `how` says where the
    normalization went ("folded into <layer>" or "in the graph")."""
    model: object
    layout: PixelInput
    how: str

    @property
    def folded(self) -> bool:
        return self.how != IN_GRAPH


IN_GRAPH = "in the graph"


def pixel_input(model, spec) -> PixelModel:
    """`model` rebuilt to take raw RGB pixels, with the normalization costing nothing at run time
    where the model allows it.

    When the input feeds one plain Conv2D, the per-channel `(pixel * scale - mean) / std` is folded
    into that convolution: kernel * scale / std, and the mean moves into its bias. The new model
    takes `pixel - c`, c the mean pixel rounded to an integer: converted to int8 (input scale 1,
    zero point c - 128), the quantized input is `pixel - 128` whatever c is, so the runtime flips
    one bit per byte and the interpreter starts with the convolution.

    A 'same' convolution padded the normalized image with zeros, that is, with each channel's
    mean pixel; folded, its zeros would be pixel c in every channel instead, and the outer ring
    of its output would move (up to a third of a typical activation on resnet8). So the folded
    convolution becomes 'valid' and the model takes the image already padded with the per-channel
    mean pixel (rounded: at most half a pixel off), a constant frame the runtime writes once into
    the input array it keeps. Exact up to that rounding; the export's parity check measures the whole
    artifact against the original model anyway.

    Otherwise (another first layer, a shared input, unknown input size) the normalization runs
    inside the graph as a Rescaling layer, exact but paid at every call (`with_pixel_input`)."""
    conv = _single_conv_consumer(model)
    size = tuple(model.inputs[0].shape[1:3])
    if conv is None or None in size:
        return PixelModel(with_pixel_input(model, spec), PixelInput(), IN_GRAPH)
    mean = np.asarray(spec.mean, np.float64)
    std = np.asarray(spec.std, np.float64)
    mean_pixel = mean / spec.scale
    center = int(np.clip(np.round(mean_pixel.mean()), 0, 255))
    kernel, *bias = [w.astype(np.float64) for w in conv.get_weights()]
    # (p * s - m) / std = (p - c) * s / std + (c * s - m) / std: the constant term through the
    # kernel is a per-output-channel bias (every tap now sees image or frame, never zeros).
    shift = (center * spec.scale - mean) / std
    new_bias = np.einsum("hwio,i->o", kernel, shift) + (bias[0] if bias else 0.0)
    new_kernel = kernel * (spec.scale / std)[None, None, :, None]
    cfg = conv.get_config()
    pad = (0, 0, 0, 0)
    if cfg["padding"] == "same":
        pad = (*_same_padding(size[0], cfg["kernel_size"][0], cfg["strides"][0], cfg["dilation_rate"][0]),
               *_same_padding(size[1], cfg["kernel_size"][1], cfg["strides"][1], cfg["dilation_rate"][1]))
    padded_shape = [None, size[0] + pad[0] + pad[1], size[1] + pad[2] + pad[3], int(model.inputs[0].shape[3])]

    config = model.get_config()
    for layer in config["layers"]:
        c = layer["config"]
        if c.get("name") == conv.name:
            c.update(use_bias=True, padding="valid", bias_initializer={"class_name": "Zeros", "config": {}})
        if "batch_input_shape" in c and (layer["class_name"] == "InputLayer" or c.get("name") == conv.name):
            c["batch_input_shape"] = padded_shape
    try:
        folded = model.__class__.from_config(config, custom_objects=_custom_objects(model))
        for layer in folded.layers:
            if layer.name == conv.name:
                layer.set_weights([new_kernel.astype(np.float32), new_bias.astype(np.float32)])
            elif layer.weights:
                layer.set_weights(model.get_layer(layer.name).get_weights())
    except Exception as exc:  # a model whose config does not rebuild: keep the exact in-graph form
        import logging

        logging.getLogger("edgecls").warning("normalization not folded into %s (%s); it runs in the graph",
                                             conv.name, first_line(exc))
        return PixelModel(with_pixel_input(model, spec), PixelInput(), IN_GRAPH)
    pad_pixel = tuple(int(v) for v in np.clip(np.round(mean_pixel), 0, 255))
    return PixelModel(folded, PixelInput(offset=-center, pad=pad, pad_pixel=pad_pixel), f"folded into {conv.name}")


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding of one spatial dimension: (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _custom_objects(model) -> dict:
    return {type(layer).__name__: type(layer) for layer in model.layers}


def _single_conv_consumer(model):
    """The one plain Conv2D (channels-last, ungrouped, not wrapped) that alone reads the model's
    input, or None."""
    from ..._deps import keras

    k = keras()
    if len(model.inputs) != 1 or not hasattr(model, "get_config"):
        return None
    try:
        config = model.get_config()
    except Exception:  # a subclassed model without a config
        return None
    layers = config.get("layers") or []
    if model.__class__.__name__ == "Sequential":
        candidates = [item for item in layers if item["class_name"] != "InputLayer"][:1]
    else:
        entries = config.get("input_layers") or []
        if entries and not isinstance(entries[0], (list, tuple)):  # one input: [name, node, tensor]
            entries = [entries]
        input_names = {str(entry[0]) for entry in entries}
        candidates = [item for item in layers if _reads(item, input_names)]
    if len(candidates) != 1:
        return None
    layer = model.get_layer(candidates[0]["config"]["name"])
    if type(layer) is not k.layers.Conv2D:
        return None
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last" or cfg.get("groups", 1) != 1:
        return None
    if cfg.get("padding") not in ("same", "valid"):
        return None
    return layer


def _reads(layer_config: dict, names: set[str]) -> bool:
    """Whether a functional model's layer config takes any of `names` as input (tf_keras node
    format: [[[name, node, tensor, kwargs], ...], ...])."""
    def walk(obj):
        if isinstance(obj, (list, tuple)):
            if obj and isinstance(obj[0], str) and obj[0] in names:
                return True
            return any(walk(o) for o in obj)
        if isinstance(obj, dict):
            return any(walk(v) for v in obj.values())
        return False

    return walk(layer_config.get("inbound_nodes", []))


def describe(path) -> tuple[list[dict], list[dict]]:
    """Input and output tensor descriptions (name, shape, dtype, quantization) of a .tflite file."""
    from ...runtime.backends import TFLiteBackend

    backend = TFLiteBackend(path)
    details = backend.interpreter
    return ([_tensor(t) for t in details.get_input_details()], [_tensor(t) for t in details.get_output_details()])


def _tensor(t) -> dict:
    scale, zero = t["quantization"]
    d = {"name": t["name"], "shape": [int(v) for v in t.get("shape_signature", t["shape"])], "dtype": np.dtype(t["dtype"]).name}
    if scale:
        d["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
    return d


def _float_key(source: str) -> str:
    """Where ConvertJob.shared keeps the float .tflite of the Keras model `source`."""
    return "tflite_fp32" if source == "base" else f"tflite_fp32:{source}"


def _finished(data: bytes, fields: dict, config, layout=None):
    """The Converted file, its names stripped when the config asks."""
    if config.convert.strip_names:
        data = strip_names(data)
        fields["names_stripped"] = True
    return Converted(data, fields, layout)


class TFLiteFormat(Format):
    """The TFLite format: the converter's quantizer for every precision; `*_pixels` variants take
    raw pixels (normalization folded into the first convolution, or in the graph)."""

    name = "tflite"

    def convert(self, variant, job):
        config = job.config
        # Applies to int8 post-training quantization; QAT models keep the per-channel scales they learned.
        per_channel = config.convert.int8_weights == "per-channel"
        quantization_aware = variant.source in ("qat", "pruned_qat")
        fields, layout = {}, None
        if variant.engine == "aeq":
            return self._aeq(variant, job, ())
        if variant.input == "pixels":
            pixels = pixel_input(job.model, job.spec)
            # Folded: int8 input `pixel - 128` (the runtime flips a bit); in the graph: uint8 pixels
            # as they are (the runtime copies them). The output is float32: dequantizing ten values
            # costs nothing in the graph and a numpy call (~5 us) outside it.
            data = convert(pixels.model, variant.precision, pixels.layout.apply(job.calibration),
                           uint8_input=not pixels.folded, per_channel=per_channel, float_output=True)
            fields.update(normalization=pixels.how, pixel_input=pixels.layout.to_dict())
            layout = pixels.layout
        else:
            data = convert(job.model, variant.precision, job.representative, int8_io=not config.convert.float_io,
                           quantization_aware=quantization_aware, per_channel=per_channel)
        if variant.precision == "fp32" and variant.input == "normalized":
            # The float file of this model, which the diagnosis of its quantized variants measures against.
            job.shared.setdefault(_float_key(variant.source), data)
        if variant.precision == "int8":
            fields["weight_scales"] = "per-channel" if quantization_aware else config.convert.int8_weights
        if variant.engine:
            fields["engine"] = variant.engine
        return _finished(data, fields, config, layout)

    def layout(self, config) -> str:
        return "NHWC"

    def requantize(self, variant, job, keep_float: tuple[str, ...]):
        """The variant with the layers `keep_float` (output tensor names) left in float, by the
        engine that made it: the converter's denylisted nodes, or LiteRT quantizer's scoped recipe."""
        if variant.precision not in QUANTIZED or variant.input != "normalized":
            raise ConfigError(f"{variant.name} cannot keep layers in float")
        if variant.engine != "converter":
            return self._aeq(variant, job, keep_float)
        per_channel = job.config.convert.int8_weights == "per-channel"
        data = convert_selective(job.model, job.representative, keep_float, per_channel=per_channel)
        return _finished(data, {"engine": "converter", "weight_scales": job.config.convert.int8_weights, "io": "float"},
                         job.config)

    def _aeq(self, variant, job, keep_float: tuple[str, ...]):
        """LiteRT quantizer on the float file of the variant's model (not on the Keras model), with
        the layers `keep_float` left in float."""
        from ..engines import aeq_quantize

        data = aeq_quantize(self.float_twin(variant, job), variant.precision, job.representative, keep_float)
        return _finished(data, {"engine": "aeq", "weight_scales": "per-channel"}, job.config)

    def float_twin(self, variant, job) -> bytes:
        key = _float_key(variant.source)
        if key not in job.shared:
            job.shared[key] = convert(job.model, "fp32")
        return job.shared[key]

    def describe(self, path):
        return describe(path)

    def weight_stats(self, path):
        from ..inspect import tflite_weight_stats

        return tflite_weight_stats(path)

    def manifest_fields(self, path, config) -> dict:
        return {}
