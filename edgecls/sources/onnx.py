"""An ONNX model the user gives (PyTorch's torch.onnx.export with either exporter, or any ONNX file
onnxruntime runs): NCHW or NHWC input read from the file, weights kept beside it (external data)
folded into one float file, its own float outputs from onnxruntime. It becomes ONNX variants (the
float file and the post-training ONNX engines); what needs a Keras model (TFLite conversion through
the TFLite converter, pruning, QAT) is listed as skipped with the reason."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError, first_line
from ..preprocess import PreprocessingSpec

BATCH = 64


@dataclass
class ONNXSource:
    path: Path
    preprocessing: PreprocessingSpec
    labels: tuple[str, ...]
    layout: str  # "NCHW" or "NHWC": the file's input
    input_name: str
    float_onnx: bytes  # one file: external data folded in
    kind: str = "onnx"
    tunable: bool = False

    def reference(self, images: np.ndarray) -> np.ndarray:
        """The model's own float outputs for normalized NHWC float32 images, in batches."""
        import onnxruntime as ort

        session = ort.InferenceSession(self.float_onnx, providers=["CPUExecutionProvider"])
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

    def in_layout(self, images: np.ndarray) -> np.ndarray:
        """Normalized NHWC images as the file takes them."""
        x = np.asarray(images, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else x


def load(path: Path, preprocessing=None, labels=None) -> ONNXSource:
    """Read and check the ONNX model at `path`; `preprocessing` (scale/mean/std) and `labels` (a list
    or a JSON file) as for a Keras file: the input size and layout are read from the model."""
    import onnx

    from ..runtime import open_lone_file, spec_for_file

    if not preprocessing:
        raise ModelError(f"{path}: an ONNX model needs its preprocessing: pass --scale, --mean and --std (it sees "
                         f"(pixel * scale - mean) / std)")
    if isinstance(preprocessing, PreprocessingSpec):
        preprocessing = {"scale": preprocessing.scale, "mean": preprocessing.mean, "std": preprocessing.std}
    backend, layout = open_lone_file(path)  # onnxruntime reads it, external data included
    spec = spec_for_file(backend, layout, preprocessing)
    classes = int(backend.output_shape[-1]) if backend.output_shape and backend.output_shape[-1] > 0 else None
    if len(backend.output_shape) != 2 or not classes or classes < 2:
        raise ModelError(f"{path}: the model's output is {backend.output_shape}; edgecls needs (batch, classes) scores")
    try:
        model = onnx.load(str(path))  # external data read from beside the file
        data = model.SerializeToString()  # and folded into one file
    except Exception as exc:
        raise ModelError(f"{path}: unreadable ONNX model ({first_line(exc)})") from None
    if isinstance(labels, (str, Path)):
        from ..modelio import load_labels

        labels = load_labels(labels)
    labels = tuple(labels) if labels else tuple(str(i) for i in range(classes))
    if len(labels) != classes:
        raise ConfigError(f"{len(labels)} labels given but {path} outputs {classes} classes")
    return ONNXSource(path, spec, labels, layout, backend.input_name, data)
