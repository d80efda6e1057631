"""Masked convolutions and the PixelCNN decoder: masks, causality by gradients, receptive field."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae.pixelcnn import MaskedConv2D, causal_mask, pixelcnn_decoder, receptive_field_of


def test_causal_mask_spatial_part():
    a = causal_mask(5, 1, 1, "A")[..., 0, 0]
    b = causal_mask(5, 1, 1, "B")[..., 0, 0]
    expected = np.zeros((5, 5))
    expected[:2] = 1
    expected[2, :2] = 1
    np.testing.assert_array_equal(a, expected)
    expected[2, 2] = 1
    np.testing.assert_array_equal(b, expected)


def test_causal_mask_colour_groups_at_the_centre():
    # 3 input colours -> 6 features (2 per colour): R sees nothing, G sees R, B sees R and G (type A).
    a = causal_mask(3, 3, 6, "A", image_channels=3)[1, 1]
    np.testing.assert_array_equal(a, [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]])
    b = causal_mask(1, 6, 3, "B", image_channels=3)[0, 0]
    np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match="multiple of 3.*out_channels=4"):
        causal_mask(3, 3, 4, "B", image_channels=3)
    with pytest.raises(ValueError, match="mask_type='C'"):
        causal_mask(3, 1, 1, "C")


def test_masked_conv_matches_a_plain_convolution_with_the_masked_kernel():
    layer = MaskedConv2D(4, 3, mask_type="A")
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 1)).astype("float32")
    out = layer(x)
    kernel = layer.kernel.numpy() * causal_mask(3, 1, 4, "A")
    expected = tf.nn.conv2d(x, kernel, strides=1, padding="SAME") + layer.bias.numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    restored = MaskedConv2D.from_config(layer.get_config())
    assert restored.mask_type == "A" and restored.filters == 4


def _dependence(decoder, shape, row, col, channel, per_channel):
    """|d params(row, col, channel) / d x| summed over the batch: which inputs the output reads."""
    x = tf.Variable(np.random.default_rng(1).uniform(size=(2, *shape)).astype("float32"))
    z = tf.constant(np.random.default_rng(2).normal(size=(2, decoder.input_shape[0][-1])).astype("float32"))
    with tf.GradientTape() as tape:
        params = decoder([z, x])
        out = tf.reduce_sum(params[:, row, col, channel * per_channel : (channel + 1) * per_channel])
    return np.abs(tape.gradient(out, x).numpy()).sum(axis=0)


@pytest.mark.parametrize("shape", [(9, 9, 1), (9, 9, 3)])
def test_outputs_never_depend_on_the_current_or_later_pixels(shape):
    keras.utils.set_random_seed(0)
    height, width, channels = shape
    decoder = pixelcnn_decoder(shape, latent_dim=2, params_per_channel=2, filters=6, receptive_field=5)
    order = np.arange(height * width * channels).reshape(shape)
    for row, col in [(0, 0), (4, 4), (8, 3)]:
        for channel in range(channels):
            grads = _dependence(decoder, shape, row, col, channel, 2)
            later = order >= order[row, col, channel]
            assert grads[later].max() == 0.0, (row, col, channel)
            if order[row, col, channel] > 0:
                assert grads[~later].max() > 0.0


def test_view_is_restricted_to_the_receptive_field():
    keras.utils.set_random_seed(0)
    shape = (11, 11, 1)
    decoder = pixelcnn_decoder(shape, latent_dim=2, params_per_channel=1, filters=4, receptive_field=5)
    assert receptive_field_of(decoder) == 5
    grads = _dependence(decoder, shape, 6, 5, 0, 1)[..., 0]
    rows, cols = np.nonzero(grads)
    assert rows.min() == 6 - 2 and rows.max() == 6  # two rows up, none below
    assert cols.min() == 5 - 2 and cols.max() <= 5 + 2


def test_receptive_field_errors():
    with pytest.raises(ValueError, match="receptive_field=9 is larger than the 8x8 image"):
        pixelcnn_decoder((8, 8, 1), receptive_field=9)
    with pytest.raises(ValueError, match="receptive_field=4"):
        pixelcnn_decoder((8, 8, 1), receptive_field=4)
    with pytest.raises(ValueError, match="filters=32"):
        pixelcnn_decoder((8, 8, 3), filters=32)


def test_broadcast_conditioning_and_saving(tmp_path):
    decoder = pixelcnn_decoder((6, 6, 1), latent_dim=3, params_per_channel=4, filters=4, receptive_field=3,
                               conditioning="broadcast")
    z = np.ones((2, 3), "float32")
    x = np.zeros((2, 6, 6, 1), "float32")
    decoder.save(tmp_path / "decoder.keras")
    loaded = keras.models.load_model(tmp_path / "decoder.keras")
    np.testing.assert_allclose(loaded([z, x]), decoder([z, x]), atol=0)


def test_masked_conv_config_round_trip_keeps_channel_groups():
    layer = MaskedConv2D(3, 3, mask_type="A", image_channels=3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, MaskedConv2D) and restored.image_channels == 3
