"""The CIFAR-10 "python version" format (cifar-10-batches-py), read with a restricted unpickler.

A pickle can run arbitrary code when loaded. The batch files need only a dict of bytes/ints/lists
and one uint8 numpy array, so the unpickler admits exactly the globals that rebuild a numpy
array and refuses everything else before it is called.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError

# (module, name) pairs a CIFAR batch may reference. numpy pickles name the array
# reconstructor under numpy.core (numpy 1.x, the original files) or numpy._core (numpy 2.x).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Python-2 pickles re-saved by Python 3 encode byte strings through _codecs.encode.
    ("_codecs", "encode"),
}

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataError(
            f"{self._source}: refused to load: the pickle references {module}.{name}, which a CIFAR "
            f"batch never needs (the file may be malicious); use the original CIFAR-10 files"
        )


def safe_load_pickle(path: str | Path, data: bytes | None = None):
    """Unpickle a CIFAR batch file allowing only what the format needs."""
    source = str(path)
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise DataError(f"{source}: not a readable CIFAR batch ({exc.__class__.__name__}: {exc})") from None


def _key(d: dict, name: str):
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    return None


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 N x 32 x 32 x 3, labels int64 N) of one batch file."""
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a CIFAR batch holds a dict, found {type(obj).__name__}")
    data, labels = _key(obj, "data"), _key(obj, "labels")
    if data is None or labels is None:
        raise DataError(f"{path}: a CIFAR batch needs 'data' and 'labels' entries, found {sorted(map(str, obj))}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of N x 3072, got {type(data).__name__} {shape}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be {data.shape[0]} integers, got {labels.shape} {labels.dtype}")
    # Channel-major rows (1024 R, 1024 G, 1024 B) -> N x 32 x 32 x 3.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def read_class_names(root: Path) -> tuple[str, ...]:
    meta = root / META
    if not meta.exists():
        return CIFAR10_CLASSES
    obj = safe_load_pickle(meta)
    names = _key(obj, "label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list) or not names:
        raise DataError(f"{meta}: expected a 'label_names' list")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def is_cifar_dir(path: Path) -> bool:
    return path.is_dir() and ((path / TEST_BATCH).exists() or (path / TRAIN_BATCHES[0]).exists())


def read_cifar_dir(root: str | Path):
    """Return (train_images, train_labels, test_images, test_labels, class_names)."""
    root = Path(root)
    train_files = [root / f for f in TRAIN_BATCHES if (root / f).exists()]
    if not train_files:
        raise DataError(f"{root}: no data_batch_1..5 files found; expected a cifar-10-batches-py folder")
    if not (root / TEST_BATCH).exists():
        raise DataError(f"{root}: no test_batch file found; expected a cifar-10-batches-py folder")
    parts = [read_batch(f) for f in train_files]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_batch(root / TEST_BATCH)
    names = read_class_names(root)
    top = int(max(y_train.max(initial=0), y_test.max(initial=0)))
    if top >= len(names) or min(y_train.min(initial=0), y_test.min(initial=0)) < 0:
        raise DataError(f"{root}: labels run outside 0..{len(names) - 1} for {len(names)} class names")
    return x_train, y_train, x_test, y_test, names
