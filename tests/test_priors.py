"""Learned priors (keras_vae.priors): densities by hand, the Monte Carlo KL, draws, bad input, the harness."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import logsumexp

import keras_vae as kv
from keras_vae import latent_whitening, latents, priors
from keras_vae.noise import SeededNoise
from tests.conftest import make_images
from tests.harness import run_family_test

tfd = tfp.distributions
X = make_images(16, (8, 8, 1), seed=3)


def _log_normal_diag(z, mean, std):
    """log N(z; mean, diag(std**2)) summed over the last axis, numpy."""
    return np.sum(-0.5 * ((z - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), axis=-1)


def test_mixture_log_density_matches_numpy():
    prior = priors.MixturePrior(latent_dim=3, num_components=4, seed=1)
    rng = np.random.default_rng(0)
    prior.logits.assign(rng.normal(size=4).astype("float32"))
    prior.raw_scales.assign(rng.normal(size=(4, 3)).astype("float32"))
    z = rng.normal(size=(7, 3)).astype("float32")
    weights = np.exp(prior.logits.numpy()) / np.exp(prior.logits.numpy()).sum()
    scales = np.log1p(np.exp(prior.raw_scales.numpy())) + prior.min_scale
    by_hand = logsumexp(np.log(weights) + _log_normal_diag(z[:, None], prior.locs.numpy(), scales), axis=1)
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), by_hand, rtol=1e-5, atol=1e-5)


def test_vamp_prior_is_the_mean_of_the_posteriors_at_the_pseudo_inputs():
    start = make_images(5, (8, 8, 1), seed=5)
    vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=3, seed=0,
                       prior=priors.VampPrior((8, 8, 1), 5, pseudo_inputs=start))
    pseudo = vae.prior.pseudo_inputs.numpy()
    np.testing.assert_allclose(pseudo, np.clip(start, 1e-3, 1 - 1e-3), atol=1e-5)
    mean, std = (np.asarray(t) for t in vae.encode(pseudo))
    z = np.random.default_rng(1).normal(size=(6, 3)).astype("float32")
    by_hand = logsumexp(_log_normal_diag(z[:, None], mean, std), axis=1) - np.log(5)
    np.testing.assert_allclose(vae.prior_distribution().log_prob(z).numpy(), by_hand, rtol=1e-4, atol=1e-4)


def test_monte_carlo_kl_is_unbiased_where_the_analytic_kl_exists():
    rng = np.random.default_rng(2)
    loc, scale = rng.normal(size=3).astype("float32"), rng.uniform(0.3, 1.5, size=3).astype("float32")
    p_loc, p_scale = rng.normal(size=3).astype("float32"), rng.uniform(0.5, 2.0, size=3).astype("float32")
    count = 40_000
    q = tfd.MultivariateNormalDiag(np.tile(loc, (count, 1)), np.tile(scale, (count, 1)))
    p = tfd.MultivariateNormalDiag(p_loc, p_scale)
    as_mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=[0.0]), tfd.MultivariateNormalDiag([p_loc], [p_scale]))
    assert latents.kl_estimator(q, p) == latents.ANALYTIC
    assert latents.kl_estimator(q, as_mixture) == latents.MONTE_CARLO
    z = latents.draw(q, SeededNoise([3, 4]))
    estimates = latents.kl_per_dimension(q, as_mixture, z).numpy()[:, 0]
    analytic = float(tf.reduce_sum(latents.kl_per_dimension(q[:1], p)).numpy())
    stderr = estimates.std() / np.sqrt(count)
    assert abs(estimates.mean() - analytic) < 4 * stderr, (estimates.mean(), analytic, stderr)
    assert estimates.std() > 0.1  # a real estimate: each draw differs


def test_mixture_draws_have_the_mixture_moments():
    prior = priors.MixturePrior(latent_dim=2, num_components=3, seed=2)
    prior.logits.assign(np.log([0.2, 0.3, 0.5]).astype("float32"))
    p = prior.distribution()
    draws = latents.draw(p, SeededNoise([0, 9]), 50_000).numpy()
    assert draws.shape == (50_000, 2)
    np.testing.assert_allclose(draws.mean(axis=0), p.mean().numpy(), atol=0.03)
    np.testing.assert_allclose(draws.var(axis=0), p.variance().numpy(), rtol=0.03)


def test_prior_configs_round_trip():
    for prior in (priors.MixturePrior(4, 3, min_scale=0.01, seed=2), priors.VampPrior((8, 8, 1), 3, seed=1)):
        again = type(prior).from_config(prior.get_config())
        assert again.get_config() == prior.get_config()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_non_positive_component_counts_raise(bad):
    with pytest.raises(ValueError, match="num_components"):
        priors.MixturePrior(3, num_components=bad)
    with pytest.raises(ValueError, match="num_pseudo_inputs"):
        priors.VampPrior((8, 8, 1), num_pseudo_inputs=bad)


def test_pseudo_inputs_of_the_wrong_shape_raise_before_training():
    with pytest.raises(ValueError, match=r"pseudo_inputs of shape \(4, 8, 8, 1\)"):
        priors.VampPrior((8, 8, 1), 4, pseudo_inputs=np.zeros((4, 7, 8, 1)))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        priors.VampPrior((8, 8, 1), 4, pseudo_inputs=np.full((4, 8, 8, 1), 2.0))
    with pytest.raises(ValueError, match="pseudo-inputs have shape"):
        kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, prior=priors.VampPrior((9, 8, 1), 2))
    with pytest.raises(ValueError, match="latent_dim=3"):
        kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, prior=priors.MixturePrior(3, 2))


def test_whitening_refuses_a_learned_prior():
    vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, prior=priors.MixturePrior(2, 2))
    assert not latent_whitening.supports(vae)
    with pytest.raises(TypeError, match="N\\(0, I\\)"):
        latent_whitening.whiten_latents(vae, make_images(32, (8, 8, 1)))


def test_get_resolves_the_cli_names():
    assert priors.get("standard", 3, (8, 8, 1)) is None
    assert priors.get("vamp", 3, (8, 8, 1), size=7).num_pseudo_inputs == 7
    with pytest.raises(ValueError, match="prior='flow'"):
        priors.get("flow", 3, (8, 8, 1))


@pytest.mark.parametrize("name", ["mixture", "vamp"])
def test_learned_priors_meet_the_contract(name, tmp_path):
    keras.utils.set_random_seed(0)
    prior = priors.get(name, 3, (8, 8, 1), size=4)
    model = kv.build_vae((8, 8, 1), network="mlp", latent_dim=3, likelihood="learned", seed=0, prior=prior)
    weights_before = [w.numpy().copy() for w in prior.trainable_weights]
    run_family_test(model, {"x": X}, tmp_path)
    assert latents.kl_estimator(model.posterior_distribution(X), model.prior_distribution()) == latents.MONTE_CARLO
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(weights_before, prior.trainable_weights, strict=True))
