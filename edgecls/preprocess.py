"""Image decoding and the preprocessing spec. numpy and Pillow only: the runtime uses this
module on devices without TensorFlow, and the training pipeline uses the same functions, so a
file gives the same tensor in training and on the device."""
from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from .errors import ConfigError, DataError, first_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# The largest image file edgecls reads (a dataset member over it is skipped, a predict input refused).
MAX_IMAGE_BYTES = 32 << 20
SPEC_FILE = "preprocessing.json"

ImageSource = Union[str, Path, bytes]


def load_image(source: ImageSource, size: Sequence[int] | None = None) -> np.ndarray:
    """Decode an image file (path or bytes) to uint8 RGB H x W x 3.

    Grayscale, palette and RGBA images are converted to RGB (alpha is dropped); 16-bit and other
    high-bit-depth images are scaled to 8 bits (65535 -> 255), not clipped. With `size` (height,
    width) the image is resized with Pillow's bilinear filter when it differs. Raises DataError for
    a file that is not a readable image, is over MAX_IMAGE_BYTES, or has more pixels than Pillow's
    decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89 million by default).
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            stream = io.BytesIO(source)
        else:
            stream = open(source, "rb")
            if Path(source).stat().st_size > MAX_IMAGE_BYTES:
                stream.close()
                raise DataError(f"not a readable image: {name} (over the {MAX_IMAGE_BYTES >> 20} MiB limit for an image file)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with stream, Image.open(stream) as img:
                img.load()
                img = _to_rgb(img)
                if size is not None:
                    height, width = int(size[0]), int(size[1])
                    if img.size != (width, height):
                        img = img.resize((width, height), Image.BILINEAR)
                return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"image not found: {name}") from None
    except IsADirectoryError:
        raise DataError(f"not an image file: {name} is a folder") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"not a readable image: {name} (DecompressionBomb: {str(exc).split('.')[0]}; "
                        f"edgecls keeps Pillow's limit)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"not a readable image: {name} ({exc.__class__.__name__}: {first_line(exc)})") from None


def _to_rgb(img):
    """An 8-bit RGB Pillow image. 16-bit ("I;16*") and 32-bit integer ("I") images are scaled from
    their 16-bit range to 8 bits; float ("F") images from [0, 1] when they lie in it."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        values = np.asarray(img).astype(np.float64)
        if img.mode == "F" and values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0
        elif img.mode != "F" and (img.mode.startswith("I;16") or (values.size and values.max() > 255)):
            values = values / 257.0  # 0..65535 -> 0..255
        gray = np.clip(np.nan_to_num(np.rint(values)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    return img.convert("RGB")


@dataclass(frozen=True)
class PreprocessingSpec:
    """How uint8 RGB pixels become the model's input: `(pixel * scale - mean) / std`, per
    channel, after resizing to `input_size` (height, width) with a bilinear filter."""

    input_size: tuple[int, int] = (32, 32)
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "bilinear"
    layout: str = "NHWC"
    channels: int = 3
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        from .schema import MAX_INPUT_SIDE

        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2 or min(size) < 1 or max(size) > MAX_INPUT_SIDE:
            raise ConfigError(f"input_size must be (height, width) of ints from 1 to {MAX_INPUT_SIDE}, got "
                              f"{self.input_size!r}")
        object.__setattr__(self, "input_size", size)
        for key in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, key))
            if len(value) == 1:
                value = value * 3
            if len(value) != 3:
                raise ConfigError(f"{key} needs 1 or 3 values (one per RGB channel), got {len(value)}")
            object.__setattr__(self, key, value)
        if not all(math.isfinite(v) and abs(v) <= 1e6 for v in (*self.mean, *self.std)):
            raise ConfigError(f"mean and std must be finite numbers within +-1e6, got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be positive, got {self.std}")
        if not (isinstance(self.scale, (int, float)) and 0 < self.scale <= 1e6):
            raise ConfigError(f"scale must be a positive number of at most 1e6, got {self.scale}")
        object.__setattr__(self, "scale", float(self.scale))
        if self.layout not in ("NHWC", "NCHW"):
            raise ConfigError(f"layout must be NHWC or NCHW, got {self.layout!r}")
        if self.resize != "bilinear":
            raise ConfigError(f"only bilinear resizing is supported, got {self.resize!r}")

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x 3 (or H x W x 3) -> float32 normalized, same shape (NHWC)."""
        x = np.asarray(images).astype(np.float32)
        # Same operation order as the tf.data pipeline, so both give identical float32 values; in
        # place, so a batch costs one float32 copy of the images, not four.
        np.multiply(x, np.float32(self.scale), out=x)
        np.subtract(x, np.asarray(self.mean, dtype=np.float32), out=x)
        np.divide(x, np.asarray(self.std, dtype=np.float32), out=x)
        return x

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        if not d["extra"]:
            d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessingSpec":
        known = {"input_size", "scale", "mean", "std", "resize", "layout", "channels", "extra"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown keys in preprocessing spec: {unknown}; expected some of {sorted(known)}")
        _check_types(d)
        return cls(**d)

    def save(self, path: str | Path) -> None:
        from ._io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "PreprocessingSpec":
        from ._io import read_json

        data = read_json(path, "preprocessing spec", ConfigError, "preprocessing")
        if not isinstance(data, dict):
            raise ConfigError(f"preprocessing spec {path} must hold a JSON object")
        return cls.from_dict(data)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_types(d: dict) -> None:
    """ConfigError naming the first key of a preprocessing spec (parsed JSON) with a wrong type."""
    size = d.get("input_size", [32, 32])
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                       for v in size)):
        raise ConfigError(f"preprocessing spec: input_size must be [height, width] (two integers), got {size!r}")
    if "scale" in d and not _is_number(d["scale"]):
        raise ConfigError(f"preprocessing spec: scale must be a finite number, got {d['scale']!r}")
    for key in ("mean", "std"):
        value = d.get(key, 0.0)
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(_is_number(v) for v in values):
            raise ConfigError(f"preprocessing spec: {key} must be a number or a list of 1 or 3 numbers, got {value!r}")
    for key in ("resize", "layout"):
        if key in d and not isinstance(d[key], str):
            raise ConfigError(f"preprocessing spec: {key} must be a string, got {d[key]!r}")
    if "channels" in d and d["channels"] != 3:
        raise ConfigError(f"preprocessing spec: channels must be 3 (RGB), got {d['channels']!r}")
    if "extra" in d and not isinstance(d["extra"], dict):
        raise ConfigError(f"preprocessing spec: extra must be a JSON object, got {type(d['extra']).__name__}")


@dataclass(frozen=True)
class PixelInput:
    """The input of a model that takes raw RGB pixels rather than normalized values (an export's
    `*_pixels` variant): it takes `pixel + offset` as float (an int8 model quantizes exactly that),
    with `pad` = (top, bottom, left, right) rows and columns of `pad_pixel` around each image.

    A model whose normalization is folded into its first convolution needs the border that
    convolution's 'same' padding used to add: a normalized 0, that is, each channel's mean pixel.
    The image is padded here with that pixel, and the convolution no longer pads."""

    offset: int = 0
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    pad_pixel: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self):
        pad = tuple(int(v) for v in self.pad)
        pixel = tuple(int(v) for v in self.pad_pixel)
        if len(pad) != 4 or min(pad) < 0:
            raise ConfigError(f"pad must be 4 non-negative ints (top, bottom, left, right), got {self.pad!r}")
        if len(pixel) != 3 or not all(0 <= v <= 255 for v in pixel):
            raise ConfigError(f"pad_pixel must be 3 values in 0..255, got {self.pad_pixel!r}")
        object.__setattr__(self, "pad", pad)
        object.__setattr__(self, "pad_pixel", pixel)
        object.__setattr__(self, "offset", int(self.offset))

    @property
    def padded(self) -> bool:
        return any(self.pad)

    def frame(self, size: tuple[int, int]) -> np.ndarray:
        """One padded image (uint8, 1 x H' x W' x 3) holding `pad_pixel` everywhere."""
        top, bottom, left, right = self.pad
        shape = (1, size[0] + top + bottom, size[1] + left + right, 3)
        return np.broadcast_to(np.asarray(self.pad_pixel, np.uint8), shape).copy()

    def inner(self, size: tuple[int, int]) -> tuple[slice, slice, slice]:
        """Where `size` (height, width) images go in the padded N x H' x W' x C tensor: index it
        with this."""
        top, _, left, _ = self.pad
        return slice(None), slice(top, top + size[0]), slice(left, left + size[1])

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x 3 -> the float32 tensor the model takes (padded, pixel + offset)."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        frame = np.repeat(self.frame(images.shape[1:3]), images.shape[0], axis=0)
        frame[self.inner(images.shape[1:3])] = images
        return frame.astype(np.float32) + np.float32(self.offset)

    def to_dict(self) -> dict:
        return {"offset": self.offset, "pad": list(self.pad), "pad_pixel": list(self.pad_pixel)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "PixelInput":
        d = d or {}
        unknown = sorted(set(d) - {"offset", "pad", "pad_pixel"})
        if unknown:
            raise ConfigError(f"unknown keys in pixel input: {unknown}; expected some of offset, pad, pad_pixel")
        return cls(**d)


class Batches:
    """N images as a model takes them, made a slice at a time from their uint8 pixels by
    `transform` (a PreprocessingSpec's or PixelInput's `apply`, or any batch function). An export
    holds its held-out images this way for its whole run: at 96x96, 2,000 images are 55 MB of
    pixels against 221 MB as float32. Indexing (a slice or an index array) returns the float32
    batch; `np.asarray` makes the whole array, for a consumer that needs it."""

    dtype = np.dtype(np.float32)

    def __init__(self, pixels: np.ndarray, transform):
        self.pixels, self.transform = pixels, transform
        first = np.asarray(transform(np.asarray(pixels[:1])))
        self.shape = (len(pixels), *first.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[index:index + 1 or None][0]
        return np.asarray(self.transform(np.asarray(self.pixels[index])), dtype=np.float32)

    def then(self, fn) -> "Batches":
        """These batches passed through `fn` as well (a layout change)."""
        transform = self.transform
        return Batches(self.pixels, lambda x: fn(transform(x)))

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, np.float32)
        for start in range(0, len(self), 256):
            out[start:start + 256] = self[start:start + 256]
        return out if dtype is None else out.astype(dtype)
