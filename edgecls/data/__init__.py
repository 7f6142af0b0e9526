"""Datasets: image folders (directory or zip), CIFAR-10 python batches, `cifar10` by name and the
built-in CIFAR-10 sample. Images are decoded once to uint8 arrays at the model's input size
(cached on disk and read memory-mapped, see `edgecls.data.store`), then fed to tf.data pipelines
(see `edgecls.data.pipeline`)."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from . import store
from .cifar import is_cifar_dir, read_cifar_dir

log = logging.getLogger("edgecls")

SAMPLE_NAME = "cifar10-sample"
SAMPLE_PATH = Path(__file__).with_name("cifar10_sample.zip")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CACHE_VERSION = "2"


@dataclass(frozen=True)
class ImageSet:
    """Decoded images (uint8 N x H x W x 3) with integer labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])

    def take(self, index) -> np.ndarray:
        """The images at `index` (uint8), copied without leaving the rest of a cached file resident
        (edgecls.data.store.gather)."""
        return store.gather(self.images, index)


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset with a train and a test split."""

    name: str
    source: str
    class_names: tuple[str, ...]
    train: ImageSet
    test: ImageSet
    skipped: int = 0
    split: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[1:3])

    def summary(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.class_names),
            "train_images": len(self.train),
            "test_images": len(self.test),
            "skipped_files": self.skipped,
            "split": self.split,
            "image_size": list(self.image_size),
        }


def _cache_key(path: Path, size, test_fraction, seed) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if path.is_dir():
        # A directory's own mtime changes when files are added or removed, not when one is edited;
        # hash the listing with each file's size and mtime so any change misses the cache.
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                s = p.stat()
                h.update(f"{p.relative_to(path)}:{s.st_size}:{s.st_mtime_ns}\n".encode())
        stamp = h.hexdigest()
    else:
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    raw = f"{_CACHE_VERSION}|{path.resolve()}|{stamp}|{tuple(size)}|{test_fraction}|{seed}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _find_cifar10() -> Path:
    """A local cifar-10-batches-py (or the JPEG zip) from $EDGECLS_DATA or the Keras cache;
    else Keras's download; else a clear error."""
    candidates = []
    env = os.environ.get("EDGECLS_DATA")
    if env:
        base = Path(env)
        candidates += [base, base / "cifar-10-batches-py", base / "cifar10-jpeg.zip", base / "cifar10-jpeg"]
    keras_home = Path(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")))
    candidates += [keras_home / "datasets" / "cifar-10-batches-py"]
    for c in candidates:
        if is_cifar_dir(c) or (c.suffix == ".zip" and c.is_file()) or (c.name == "cifar10-jpeg" and c.is_dir()):
            return c
    looked = ", ".join(str(c) for c in candidates)
    try:
        path = _download_cifar10()
    except Exception as exc:  # offline, DNS failure, proxy ...
        raise DataError(
            f"CIFAR-10 is not available locally (looked in {looked}) and the download failed "
            f"({exc.__class__.__name__}); set EDGECLS_DATA to a folder holding cifar-10-batches-py "
            f"or cifar10-jpeg.zip, or pass --data PATH"
        ) from None
    return path


def _download_cifar10() -> Path:
    from .._deps import keras

    path = keras().utils.get_file("cifar-10-batches-py", origin=CIFAR10_URL, untar=True)
    return Path(path)


def resolve_source(data: str | os.PathLike) -> tuple[str, Path]:
    """Map a --data value to (dataset name, path)."""
    text = os.fspath(data)
    if text in (SAMPLE_NAME, "sample"):
        if not SAMPLE_PATH.exists():
            raise DataError(f"the built-in sample is missing from the installation ({SAMPLE_PATH}); reinstall edgecls")
        return SAMPLE_NAME, SAMPLE_PATH
    if text == "cifar10":
        return "cifar10", _find_cifar10()
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset not found: {text}; pass an image folder, a .zip of one, a cifar-10-batches-py "
            f"folder, 'cifar10' or '{SAMPLE_NAME}'"
        )
    return path.stem if path.is_file() else path.name, path


def load_dataset(
    data: str | os.PathLike = SAMPLE_NAME,
    image_size: int | tuple[int, int] = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Load a labelled dataset, decoded to uint8 arrays at `image_size`.

    `data` is an image folder or a .zip of one, a cifar-10-batches-py folder, `"cifar10"` (a local
    copy, else Keras's download) or `"cifar10-sample"` (about 2,000 train and 1,000 test real
    CIFAR-10 images shipped with edgecls). A single folder without train/test splits is split
    deterministically with `test_fraction` and `seed`.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    name, path = resolve_source(data)
    key = _cache_key(path, size, test_fraction, seed)
    arrays = store.load(key)
    if arrays is None:
        arrays = _decode_into(store.Entry(key), path, size, test_fraction, seed)
    meta = arrays["meta"]
    if len(arrays["y_test"]) == 0:
        raise DataError(f"{path}: the test split holds no readable images")
    return Dataset(
        name=name,
        source=str(path),
        class_names=tuple(meta["classes"]),
        train=ImageSet(arrays["x_train"], arrays["y_train"]),
        test=ImageSet(arrays["x_test"], arrays["y_test"]),
        skipped=meta["skipped"],
        split=meta["split"],
    )


def _decode_into(entry: store.Entry, path: Path, size, test_fraction, seed) -> dict:
    """Decode the data set at `path` into `entry`'s sinks (the cache, else memory); the arrays and
    their metadata."""
    try:
        if is_cifar_dir(path):
            x_train, y_train, x_test, y_test, names = read_cifar_dir(path)
            resize = None if size == (32, 32) else (lambda chunk: _resize_all(chunk, size))
            x_train = store.fill(entry.sink("train", len(x_train), size), x_train, resize)
            x_test = store.fill(entry.sink("test", len(x_test), size), x_test, resize)
            skipped, note = 0, "CIFAR python batches (data_batch_* / test_batch)"
        else:
            from .folder import read_image_folder

            x_train, y_train, x_test, y_test, names, skipped, note = read_image_folder(
                path, size, test_fraction, seed, sink=entry.sink)
        meta = {"classes": [str(n) for n in names], "skipped": int(skipped), "split": note}
        arrays = entry.commit({"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, meta)
    except OSError as exc:
        entry.abandon()
        if not entry.on_disk:
            raise
        log.debug("could not write the decode cache (%s); decoding into memory", exc)
        return _decode_into(store.Entry(None), path, size, test_fraction, seed)
    except BaseException:
        entry.abandon()
        raise
    return {**arrays, "meta": arrays.get("meta", meta)}


def _resize_all(images: np.ndarray, size) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(images), size[0], size[1], 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))
    return out


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with `fraction` of each class held out, deterministic for a seed."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = int(round(len(idx) * fraction))
        if fraction > 0 and len(idx) > 1:
            n = max(n, 1)
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def sample_indices(count_total: int, count: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random subset of `count` of `count_total` items (all when None).

    Datasets are stored class by class, so "the first N" would be a few classes only."""
    if count is None or count >= count_total:
        return np.arange(count_total)
    return np.sort(np.random.default_rng(seed).permutation(count_total)[:count])


def calibration_subset(dataset: Dataset, count: int = 300, seed: int = 0) -> np.ndarray:
    """The representative dataset for quantization: `count` real images drawn, stratified by
    class, from the *training* split only (never the test split). Returns uint8 N x H x W x 3."""
    return dataset.train.take(calibration_indices(dataset, count, seed))


def calibration_indices(dataset: Dataset, count: int = 300, seed: int = 0) -> np.ndarray:
    """The training-split indices of `calibration_subset` (sorted)."""
    train = dataset.train
    if count < 1:
        raise ConfigError(f"calibration count must be at least 1, got {count}")
    if len(train) < count:
        raise DataError(f"the training split has {len(train)} images; {count} are needed for calibration")
    if count == len(train):
        return np.arange(count)
    _, held = stratified_split(train.labels, count / len(train), seed)
    rng = np.random.default_rng(seed)
    held = held[rng.permutation(len(held))][:count]
    return np.sort(held)


__all__ = [
    "Dataset",
    "ImageSet",
    "load_dataset",
    "calibration_subset",
    "calibration_indices",
    "stratified_split",
    "sample_indices",
    "resolve_source",
    "SAMPLE_NAME",
]
