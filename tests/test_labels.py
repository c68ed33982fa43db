"""Label pipeline: 1/8 downsizing, distance-transform weights, dilation, classification targets."""

import numpy as np
import pytest

from kdefect.data.labels import (
    LabelConfig,
    boxes_from_mask,
    dilate_mask,
    distance_weights,
    downsize,
    prepare_label,
)
from kdefect.data.samples import SampleSet


def _naive_downsize(a):
    """Reference operator written out: PyTorch-style reflect pad 8, then 17x17 means every 8 px."""
    h, w = a.shape
    def reflect(i, n):
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
    out = np.zeros((h // 8, w // 8))
    for i in range(h // 8):
        for j in range(w // 8):
            total = 0.0
            for di in range(-8, 9):
                for dj in range(-8, 9):
                    total += a[reflect(8 * i + di, h), reflect(8 * j + dj, w)]
            out[i, j] = total / 289.0
    return out


def test_downsize_matches_naive_reference():
    a = np.random.default_rng(0).random((32, 24))
    np.testing.assert_allclose(downsize(a), _naive_downsize(a), rtol=1e-6, atol=1e-6)


def test_downsize_matches_tensorflow_pad_and_avg_pool():
    import tensorflow as tf
    a = np.random.default_rng(1).random((48, 16)).astype(np.float32)
    padded = tf.pad(a[None, :, :, None], [[0, 0], [8, 8], [8, 8], [0, 0]], mode="REFLECT")
    pooled = tf.nn.avg_pool2d(padded, 17, 8, "VALID").numpy()[0, :, :, 0]
    np.testing.assert_allclose(downsize(a), pooled, rtol=1e-5, atol=1e-6)


def test_downsize_rejects_sizes_not_divisible_by_8():
    with pytest.raises(ValueError, match="30x24"):
        downsize(np.zeros((30, 24)))


def test_global_distance_weights_by_hand():
    mask = np.zeros((7, 9))
    mask[1:6, 1:8] = 1  # 5x7 rectangle: distances to background 1 (border), 2, 3 (centre row)
    w = distance_weights(mask, LabelConfig(weight_p=2.0, weight_max=3.0))
    assert w[0, 0] == 1.0 and w[6, 8] == 1.0  # background keeps weight 1
    assert w[1, 1] == pytest.approx(3.0 * (1 / 3) ** 2)
    assert w[2, 2] == pytest.approx(3.0 * (2 / 3) ** 2)
    assert w[3, 3] == pytest.approx(3.0)  # D = D_max at the centre -> w_pos


def test_global_vs_per_component_normalisation():
    mask = np.zeros((20, 30))
    mask[2:17, 2:17] = 1  # large defect, D_max 8
    mask[5:8, 22:25] = 1  # small 3x3 defect, D_max 2
    glob = distance_weights(mask, LabelConfig(weight_p=1.0, weight_max=1.0))
    comp = distance_weights(mask, LabelConfig(weight_p=1.0, weight_max=1.0, normalisation="per_component"))
    assert glob[6, 23] == pytest.approx(2 / 8)  # small defect's centre, global D_max
    assert comp[6, 23] == pytest.approx(1.0)  # its own D_max
    assert comp[9, 9] == pytest.approx(1.0) and glob[9, 9] == pytest.approx(1.0)


def test_dilation_is_a_square_maximum():
    m = np.zeros((9, 9), np.uint8)
    m[4, 4] = 1
    assert dilate_mask(m, 5).sum() == 25
    assert dilate_mask(m, 1) is m


def test_prepare_label_downsizes_mask_and_weights_alike():
    mask = np.zeros((64, 32), np.uint8)
    mask[16:40, 8:24] = 1
    cfg = LabelConfig(weight_p=2.0, weight_max=1.0)
    target, weight = prepare_label(mask, 64, 32, cfg)
    np.testing.assert_allclose(target, _naive_downsize(mask.astype(float)), atol=1e-6)
    np.testing.assert_allclose(weight, _naive_downsize(distance_weights(mask, cfg)), atol=1e-6)
    t_none, w_none = prepare_label(None, 64, 32)
    assert not t_none.any() and (w_none == 1).all()
    _, w_off = prepare_label(mask, 64, 32, LabelConfig(weighted=False))
    assert (w_off == 1).all()


def test_palette_style_masks_with_raw_values_0_1_are_defects():
    mask = np.zeros((64, 64), np.uint8)
    mask[30:34, 10:50] = 1  # raw palette index 1, not 255
    target, _ = prepare_label(mask, 64, 64)
    assert target.max() > 0


def test_classification_target_soft_max_or_binary():
    thin = np.zeros((64, 64), np.uint8)
    thin[32, 8:56] = 1  # a 1-pixel line: its 1/8 box average peaks far below 1
    s = SampleSet.from_arrays(np.zeros((2, 64, 64, 1), np.uint8), [thin, None])
    soft, binary = s.cls_target("max_soft"), s.cls_target("binary")
    assert 0 < soft[0] < 0.2 and soft[1] == 0
    assert binary.tolist() == [1.0, 0.0]


def test_boxes_keep_axis_aligned_rectangles_and_cover_every_defect_pixel():
    m = np.zeros((40, 50), np.uint8)
    m[5:9, 10:30] = 1  # already a rectangle: unchanged
    np.testing.assert_array_equal(boxes_from_mask(m), m)
    rng = np.random.default_rng(0)
    blob = np.zeros((60, 60), np.uint8)
    blob[tuple(rng.integers(20, 40, size=(2, 30)))] = 1
    boxed = boxes_from_mask(blob)
    assert (boxed >= blob).all() and boxed.sum() > blob.sum()


def test_boxes_are_rotated_and_one_per_component():
    m = np.zeros((64, 64), np.uint8)
    idx = np.arange(5, 45)
    m[idx, idx] = 1  # a thin diagonal crack of 40 pixels
    m[50:52, 2:4] = 1  # a separate 2x2 defect, far from the crack
    boxed = boxes_from_mask(m)
    from scipy import ndimage

    assert ndimage.label(boxed, structure=np.ones((3, 3)))[1] == 2
    # The crack's rotated box is a band about 3 pixels across, not its 40x40 axis-aligned box.
    assert 40 * 2 < boxed[:48].sum() <= 40 * 3 + 4
    assert boxed[50:52, 2:4].all() and boxed[48:].sum() == 4


def test_boxes_annotation_widens_the_training_target():
    m = np.zeros((64, 64), np.uint8)
    idx = np.arange(8, 56)
    m[idx, idx] = 1
    m[idx[:-4], idx[4:]] = 1  # two parallel diagonal lines with a gap: the box fills it
    plain, _ = prepare_label(m, 64, 64, LabelConfig())
    boxed, _ = prepare_label(m, 64, 64, LabelConfig(annotation="boxes"))
    assert boxed.sum() > plain.sum() and (boxed >= plain - 1e-6).all()
    with pytest.raises(ValueError, match="annotation"):
        LabelConfig(annotation="polygons")
