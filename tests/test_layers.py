"""SoftClip and OptimalSigma: values against closed forms, gradients, running average, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae.layers import OptimalSigma, SoftClip, soft_clip


def test_soft_clip_matches_formula_and_floor():
    x = np.linspace(-50, 10, 61).astype("float32")
    np.testing.assert_allclose(soft_clip(x, -6.0), -6.0 + np.log1p(np.exp(x + 6.0)), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(SoftClip(-6.0)(x)) >= -6.0)
    # Far above the floor it is the identity.
    np.testing.assert_allclose(SoftClip(-6.0)(np.float32([5.0])), [5.0], atol=1e-4)


def test_soft_clip_keeps_a_gradient_below_the_floor():
    x = tf.Variable([-8.0, -6.0, 0.0])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(SoftClip(-6.0)(x))
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_allclose(grad, 1 / (1 + np.exp(-(np.array([-8.0, -6.0, 0.0]) + 6))), rtol=1e-5)
    assert grad[0] > 0


@pytest.mark.parametrize(
    "reduction, axes",
    [("batch", (0, 1, 2, 3)), ("image", (1, 2, 3)), ("channel", (0, 1, 2))],
)
def test_optimal_sigma_is_the_rmse(reduction, axes):
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(4, 5, 6, 3)).astype("float32")
    mu = rng.uniform(size=(4, 5, 6, 3)).astype("float32")
    sigma = np.exp(np.asarray(OptimalSigma(reduction)(x, mu)))
    rmse = np.sqrt(np.mean((x - mu) ** 2, axis=axes))
    np.testing.assert_allclose(sigma.reshape(-1), rmse.reshape(-1), rtol=1e-5)


def test_optimal_sigma_maximises_the_gaussian_likelihood():
    rng = np.random.default_rng(2)
    x, mu = rng.uniform(size=(2, 4, 4, 1)), rng.uniform(size=(2, 4, 4, 1))
    best = float(np.exp(OptimalSigma("batch")(x.astype("float32"), mu.astype("float32"))))

    def log_lik(sigma):
        return np.sum(-0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi))

    assert log_lik(best) > log_lik(best * 1.05) and log_lik(best) > log_lik(best * 0.95)


def test_running_average_tracks_training_mse_only():
    layer = OptimalSigma("batch", momentum=0.9)
    x = np.zeros((2, 3, 3, 1), "float32")
    for _ in range(50):
        layer(x, np.full_like(x, 0.2), training=True)
    layer(x, np.full_like(x, 0.9), training=False)  # inference does not update it
    np.testing.assert_allclose(np.exp(layer.running_log_sigma()), 0.2, rtol=1e-4)
    # Bias correction: after one update the running sigma is that batch's sigma.
    fresh = OptimalSigma("channel")
    fresh(x, np.full_like(x, 0.5), training=True)
    np.testing.assert_allclose(np.exp(fresh.running_log_sigma()), [0.5], rtol=1e-4)


def test_layers_work_in_a_functional_model_and_tf_function():
    x_in = keras.Input((4, 4, 1))
    mu_in = keras.Input((4, 4, 1))
    log_sigma = SoftClip()(OptimalSigma("image")(x_in, mu_in))
    model = keras.Model([x_in, mu_in], log_sigma)
    x = np.zeros((3, 4, 4, 1), "float32")
    out = model([x, np.full_like(x, 0.1)])
    assert out.shape == (3, 1, 1, 1)
    np.testing.assert_allclose(out, -6 + np.log1p(np.exp(np.log(0.1) + 6)), rtol=1e-5)

    layer = OptimalSigma("batch")
    fn = tf.function(lambda a, b: layer(a, b, training=True))
    np.testing.assert_allclose(np.exp(fn(x, np.full_like(x, 0.3))), 0.3, rtol=1e-4)
    np.testing.assert_allclose(np.exp(layer.running_log_sigma()), 0.3, rtol=1e-4)


def test_bad_arguments_and_config_round_trip():
    with pytest.raises(ValueError, match="reduction"):
        OptimalSigma("pixel")
    with pytest.raises(ValueError, match="momentum"):
        OptimalSigma(momentum=1.0)
    layer = OptimalSigma("channel", momentum=0.5)
    assert OptimalSigma.from_config(layer.get_config()).get_config() == layer.get_config()
    assert SoftClip.from_config(SoftClip(-3.0).get_config()).low == -3.0
