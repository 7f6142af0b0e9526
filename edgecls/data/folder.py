"""Image-folder datasets, from a directory or a .zip of one.

Layouts: `root/train/<class>/*` with `root/test/<class>/*` (or `val/`), or a single
`root/<class>/*` folder that is split deterministically. A zip may wrap the root in a single
top-level folder. Files are decoded with Pillow (the same decoder the runtime uses).

Hostile content is bounded: a file over MAX_IMAGE_BYTES (a zip member by its recorded size, read
with the cap as well), an image over Pillow's decompression-bomb limit, a corrupt file and every
non-image file in a class folder are skipped with a warning and counted.
"""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from ..preprocess import IMAGE_EXTENSIONS, MAX_IMAGE_BYTES, load_image
from .store import CHUNK, MemorySink

log = logging.getLogger("edgecls")

TEST_SPLIT_NAMES = ("test", "val", "valid", "validation")
_MAX_SKIP_WARNINGS = 5


@dataclass
class _Tree:
    """Relative POSIX paths of image files, and a reader for them."""

    files: list[PurePosixPath]
    dirs: set[PurePosixPath]
    read: object  # callable(PurePosixPath) -> bytes
    source: str
    other: list = field(default_factory=list)  # non-image files found in class folders
    outside: list = field(default_factory=list)  # symbolic links leading out of the dataset (skipped)


def _is_hidden(p: PurePosixPath) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in p.parts)


def _dir_tree(root: Path) -> _Tree:
    """The files under `root`, following symbolic links that stay inside it; a link leading out of
    the dataset (a file or a folder) is skipped, counted and warned about like an unreadable file."""
    import os

    base = root.resolve()
    files, dirs, outside, seen = [], set(), [], {base}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        rel_here = PurePosixPath(here.relative_to(root).as_posix())
        for name in list(dirnames):
            rel = rel_here / name
            target = (here / name).resolve()
            if _is_hidden(rel):
                dirnames.remove(name)
            elif not target.is_relative_to(base) or target in seen:
                dirnames.remove(name)  # out of the dataset, or a loop
                if not target.is_relative_to(base):
                    outside.append(rel)
            else:
                seen.add(target)
                dirs.add(rel)
        for name in filenames:
            rel = rel_here / name
            if _is_hidden(rel):
                continue
            if not (here / name).resolve().is_relative_to(base):
                outside.append(rel)
            elif (here / name).is_file():
                files.append(rel)

    def read(rel):
        path = root / rel
        if not path.resolve().is_relative_to(base):
            raise DataError(f"{rel}: a symbolic link leading out of the dataset")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise DataError(f"{rel}: over the {MAX_IMAGE_BYTES >> 20} MiB limit for an image file")
        return path.read_bytes()

    return _Tree(sorted(files), dirs, read, str(root), outside=outside)


def _zip_tree(path: Path) -> tuple[_Tree, zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from None
    files, dirs = [], set()
    for info in zf.infolist():
        rel = PurePosixPath(info.filename.rstrip("/"))
        if not rel.parts or _is_hidden(rel) or ".." in rel.parts or rel.is_absolute():
            continue
        if info.is_dir():
            dirs.add(rel)
        else:
            files.append(rel)
        dirs.update(p for p in rel.parents if str(p) != ".")
    prefix = None
    tops = {f.parts[0] for f in files}
    if len(tops) == 1 and all(len(f.parts) > 1 for f in files):
        prefix = PurePosixPath(next(iter(tops)))
    if prefix is not None:
        files = [f.relative_to(prefix) for f in files]
        dirs = {d.relative_to(prefix) for d in dirs if d != prefix and prefix in d.parents}

    def read(rel, _zf=zf, _prefix=prefix):
        info = _zf.getinfo(str(_prefix / rel) if _prefix else str(rel))
        if info.file_size > MAX_IMAGE_BYTES:
            raise DataError(f"{rel}: {info.file_size:,} bytes uncompressed, over the {MAX_IMAGE_BYTES >> 20} MiB limit "
                            f"for an image file")
        try:
            with _zf.open(info) as member:
                data = member.read(MAX_IMAGE_BYTES + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, NotImplementedError) as exc:
            raise DataError(f"{rel}: unreadable zip member ({exc})") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise DataError(f"{rel}: over the {MAX_IMAGE_BYTES >> 20} MiB limit for an image file")
        return data

    return _Tree(sorted(files), dirs, read, str(path)), zf


def _images_by_class(tree: _Tree, base: PurePosixPath | None) -> dict[str, list[PurePosixPath]]:
    """Class folder name -> image files directly below it (sorted), under `base`. Files of other
    types in a class folder are counted in `tree.other` and skipped with a warning."""
    depth = len(base.parts) if base else 0
    classes: dict[str, list[PurePosixPath]] = {}
    for d in tree.dirs:
        if len(d.parts) == depth + 1 and (base is None or d.parent == base):
            classes[d.name] = []
    for f in tree.files:
        if len(f.parts) == depth + 2 and (base is None or f.parents[1] == base):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                classes.setdefault(f.parts[depth], []).append(f)
            else:
                tree.other.append(f)
    return {k: sorted(v) for k, v in sorted(classes.items())}


def _decode(tree: _Tree, items: list[tuple[PurePosixPath, int]], size, sink=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode `items` at `size` into `sink` (a store sink; in memory when None), a chunk at a time.
    Returns (images, labels, files skipped)."""
    sink = sink if sink is not None else MemorySink(len(items), size)
    chunk = np.empty((max(1, min(CHUNK, len(items))), size[0], size[1], 3), dtype=np.uint8)
    labels = np.empty(len(items), dtype=np.int64)
    n = k = skipped = 0
    for rel, label in items:
        try:
            chunk[k] = load_image(tree.read(rel), size)
        except (DataError, OSError) as exc:
            skipped += 1
            if skipped <= _MAX_SKIP_WARNINGS:
                log.warning("skipped %s/%s: %s", tree.source, rel, str(exc).split("(", 1)[-1].rstrip(")"))
            continue
        labels[n] = label
        n += 1
        k += 1
        if k == len(chunk):
            sink.append(chunk)
            k = 0
    if k:
        sink.append(chunk[:k])
    if skipped > _MAX_SKIP_WARNINGS:
        log.warning("skipped %d unreadable files in %s in all", skipped, tree.source)
    return sink.finish(), labels[:n], skipped


def _open_tree(path: Path) -> tuple[_Tree, zipfile.ZipFile | None] | None:
    """The files of a folder or of a zip (with the open ZipFile to close), or None for anything else."""
    if path.is_dir():
        return _dir_tree(path), None
    if path.is_file() and zipfile.is_zipfile(path):
        return _zip_tree(path)
    return None


def read_image_folder(path: str | Path, size, test_fraction: float = 0.2, seed: int = 0, sink=None):
    """Return (train_images, train_labels, test_images, test_labels, class_names, skipped, split_note).
    `sink(split, capacity, size)`, when given, makes the store sink each split is decoded into."""
    path = Path(path)
    opened = _open_tree(path)
    if opened is None:
        if path.is_file():
            raise DataError(f"{path}: expected an image folder, a .zip of one or a cifar-10-batches-py folder")
        raise DataError(f"dataset not found: {path}")
    tree, zf = opened
    try:
        return _read_tree(tree, size, test_fraction, seed, sink)
    finally:
        if zf is not None:
            zf.close()


def _read_tree(tree: _Tree, size, test_fraction, seed, sink=None):
    if not tree.files and not tree.dirs:
        raise DataError(f"{tree.source}: the dataset is empty; expected <class>/<image> folders")
    top_dirs = {d.name for d in tree.dirs if len(d.parts) == 1}
    test_name = next((n for n in TEST_SPLIT_NAMES if n in top_dirs), None)
    if "train" in top_dirs:
        if test_name is None:
            raise DataError(
                f"{tree.source}: found train/ but no test/ or val/ folder; add one, or put the class folders at the top level to split them automatically"
            )
        train_classes = _images_by_class(tree, PurePosixPath("train"))
        test_classes = _images_by_class(tree, PurePosixPath(test_name))
        _check_classes(tree.source + "/train", train_classes)
        _check_classes(f"{tree.source}/{test_name}", test_classes)
        extra = sorted(set(test_classes) - set(train_classes))
        if extra:
            raise DataError(f"{tree.source}: {test_name}/ has classes that train/ lacks: {extra}")
        names = tuple(train_classes)
        index = {n: i for i, n in enumerate(names)}
        train_items = [(f, index[c]) for c, fs in train_classes.items() for f in fs]
        test_items = [(f, index[c]) for c, fs in test_classes.items() for f in fs]
        note = f"train/ and {test_name}/ folders"
    else:
        classes = _images_by_class(tree, None)
        _check_classes(tree.source, classes)
        names = tuple(classes)
        rng = np.random.default_rng(seed)
        train_items, test_items = [], []
        for label, (c, fs) in enumerate(classes.items()):
            order = rng.permutation(len(fs))
            n_test = int(round(len(fs) * test_fraction)) if len(fs) > 1 else 0
            test_idx = set(order[:n_test].tolist())
            for i, f in enumerate(fs):
                (test_items if i in test_idx else train_items).append((f, label))
        note = f"one folder split {1 - test_fraction:.0%}/{test_fraction:.0%} (seed {seed})"
    for rel in tree.other[:_MAX_SKIP_WARNINGS]:
        log.warning("skipped %s/%s: not an image file (%s)", tree.source, rel, ", ".join(IMAGE_EXTENSIONS))
    for rel in tree.outside[:_MAX_SKIP_WARNINGS]:
        log.warning("skipped %s/%s: a symbolic link leading out of the dataset", tree.source, rel)
    def make(split, items):
        return sink(split, len(items), size) if sink is not None else None

    x_train, y_train, skip_train = _decode(tree, train_items, size, make("train", train_items))
    x_test, y_test, skip_test = _decode(tree, test_items, size, make("test", test_items))
    if len(x_train) == 0:
        raise DataError(f"{tree.source}: no readable training images")
    return x_train, y_train, x_test, y_test, names, skip_train + skip_test + len(tree.other) + len(tree.outside), note


def read_unlabelled(path: str | Path, size, count: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """`count` images drawn (seeded) from every image file under `path` (a folder or a .zip, classes
    or none): calibration data needs no labels. Returns (uint8 N x H x W x 3, files skipped)."""
    path = Path(path)
    opened = _open_tree(path)
    if opened is None:
        raise DataError(f"calibration images not found: {path}; pass a folder or a .zip of images")
    tree, zf = opened
    try:
        files = [f for f in tree.files if f.suffix.lower() in IMAGE_EXTENSIONS]
        if len(files) < count:
            raise DataError(f"{path}: {len(files)} images, but the calibration needs {count}; lower --calibration-count "
                            f"(at least 32) or add images")
        order = np.random.default_rng(seed).permutation(len(files))
        images, _, skipped = _decode(tree, [(files[i], 0) for i in order[:count]], size)
    finally:
        if zf is not None:
            zf.close()
    if len(images) == 0:
        raise DataError(f"{path}: no readable images for calibration")
    return images, skipped


def _check_classes(where: str, classes: dict[str, list]) -> None:
    if not classes:
        raise DataError(f"{where}: no class folders found; expected {where}/<class>/<image>")
    empty = [c for c, fs in classes.items() if not fs]
    if empty:
        raise DataError(
            f"{where}: class folder(s) with no images: {empty}; add images ({', '.join(IMAGE_EXTENSIONS)}) or remove the folder"
        )
