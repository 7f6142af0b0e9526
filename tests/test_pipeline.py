"""tf.data pipelines: normalization identical to the runtime's numpy path, seeded augmentation."""
import json

import numpy as np
import pytest

from edgecls.data import load_dataset
from edgecls.data.pipeline import make_dataset
from edgecls.preprocess import PreprocessingSpec

from .conftest import TINY_ZIP


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(TINY_ZIP)


def _first_batch(ds):
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def test_eval_pipeline_matches_numpy_preprocessing_exactly(tiny):
    spec = PreprocessingSpec(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    x, y = _first_batch(make_dataset(tiny.test.images, tiny.test.labels, spec, 64, 10, one_hot=False))
    np.testing.assert_array_equal(x, spec.apply(tiny.test.images[:64]))
    np.testing.assert_array_equal(y, tiny.test.labels[:64])


def test_training_augmentation_is_seeded(tiny):
    spec = PreprocessingSpec()
    make = lambda seed: make_dataset(tiny.train.images, tiny.train.labels, spec, 200, 10, training=True, seed=seed)  # noqa: E731
    a, ya = _first_batch(make(7))
    b, yb = _first_batch(make(7))
    c, _ = _first_batch(make(8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a, c)
    assert ya.shape == (200, 10) and np.all(ya.sum(1) == 1)  # one-hot


def test_augmentation_crops_and_flips_real_images(tiny):
    spec = PreprocessingSpec(scale=1.0)  # keep pixel values to compare with the source images
    x, y = _first_batch(make_dataset(tiny.train.images, tiny.train.labels, spec, 200, 10, training=True, seed=0, one_hot=False))
    assert x.shape == (200, 32, 32, 3)
    originals = {img.tobytes() for img in tiny.train.images}
    unchanged = sum(img.astype(np.uint8).tobytes() in originals for img in x)
    assert unchanged < 100  # most images were shifted and/or flipped
    # Padding is zeros: a crop shifted by up to 4 pixels leaves black borders on some images.
    assert (x == 0).all(axis=(1, 3)).any()
    # Same label multiset: augmentation never changes labels.
    assert sorted(y.tolist()) == sorted(tiny.train.labels.tolist())


def test_eval_pipeline_is_not_shuffled_or_augmented(tiny):
    spec = PreprocessingSpec(scale=1.0)
    x, _ = _first_batch(make_dataset(tiny.test.images, tiny.test.labels, spec, 100, 10))
    np.testing.assert_array_equal(x.astype(np.uint8), tiny.test.images)


def test_cutout_blanks_one_clipped_square_with_the_mean_pixel(tiny):
    """Same seed with and without cutout: the same crops and flips, and each image differs only
    inside one square of at most 8 x 8 pixels (clipped at the edges), filled with the mean pixel,
    which normalizes to exactly 0."""
    spec = PreprocessingSpec(scale=1.0, mean=(100.0, 120.0, 140.0), std=(1.0, 1.0, 1.0))
    make = lambda cutout: make_dataset(tiny.train.images, tiny.train.labels, spec, 200, 10, training=True,  # noqa: E731
                                       seed=3, one_hot=False, cutout=cutout)
    plain, _ = _first_batch(make(0))
    cut, _ = _first_batch(make(8))
    again, _ = _first_batch(make(8))
    np.testing.assert_array_equal(cut, again)  # seeded
    changed = (cut != plain).any(-1)
    sides = []
    for img, mask in zip(cut, changed):
        rows, cols = np.nonzero(mask)
        assert len(rows), "every image gets a square"
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h <= 8 and w <= 8
        assert (img[mask] == 0).all()  # the mean pixel, normalized
        sides.append((h, w))
    assert (8, 8) in sides and any(h < 8 or w < 8 for h, w in sides)  # whole squares, and clipped ones


@pytest.mark.parametrize("kw, message", [
    (dict(cutout=32), "cutout must be an integer from 0"),
    (dict(cutout=-1), "cutout must be an integer from 0"),
    (dict(cutout=8, augment=False), "cutout is augmentation"),
    (dict(cutout=8, recipe="tutorial"), "cutout is augmentation"),
    (dict(cutmix=1.5), "cutmix is the probability"),
    (dict(cutmix=-0.1), "cutmix is the probability"),
    (dict(cutmix=True), "cutmix is the probability"),
    (dict(cutmix=0.5, augment=False), "cutmix is augmentation"),
    (dict(cutmix=0.5, recipe="tutorial"), "cutmix is augmentation"),
])
def test_invalid_cutout_or_cutmix_fails_when_built(kw, message):
    from edgecls import TrainConfig
    from edgecls.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        TrainConfig(out="o", **kw)


def test_training_with_cutout_records_it_and_resume_refuses_a_change(tmp_path):
    from edgecls import TrainConfig, train
    from edgecls.errors import ConfigError

    from .conftest import run_cli

    out = tmp_path / "o"
    proc = run_cli("train", "--data", TINY_ZIP, "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "64",
                   "--verbose", "0", "--cutout", "8", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "train.json").read_text())["config"]["cutout"] == 8
    staging = tmp_path / "p.partial"
    staging.mkdir()
    (staging / "run.json").write_text(json.dumps(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", out=str(tmp_path / "p"),
                                                             cutout=8).to_dict()))
    with pytest.raises(ConfigError, match="cutout was 8, now 0"):
        train(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", out=str(tmp_path / "p"), resume=True))


def _cutmix_batches(tiny, prob, seed=5, batches=6):
    """The same seeded stream with and without CutMix: (plain, mixed) images and labels of `batches` batches."""
    spec = PreprocessingSpec(scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # pixel values, to trace them
    make = lambda p: make_dataset(tiny.train.images, tiny.train.labels, spec, 32, 10, training=True,  # noqa: E731
                                  seed=seed, cutmix=p)
    plain = [(x.numpy(), y.numpy()) for x, y in make(0.0).take(batches)]
    mixed = [(x.numpy(), y.numpy()) for x, y in make(prob).take(batches)]
    return plain, mixed


def test_cutmix_pastes_one_box_from_a_partner_and_mixes_labels_by_its_area(tiny):
    """Each mixed image equals its unmixed self outside one box (the same box for the whole batch)
    and another image of the same batch inside it; its label is the two one-hot labels weighted by
    the box's share of the image."""
    plain, mixed = _cutmix_batches(tiny, 1.0)
    areas = []
    for (px, py), (mx, my) in zip(plain, mixed):
        changed = (px != mx).any(-1).any(0)  # (H, W): pixels that differ in any image of the batch
        rows, cols = np.nonzero(changed)
        assert len(rows), "probability 1 mixes every batch"
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        box = np.zeros((32, 32), bool)
        box[top:bottom, left:right] = True
        share = box.mean()
        areas.append(share)
        for i in range(len(px)):
            np.testing.assert_array_equal(mx[i][~box], px[i][~box])
            inside = mx[i][box]
            partners = [j for j in range(len(px)) if np.array_equal(px[j][box], inside)]
            assert partners, "the box holds another image's pixels from the same batch"
            expected = [(1 - share) * py[i] + share * py[j] for j in partners]
            assert any(np.allclose(my[i], e, atol=1e-6) for e in expected)
        np.testing.assert_allclose(my.sum(1), 1.0, atol=1e-6)
    assert len(set(np.round(areas, 4))) > 1  # the box size is drawn per batch


def test_cutmix_probability_and_seed(tiny):
    plain, none = _cutmix_batches(tiny, 0.0)
    for (px, py), (nx, ny) in zip(plain, none):
        np.testing.assert_array_equal(px, nx)
        np.testing.assert_array_equal(py, ny)
    plain, half = _cutmix_batches(tiny, 0.5, batches=12)
    touched = [not np.array_equal(px, hx) for (px, _), (hx, _) in zip(plain, half)]
    assert any(touched) and not all(touched)  # some batches mixed, some not
    _, again = _cutmix_batches(tiny, 0.5, batches=12)
    for (hx, hy), (ax, ay) in zip(half, again):
        np.testing.assert_array_equal(hx, ax)
        np.testing.assert_array_equal(hy, ay)


def test_training_with_cutmix_and_a_teacher_records_it_and_resume_refuses_a_change(tmp_path):
    from edgecls import TrainConfig, train
    from edgecls.errors import ConfigError

    from .conftest import run_cli

    teacher = tmp_path / "t"
    proc = run_cli("train", "--data", TINY_ZIP, "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "64",
                   "--verbose", "0", "--out", teacher)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "o"
    proc = run_cli("train", "--data", TINY_ZIP, "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "64",
                   "--verbose", "0", "--cutmix", "0.5", "--teacher", teacher, "--out", out)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "train.json").read_text())
    assert record["config"]["cutmix"] == 0.5 and record["distillation"] is not None
    proc = run_cli("train", "--data", TINY_ZIP, "--cutmix", "2", "--out", tmp_path / "bad")
    assert proc.returncode != 0 and "--cutmix: 2.0 is out of range" in proc.stderr and "Traceback" not in proc.stderr
    staging = tmp_path / "p.partial"
    staging.mkdir()
    (staging / "run.json").write_text(json.dumps(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", out=str(tmp_path / "p"),
                                                             cutmix=0.5).to_dict()))
    with pytest.raises(ConfigError, match="cutmix was 0.5, now 0.0"):
        train(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", out=str(tmp_path / "p"), resume=True))
