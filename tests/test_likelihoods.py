"""Likelihoods: log-probabilities against TFP and the closed form by hand; sigma modes; config."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import likelihoods
from keras_vae.likelihoods import Bernoulli, Gaussian

tfd = tfp.distributions
RNG = np.random.default_rng(0)
X = RNG.uniform(size=(3, 5, 4, 2)).astype("float32")
PARAMS = RNG.normal(size=(3, 5, 4, 2)).astype("float32")
MU = 1 / (1 + np.exp(-PARAMS))


def soft_clipped(sigma):
    """The sigma a Gaussian uses after the soft clip of log sigma at -6."""
    return np.exp(-6 + np.log1p(np.exp(np.log(sigma) + 6)))


def gaussian_log_prob_by_hand(x, mu, sigma):
    return np.sum(-0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi), axis=(1, 2, 3))


def built(layer, params_shape):
    layer.build(params_shape)
    return layer


@pytest.mark.parametrize("sigma", [1.0, 0.1, 0.37])
def test_fixed_gaussian_matches_tfp_and_closed_form(sigma):
    log_prob = np.asarray(Gaussian(sigma=sigma).log_prob(PARAMS, X))
    assert log_prob.shape == (3,)
    np.testing.assert_allclose(log_prob, gaussian_log_prob_by_hand(X, MU, soft_clipped(sigma)), rtol=1e-5)
    reference = tf.reduce_sum(tfd.Normal(MU, np.float32(soft_clipped(sigma))).log_prob(X), axis=(1, 2, 3))
    np.testing.assert_allclose(log_prob, reference, rtol=1e-5)


def test_sigma_one_constant_per_pixel():
    # At x == mu: -log sigma - 0.5 log(2 pi) per pixel, the normalising constant (sigma = 1.0025 after the clip).
    logits, x = np.zeros((1, 28, 28, 1), "float32"), np.full((1, 28, 28, 1), 0.5, "float32")
    log_prob = Gaussian(sigma=1.0).log_prob(logits, x)
    expected = -784 * (math.log(soft_clipped(1.0)) + 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(log_prob, [expected], rtol=1e-6)
    assert abs(soft_clipped(1.0) - 1.0025) < 1e-4


@pytest.mark.parametrize(
    "mode, axes",
    [("optimal", (0, 1, 2, 3)), ("optimal_per_image", (1, 2, 3)), ("optimal_per_channel", (0, 1, 2))],
)
def test_optimal_modes_use_the_rmse(mode, axes):
    layer = built(Gaussian(sigma=mode), PARAMS.shape)
    rmse = np.sqrt(np.mean((X - MU) ** 2, axis=axes, keepdims=True))
    np.testing.assert_allclose(
        np.asarray(layer.optimal_sigma.mean_squared_error(X, MU)).reshape(-1), (rmse**2).reshape(-1), rtol=1e-5
    )
    rmse = soft_clipped(rmse)
    np.testing.assert_allclose(np.asarray(layer.stddev(PARAMS, X)), np.broadcast_to(rmse, X.shape), rtol=1e-5)
    np.testing.assert_allclose(layer.log_prob(PARAMS, X), gaussian_log_prob_by_hand(X, MU, rmse), rtol=1e-5)


def test_optimal_mode_carries_running_sigma_for_inference():
    layer = built(Gaussian(sigma="optimal", momentum=0.5), PARAMS.shape)
    for _ in range(30):
        layer.log_prob(PARAMS, X, training=True)
    rmse = np.sqrt(np.mean((X - MU) ** 2))
    np.testing.assert_allclose(np.asarray(layer.stddev(PARAMS)), soft_clipped(rmse), rtol=1e-4)  # no x: running sigma


def test_learned_sigma_is_shared_trainable_and_scaled():
    layer = built(Gaussian(sigma="learned", log_sigma_scale=10.0), PARAMS.shape)
    assert [v.name for v in layer.trainable_weights] == ["log_sigma_variable"]
    layer.log_sigma_variable.assign(-0.2)  # log sigma = 10 * -0.2 = -2
    expected = gaussian_log_prob_by_hand(X, MU, soft_clipped(np.exp(-2.0)))
    np.testing.assert_allclose(layer.log_prob(PARAMS, X), expected, rtol=1e-5)


def test_per_pixel_splits_mean_and_log_sigma():
    raw_log_sigma = RNG.normal(size=X.shape).astype("float32")
    params = np.concatenate([PARAMS, raw_log_sigma], axis=-1)
    layer = built(Gaussian(sigma="per_pixel"), params.shape)
    assert layer.params_per_channel == 2
    sigma = np.exp(-6 + np.log1p(np.exp(raw_log_sigma + 6)))
    np.testing.assert_allclose(layer.log_prob(params, X), gaussian_log_prob_by_hand(X, MU, sigma), rtol=1e-5)
    np.testing.assert_allclose(layer.mean(params), MU, rtol=1e-6)


@pytest.mark.parametrize("mode", [0.001, "learned", "optimal", "optimal_per_image", "optimal_per_channel", "per_pixel"])
def test_soft_clip_keeps_log_sigma_above_minus_six(mode):
    layer = Gaussian(sigma=mode)
    params = np.concatenate([MU * 0, np.full(X.shape, -100.0, "float32")], -1) if mode == "per_pixel" else PARAMS
    layer.build(params.shape)
    if mode == "learned":
        layer.log_sigma_variable.assign(-100.0)
    target = layer.mean(params).numpy()  # a perfect reconstruction: optimal sigma -> 0
    log_sigma = np.log(np.asarray(layer.stddev(params, target)))
    assert np.all(log_sigma >= -6.0 - 1e-5) and np.all(np.isfinite(layer.log_prob(params, target)))


def test_bernoulli_matches_tfp_and_cross_entropy():
    log_prob = np.asarray(Bernoulli().log_prob(PARAMS, X))
    by_hand = np.sum(X * np.log(MU) + (1 - X) * np.log(1 - MU), axis=(1, 2, 3))
    np.testing.assert_allclose(log_prob, by_hand, rtol=1e-5)
    binary = (X > 0.5).astype("float32")
    reference = tf.reduce_sum(tfd.Bernoulli(logits=PARAMS).log_prob(binary), axis=(1, 2, 3))
    np.testing.assert_allclose(Bernoulli().log_prob(PARAMS, binary), reference, rtol=1e-5)


def test_get_resolves_names_and_rejects_unknown():
    assert isinstance(likelihoods.get("bernoulli"), Bernoulli)
    assert likelihoods.get("gaussian", sigma=0.3).sigma == 0.3
    assert likelihoods.get("gaussian").sigma == 1.0
    for mode in likelihoods.GAUSSIAN_SIGMA_MODES:
        assert likelihoods.get(mode).sigma == mode
    with pytest.raises(ValueError, match="Unknown likelihood 'gausian'"):
        likelihoods.get("gausian")
    with pytest.raises(ValueError, match="sigma"):
        Gaussian(sigma=-1.0)
    with pytest.raises(ValueError, match="sigma"):
        Gaussian(sigma="adaptive")


@pytest.mark.parametrize(
    "layer", [Bernoulli(), Gaussian(0.2), Gaussian("learned", log_sigma_scale=3.0), Gaussian("optimal_per_channel")]
)
def test_config_round_trip(layer):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
