"""tf.data pipelines over decoded uint8 images.

Normalization follows the model's PreprocessingSpec (the same arithmetic as
`PreprocessingSpec.apply`, which the runtime uses). Augmentation (random crop after padding,
horizontal flip, optionally cutout per image and CutMix per batch) is for training only and is deterministic for a given seed: every random draw is a
stateless op keyed by the seed and the element's position in the shuffled stream.
"""
from __future__ import annotations

import numpy as np

from .._deps import tensorflow
from ..preprocess import PreprocessingSpec


def normalize(tf, images, spec: PreprocessingSpec):
    x = tf.cast(images, tf.float32)
    x = x * tf.constant(spec.scale, tf.float32)
    x = x - tf.constant(spec.mean, tf.float32)
    x = x / tf.constant(spec.std, tf.float32)
    return x


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    spec: PreprocessingSpec,
    batch_size: int,
    num_classes: int,
    training: bool = False,
    augment: bool = True,
    pad: int = 4,
    seed: int = 0,
    one_hot: bool = True,
    cache: bool = True,
    cutout: int = 0,
    cutmix: float = 0.0,
):
    """Return a batched, prefetched tf.data.Dataset of (normalized images, labels).

    `training` shuffles (reshuffled each epoch, reproducibly for the seed) and, with `augment`,
    applies padded random crops and horizontal flips. Evaluation data is neither shuffled nor
    augmented. Labels are one-hot when `one_hot` (needed for label smoothing). `cutout` > 0 (with
    `augment`) also fills one `cutout` x `cutout` square per training image, centred anywhere in
    the image and clipped at its edges, with the dataset's mean pixel (0 after normalization;
    DeVries & Taylor 2017, "Improved Regularization of CNNs with Cutout").

    `cutmix` > 0 (with `augment`) mixes each training batch with probability `cutmix` (Yun et al.
    2019, "CutMix"; their CIFAR setting is 0.5): a box whose area is a uniform share of the image
    (Beta(1, 1)), centred at a random pixel and clipped, is pasted into every image from another
    image of the same batch (a random pairing), and the one-hot labels are mixed by the pasted area
    (the clipped box's, not the drawn one). Needs `one_hot`. A distillation teacher sees the mixed
    batch too, so its soft labels describe the image the student is shown.
    """
    tf = tensorflow()
    height, width = images.shape[1:3]
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        if augment:
            # One (2,)-shaped int64 seed per element from a seeded random stream: stateless ops
            # keyed by it give the same augmentation for the same seed, whatever the threading.
            seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
            if cutout:  # filled with the raw pixel that normalizes to 0: the mean
                mean = np.broadcast_to(np.asarray(spec.mean, np.float64), (images.shape[-1],))
                fill = np.clip(np.round(mean / spec.scale), 0, 255).astype(images.dtype)
            ds = tf.data.Dataset.zip((ds, seeds))

            def _augment(pair, element_seed):
                image, label = pair
                image = tf.image.pad_to_bounding_box(image, pad, pad, height + 2 * pad, width + 2 * pad)
                image = tf.image.stateless_random_crop(image, (height, width, 3), seed=element_seed)
                flip_seed = tf.random.experimental.stateless_fold_in(element_seed, 1)
                image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
                if cutout:
                    image = _cutout(tf, image, height, width, cutout, fill, tf.random.experimental.stateless_fold_in(element_seed, 2))
                return image, label

            ds = ds.map(_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=False)

    def _finish(image, label):
        x = normalize(tf, image, spec)
        y = tf.one_hot(label, num_classes) if one_hot else label
        return x, y

    ds = ds.map(_finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training and augment and cutmix:
        if not one_hot:
            raise ValueError("cutmix mixes labels: it needs one_hot labels")
        # Its own seeded stream, one seed per batch, so the per-image draws above stay as they were.
        batch_seeds = tf.data.Dataset.random(seed=seed + _CUTMIX_SEED_OFFSET).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip((ds, batch_seeds)).map(
            lambda xy, batch_seed: _cutmix(tf, xy[0], xy[1], float(cutmix), batch_seed),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    # In-memory tensors cannot be sharded by file across workers; shard by element instead.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


_CUTMIX_SEED_OFFSET = 1_000_003


def cutmix_box(tf, height: int, width: int, seed):
    """The CutMix box for one batch: (top, bottom, left, right), clipped, of area about a uniform
    share of the image (side sqrt(1 - lam) of each dimension, lam ~ U(0, 1) = Beta(1, 1))."""
    draws = tf.random.stateless_uniform((3,), seed=seed)
    ratio = tf.sqrt(1.0 - draws[0])
    cut_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
    cy = tf.minimum(tf.cast(draws[1] * height, tf.int32), height - 1)
    cx = tf.minimum(tf.cast(draws[2] * width, tf.int32), width - 1)
    top, bottom = tf.maximum(cy - cut_h // 2, 0), tf.minimum(cy + cut_h // 2, height)
    left, right = tf.maximum(cx - cut_w // 2, 0), tf.minimum(cx + cut_w // 2, width)
    return top, bottom, left, right


def _cutmix(tf, x, y, prob: float, seed):
    """One batch (x: (B, H, W, C), y: (B, K) one-hot or soft) CutMixed with probability `prob`."""
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        height, width = tf.shape(x)[1], tf.shape(x)[2]
    fold = tf.random.experimental.stateless_fold_in
    apply = tf.random.stateless_uniform((), seed=fold(seed, 0)) < prob
    n = tf.shape(x)[0]
    partner = tf.argsort(tf.random.stateless_uniform((n,), seed=fold(seed, 1)))
    top, bottom, left, right = cutmix_box(tf, height, width, fold(seed, 2))
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    pasted = tf.cast((bottom - top) * (right - left), tf.float32) / tf.cast(height * width, tf.float32)
    mixed_x = tf.where(inside[None, :, :, None], tf.gather(x, partner), x)
    mixed_y = (1.0 - pasted) * y + pasted * tf.gather(y, partner)
    return tf.where(apply, mixed_x, x), tf.where(apply, mixed_y, y)


def _cutout(tf, image, height: int, width: int, size: int, fill, seed):
    """`image` (height, width, C) with a size x size square centred at a random pixel (clipped at
    the edges) set to `fill` (one value per channel)."""
    centre = tf.random.stateless_uniform((2,), seed=seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    cy, cx = centre[0] % height, centre[1] % width
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = ((rows >= cy - size // 2) & (rows < cy - size // 2 + size)
              & (cols >= cx - size // 2) & (cols < cx - size // 2 + size))
    return tf.where(inside[:, :, None], tf.constant(fill, image.dtype)[None, None, :], image)
