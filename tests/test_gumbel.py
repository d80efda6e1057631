"""Tests for keras_vae/models/gumbel.py and the temperature schedule."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.special
import tensorflow as tf
import tensorflow_probability as tfp

import keras_vae as kv
from keras_vae import annealing
from keras_vae.models.gumbel import build_gumbel_vae, gumbel_softmax_sample
from tests.conftest import assert_round_trip, assert_step_lowers_loss, make_images

tfd = tfp.distributions
SHAPE = (8, 8, 1)


def tiny(likelihood="optimal", **kwargs):
    keras.utils.set_random_seed(0)
    model = build_gumbel_vae(SHAPE, network="mlp", latent_dim=3, num_classes=4, likelihood=likelihood, seed=0,
                             **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.parametrize("likelihood, hard", [("optimal", False), ("per_pixel", True)])
def test_one_step_lowers_loss(likelihood, hard):
    model = tiny(likelihood, hard=hard)
    x = make_images(12, SHAPE)
    assert_step_lowers_loss(model, lambda: model.compute_terms(x, training=True)["loss"], x)


def test_samples_lie_on_the_simplex_and_become_one_hot_as_temperature_goes_to_zero():
    model = tiny()
    x = make_images(6, SHAPE)
    for temperature, min_max in ((2.0, 0.0), (1.0, 0.0), (1e-4, 0.99)):
        z = np.asarray(model.relaxed_sample(x, temperature=temperature))
        assert z.shape == (6, 3, 4)
        assert np.all(z >= 0) and np.all(z <= 1)
        np.testing.assert_allclose(z.sum(-1), 1.0, atol=1e-5)
        assert z.max(-1).min() >= min_max
    hard = np.asarray(model.relaxed_sample(x, temperature=1.0, hard=True))
    np.testing.assert_array_equal(np.sort(hard, -1)[..., -1], 1.0)
    np.testing.assert_array_equal(hard.sum(-1), 1.0)


def test_low_temperature_draws_follow_the_categorical():
    # Gumbel-max: argmax of the sample is distributed as softmax(logits).
    logits = np.log(np.array([[0.1, 0.2, 0.7]], "float32"))
    uniform = np.random.default_rng(0).uniform(size=(20000, 3)).astype("float32")
    z = np.asarray(gumbel_softmax_sample(np.repeat(logits, 20000, 0), 0.05, uniform))
    frequencies = np.bincount(z.argmax(-1), minlength=3) / 20000
    np.testing.assert_allclose(frequencies, [0.1, 0.2, 0.7], atol=0.015)


def test_hard_samples_pass_gradients_straight_through():
    logits = tf.Variable(np.array([[0.3, -0.2, 0.1]], "float32"))
    weights = tf.constant([[1.0, 2.0, 3.0]])
    with tf.GradientTape() as tape:
        z = gumbel_softmax_sample(logits, 0.5, tf.constant([[0.3, 0.6, 0.9]]), hard=True)
        value = tf.reduce_sum(z * weights)
    assert sorted(np.asarray(z)[0].tolist()) == [0.0, 0.0, 1.0]
    gradient = np.asarray(tape.gradient(value, logits))
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0


def test_kl_to_the_uniform_prior_matches_a_closed_form():
    model = tiny()
    x = make_images(4, SHAPE)
    logits = np.asarray(model.posterior.logits(model.encoder(x)), "float64")
    log_q = logits - scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    expected = np.sum(np.exp(log_q) * (log_q + np.log(4)), axis=-1)  # sum_k q_k log(K q_k) per variable
    np.testing.assert_allclose(np.asarray(model.compute_terms(x)["kl_per_dim"]), expected, rtol=1e-5, atol=1e-6)


def test_temperature_annealing_and_terms():
    model = tiny()
    x = make_images(16, SHAPE)
    history = model.fit(x, batch_size=4, epochs=1, verbose=0,
                        callbacks=[annealing.TemperatureAnnealing(annealing.exponential(rate=0.5, end=0.3))])
    # Steps 0..3 ran; the last batch began at step 3: max(0.3, exp(-1.5)).
    assert float(model.temperature.numpy()) == pytest.approx(max(0.3, np.exp(-1.5)), rel=1e-6)
    assert "temperature" in history.history
    terms = {k: np.asarray(v) for k, v in model.compute_terms(x).items()}
    assert terms["kl_per_dim"].shape == (16, 3)
    np.testing.assert_allclose(terms["elbo"], -terms["rec"] - terms["kl"], rtol=1e-6)
    assert 0 <= terms["kl"] <= 3 * np.log(4) + 1e-5
    callback = annealing.TemperatureAnnealing(annealing.exponential(0.1))
    callback.set_model(kv.build_vae(SHAPE, network="mlp", latent_dim=2))
    with pytest.raises(ValueError, match="temperature"):
        callback.on_train_begin()


def test_shapes_and_save_load(tmp_path):
    model = tiny()
    x = make_images(5, SHAPE)
    model.fit(x, batch_size=5, epochs=1, verbose=0)
    probs, stddev = model.encode(x)
    assert probs.shape == (5, 3, 4) and stddev.shape == (5, 3, 4)
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5)
    assert model.decode(probs)[0].shape == (5, *SHAPE)
    assert model.sample(4).shape == (4, *SHAPE)
    model.temperature.assign(0.7)
    loaded = assert_round_trip(model, tmp_path / "g.keras", x, method="reconstruct")
    assert isinstance(loaded, kv.GumbelSoftmaxVAE)
    assert float(loaded.temperature.numpy()) == pytest.approx(0.7)
