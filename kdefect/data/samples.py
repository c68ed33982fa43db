"""The sample table every dataset loader produces and the pipeline consumes."""

from dataclasses import dataclass, field

import numpy as np

from kdefect.data.labels import LabelConfig, prepare_label

CLS_TARGETS = ("max_soft", "binary")


@dataclass
class SampleSet:
    """Images and their precomputed 1/8 targets, one row per sample.

    Images are kept as uint8 in RAM (``images``, shape (N, H, W, C)) or, for
    datasets too large for memory, streamed from ``image_paths`` (decoded and
    resized in the ``tf.data`` map). Labels are always precomputed at 1/8.

    Attributes:
        names: sample names (e.g. ``kos21_Part5``).
        input_shape: (H, W, C) the model sees.
        seg_target: float32 (N, H/8, W/8) soft downsized masks.
        seg_weight: float32 (N, H/8, W/8) downsized loss weights.
        is_positive: bool (N,) image-level ground truth.
        is_segmented: bool (N,) whether the pixel mask is used for the seg
            loss (False for image-level-only positives: mixed supervision).
        images: uint8 (N, H, W, C) or None when streaming.
        image_paths: source file of each image (or None).
        mask_paths: source file of each mask (or None).

    Example:
    >>> s = SampleSet.from_arrays(np.zeros((2, 64, 64, 1), np.uint8),
    ...                           [None, np.ones((64, 64), np.uint8)])
    >>> len(s), s.is_positive.tolist()
    (2, [False, True])
    """

    names: list
    input_shape: tuple
    seg_target: np.ndarray
    seg_weight: np.ndarray
    is_positive: np.ndarray
    is_segmented: np.ndarray
    images: np.ndarray = None
    image_paths: list = None
    mask_paths: list = None
    meta: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.names)

    @property
    def num_positives(self):
        return int(self.is_positive.sum())

    def cls_target(self, mode="max_soft"):
        """Classification targets (N,): ``max`` of the soft 1/8 mask (reference) or binary.

        Example:
        >>> s = SampleSet.from_arrays(np.zeros((1, 64, 64, 1), np.uint8), [np.eye(64)])
        >>> s.cls_target("binary").tolist()
        [1.0]
        >>> SampleSet.from_arrays(np.zeros((1, 64, 64, 1), np.uint8), [None],
        ...                       is_positive=[True]).cls_target().tolist()
        [1.0]
        """
        if mode not in CLS_TARGETS:
            raise ValueError(f"cls_target must be one of {CLS_TARGETS}, got {mode!r}")
        if mode == "binary":
            return self.is_positive.astype(np.float32)
        soft = self.seg_target.reshape(len(self), -1).max(axis=1).astype(np.float32)
        # Positives known only by their image-level label have no mask: target 1.
        return np.where(self.is_positive & (soft <= 0), np.float32(1.0), soft)

    def subset(self, indices):
        """A new ``SampleSet`` with the rows ``indices`` (in that order).

        Example:
        >>> s = SampleSet.from_arrays(np.zeros((3, 64, 64, 1), np.uint8), [None] * 3)
        >>> len(s.subset([0, 2]))
        2
        """
        idx = np.asarray(indices, dtype=np.int64)
        pick = lambda seq: None if seq is None else [seq[i] for i in idx]  # noqa: E731
        return SampleSet(
            names=pick(self.names),
            input_shape=self.input_shape,
            seg_target=self.seg_target[idx],
            seg_weight=self.seg_weight[idx],
            is_positive=self.is_positive[idx],
            is_segmented=self.is_segmented[idx],
            images=None if self.images is None else self.images[idx],
            image_paths=pick(self.image_paths),
            mask_paths=pick(self.mask_paths),
            meta=dict(self.meta),
        )

    @classmethod
    def from_arrays(cls, images, masks, names=None, is_segmented=None, label_config=LabelConfig(),
                    is_positive=None):
        """Build a sample table from uint8 images at input size and masks at any size.

        Args:
            images: uint8 (N, H, W, C) already at the model input size.
            masks: sequence of N 2-D masks (any value > 0 is defect) or None
                for defect-free images.
            names: optional sample names.
            is_segmented: optional bool (N,); default True for all.
            label_config: ``LabelConfig`` for dilation and loss weights.
            is_positive: optional bool (N,) image-level labels, for positives
                without a usable mask; default ``max(mask) > 0``.
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        n, height, width, channels = images.shape
        targets, weights = zip(*(prepare_label(m, height, width, label_config) for m in masks)) \
            if n else ((), ())
        small = (n, height // 8, width // 8)
        seg_target = np.asarray(targets, np.float32).reshape(small)
        seg_weight = np.asarray(weights, np.float32).reshape(small)
        if is_positive is None:
            is_positive = seg_target.reshape(n, -1).max(axis=1) > 0 if n else np.zeros(0, bool)
        return cls(
            names=list(names) if names is not None else [f"sample_{i:05d}" for i in range(n)],
            input_shape=(height, width, channels),
            seg_target=seg_target,
            seg_weight=seg_weight,
            is_positive=np.asarray(is_positive, bool),
            is_segmented=np.ones(n, bool) if is_segmented is None else np.asarray(is_segmented, bool),
            images=images.astype(np.uint8),
        )
