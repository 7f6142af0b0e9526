"""What every source kind is to the export stage (edgecls.sources.Source), and the checks each
kind's loader shares: the preprocessing the model takes and its labels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError
from ..preprocess import Batches, PreprocessingSpec


@dataclass
class Source:
    """A model the user gave that is not a Keras model. Each kind answers:
    - `reference(images)`: its own float outputs for normalized NHWC images (the reference every
      variant is validated against), run by the kind's own runtime (`runtime`);
    - `float_tflite(sample)` / `float_onnx(sample)`: the float file of that format it becomes, with
      what the conversion did (route, converter version, transposes left); `sample`: a few
      normalized NHWC images a converter may check its work on;
    - `layout_of(format)`: the input layout of the files of that format it becomes."""
    path: Path
    preprocessing: PreprocessingSpec
    labels: tuple[str, ...]
    layout: str  # the given file's input: "NCHW" or "NHWC"
    input_name: str
    kind: str = ""
    runtime: str = ""
    tunable: bool = False  # no Keras layer graph: no pruning, QAT or converter quantizer
    origin: str = ""  # what the user gave, when `path` is a private copy of it (a bundle's float file)

    @property
    def given(self) -> str:
        return self.origin or str(self.path)

    def reference(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def float_tflite(self, sample: np.ndarray) -> tuple[bytes, dict]:
        raise NotImplementedError

    def float_onnx(self, sample: np.ndarray) -> tuple[bytes, dict]:
        raise NotImplementedError

    def layout_of(self, fmt: str) -> str:
        raise NotImplementedError

    def in_layout(self, images: np.ndarray, fmt: str | None = None) -> np.ndarray:
        """Normalized NHWC images as the given file (or its files of format `fmt`) take them."""
        layout = self.layout if fmt is None else self.layout_of(fmt)
        if isinstance(images, Batches):
            return images.then(lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2))) if layout == "NCHW" else images
        x = np.asarray(images, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "NCHW" else x


def spec_from(path: Path, size: tuple, layout: str, preprocessing) -> PreprocessingSpec:
    """The PreprocessingSpec of a source taking `size` images in `layout`, with the user's scale,
    mean and std."""
    from ..schema import MAX_INPUT_SIDE

    if min(size) <= 0:
        raise ModelError(f"{path}: the input size is not fixed ({size}); edgecls needs a fixed height and width")
    if max(size) > MAX_INPUT_SIDE:
        raise ModelError(f"{path}: the model takes {size[0]}x{size[1]} images; edgecls handles up to {MAX_INPUT_SIDE}")
    if isinstance(preprocessing, PreprocessingSpec):
        preprocessing = {"scale": preprocessing.scale, "mean": preprocessing.mean, "std": preprocessing.std}
    return PreprocessingSpec(input_size=tuple(int(v) for v in size), layout=layout,
                             **{k: v for k, v in preprocessing.items() if k in ("scale", "mean", "std")})


def read_labels(path: Path, labels, classes: int) -> tuple[str, ...]:
    """The class names (a list, or a labels JSON file), checked against the model's `classes`."""
    from ..schema import MAX_CLASSES

    if not 2 <= classes <= MAX_CLASSES:
        raise ModelError(f"{path}: the model's output is not (batch, classes) scores with 2 to {MAX_CLASSES} classes")
    if isinstance(labels, (str, Path)):
        from ..modelio import load_labels

        labels = load_labels(labels)
    names = tuple(labels) if labels else tuple(str(i) for i in range(classes))
    if len(names) != classes:
        raise ConfigError(f"{len(names)} labels given but {path} outputs {classes} classes")
    return names
