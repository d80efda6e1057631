"""keras_vae.latents: reparameterised draws with noise passed in, and KL per dimension against TFP."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import latents
from keras_vae.noise import FreshNoise, SeededNoise

tfd = tfp.distributions
RNG = np.random.default_rng(0)
LOC = RNG.normal(size=(4, 3)).astype("float32")
SCALE = RNG.uniform(0.2, 1.5, size=(4, 3)).astype("float32")


def test_gaussian_draws_are_loc_plus_scale_times_the_noise():
    eps = SeededNoise([3, 4]).normal((4, 3))
    diagonal = latents.draw(tfd.MultivariateNormalDiag(LOC, SCALE), SeededNoise([3, 4]))
    np.testing.assert_allclose(diagonal, LOC + SCALE * eps.numpy(), rtol=1e-6)
    tril = np.tril(RNG.normal(size=(4, 3, 3))).astype("float32") + 2 * np.eye(3, dtype="float32")
    correlated = latents.draw(tfd.MultivariateNormalTriL(LOC, tril), SeededNoise([3, 4]))
    np.testing.assert_allclose(correlated, LOC + np.einsum("bij,bj->bi", tril, eps.numpy()), rtol=1e-5, atol=1e-6)
    prior = latents.draw(latents.standard_normal((2, 2)), SeededNoise([3, 4]), num_samples=5)
    assert prior.shape == (5, 2, 2)


def test_categorical_draws_are_one_hot_and_follow_the_probabilities():
    logits = np.log(np.array([[0.7, 0.2, 0.1]], "float32"))
    q = tfd.Independent(tfd.OneHotCategorical(logits=np.repeat(logits, 20000, 0), dtype=tf.float32), 0)
    draws = latents.draw(q, SeededNoise([1, 1])).numpy()
    assert set(np.unique(draws.sum(-1))) == {1.0}
    np.testing.assert_allclose(draws.mean(0), [0.7, 0.2, 0.1], atol=0.01)


def test_kl_per_dimension_sums_to_the_tfp_kl():
    prior = latents.standard_normal((3,))
    q = tfd.MultivariateNormalDiag(LOC, SCALE)
    np.testing.assert_allclose(latents.kl_per_dimension(q, prior).numpy().sum(-1), tfd.kl_divergence(q, prior),
                               rtol=1e-5)
    maps = tfd.Independent(tfd.Normal(LOC.reshape(4, 3, 1), SCALE.reshape(4, 3, 1)), 2)
    map_prior = latents.standard_normal((3, 1))
    assert latents.kl_per_dimension(maps, map_prior).shape == (4, 3, 1)
    np.testing.assert_allclose(latents.kl_per_dimension(maps, map_prior).numpy().sum((1, 2)),
                               tfd.kl_divergence(maps, map_prior), rtol=1e-5)
    codes = tfd.Independent(tfd.OneHotCategorical(logits=RNG.normal(size=(4, 2, 5)).astype("float32")), 1)
    uniform = tfd.Independent(tfd.OneHotCategorical(logits=np.zeros((2, 5), "float32")), 1)
    np.testing.assert_allclose(latents.kl_per_dimension(codes, uniform).numpy().sum(-1),
                               tfd.kl_divergence(codes, uniform), rtol=1e-5)
    assert latents.kl_estimator(q, prior) == latents.kl_estimator(codes, uniform) == latents.ANALYTIC


def test_joint_kl_is_each_levels_kl_given_the_draw_above():
    def joint(shift):
        return tfd.JointDistributionSequential([
            tfd.MultivariateNormalDiag(LOC + shift, SCALE),
            lambda z2: tfd.MultivariateNormalDiag(2.0 * z2, SCALE + shift),
        ])

    q, p = joint(0.0), joint(0.5)
    z = latents.draw(q, SeededNoise([0, 2]))
    expected = np.concatenate([
        tfd.kl_divergence(tfd.Normal(LOC, SCALE), tfd.Normal(LOC + 0.5, SCALE)),
        tfd.kl_divergence(tfd.Normal(2.0 * z[0], SCALE), tfd.Normal(2.0 * z[0], SCALE + 0.5)),
    ], axis=-1)
    np.testing.assert_allclose(latents.kl_per_dimension(q, p, z), expected, rtol=1e-5)
    np.testing.assert_allclose(latents.log_prob(q, z), q.log_prob(z), rtol=1e-5)


def test_monte_carlo_kl_where_tfp_has_no_closed_form_is_unbiased():
    q = tfd.Independent(tfd.Logistic(LOC[:1], SCALE[:1]), 1)
    p = tfd.Independent(tfd.Normal(np.zeros(3, "float32"), 1.0), 1)
    assert latents.kl_estimator(q, p) == latents.MONTE_CARLO
    z = q.sample(20000, seed=1)  # (20000, 1, 3)
    values = latents.kl_per_dimension(q, p, z)
    np.testing.assert_allclose(values, (q.log_prob(z) - p.log_prob(z))[:, None], rtol=1e-5)
    assert float(np.mean(values)) > 0
    with pytest.raises(TypeError, match="cannot draw"):
        latents.draw(q, SeededNoise([0, 0]))


def test_seeded_noise_repeats_and_fresh_noise_does_not():
    first, second = SeededNoise([5, 6]), SeededNoise([5, 6])
    a, b = first.normal((3,)), second.normal((3,))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(first.normal((3,)), a)  # the next call of one source is a new draw
    fresh = FreshNoise()
    assert not np.allclose(fresh.uniform((5,)), fresh.uniform((5,)))
