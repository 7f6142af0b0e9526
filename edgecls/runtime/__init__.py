"""The device runtime: numpy, Pillow, LiteRT and onnxruntime only; never TensorFlow.

    >>> from edgecls import runtime
    >>> runner = runtime.load("models/resnet8", variant="tflite_int8", threads=1)
    >>> probs = runner.predict(["cat.jpg", "ship.png"])   # or a uint8 N x H x W x 3 array

`load` takes a bundle directory (choosing a variant by name), or a single .tflite/.onnx file: a file
inside a bundle uses that bundle's manifest and preprocessing; a lone file needs `preprocessing` (a dict
with scale, mean and std: the input size and layout are read from the file; or a PreprocessingSpec)
and optionally `labels`.

Test-time augmentation: `load(..., tta="flip")` gives a runner whose `predict` averages the
probabilities for each image and its mirror image (left-right): twice the inference per image, for
the accuracy BENCHMARKS.md measures. The model file is unchanged.

Threads: a runner may be shared by several threads. TFLite interpreters are not re-entrant, so a
runner serializes its TFLite calls with a lock; for parallel throughput give each thread its own
runner (`load` again). onnxruntime sessions run concurrently.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..bundle import Bundle, find_bundle_for, load_bundle
from ..config import TTA_MODES, check_tta
from ..errors import ConfigError, DataError, ModelError
from ..preprocess import PixelInput, PreprocessingSpec, load_image
from .backends import ONNXBackend, TFLiteBackend, open_backend

__all__ = ["load", "Runner", "TFLiteBackend", "ONNXBackend", "TTA_MODES", "check_tta", "with_tta"]

_UINT8 = np.dtype(np.uint8)
_WIDE_INDEX = 1 << 16  # values per batch up to which the lookup fill's index is intp (Runner._fill_for)


def with_tta(predict, images: np.ndarray, tta: str | None) -> np.ndarray:
    """`predict(images)` (uint8 N x H x W x 3 -> N x classes probabilities) under test-time
    augmentation `tta`: for "flip", the mean of the probabilities for the images and their
    left-right mirror images. The Runner and bench's Keras row both use it."""
    if tta == "flip":
        return (predict(images) + predict(np.ascontiguousarray(images[:, :, ::-1]))) * np.float32(0.5)
    return predict(images)


class Runner:
    """A loaded model with its preprocessing. `predict(images)` returns N x classes probabilities."""

    def __init__(self, backend, preprocessing: PreprocessingSpec, labels: Sequence[str] | None = None,
                 name: str | None = None, artifact: dict | None = None, outputs: str = "probabilities",
                 input_kind: str = "normalized", pixel_input: PixelInput | None = None, tta: str | None = None):
        self.tta = check_tta(tta)
        if outputs not in ("probabilities", "logits", "auto"):
            raise ConfigError(f"outputs must be 'probabilities', 'logits' or 'auto', got {outputs!r}")
        if input_kind not in ("normalized", "pixels"):
            raise ConfigError(f"input_kind must be 'normalized' or 'pixels', got {input_kind!r}")
        self.outputs = outputs
        # "pixels": the model takes raw RGB values (pixel + offset, maybe padded: `pixel_input`);
        # its normalization is folded into its first convolution or runs inside its graph.
        self.input_kind = input_kind
        self.pixel_input = pixel_input or PixelInput()
        if input_kind != "pixels" and pixel_input is not None:
            raise ConfigError("pixel_input applies to models that take pixels (input_kind='pixels')")
        self.backend = backend
        self.preprocessing = preprocessing
        self.labels = tuple(labels) if labels else None
        self.name = name or Path(backend.path).stem
        self.artifact = artifact or {}
        self._identity = self._xor = False
        self._image_shape = (*preprocessing.input_size, 3)
        self._frame = None
        # Where the images go in a padded input tensor (precomputed: slicing costs per call).
        self._inner = self.pixel_input.inner(preprocessing.input_size) if self.pixel_input.padded else None
        self._lut = self._quantized_input_table()
        self._fills: dict[tuple, object] = {}  # batch shape -> its input fill (_fill_for)
        # Scores dequantized from an int8/uint8 output come from a table of 256 values: when all are
        # finite, so is every output, and the per-call check is skipped.
        table = getattr(backend, "output_table", None)
        self._always_finite = table is not None and bool(np.isfinite(table).all())
        self._bound = None  # (images shape, the backend's bound call): see _bind
        self._bind_tried = False

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
        quantized = backend.prepare(self._normalize_values(values))  # 256 x 3
        table = np.ascontiguousarray(quantized.T).ravel()  # channel-major: index = channel * 256 + pixel
        codes = np.tile(np.arange(256, dtype=np.uint8), 3)
        # A model whose input quantization maps each pixel to itself takes the pixels as they are
        # (uint8), or with the top bit flipped (int8 `pixel - 128`, a folded normalization).
        self._identity = bool(table.dtype == np.uint8 and np.array_equal(table, codes))
        self._xor = bool(table.dtype == np.int8 and np.array_equal(table.view(np.uint8), codes ^ 0x80))
        if self.pixel_input.padded:
            frame = self.pixel_input.frame(self.preprocessing.input_size)
            self._frame = table[np.arange(3) * 256 + frame.astype(np.intp)]
            if self._frame.shape[1:] != tuple(backend.input_shape[1:]):
                raise ModelError(f"{self.name}: the model takes {tuple(backend.input_shape[1:3])} but its pixel input "
                                 f"pads {self.preprocessing.input_size} images to {self._frame.shape[1:3]}")
        return table

    def _normalize_values(self, values: np.ndarray) -> np.ndarray:
        """Pixel values (any shape, last axis the channels) -> the model's float input values,
        without any padding."""
        if self.input_kind == "pixels":
            return np.asarray(values, dtype=np.float32) + np.float32(self.pixel_input.offset)
        return self.preprocessing.apply(values)

    def _normalize(self, images: np.ndarray) -> np.ndarray:
        if self.input_kind == "pixels":
            return self.pixel_input.apply(images)
        return self.preprocessing.apply(images)

    @property
    def format(self) -> str:
        return self.backend.format

    def _to_array(self, images) -> np.ndarray:
        if type(images) is np.ndarray and images.dtype is _UINT8 and images.shape[1:] == self._image_shape:
            return images  # the common case, checked first and cheaply (dtype singletons, a stored tuple)
        size = self.preprocessing.input_size
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
        probabilities; with tta="flip", the mean of the probabilities for the images and their
        left-right mirror images."""
        bound = self._bound
        if bound is not None and type(images) is np.ndarray and images.shape == bound[0] and images.dtype is _UINT8:
            scores = bound[1](images)
            if scores is not None:
                return scores
        return with_tta(self._predict_array, self._to_array(images), self.tta)

    def _bind(self, shape: tuple) -> None:
        """After a first batch of `shape` went through the lookup table or the pixel flip: bind the
        backend's call for that shape (TFLiteBackend.bind_fill), so the next such batch skips this
        class's per-call choices. Only where nothing is left to do to the scores but, for float
        outputs, the finiteness check: probabilities, no test-time augmentation. A bound call whose
        scores are not all finite returns None, and the general path reports it."""
        if self._bind_tried:
            return
        self._bind_tried = True
        if self.tta is not None or self.outputs != "probabilities":
            return
        call = self.backend.bind_fill(shape[0], self._fill_for(shape))
        if call is None:
            return
        if not self._always_finite:
            unchecked, isfinite = call, np.isfinite

            def call(images):
                scores = unchecked(images)
                return scores if scores is None or isfinite(scores).all() else None

        self._bound = (shape, call)

    def _predict_array(self, images: np.ndarray) -> np.ndarray:
        raw = None
        if self._lut is not None:
            fill = self._fill_for(images.shape)
            raw = self.backend.run_fill(images.shape[0], lambda buffer: fill(images, buffer))
        if raw is None:
            return self.predict_tensor(self._normalize(images))
        scores = self._probabilities(self.backend.finish(raw))  # decides what a lone file ends in
        self._bind(images.shape)
        return scores

    def _fill_for(self, shape: tuple):
        """`fill(images, buffer)` for batches of `shape` of an int8/uint8-input TFLite model: the
        model's input for the uint8 images, written into `buffer` (its input tensor). The padded
        frame of a folded 'same' convolution first (the interpreter may reuse the input's memory
        during a call), then, inside it: the pixels as they are (a uint8 pixel model), their top
        bit flipped (int8 `pixel - 128`, a folded normalization), or each pixel's value from the
        lookup table (channel c's 256 values at 256 * c) through an index whose low byte is the
        pixel and whose next byte its channel, set once, so a call writes the pixels into the low
        bytes (a strided byte copy) and takes. The index is intp (what take uses: it converts
        nothing) for batches up to _WIDE_INDEX values, uint16 above (a quarter of the memory).
        Made once per shape; called with the backend's lock held, so its buffers are not shared."""
        fill = self._fills.get(shape)
        if fill is not None:
            return fill
        if len(self._fills) >= 8:  # many batch sizes: keep memory bounded
            self._fills.clear()
        if self._identity:
            copy = np.copyto

            def inside(images, target):
                copy(target, images)
        elif self._xor:
            flip, xor = np.full(shape, 0x80, np.uint8), np.bitwise_xor

            def inside(images, target):
                xor(images, flip, out=target)
        else:
            kind = np.dtype(np.intp if int(np.prod(shape)) <= _WIDE_INDEX else np.uint16)
            low, high = (0, 1) if sys.byteorder == "little" else (kind.itemsize - 1, kind.itemsize - 2)
            raw = np.zeros((*shape, kind.itemsize), np.uint8)
            raw[..., high] = np.arange(shape[-1], dtype=np.uint8)
            pixels, index, take = raw[..., low], raw.view(kind)[..., 0], self._lut.take  # the method: no wrapper call

            def inside(images, target):
                pixels[...] = images
                if target.flags.c_contiguous:
                    take(index, out=target, mode="wrap")  # "wrap": no bounds-checking copy (all are valid)
                else:  # the inside of a padded frame
                    target[...] = take(index, mode="wrap")
        frame, inner, as_bytes = self._frame, self._inner, self._xor  # the flip writes bytes
        if frame is None and inner is None and not as_bytes:
            fill = inside
        else:
            copyto = np.copyto

            def fill(images, buffer):
                if frame is not None:
                    copyto(buffer, frame)
                target = buffer.view(np.uint8) if as_bytes else buffer
                inside(images, target[inner] if inner is not None else target)

        self._fills[shape] = fill
        return fill

    def predict_tensor(self, x: np.ndarray) -> np.ndarray:
        """Already normalized float32 NHWC input -> probabilities."""
        return self._probabilities(self.backend.run(x))

    def _probabilities(self, y: np.ndarray) -> np.ndarray:
        if not self._always_finite and not np.isfinite(y).all():
            bad = int((~np.isfinite(y)).reshape(len(y), -1).any(axis=1).sum())
            raise ModelError(f"{self.name}: the model gave non-finite scores (NaN or infinity) for {bad} of {len(y)} "
                             f"image(s); check the preprocessing it was given (scale {self.preprocessing.scale:g}, mean "
                             f"{list(self.preprocessing.mean)}, std {list(self.preprocessing.std)}) and the file")
        if self.outputs == "auto":  # a lone file: its first scores say what it ends in
            self.outputs = "probabilities" if _are_probabilities(y) else "logits"
        if self.outputs == "logits":  # a user's model that ends without softmax
            y = np.exp(y - y.max(axis=1, keepdims=True))
            y /= y.sum(axis=1, keepdims=True)
        return y


def _are_probabilities(y: np.ndarray) -> bool:
    """Rows of scores in [0, 1] summing to 1 (a softmax's, within an int8 output's rounding: up to
    half a 1/256 step per class), not logits."""
    y = np.asarray(y, dtype=np.float64)
    return bool(y.ndim == 2 and (y >= 0).all() and (y <= 1).all() and np.allclose(y.sum(1), 1.0, atol=0.05))


def load(path: str | Path, variant: str | None = None, threads: int | None = None,
         preprocessing: PreprocessingSpec | dict | None = None, labels: Sequence[str] | None = None,
         verify: bool = True, tta: str | None = None) -> Runner:
    """Load a bundle variant or a single model file. See the module docstring."""
    path = Path(path)
    check_tta(tta)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    if path.is_dir():
        if preprocessing is not None or labels is not None:
            raise ConfigError("a bundle carries its own preprocessing and labels; preprocessing and labels are for a "
                              "lone .tflite/.onnx file")
        bundle = load_bundle(path)
        artifact = bundle.artifact(variant)
        return _from_bundle(bundle, artifact, threads, verify, tta)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    found = find_bundle_for(path)
    if found is not None and preprocessing is None:
        bundle, artifact = found
        return _from_bundle(bundle, artifact, threads, verify, tta)
    if preprocessing is None:
        raise ConfigError(f"{path} is not inside a bundle: pass its preprocessing (scale, mean, std: "
                          f"--scale/--mean/--std on the command line)")
    if isinstance(preprocessing, dict):
        backend, layout = open_lone_file(path, threads)
        preprocessing = spec_for_file(backend, layout, preprocessing)
    else:
        backend = open_backend(path, threads, layout=getattr(preprocessing, "layout", "NHWC"))
    if labels is not None:
        classes = backend_classes(backend)
        if classes is not None and len(labels) != classes:
            raise ConfigError(f"{len(labels)} labels given but {path} outputs {classes} classes")
    return Runner(backend, preprocessing, labels, tta=tta, outputs="auto")


def open_lone_file(path: Path, threads: int | None = None):
    """(backend, layout) for a model file outside a bundle. The layout is read from the file: NCHW for
    an ONNX file whose input has 3 channels second and more than 3 last, else NHWC (TFLite is always
    NHWC); only an NCHW file is opened a second time, with that layout."""
    backend = open_backend(path, threads, layout="NHWC")
    shape = backend.input_shape
    if Path(path).suffix == ".onnx" and len(shape) == 4 and shape[1] == 3 and shape[3] != 3:
        return open_backend(path, threads, layout="NCHW"), "NCHW"
    return backend, "NHWC"


def spec_for_file(backend, layout: str, given: dict) -> PreprocessingSpec:
    """A PreprocessingSpec for a lone model file: scale/mean/std from `given`, the input size read
    from the file's input tensor."""
    shape = backend.input_shape
    if len(shape) != 4:
        raise ModelError(f"{backend.path}: the input is {shape}, not an image batch")
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if height <= 0 or width <= 0:
        raise ModelError(f"{backend.path}: the input size is not fixed ({shape}); edgecls needs a fixed height and width")
    from ..schema import MAX_INPUT_SIDE

    if max(height, width) > MAX_INPUT_SIDE:
        raise ModelError(f"{backend.path}: the model takes {height}x{width} images; edgecls handles small classifiers "
                         f"up to {MAX_INPUT_SIDE} pixels a side")
    return PreprocessingSpec(input_size=(height, width), layout=layout,
                             **{k: v for k, v in given.items() if k in ("scale", "mean", "std")})


def backend_classes(backend) -> int | None:
    try:
        shape = backend.output_shape
    except AttributeError:
        return None
    return int(shape[-1]) if shape and int(shape[-1]) > 0 else None


def _from_bundle(bundle: Bundle, artifact: dict, threads, verify, tta=None) -> Runner:
    file = bundle.file_for(artifact, verify=verify)
    spec, labels = bundle.preprocessing(), bundle.labels()
    if artifact["format"] == "onnx":
        # onnxruntime reads external data named inside the file: open it from a private folder that
        # holds only the files the manifest hashes.
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgecls-onnx-") as private:
            copy = bundle.copy_verified(artifact, Path(private), verify=verify)
            backend = open_backend(copy, threads, layout=artifact.get("layout", "NHWC"))
        backend.path = file
    else:
        backend = open_backend(file, threads, layout=artifact.get("layout", "NHWC"))
    outputs = bundle.manifest.get("model", {}).get("output", "probabilities")
    input_kind = artifact.get("input", "normalized")
    pixel_input = PixelInput.from_dict(artifact.get("pixel_input")) if input_kind == "pixels" else None
    return Runner(backend, spec, labels, name=artifact["name"], artifact=artifact, outputs=outputs,
                  input_kind=input_kind, pixel_input=pixel_input, tta=tta)
