"""NarrowConv2DTranspose: the same outputs and gradients as Conv2DTranspose, saved and reloaded, its fallbacks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae.conv_transpose import NarrowConv2DTranspose


def twin_layers(input_shape, **kwargs):
    """A NarrowConv2DTranspose and a stock Conv2DTranspose holding the same random weights."""
    narrow = NarrowConv2DTranspose(**kwargs)
    stock = keras.layers.Conv2DTranspose(**kwargs)
    narrow.build(input_shape)
    stock.build(input_shape)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=w.shape).astype("float32") for w in stock.get_weights()]
    narrow.set_weights(weights)
    stock.set_weights(weights)
    return narrow, stock


def outputs_and_gradients(layer, x):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        # A loss whose gradient differs per pixel, so a misplaced tap shows.
        weights = tf.reshape(tf.range(tf.size(y), dtype=y.dtype), tf.shape(y)) / tf.cast(tf.size(y), y.dtype)
        loss = tf.reduce_sum(tf.sin(y) * weights)
    return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]


@pytest.mark.parametrize(
    "filters, kernel_size, activation, use_bias",
    [(1, 5, None, True), (1, (3, 5), "relu", True), (1, 1, None, False), (2, 7, "tanh", True), (3, (5, 3), None, True)],
)
def test_matches_conv2d_transpose_outputs_and_gradients(filters, kernel_size, activation, use_bias):
    x = np.random.default_rng(1).normal(size=(3, 11, 9, 6)).astype("float32")
    narrow, stock = twin_layers(
        x.shape, filters=filters, kernel_size=kernel_size, padding="same", activation=activation, use_bias=use_bias
    )
    assert narrow.uses_depthwise_path
    got, want = outputs_and_gradients(narrow, x), outputs_and_gradients(stock, x)
    assert len(got) == len(want) == 3 + use_bias  # outputs, d inputs, d kernel (, d bias)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))


@pytest.mark.parametrize("filters", [1, 3])
def test_the_depthwise_path_runs_instead_of_the_transposed_convolution(filters):
    narrow = NarrowConv2DTranspose(filters, 5, padding="same")
    graph = tf.function(narrow).get_concrete_function(tf.TensorSpec((2, 8, 8, 4))).graph
    op_types = [op.type for op in graph.get_operations()]
    assert op_types.count("DepthwiseConv2dNative") == filters
    assert "Conv2DBackpropInput" not in op_types


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(filters=4, kernel_size=5, padding="same"),
        dict(filters=1, kernel_size=4, padding="same"),
        dict(filters=1, kernel_size=6, strides=2, padding="same"),
        dict(filters=1, kernel_size=5, padding="valid"),
        dict(filters=1, kernel_size=5, padding="same", dtype="mixed_bfloat16"),
    ],
)
def test_other_configurations_are_exactly_conv2d_transpose(kwargs):
    x = np.random.default_rng(2).uniform(size=(2, 7, 7, 3)).astype("float32")
    narrow, stock = twin_layers(x.shape, **kwargs)
    assert not narrow.uses_depthwise_path
    np.testing.assert_array_equal(narrow(x), stock(x))


def test_saves_and_reloads_in_a_model(tmp_path):
    inputs = keras.Input((10, 10, 4))
    model = keras.Model(inputs, NarrowConv2DTranspose(1, 3, padding="same", activation="sigmoid")(inputs))
    x = np.random.default_rng(3).normal(size=(2, 10, 10, 4)).astype("float32")
    model.save(tmp_path / "narrow.keras")
    restored = keras.saving.load_model(tmp_path / "narrow.keras")
    assert type(restored.layers[-1]) is NarrowConv2DTranspose
    assert restored.layers[-1].get_config() == model.layers[-1].get_config()
    np.testing.assert_array_equal(restored(x), model(x))


def test_trains_under_jit_compile():
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, NarrowConv2DTranspose(1, 3, padding="same")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 6, 6, 3)).astype("float32")
    y = np.asarray(keras.layers.Conv2D(1, 3, padding="same")(x))  # a target the layer can represent exactly
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=20, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.1 * first


def test_second_order_gradients_match_conv2d_transpose():
    """A gradient penalty (the gradient of an input-gradient norm) goes through the custom gradient."""
    x = tf.constant(np.random.default_rng(5).normal(size=(2, 6, 6, 3)).astype("float32"))
    narrow, stock = twin_layers(x.shape, filters=2, kernel_size=3, padding="same")

    def penalty_and_gradients(layer):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(tf.sin(layer(x)))
            penalty = tf.reduce_sum(tf.square(inner.gradient(y, x)))
        return [penalty, *outer.gradient(penalty, layer.trainable_weights)]

    for a, b in zip(penalty_and_gradients(narrow), penalty_and_gradients(stock)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))
