"""Categorical256 and DiscretizedLogisticMixture against closed forms written out in numpy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import expit, log_softmax, softmax

import keras_vae as kv
from keras_vae.likelihoods import Categorical256, DiscretizedLogisticMixture, check_on_grid
from tests.conftest import assert_round_trip, make_images

RNG = np.random.default_rng(0)


def _grid_images(shape=(2, 3, 4, 2)) -> np.ndarray:
    x = RNG.integers(0, 256, size=shape)
    x.flat[0], x.flat[1] = 0, 255  # the two edge bins
    return (x / 255.0).astype("float32")


def _numpy_mixture_log_prob(params, x, num_mixtures):
    """PixelCNN++'s discretized logistic mixture, per image, on the [-1, 1] scale."""
    batch, height, width, channels = x.shape
    params = params.reshape(batch, height, width, channels, 3, num_mixtures)
    logits, means, log_scales = params[..., 0, :], params[..., 1, :], params[..., 2, :]
    log_scales = -7.0 + np.log1p(np.exp(log_scales + 7.0))
    centred = (2.0 * x - 1.0)[..., None] - means
    inv_scale = np.exp(-log_scales)
    upper, lower = inv_scale * (centred + 1.0 / 255), inv_scale * (centred - 1.0 / 255)
    cdf_plus = np.where(x[..., None] > 0.999, 1.0, expit(upper))
    cdf_minus = np.where(x[..., None] < 0.001, 0.0, expit(lower))
    sf_minus = np.where(x[..., None] < 0.001, 1.0, expit(-lower))
    sf_plus = np.where(x[..., None] > 0.999, 0.0, expit(-upper))
    # cdf differences lose precision right of the mean; survival differences left of it
    bin_mass = np.where(centred > 0, sf_minus - sf_plus, cdf_plus - cdf_minus)
    mass = np.sum(softmax(logits, axis=-1) * bin_mass, axis=-1)
    return np.log(mass).sum(axis=(1, 2, 3))


def test_categorical_log_prob_matches_log_softmax():
    x = _grid_images()
    logits = RNG.normal(size=(*x.shape[:3], x.shape[3] * 256)).astype("float32")
    dist = Categorical256().distribution(logits, x)
    levels = np.round(x * 255).astype(int)
    table = log_softmax(logits.reshape(*x.shape, 256), axis=-1)
    expected = np.take_along_axis(table, levels[..., None], axis=-1)[..., 0].sum(axis=(1, 2, 3))
    np.testing.assert_allclose(dist.log_prob(x), expected, rtol=1e-5)
    assert dist.batch_shape == (2,) and dist.event_shape == x.shape[1:]


def test_categorical_moments_and_samples():
    probs = np.zeros((1, 1, 1, 256), "float32")
    probs[..., [0, 255]] = 0.5
    dist = Categorical256().distribution(np.log(probs + 1e-30))
    np.testing.assert_allclose(dist.mean(), 0.5, atol=1e-6)
    np.testing.assert_allclose(dist.stddev(), 0.5, atol=1e-6)
    samples = np.asarray(dist.sample(200, seed=1))
    assert set(np.unique(samples)) == {0.0, 1.0}


@pytest.mark.parametrize("num_mixtures", [1, 3])
def test_logistic_mixture_matches_pixelcnnpp_formula(num_mixtures):
    x = _grid_images()
    params = RNG.normal(size=(*x.shape[:3], x.shape[3] * 3 * num_mixtures)).astype("float32")
    likelihood = DiscretizedLogisticMixture(num_mixtures)
    log_prob = likelihood.distribution(params, x).log_prob(x)
    np.testing.assert_allclose(log_prob, _numpy_mixture_log_prob(params, x, num_mixtures), rtol=1e-4)


def test_logistic_mixture_is_normalised_with_exact_moments():
    params = RNG.normal(size=(3, 1, 1, 6)).astype("float32") * [1, 1, 0.6, 0.6, 1, 1]
    params = params.astype("float32")
    likelihood = DiscretizedLogisticMixture(num_mixtures=2)
    values = np.arange(256, dtype="float32") / 255
    per_value = np.stack(
        [likelihood.distribution(params).log_prob(np.full((3, 1, 1, 1), v, "float32")) for v in values], axis=-1
    )
    probs = np.exp(per_value)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-4)
    mean = (probs * values).sum(axis=-1)
    stddev = np.sqrt((probs * (values - mean[:, None]) ** 2).sum(axis=-1))
    dist = likelihood.distribution(params)
    np.testing.assert_allclose(np.asarray(dist.mean()).ravel(), mean, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dist.stddev()).ravel(), stddev, atol=1e-4)


@pytest.mark.parametrize("mean, log_scale", [(0.0, -20.0), (-30.0, -7.0), (30.0, -7.0), (0.0, 30.0)])
def test_logistic_mixture_log_prob_and_gradients_stay_finite(mean, log_scale):
    # (0, 30): a huge scale, where TFP's generic quantised log-prob gives -inf and NaN gradients.
    x = _grid_images((2, 2, 2, 1))
    raw = np.stack([np.zeros((2, 2, 2)), np.full((2, 2, 2), mean), np.full((2, 2, 2), log_scale)], -1)
    params = tf.Variable(raw, dtype="float32")
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(DiscretizedLogisticMixture(1).distribution(params, x).log_prob(x))
    gradient = tape.gradient(loss, params)
    assert np.isfinite(loss.numpy()) and np.all(np.isfinite(gradient.numpy()))


def test_logistic_mixture_log_prob_equals_tfp_quantized_mixture():
    x = _grid_images()
    params = RNG.normal(size=(*x.shape[:3], x.shape[3] * 6)).astype("float32")
    dist = DiscretizedLogisticMixture(2).distribution(params, x)
    tfp_mass = dist.distribution.levels.log_prob(np.round(x * 255)).numpy().sum(axis=(1, 2, 3))
    np.testing.assert_allclose(dist.log_prob(x), tfp_mass, rtol=1e-4)


@pytest.mark.parametrize("likelihood", [Categorical256(), DiscretizedLogisticMixture(2)])
def test_off_grid_targets_raise_unless_quantize(likelihood):
    x = _grid_images((1, 2, 2, 1))
    params = np.zeros((1, 2, 2, likelihood.params_per_channel), "float32")
    with pytest.raises(ValueError, match=r"0\.5 \(127\.5 / 255\).*quantize=True"):
        likelihood.distribution(params, np.full_like(x, 0.5))
    quantizing = likelihood.__class__.from_config({**likelihood.get_config(), "quantize": True})
    off_grid = np.clip(x + 0.3 / 255, 0, 1)
    np.testing.assert_allclose(
        quantizing.distribution(params, off_grid).log_prob(off_grid), likelihood.distribution(params, x).log_prob(x)
    )


def test_off_grid_targets_raise_inside_a_graph():
    likelihood = Categorical256()
    params = np.zeros((1, 2, 2, 256), "float32")
    graph_log_prob = tf.function(lambda x: likelihood.distribution(params, x).log_prob(x))
    with pytest.raises(tf.errors.InvalidArgumentError, match="off that grid"):
        graph_log_prob(tf.fill((1, 2, 2, 1), 0.3))
    with pytest.raises(ValueError, match="value 1.5"):
        check_on_grid(np.array([1.5], "float32"), "Categorical256")


def test_names_and_config_round_trip():
    assert isinstance(kv.likelihoods.get("categorical"), Categorical256)
    mixture = kv.likelihoods.get("logistic_mixture")
    assert isinstance(mixture, DiscretizedLogisticMixture) and mixture.params_per_channel == 15
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(DiscretizedLogisticMixture(4)))
    assert restored.num_mixtures == 4 and restored.params_per_channel == 12
    with pytest.raises(ValueError, match="num_mixtures=0"):
        DiscretizedLogisticMixture(0)


def test_conv_vae_with_logistic_mixture_trains_and_saves(tmp_path):
    x = np.round(make_images(32, (8, 8, 1)) * 255) / 255
    keras.utils.set_random_seed(0)
    vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood=DiscretizedLogisticMixture(2), seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = float(vae.evaluate(x, batch_size=32, verbose=0, return_dict=True)["rec"])
    vae.fit(x, batch_size=8, epochs=10, verbose=0)
    after = float(vae.evaluate(x, batch_size=32, verbose=0, return_dict=True)["rec"])
    assert after < before - 20.0
    assert_round_trip(vae, tmp_path / "vae.keras", x[:4], method="reconstruct", atol=1e-6)
