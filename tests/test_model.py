"""SegDecNet architecture: parameter count, shapes, size checks, FeatureNorm, gradient flow, saving."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from kdefect import FeatureNorm, SegDecNet
from kdefect.losses import classification_loss

from conftest import TINY


def test_parameter_count_matches_reference():
    assert SegDecNet(input_shape=(1408, 512, 1)).count_params() == 15_637_213
    assert SegDecNet(input_shape=(1408, 512, 3)).count_params() == 15_638_813


def test_count_params_matches_keras_layer_weights():
    model = SegDecNet(input_shape=TINY)
    layer_total = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert model.count_params() == layer_total  # λ is the only non-trainable variable
    assert [w.name for w in model.non_trainable_weights] == ["seg_loss_weight"]


def test_output_shapes_and_order():
    model = SegDecNet(input_shape=(128, 192, 3))
    dec, seg = model(np.random.default_rng(0).random((2, 128, 192, 3), dtype=np.float32))
    assert dec.shape == (2, 1)
    assert seg.shape == (2, 16, 24, 1)


def test_layer_list_matches_reference():
    model = SegDecNet(input_shape=TINY)
    convs = [l for l in model.layers if l.__class__.__name__ == "Conv2D"]
    spec = [(l.filters, l.kernel_size, l.use_bias) for l in convs]
    assert spec == (
        [(32, (5, 5), False)] + [(64, (5, 5), False)] * 7 + [(1024, (15, 15), False), (1, (1, 1), False)]
        + [(8, (5, 5), False), (16, (5, 5), False), (32, (5, 5), False)]
    )
    assert model.get_layer("dec_fc").kernel.shape == (66, 1)
    assert model.get_layer("dec_concat").output.shape[-1] == 1025
    assert SegDecNet(input_shape=TINY, first_block_convs=2).count_params() > model.count_params()


@pytest.mark.parametrize("shape", [(100, 64, 1), (128, 60, 1)])
def test_size_not_divisible_by_8_is_rejected(shape):
    with pytest.raises(ValueError, match=rf"{shape[0]}x{shape[1]}.*divisible by 8"):
        SegDecNet(input_shape=shape)


def test_size_with_single_pixel_decision_map_is_rejected():
    with pytest.raises(ValueError, match="64x64.*1x1"):
        SegDecNet(input_shape=(64, 64, 1))


def test_feature_norm_matches_numpy_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(2, 5, 7, 3)).astype(np.float32)
    layer = FeatureNorm(epsilon=1e-3)
    layer.build(x.shape)
    layer.scale.assign([1.0, 2.0, 0.5])
    layer.bias.assign([0.0, 1.0, -1.0])
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), ddof=1, keepdims=True)  # unbiased, like torch.std
    expected = np.array([1.0, 2.0, 0.5]) * (x - mean) / np.sqrt(std + 1e-3) + np.array([0.0, 1.0, -1.0])
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_feature_norm_constant_channel_has_finite_gradient():
    x = tf.zeros((1, 4, 4, 2))
    layer = FeatureNorm()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x) * tf.random.normal((1, 4, 4, 2)))
    grad = tape.gradient(y, x)
    assert np.isfinite(grad.numpy()).all()


def _cls_grads(model, x):
    with tf.GradientTape() as tape:
        dec, _ = model(x, training=True)
        loss = tf.reduce_sum(classification_loss(np.ones((len(x), 1), np.float32), dec))
    return dict(zip([v.path for v in model.trainable_variables],
                    tape.gradient(loss, model.trainable_variables)))


def test_gradient_adjustment_isolates_segmentation_network():
    x = np.random.default_rng(2).random((2,) + TINY, dtype=np.float32)
    grads = _cls_grads(SegDecNet(input_shape=TINY, gradient_adjustment=True), x)
    seg = {k: g for k, g in grads.items() if k.startswith("seg_")}
    dec = {k: g for k, g in grads.items() if k.startswith("dec_")}
    assert len(seg) == 30 and len(dec) == 11  # 9 conv blocks + head; 3 blocks + FC
    assert all(g is None or not np.any(g.numpy()) for g in seg.values())
    assert all(g is not None and np.any(g.numpy()) for g in dec.values())


def test_without_gradient_adjustment_classifier_trains_segmentation():
    x = np.random.default_rng(2).random((2,) + TINY, dtype=np.float32)
    grads = _cls_grads(SegDecNet(input_shape=TINY, gradient_adjustment=False), x)
    seg = [g for k, g in grads.items() if k.startswith("seg_")]
    assert all(g is not None and np.any(g.numpy()) for g in seg)


def test_keras_file_round_trip(tmp_path):
    model = SegDecNet(input_shape=TINY, gradient_adjustment=False)
    model.compile(delta=0.25, dynamic_balance=False)
    model.seg_loss_weight.assign(0.4)
    x = np.random.default_rng(3).random((2,) + TINY, dtype=np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SegDecNet)
    for a, b in zip(model(x), loaded(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.gradient_adjustment is False
    assert loaded.delta == 0.25 and loaded.dynamic_balance is False
    assert float(loaded.seg_loss_weight.numpy()) == pytest.approx(0.4)
