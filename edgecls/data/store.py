"""Where decoded images live: the on-disk decode cache, and the sinks decoding writes into.

A dataset is decoded once per (source, input size, split) into the cache as plain `.npy` files and
read back memory-mapped, so a command holds in memory only the images it touches: an export that
calibrates on 300 training images and evaluates 2,000 test images of a 96x96 data set reads those,
not the 1.7 GB of all 60,000. Decoding streams into the cache in chunks (FileSink), so the first run
is bounded the same way. With the cache off (EDGECLS_NO_CACHE) or unwritable, images are decoded
into memory (MemorySink) as before.

An entry is a folder `<key>/` with x_train.npy, y_train.npy, x_test.npy, y_test.npy and meta.json,
written under a temporary name and renamed into place when complete. The cache is edgecls's own, but
it is read like any other file: an entry whose arrays or metadata do not fit together is ignored and
decoded again, never trusted.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger("edgecls")

CHUNK = 1024  # images decoded before they are handed to the sink
_SPLITS = ("train", "test")
_MAX_META_BYTES = 1 << 20


def cache_dir() -> Path:
    root = os.environ.get("EDGECLS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgecls"
    )
    return Path(root) / "decoded"


def cache_enabled() -> bool:
    return not os.environ.get("EDGECLS_NO_CACHE")


class MemorySink:
    """Decoded images collected in one array (sized for every item; untouched pages cost nothing)."""

    def __init__(self, capacity: int, size):
        self._array = np.empty((capacity, size[0], size[1], 3), dtype=np.uint8)
        self.count = 0

    def append(self, rows: np.ndarray) -> None:
        self._array[self.count:self.count + len(rows)] = rows
        self.count += len(rows)

    def finish(self) -> np.ndarray:
        return self._array[:self.count]


class FileSink:
    """Decoded images appended to a `.npy` file, never all in memory: rows go to a raw file as they
    come (the count is known only at the end, when unreadable files have been skipped), then the
    header and the rows are written to the `.npy` and the file is mapped read-only."""

    def __init__(self, path: Path, size):
        self.path = Path(path)
        self._raw_path = self.path.with_suffix(".raw")
        self._raw = open(self._raw_path, "wb")
        self._shape = (int(size[0]), int(size[1]), 3)
        self.count = 0

    def append(self, rows: np.ndarray) -> None:
        self._raw.write(np.ascontiguousarray(rows, dtype=np.uint8).tobytes())
        self.count += len(rows)

    def finish(self) -> np.ndarray:
        self._raw.close()
        header = {"descr": "|u1", "fortran_order": False, "shape": (self.count, *self._shape)}
        with open(self.path, "wb") as out, open(self._raw_path, "rb") as raw:
            np.lib.format.write_array_header_2_0(out, header)
            shutil.copyfileobj(raw, out, 16 << 20)
        self._raw_path.unlink()
        return mapped(self.path)

    def discard(self) -> None:
        self._raw.close()
        self._raw_path.unlink(missing_ok=True)


def mapped(path: Path) -> np.ndarray:
    """The uint8 array of the .npy file at `path`, memory-mapped read-only with the kernel's
    read-ahead off (MADV_RANDOM): a command that picks 2,000 scattered images of 10,000 then brings
    those into memory, not the whole file around them. ValueError when it is not such a file."""
    import mmap

    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{path}: unsupported .npy version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
        if dtype != np.uint8 or fortran or len(shape) != 4:
            raise ValueError(f"{path}: not a uint8 N x H x W x C array")
        size = int(np.prod(shape))
        if os.fstat(fh.fileno()).st_size != offset + size:
            raise ValueError(f"{path}: {os.fstat(fh.fileno()).st_size} bytes, not the {offset + size} its header says")
        if size == 0:
            return np.zeros(shape, np.uint8)
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(mm, dtype=np.uint8, count=size, offset=offset).reshape(shape)


def _mapping_of(images: np.ndarray):
    """The mmap an array (or a view of one) `mapped` returned reads from, else None."""
    import mmap

    base = images
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def gather(images: np.ndarray, index: np.ndarray, chunk: int = 256) -> np.ndarray:
    """images[index] as a new array. For an array `mapped` returned, a chunk at a time, each chunk's
    pages of the mapping handed back to the kernel (MADV_DONTNEED) once copied: on a read fault the
    kernel maps up to 64 KB of cached file around the page asked for (fault-around, which
    MADV_RANDOM does not turn off), so 2,000 scattered 96x96 images of 10,000 otherwise leave up to
    the whole 276 MB file resident in this process. The page cache keeps the data either way."""
    import mmap

    index = np.asarray(index)
    mm = _mapping_of(images) if isinstance(images, np.ndarray) and images.ndim == 4 else None
    if mm is None or not images.flags.c_contiguous or not hasattr(mmap, "MADV_DONTNEED") or not len(images):
        return images[index]
    if index.dtype == np.bool_:
        index = np.flatnonzero(index)
    index = np.where(index < 0, index + len(images), index)  # what numpy's negative indices mean
    offset = images.ctypes.data - np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data  # of row 0 in the mapping
    row = int(np.prod(images.shape[1:]))
    out = np.empty((len(index), *images.shape[1:]), dtype=images.dtype)
    page = mmap.PAGESIZE
    for start in range(0, len(index), chunk):
        part = index[start:start + chunk]
        out[start:start + len(part)] = images[part]
        if len(part):
            first = (offset + int(part.min()) * row) // page * page
            end = min(len(mm), offset + (int(part.max()) + 1) * row)
            mm.madvise(mmap.MADV_DONTNEED, first, end - first)
    return out


def fill(sink, images: np.ndarray, convert=None) -> np.ndarray:
    """Hand `images` (already decoded) to `sink` in chunks, each passed through `convert` (a resize)."""
    for start in range(0, len(images), CHUNK):
        chunk = images[start:start + CHUNK]
        sink.append(convert(chunk) if convert else chunk)
    return sink.finish()


class Entry:
    """One cache entry being written: `sink(split, capacity, size)` gives each split's sink;
    `commit(...)` writes the labels and metadata and moves the entry into place. Without a usable
    cache it hands out memory sinks and `commit` returns the arrays as they are."""

    def __init__(self, key: str | None):
        self.key, self.staging, self._sinks = key, None, []
        if key is None or not cache_enabled():
            return
        try:
            cache_dir().mkdir(parents=True, exist_ok=True)
            self.staging = cache_dir() / f".{key}.partial-{os.getpid()}"
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir()
        except OSError as exc:  # the cache is an optimization; a read-only home must not fail a run
            log.debug("could not write the decode cache: %s", exc)
            self.staging = None

    @property
    def on_disk(self) -> bool:
        return self.staging is not None

    def sink(self, split: str, capacity: int, size):
        sink = FileSink(self.staging / f"x_{split}.npy", size) if self.on_disk else MemorySink(capacity, size)
        self._sinks.append(sink)
        return sink

    def abandon(self) -> None:
        for sink in self._sinks:
            if isinstance(sink, FileSink):
                sink.discard()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self, arrays: dict, meta: dict) -> dict:
        """`arrays`: x_train, y_train, x_test, y_test (the x arrays from this entry's sinks)."""
        if not self.on_disk:
            return arrays
        for split in _SPLITS:
            np.save(self.staging / f"y_{split}.npy", np.asarray(arrays[f"y_{split}"], dtype=np.int64))
        (self.staging / "meta.json").write_text(json.dumps(meta))
        target = cache_dir() / self.key
        try:
            if os.path.lexists(target) and load(self.key) is None:
                _remove(target)  # a damaged entry: replaced (never rewritten in place: it may be mapped)
            os.rename(self.staging, target)
        except OSError:  # another process finished the same entry first: use it, drop ours
            shutil.rmtree(self.staging, ignore_errors=True)
        return load(self.key) or arrays


def _remove(target: Path) -> None:
    """Move a cache entry aside, then delete it: a process that has its files mapped keeps them
    (deleting a mapped file is safe; truncating it would end that process with SIGBUS)."""
    stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
    os.rename(target, stale)
    if stale.is_dir() and not stale.is_symlink():
        shutil.rmtree(stale, ignore_errors=True)
    else:
        stale.unlink()


def load(key: str | None) -> dict | None:
    """The cached arrays (x memory-mapped) and metadata of `key`, or None when there is no entry or
    its parts do not fit together (then it is decoded again)."""
    if key is None or not cache_enabled():
        return None
    folder = cache_dir() / key
    if not folder.is_dir() or folder.is_symlink():
        return None
    try:
        meta_path = folder / "meta.json"
        if meta_path.stat().st_size > _MAX_META_BYTES:
            return None
        meta = json.loads(meta_path.read_text())
        classes, skipped, split = meta.get("classes"), meta.get("skipped"), meta.get("split")
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
                and type(skipped) is int and skipped >= 0 and isinstance(split, str)):
            return None
        arrays = {}
        for name in _SPLITS:
            x = mapped(folder / f"x_{name}.npy")
            y = np.load(folder / f"y_{name}.npy", allow_pickle=False)
            if (x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or y.dtype != np.int64 or y.ndim != 1
                    or len(y) != len(x) or (len(y) and (y.min() < 0 or y.max() >= len(classes)))):
                return None
            arrays[f"x_{name}"], arrays[f"y_{name}"] = x, y
        if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
            return None
    except (OSError, ValueError, RecursionError):
        return None
    return {**arrays, "meta": {"classes": classes, "skipped": skipped, "split": split}}
