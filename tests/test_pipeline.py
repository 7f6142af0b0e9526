"""tf.data pipelines: normalization identical to the runtime's numpy path, seeded augmentation."""
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
