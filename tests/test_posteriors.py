"""Posterior head, prior and KL: analytic KL against Monte Carlo and TFP's MVN KL."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae.latents import kl_per_dimension
from keras_vae.latents import standard_normal as _standard_normal
from keras_vae.posteriors import DiagonalGaussian


def standard_normal_prior(latent_dim):
    return _standard_normal((latent_dim,))

tfd = tfp.distributions


def test_head_shapes_scale_floor_and_reparameterisation():
    head = DiagonalGaussian(latent_dim=4, min_scale=1e-3)
    features = tf.Variable(np.random.default_rng(0).normal(size=(5, 7)).astype("float32"))
    loc, scale = head(features)
    assert loc.shape == scale.shape == (5, 4)
    assert np.all(np.asarray(scale) > 1e-3)
    with tf.GradientTape() as tape:
        q = head.distribution(features)
        sample = q.sample(seed=1)
    assert q.reparameterization_type == tfd.FULLY_REPARAMETERIZED
    assert tape.gradient(sample, features) is not None


def test_analytic_kl_matches_monte_carlo_and_tfp():
    loc = np.array([[0.5, -1.0, 0.0]], "float32")
    scale = np.array([[0.3, 1.5, 1.0]], "float32")
    q = tfd.MultivariateNormalDiag(loc, scale)
    kl = np.asarray(kl_per_dimension(q, standard_normal_prior(3)))
    by_hand = 0.5 * (scale**2 + loc**2 - 1 - 2 * np.log(scale))
    np.testing.assert_allclose(kl, by_hand, rtol=1e-5)
    np.testing.assert_allclose(kl.sum(-1), tfd.kl_divergence(q, standard_normal_prior(3)), rtol=1e-5)
    z = q.sample(200_000, seed=3)
    monte_carlo = np.mean(q.log_prob(z) - standard_normal_prior(3).log_prob(z))
    assert abs(monte_carlo - kl.sum()) < 0.02


def test_bad_latent_dim():
    with pytest.raises(ValueError, match="latent_dim=0"):
        DiagonalGaussian(latent_dim=0)
