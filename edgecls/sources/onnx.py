"""An ONNX model the user gives (PyTorch's torch.onnx.export with either exporter, or any ONNX file
onnxruntime runs): NCHW or NHWC input read from the file, weights kept beside it (external data)
folded into one float file, its own float outputs from onnxruntime. It is the float file the ONNX
engines quantize; onnx2tf turns it into the float TFLite file (NHWC input) the LiteRT quantizer
quantizes. What needs a Keras model (the TFLite converter's quantizer, pruning, QAT) is listed as
skipped with the reason."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError, first_line
from .base import Source, read_labels, spec_from

BATCH = 64


@dataclass
class ONNXSource(Source):
    onnx_bytes: bytes = b""  # one file: external data folded in
    kind: str = "onnx"
    runtime: str = "onnxruntime"
    _tflite: tuple | None = field(default=None, repr=False)

    def float_onnx(self, sample: np.ndarray) -> tuple[bytes, dict]:
        return self.onnx_bytes, {"route": "as given"}

    def float_tflite(self, sample: np.ndarray) -> tuple[bytes, dict]:
        if self._tflite is None:
            from .convert import onnx_to_tflite

            self._tflite = onnx_to_tflite(self.onnx_bytes, sample)
        return self._tflite

    def layout_of(self, fmt: str) -> str:
        return self.layout if fmt == "onnx" else "NHWC"  # onnx2tf makes NHWC files

    def reference(self, images: np.ndarray) -> np.ndarray:
        """The model's own float outputs for normalized NHWC float32 images, in batches."""
        import onnxruntime as ort

        session = ort.InferenceSession(self.onnx_bytes, providers=["CPUExecutionProvider"])
        fixed = session.get_inputs()[0].shape[0]
        step = fixed if isinstance(fixed, int) and fixed > 0 else BATCH
        outs = []
        for start in range(0, len(images), step):
            x = np.asarray(images[start:start + step], np.float32)
            n = len(x)
            if self.layout == "NCHW":
                x = x.transpose(0, 3, 1, 2)
            if isinstance(fixed, int) and fixed > 0 and n < fixed:
                x = np.concatenate([x, np.zeros((fixed - n, *x.shape[1:]), np.float32)])
            outs.append(session.run(None, {self.input_name: np.ascontiguousarray(x)})[0][:n])
        return np.concatenate(outs).astype(np.float32)


def load(path: Path, preprocessing=None, labels=None) -> ONNXSource:
    """Read and check the ONNX model at `path`; `preprocessing` (scale/mean/std) and `labels` (a list
    or a JSON file) as for a Keras file: the input size and layout are read from the model."""
    import onnx
    import onnxruntime as ort

    from ..schema import MAX_CLASSES

    if not preprocessing:
        raise ModelError(f"{path}: an ONNX model needs its preprocessing: pass --scale, --mean and --std (it sees "
                         f"(pixel * scale - mean) / std)")
    try:  # onnxruntime reads it, external data beside it included
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        model = onnx.load(str(path))
        data = model.SerializeToString()  # the external data folded into one file
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable ONNX model ({first_line(exc, 200)})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
    shape = [d if isinstance(d, int) else -1 for d in inputs[0].shape]
    out = [d if isinstance(d, int) else -1 for d in outputs[0].shape]
    # NCHW when the 3 channels come second and the last side is not 3 (the runtime's rule for lone files).
    layout = "NCHW" if len(shape) == 4 and shape[1] == 3 and shape[3] != 3 else "NHWC"
    size = (shape[2], shape[3]) if layout == "NCHW" else tuple(shape[1:3])
    if len(shape) != 4 or min(size) <= 0 or (shape[1] if layout == "NCHW" else shape[3]) != 3:
        raise ModelError(f"{path}: the input is {inputs[0].shape}; edgecls needs one RGB image of a fixed size")
    classes = out[-1] if len(out) == 2 else -1
    if not 2 <= classes <= MAX_CLASSES:
        raise ModelError(f"{path}: the model's output is {outputs[0].shape}; edgecls needs (batch, classes) scores")
    spec = spec_from(path, size, layout, preprocessing)
    names = read_labels(path, labels, classes)
    return ONNXSource(path=path, preprocessing=spec, labels=names, layout=layout, input_name=inputs[0].name,
                      onnx_bytes=data)
