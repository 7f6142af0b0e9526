"""Datasets on real images: folders, zips, CIFAR python batches, the built-in sample, bad input."""
import logging
import mmap
import pickle
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from edgecls.data import SAMPLE_NAME, store, calibration_subset, load_dataset, stratified_split
from edgecls.errors import DataError
from edgecls.preprocess import load_image

from .conftest import TINY_BATCHES, TINY_ZIP

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture()
def tiny_dir(tmp_path):
    """The tiny fixture extracted to a directory: tiny/train/<class>/*.jpg, tiny/test/<class>/*.jpg."""
    with zipfile.ZipFile(TINY_ZIP) as zf:
        zf.extractall(tmp_path)
    return tmp_path / "cifar10-tiny"


def test_zip_with_top_level_folder_reads_train_and_test_splits():
    ds = load_dataset(TINY_ZIP)
    assert list(ds.class_names) == CLASSES
    assert (len(ds.train), len(ds.test)) == (200, 100)
    assert ds.train.images.shape == (200, 32, 32, 3) and ds.train.images.dtype == np.uint8
    assert np.bincount(ds.train.labels).tolist() == [20] * 10
    assert np.bincount(ds.test.labels).tolist() == [10] * 10
    # The first training image is airplane/0000.jpg, decoded with Pillow.
    with zipfile.ZipFile(TINY_ZIP) as zf:
        first = load_image(zf.read("cifar10-tiny/train/airplane/0000.jpg"))
    np.testing.assert_array_equal(ds.train.images[0], first)


def test_directory_and_zip_give_the_same_arrays(tiny_dir):
    a, b = load_dataset(tiny_dir), load_dataset(TINY_ZIP)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)


def test_val_folder_counts_as_test_split(tiny_dir):
    (tiny_dir / "test").rename(tiny_dir / "val")
    ds = load_dataset(tiny_dir)
    assert len(ds.test) == 100 and "val/" in ds.split


def test_single_folder_is_split_deterministically(tiny_dir):
    single = tiny_dir / "train"
    a = load_dataset(single, test_fraction=0.25, seed=3)
    b = load_dataset(single, test_fraction=0.25, seed=3)
    c = load_dataset(single, test_fraction=0.25, seed=4)
    assert (len(a.train), len(a.test)) == (150, 50)
    assert np.bincount(a.test.labels).tolist() == [5] * 10  # stratified
    np.testing.assert_array_equal(a.test.images, b.test.images)
    assert not np.array_equal(a.test.images, c.test.images)


def test_odd_images_are_converted_and_corrupt_files_skipped(tiny_dir, caplog):
    cls = tiny_dir / "train" / "cat"
    src = Image.open(cls / "0000.jpg")
    src.convert("L").save(cls / "gray.png")
    src.convert("RGBA").save(cls / "rgba.png")
    src.resize((57, 41)).save(cls / "odd.bmp")
    (cls / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (cls / "notes.txt").write_text("skipped and counted: not an image extension")
    with caplog.at_level(logging.WARNING, logger="edgecls"):
        ds = load_dataset(tiny_dir)
    assert ds.skipped == 2
    assert any("broken.jpg" in r.message for r in caplog.records)
    assert len(ds.train) == 203
    assert ds.train.images.shape[1:] == (32, 32, 3)
    gray = load_image(cls / "gray.png")
    assert gray.shape == (32, 32, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    assert load_image(cls / "odd.bmp", (32, 32)).shape == (32, 32, 3)


def test_bad_datasets_raise_clear_errors(tmp_path, tiny_dir):
    with pytest.raises(DataError, match="dataset not found"):
        load_dataset(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        load_dataset(empty)
    (tiny_dir / "train" / "unicorn").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) with no images: \['unicorn'\]"):
        load_dataset(tiny_dir)
    notzip = tmp_path / "data.zip"
    notzip.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError):
        load_dataset(notzip)


def test_cifar_python_batches_lossless():
    ds = load_dataset(TINY_BATCHES)
    assert (len(ds.train), len(ds.test)) == (80, 40)
    assert list(ds.class_names) == CLASSES
    raw = pickle.loads((TINY_BATCHES / "test_batch").read_bytes(), encoding="bytes")
    # Channel-major rows: pixel (0, 0) of image 0 is data[0], data[1024], data[2048].
    row = raw[b"data"][0]
    assert ds.test.images[0, 0, 0].tolist() == [row[0], row[1024], row[2048]]
    assert ds.test.images[0, 31, 31].tolist() == [row[1023], row[2047], row[3071]]
    assert ds.test.labels.tolist() == raw[b"labels"]


def test_crafted_cifar_batch_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "batches"
    shutil.copytree(TINY_BATCHES, bad)
    (bad / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"refused to load: the pickle references (posix|os)\.system"):
        load_dataset(bad)
    assert not marker.exists()


def test_truncated_cifar_batch(tmp_path):
    bad = tmp_path / "batches"
    shutil.copytree(TINY_BATCHES, bad)
    data = (bad / "data_batch_1").read_bytes()
    (bad / "data_batch_1").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable CIFAR batch"):
        load_dataset(bad)


def test_cifar10_by_name_from_edgecls_data(tmp_path, monkeypatch):
    shutil.copytree(TINY_BATCHES, tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv("EDGECLS_DATA", str(tmp_path))
    ds = load_dataset("cifar10")
    assert ds.name == "cifar10" and len(ds.test) == 40


def test_cifar10_offline_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLS_DATA", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def offline():
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr("edgecls.data._download_cifar10", offline)
    with pytest.raises(DataError, match="not available locally.*download failed.*EDGECLS_DATA"):
        load_dataset("cifar10")


def test_builtin_sample_is_real_cifar10():
    ds = load_dataset(SAMPLE_NAME)
    assert (len(ds.train), len(ds.test)) == (2000, 1000)
    assert np.bincount(ds.train.labels).tolist() == [200] * 10
    assert np.bincount(ds.test.labels).tolist() == [100] * 10
    # Real photographs, not constant or noise images: varied, and neighbouring pixels correlate.
    x = ds.test.images.astype(np.float64)
    assert 40 < x.std() < 80
    corr = np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1]
    assert corr > 0.8


def test_calibration_subset_comes_from_training_images_only():
    ds = load_dataset(TINY_ZIP)
    calib = calibration_subset(ds, count=50, seed=1)
    assert calib.shape == (50, 32, 32, 3)
    train_rows = {img.tobytes() for img in ds.train.images}
    test_rows = {img.tobytes() for img in ds.test.images}
    assert all(img.tobytes() in train_rows for img in calib)
    assert not any(img.tobytes() in test_rows for img in calib)
    np.testing.assert_array_equal(calib, calibration_subset(ds, count=50, seed=1))
    with pytest.raises(DataError, match="needed for calibration"):
        calibration_subset(ds, count=10_000)


def test_stratified_split_is_deterministic_and_disjoint():
    labels = np.repeat(np.arange(10), 20)
    keep, held = stratified_split(labels, 0.1, seed=0)
    keep2, held2 = stratified_split(labels, 0.1, seed=0)
    assert np.array_equal(held, held2) and np.array_equal(keep, keep2)
    assert not set(keep) & set(held) and len(keep) + len(held) == 200
    assert np.bincount(labels[held]).tolist() == [2] * 10


def test_decode_cache_is_used_and_invalidated(tmp_path, tiny_dir):
    first = load_dataset(tiny_dir)
    extra = tiny_dir / "train" / "dog" / "extra.png"
    Image.open(tiny_dir / "train" / "dog" / "0000.jpg").save(extra)
    second = load_dataset(tiny_dir)
    assert len(second.train) == len(first.train) + 1


def _entries(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGECLS_CACHE", str(cache))
    return cache / "decoded"


def test_decode_cache_is_memory_mapped_and_matches_a_decode_in_memory(tmp_path, tiny_dir, monkeypatch):
    entries = _entries(monkeypatch, tmp_path)
    first = load_dataset(tiny_dir, image_size=40)  # decoded into the cache, read back mapped
    again = load_dataset(tiny_dir, image_size=40)  # read from the cache
    monkeypatch.setenv("EDGECLS_NO_CACHE", "1")
    in_memory = load_dataset(tiny_dir, image_size=40)
    def mapped(array):
        while isinstance(array, np.ndarray):
            array = array.base
        return isinstance(array.obj if isinstance(array, memoryview) else array, mmap.mmap)

    for ds in (first, again):
        assert mapped(ds.train.images) and mapped(ds.test.images) and not ds.train.images.flags.writeable
        assert np.array_equal(ds.train.images, in_memory.train.images)
        assert np.array_equal(ds.test.labels, in_memory.test.labels)
    assert not mapped(in_memory.train.images)
    (entry,) = [p for p in entries.iterdir()]
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]


def _mapping_rss_kb(path) -> int:
    """Resident kB of this process's mapping of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_gather_copies_rows_of_a_cached_file_and_hands_their_pages_back(tmp_path, tiny_dir, monkeypatch):
    entries = _entries(monkeypatch, tmp_path)
    load_dataset(tiny_dir, image_size=96)
    ds = load_dataset(tiny_dir, image_size=96)  # read back mapped
    (entry,) = list(entries.iterdir())
    train = (entry / "x_train.npy").resolve()
    picks = [np.arange(len(ds.train))[::3], np.array([5, 1, 4], dtype=np.int64), np.array([], dtype=np.int64),
             np.array([-1, 0, -2]), np.arange(len(ds.train)) % 2 == 0]
    for index in picks:
        assert np.array_equal(ds.train.take(index), ds.train.images[index])
    if _mapping_rss_kb(train) == 0:
        pytest.skip("this kernel reports no resident pages for the mapping")
    ds.train.take(np.arange(len(ds.train)))
    # Every page gathered was handed back: at most the page holding the .npy header stays resident.
    assert _mapping_rss_kb(train) <= mmap.PAGESIZE // 1024
    first = np.array(ds.train.images[::2])  # plain indexing keeps what it touched
    assert _mapping_rss_kb(train) > 4 * mmap.PAGESIZE // 1024 and len(first)


def test_batches_normalize_a_slice_at_a_time_and_equal_the_whole(tmp_path):
    from edgecls.preprocess import Batches, PreprocessingSpec
    from edgecls.runtime.isolated import save_float32

    spec = PreprocessingSpec(input_size=(8, 8), scale=1 / 127.5, mean=(1, 1, 1), std=(1, 1, 1))
    pixels = np.random.default_rng(0).integers(0, 256, (600, 8, 8, 3), dtype=np.uint8)
    calls = []
    batches = Batches(pixels, lambda x: calls.append(len(x)) or spec.apply(x))
    whole = spec.apply(pixels)
    assert batches.shape == whole.shape and len(batches) == 600 and batches.ndim == 4
    assert np.array_equal(batches[10:20], whole[10:20]) and np.array_equal(batches[[3, 7]], whole[[3, 7]])
    assert np.array_equal(batches[5], whole[5])
    calls.clear()
    assert np.array_equal(np.asarray(batches), whole) and max(calls) <= 256
    nchw = batches.then(lambda x: x.transpose(0, 3, 1, 2))
    assert nchw.shape == (600, 3, 8, 8) and np.array_equal(nchw[:4], whole[:4].transpose(0, 3, 1, 2))
    calls.clear()
    save_float32(tmp_path / "x.npy", batches)
    assert max(calls) <= 256 and np.array_equal(np.load(tmp_path / "x.npy"), whole)


@pytest.mark.parametrize("damage", ["labels out of range", "meta not json", "short images", "pickled labels"])
def test_a_damaged_cache_entry_is_decoded_again_never_trusted(tmp_path, tiny_dir, monkeypatch, damage):
    entries = _entries(monkeypatch, tmp_path)
    want = load_dataset(tiny_dir)
    (entry,) = list(entries.iterdir())
    for part in entry.iterdir():  # fresh copies to damage: `want` has the originals mapped
        data = part.read_bytes()
        part.unlink()
        part.write_bytes(data)
    if damage == "labels out of range":
        np.save(entry / "y_train.npy", np.full(len(want.train), 99, np.int64))
    elif damage == "meta not json":
        (entry / "meta.json").write_text("[" * 100_000)
    elif damage == "short images":
        np.save(entry / "x_test.npy", np.zeros((3, 32, 32, 3), np.uint8))
    else:
        with open(entry / "y_test.npy", "wb") as fh:
            pickle.dump(np.asarray(want.test.labels), fh)
    got = load_dataset(tiny_dir)
    assert np.array_equal(got.train.images, want.train.images) and np.array_equal(got.train.labels, want.train.labels)
    assert np.array_equal(got.test.images, want.test.images) and np.array_equal(got.test.labels, want.test.labels)
    assert store.load(entry.name) is not None  # and the entry is whole again


def test_an_unwritable_cache_or_a_failed_decode_leaves_no_entry(tmp_path, tiny_dir, monkeypatch):
    entries = _entries(monkeypatch, tmp_path)
    entries.parent.mkdir()
    entries.write_text("not a folder")  # the cache cannot be made: decoded in memory, no error
    assert len(load_dataset(tiny_dir).train) == 200
    entries.unlink()
    (tiny_dir / "test").rename(tiny_dir / "elsewhere")  # train/ without test/: the decode fails
    with pytest.raises(DataError, match="no test/ or val/"):
        load_dataset(tiny_dir)
    assert not entries.exists() or not any(entries.iterdir())


def test_align_labels_maps_by_name_by_index_or_refuses():
    from edgecls.data import Dataset, ImageSet
    from edgecls.evaluation import align_labels

    empty = ImageSet(np.zeros((0, 4, 4, 3), np.uint8), np.zeros(0, np.int64))
    dataset = Dataset("d", "d", ("cat", "dog", "frog"), empty, empty)
    assert align_labels(dataset, ["frog", "cat", "dog", "ship"]).tolist() == [1, 2, 0]  # by name, model order
    for bare in (["0", "1", "2"], [], None):  # index labels, or none at all (a bare .tflite): by position
        assert align_labels(dataset, bare).tolist() == [0, 1, 2]
    with pytest.raises(DataError, match=r"classes the model does not know: \['frog'\]"):
        align_labels(dataset, ["cat", "dog", "ship"])
    with pytest.raises(DataError, match="does not know"):
        align_labels(dataset, ["0", "1"])  # index labels, but too few classes
