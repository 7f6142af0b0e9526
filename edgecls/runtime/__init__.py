"""The device runtime: numpy, Pillow, LiteRT and onnxruntime only; never TensorFlow.

    >>> from edgecls import runtime
    >>> runner = runtime.load("models/resnet8", variant="tflite_int8", threads=1)
    >>> probs = runner.predict(["cat.jpg", "ship.png"])   # or a uint8 N x H x W x 3 array

`load` takes a bundle directory (choosing a variant by name), or a single .tflite/.onnx file: a file
inside a bundle uses that bundle's manifest and preprocessing; a lone file needs `preprocessing`
(a PreprocessingSpec) and optionally `labels`.

Threads: a runner may be shared by several threads. TFLite interpreters are not re-entrant, so a
runner serializes its TFLite calls with a lock; for parallel throughput give each thread its own
runner (`load` again). onnxruntime sessions run concurrently.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..bundle import Bundle, find_bundle_for, load_bundle
from ..errors import ConfigError, DataError, ModelError
from ..preprocess import PreprocessingSpec, load_image
from .backends import ONNXBackend, TFLiteBackend, open_backend

__all__ = ["load", "Runner", "TFLiteBackend", "ONNXBackend"]


class Runner:
    """A loaded model with its preprocessing. `predict(images)` returns N x classes probabilities."""

    def __init__(self, backend, preprocessing: PreprocessingSpec, labels: Sequence[str] | None = None,
                 name: str | None = None, artifact: dict | None = None, outputs: str = "probabilities",
                 input_kind: str = "normalized"):
        if outputs not in ("probabilities", "logits"):
            raise ConfigError(f"outputs must be 'probabilities' or 'logits', got {outputs!r}")
        if input_kind not in ("normalized", "pixels"):
            raise ConfigError(f"input_kind must be 'normalized' or 'pixels', got {input_kind!r}")
        self.outputs = outputs
        # "pixels": the model normalizes inside its graph and takes raw RGB values.
        self.input_kind = input_kind
        self.backend = backend
        self.preprocessing = preprocessing
        self.labels = tuple(labels) if labels else None
        self.name = name or Path(backend.path).stem
        self.artifact = artifact or {}
        self._identity = False
        self._lut = self._quantized_input_table()
        self._index_buffers: dict[tuple, np.ndarray] = {}

    def _quantized_input_table(self):
        """For an int8/uint8-input TFLite model, preprocessing then quantization maps each
        (channel, pixel value) to one integer: a 3 x 256 table, built with exactly the float32
        arithmetic of the slow path, turns both steps into one lookup per pixel."""
        backend = self.backend
        if not isinstance(backend, TFLiteBackend) or backend.input_dtype not in (np.int8, np.uint8):
            return None
        if self.preprocessing.layout != "NHWC" or backend.input_shape[-1] != 3:
            return None
        values = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, 3))
        quantized = backend.prepare(self._normalize(values))  # 256 x 3
        table = np.ascontiguousarray(quantized.T).ravel()  # channel-major: index = channel * 256 + pixel
        # A uint8-input model whose input quantization is the identity takes the pixels as they are.
        self._identity = bool(table.dtype == np.uint8 and np.array_equal(table, np.tile(np.arange(256, dtype=np.uint8), 3)))
        return table

    def _normalize(self, images: np.ndarray) -> np.ndarray:
        if self.input_kind == "pixels":
            return np.asarray(images, dtype=np.float32)
        return self.preprocessing.apply(images)

    @property
    def format(self) -> str:
        return self.backend.format

    def _to_array(self, images) -> np.ndarray:
        size = self.preprocessing.input_size
        if type(images) is np.ndarray and images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == (*size, 3):
            return images  # the common case, checked first and cheaply
        if isinstance(images, (str, Path)):
            images = [images]
        if isinstance(images, (list, tuple)):
            if not images:
                raise DataError("no images given")
            if all(isinstance(i, (str, Path, bytes)) for i in images):
                return np.stack([load_image(i, size) for i in images])
            images = np.asarray(images)
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(f"expected uint8 images of N x H x W x 3, got shape {images.shape}")
        if tuple(images.shape[1:3]) != size:
            raise DataError(
                f"images are {images.shape[1]}x{images.shape[2]} but the model takes {size[0]}x{size[1]}; "
                f"pass image files (they are resized) or resize first"
            )
        if images.dtype != np.uint8:
            raise DataError(f"expected uint8 pixels (0..255), got {images.dtype}")
        return images

    def preprocess(self, images) -> np.ndarray:
        """The float32 tensor the model takes: normalized images, or pixel values for a model
        that normalizes inside its graph."""
        return self._normalize(self._to_array(images))

    def predict(self, images) -> np.ndarray:
        """Images (uint8 N x H x W x 3 at the input size, or image paths) -> float32 N x classes
        probabilities."""
        images = self._to_array(images)
        if self._lut is not None:
            raw = self.backend.run_fill(images.shape[0], lambda buffer: self._fill(images, buffer))
            if raw is not None:
                return self._probabilities(self.backend.finish(raw))
        return self.predict_tensor(self._normalize(images))

    def _fill(self, images: np.ndarray, buffer: np.ndarray) -> None:
        if self._identity:
            np.copyto(buffer, images)
            return
        # Called with the backend's lock held, so the cached buffers are not shared. The offsets
        # are a full-size array (not a broadcast (3,) vector, whose 3-element inner loops are slow)
        # and the indices uint16; mode="wrap" skips take's bounds-checking copy (all are valid).
        cached = self._index_buffers.get(images.shape)
        if cached is None:
            offsets = np.ascontiguousarray(np.broadcast_to(np.array([0, 256, 512], np.uint16), images.shape))
            cached = self._index_buffers[images.shape] = (offsets, np.empty(images.shape, np.uint16))
        offsets, index = cached
        index[...] = images  # widen to uint16, then a same-type add (no buffered mixed-type loop)
        np.add(index, offsets, out=index)
        np.take(self._lut, index, out=buffer, mode="wrap")

    def predict_tensor(self, x: np.ndarray) -> np.ndarray:
        """Already normalized float32 NHWC input -> probabilities."""
        return self._probabilities(self.backend.run(x))

    def _probabilities(self, y: np.ndarray) -> np.ndarray:
        if self.outputs == "logits":  # a user's model that ends without softmax
            y = np.exp(y - y.max(axis=1, keepdims=True))
            y /= y.sum(axis=1, keepdims=True)
        return y


def load(path: str | Path, variant: str | None = None, threads: int | None = None,
         preprocessing: PreprocessingSpec | None = None, labels: Sequence[str] | None = None,
         verify: bool = True) -> Runner:
    """Load a bundle variant or a single model file. See the module docstring."""
    path = Path(path)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    if path.is_dir():
        bundle = load_bundle(path)
        artifact = bundle.artifact(variant)
        return _from_bundle(bundle, artifact, threads, verify)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    found = find_bundle_for(path)
    if found is not None and preprocessing is None:
        bundle, artifact = found
        return _from_bundle(bundle, artifact, threads, verify)
    if preprocessing is None:
        raise ConfigError(f"{path} is not inside a bundle: pass its preprocessing (a PreprocessingSpec)")
    backend = open_backend(path, threads)
    return Runner(backend, preprocessing, labels)


def _from_bundle(bundle: Bundle, artifact: dict, threads, verify) -> Runner:
    file = bundle.file_for(artifact, verify=verify)
    spec, labels = bundle.preprocessing(), bundle.labels()
    backend = open_backend(file, threads, layout=artifact.get("layout", "NHWC"))
    outputs = bundle.manifest.get("model", {}).get("output", "probabilities")
    return Runner(backend, spec, labels, name=artifact["name"], artifact=artifact, outputs=outputs,
                  input_kind=artifact.get("input", "normalized"))
