"""A float TFLite model the user gives (LiteRT Torch, JAX, onnx2tf, the TFLite converter of any
framework): its own float outputs from LiteRT. It is the float file the LiteRT quantizer
quantizes (int8, int16 activations, dynamic range, float16 weights); tf2onnx turns it into the float
ONNX file the ONNX engines quantize. What needs a Keras model (the converter's own quantizer,
pruning, quantization-aware training) is listed as skipped with the reason. A file that is already
quantized is refused: quantizing needs the float model."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgeclsError, ModelError
from .base import Source, read_labels, spec_from

BATCH = 64


@dataclass
class TFLiteSource(Source):
    float_tflite_bytes: bytes = b""
    kind: str = "tflite"
    runtime: str = "LiteRT"
    _onnx: tuple | None = field(default=None, repr=False)

    def reference(self, images: np.ndarray) -> np.ndarray:
        """The model's own float outputs (LiteRT) for normalized NHWC float32 images, in batches."""
        from ..runtime.backends import TFLiteBackend

        backend = TFLiteBackend(self.path)
        outs = [backend.run(np.asarray(images[i:i + BATCH], np.float32)) for i in range(0, len(images), BATCH)]
        return np.concatenate(outs).astype(np.float32)

    def float_tflite(self, sample: np.ndarray) -> tuple[bytes, dict]:
        return self.float_tflite_bytes, {"route": "as given"}

    def float_onnx(self, sample: np.ndarray) -> tuple[bytes, dict]:
        if self._onnx is None:
            from .convert import tflite_to_onnx

            self._onnx = tflite_to_onnx(self.float_tflite_bytes)
        return self._onnx

    def layout_of(self, fmt: str) -> str:
        return "NHWC"  # LiteRT files take NHWC, and tf2onnx keeps the TFLite input's layout


def load(path: Path, preprocessing=None, labels=None) -> TFLiteSource:
    """Read and check the float TFLite model at `path`; `preprocessing` (scale/mean/std) and
    `labels` as for an ONNX file: the input size is read from the model."""
    from ..runtime.backends import TFLiteBackend
    from ..schema import MAX_CLASSES

    if not preprocessing:
        raise ModelError(f"{path}: a TFLite model needs its preprocessing: pass --scale, --mean and --std (it sees "
                         f"(pixel * scale - mean) / std)")
    try:
        backend = TFLiteBackend(path)
    except EdgeclsError:
        raise
    except Exception as exc:  # noqa: BLE001 (LiteRT raises several kinds for bad flatbuffers)
        raise ModelError(f"{path}: not a loadable TFLite model ({exc.__class__.__name__})") from None
    if backend.input_dtype != np.float32 or backend.output_dtype != np.float32 or _quantized(backend):
        raise ModelError(f"{path} is a quantized TFLite file ({backend.input_dtype.name} input, "
                         f"{backend.output_dtype.name} output); edgecls quantizes from the float model: give the float "
                         f".tflite it was made from")
    shape = backend.input_shape
    if len(shape) == 4 and shape[1] == 3 and shape[3] != 3:
        raise ModelError(f"{path}: the input is channels-first {list(shape)}; edgecls takes TFLite files whose input "
                         f"is NHWC (height, width, 3); give the ONNX export of the model instead (its NCHW input is "
                         f"converted)")
    if len(shape) != 4 or shape[3] != 3:
        raise ModelError(f"{path}: the input is {list(shape)}; edgecls needs one RGB image of a fixed size (NHWC)")
    out = backend.output_shape
    if not (len(out) == 2 and 2 <= out[-1] <= MAX_CLASSES):
        raise ModelError(f"{path}: the model's output is {list(out)}; edgecls needs (batch, classes) scores")
    spec = spec_from(path, (shape[1], shape[2]), "NHWC", preprocessing)
    classes = out[-1] if len(out) == 2 else -1
    names = read_labels(path, labels, classes)
    return TFLiteSource(path=path, preprocessing=spec, labels=names, layout="NHWC", input_name=backend.input["name"],
                        float_tflite_bytes=path.read_bytes())


def _quantized(backend) -> bool:
    """Whether the file's weights are already integers (a dynamic-range or int8 file with float I/O)."""
    details = backend.interpreter.get_tensor_details()
    return sum(1 for t in details if np.dtype(t["dtype"]) in (np.int8, np.uint8, np.int16, np.float16)) > 0
