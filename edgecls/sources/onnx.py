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
    import onnxruntime as ort

    from ..schema import MAX_CLASSES, MAX_INPUT_SIDE

    if not preprocessing:
        raise ModelError(f"{path}: an ONNX model needs its preprocessing: pass --scale, --mean and --std (it sees "
                         f"(pixel * scale - mean) / std)")
    if isinstance(preprocessing, PreprocessingSpec):
        preprocessing = {"scale": preprocessing.scale, "mean": preprocessing.mean, "std": preprocessing.std}
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
    if max(size) > MAX_INPUT_SIDE:
        raise ModelError(f"{path}: the model takes {size[0]}x{size[1]} images; edgecls handles up to {MAX_INPUT_SIDE}")
    classes = out[-1] if len(out) == 2 else -1
    if not 2 <= classes <= MAX_CLASSES:
        raise ModelError(f"{path}: the model's output is {outputs[0].shape}; edgecls needs (batch, classes) scores")
    spec = PreprocessingSpec(input_size=size, layout=layout,
                             **{k: v for k, v in preprocessing.items() if k in ("scale", "mean", "std")})
    if isinstance(labels, (str, Path)):
        from ..modelio import load_labels

        labels = load_labels(labels)
    labels = tuple(labels) if labels else tuple(str(i) for i in range(classes))
    if len(labels) != classes:
        raise ConfigError(f"{len(labels)} labels given but {path} outputs {classes} classes")
    return ONNXSource(path, spec, labels, layout, inputs[0].name, data)
