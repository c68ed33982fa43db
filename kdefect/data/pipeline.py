"""``tf.data`` pipelines: a precomputed index schedule -> images and targets -> batches.

Training batches are ``(images, targets)`` with images float32 in [0, 1] of
shape (B, H, W, C) and ``targets`` the dict ``SegDecNet.train_step`` reads.
"""

import numpy as np
import tensorflow as tf

IN_MEMORY_LIMIT_BYTES = 1 << 30  # above ~1 GB of uint8 images, stream from disk


def _loader(samples, cls_target="max_soft", weighted=True):
    """A ``map`` function: sample index -> (uint8 image, targets dict)."""
    height, width, channels = samples.input_shape
    seg_target = tf.constant(samples.seg_target[..., None])
    seg_weight = tf.constant(
        samples.seg_weight[..., None] if weighted else np.ones_like(samples.seg_weight[..., None])
    )
    cls = tf.constant(samples.cls_target(cls_target)[:, None])
    segmented = tf.constant(samples.is_segmented.astype(np.float32)[:, None])
    if samples.images is not None:
        images = tf.constant(samples.images)

        def read_image(i):
            return tf.gather(images, i)
    else:
        paths = tf.constant([str(p) for p in samples.image_paths])

        def read_image(i):
            raw = tf.io.read_file(tf.gather(paths, i))
            # JPEGs with the accurate integer IDCT: the same pixels as PIL (in-memory path) and OpenCV.
            img = tf.cond(
                tf.io.is_jpeg(raw),
                lambda: tf.io.decode_jpeg(raw, channels=channels, dct_method="INTEGER_ACCURATE"),
                lambda: tf.io.decode_image(raw, channels=channels, expand_animations=False),
            )
            img = tf.image.resize(img, (height, width), method="bilinear", antialias=False)
            img = tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)
            return tf.ensure_shape(img, (height, width, channels))

    def load(i):
        targets = {
            "seg_target": tf.gather(seg_target, i),
            "seg_weight": tf.gather(seg_weight, i),
            "cls_target": tf.gather(cls, i),
            "is_segmented": tf.gather(segmented, i),
        }
        return read_image(i), targets

    return load


def _to_float(images, targets):
    return tf.cast(images, tf.float32) / 255.0, targets


def training_dataset(samples, schedule, batch_size, cls_target="max_soft", weighted=True):
    """Batches for ``fit`` from a whole-run index schedule (see ``epoch_schedule``).

    Use with ``fit(ds, epochs=E, steps_per_epoch=schedule.shape[1] // batch_size)``:
    the schedule is flattened in order, so epoch k reads row k.

    Args:
        samples: the training ``SampleSet``.
        schedule: int array (epochs, n) of sample indices, n divisible by batch_size.
        batch_size: images per step.
        cls_target: ``"max_soft"`` (reference) or ``"binary"``.
        weighted: use the distance-transform weights (else all ones).

    Example:
    >>> from kdefect.data.samples import SampleSet
    >>> s = SampleSet.from_arrays(np.zeros((2, 64, 64, 1), np.uint8), [None, np.ones((64, 64))])
    >>> x, y = next(iter(training_dataset(s, np.array([[0, 1]]), 2)))
    >>> tuple(x.shape), sorted(y)
    ((2, 64, 64, 1), ['cls_target', 'is_segmented', 'seg_target', 'seg_weight'])
    """
    flat = np.asarray(schedule, dtype=np.int64).reshape(-1)
    ds = tf.data.Dataset.from_tensor_slices(flat)
    ds = ds.map(_loader(samples, cls_target, weighted), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(samples, batch_size=1, cls_target="max_soft", weighted=True):
    """Every sample once, in table order, for ``evaluate``/``predict``.

    Example:
    >>> from kdefect.data.samples import SampleSet
    >>> s = SampleSet.from_arrays(np.zeros((3, 64, 64, 1), np.uint8), [None] * 3)
    >>> sum(int(x.shape[0]) for x, _ in evaluation_dataset(s, 2))
    3
    """
    ds = tf.data.Dataset.range(len(samples))
    ds = ds.map(_loader(samples, cls_target, weighted), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size)
    ds = ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
