"""Tests of keras_vae.evaluation and keras_vae.feature_model against closed forms."""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

import keras_vae as kv
from keras_vae import evaluation, feature_model
from keras_vae.likelihoods import Likelihood
from tests.conftest import make_images, tiny_vae

tfd = tfp.distributions
SHAPE = (2, 2, 1)
NOISE = 0.3


class IdentityGaussian(Likelihood):
    """Test-only p(x|z) = N(x | params, NOISE**2): the decoder output is the mean itself."""

    def distribution(self, params, x=None, training=False):
        return tfd.Independent(tfd.Normal(loc=tf.convert_to_tensor(params, tf.float32), scale=NOISE), 3)


def linear_gaussian_vae(weights: np.ndarray, bias: np.ndarray, posterior_scale: float = 1.0):
    """z ~ N(0, I), x = W z + b + N(0, NOISE**2 I), with the exact posterior as encoder.

    W has orthogonal columns, so p(z|x) is diagonal: variances
    1 / (1 + |w_d|**2 / NOISE**2), means var_d * w_d . (x - b) / NOISE**2.
    `posterior_scale` widens q's stddev to make q inexact.
    """
    dims, latent = weights.shape
    variances = 1.0 / (1.0 + np.sum(weights**2, axis=0) / NOISE**2)
    loc_kernel = weights * variances / NOISE**2
    x_in = keras.Input(SHAPE)
    encoder = keras.Model(x_in, keras.layers.Flatten()(x_in))
    z_in = keras.Input((latent,))
    dense = keras.layers.Dense(dims)
    decoder = keras.Model(z_in, keras.layers.Reshape(SHAPE)(dense(z_in)))
    dense.set_weights([weights.T.astype("float32"), bias.astype("float32")])
    vae = kv.VAE(encoder, decoder, latent_dim=latent, likelihood=IdentityGaussian())
    stddev = posterior_scale * np.sqrt(variances)
    raw_scale = np.log(np.expm1(stddev - vae.posterior.min_scale))  # inverse softplus
    kernel = np.concatenate([loc_kernel, np.zeros((dims, latent))], axis=1)
    head_bias = np.concatenate([-bias @ loc_kernel, raw_scale])
    vae.posterior.dense.set_weights([kernel.astype("float32"), head_bias.astype("float32")])
    return vae


def exact_log_likelihood(x, weights, bias):
    cov = weights @ weights.T + NOISE**2 * np.eye(len(bias))
    return scipy.stats.multivariate_normal(bias, cov).logpdf(x.reshape(len(x), -1))


WEIGHTS = np.array([[0.8, 0.0], [0.8, 0.0], [0.0, 0.5], [0.0, -0.5]])
BIAS = np.array([0.5, 0.4, 0.6, 0.3])


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).uniform(size=(40, *SHAPE)).astype("float32")


def test_elbo_and_iwae_equal_exact_log_likelihood_with_exact_posterior(pixels):
    vae = linear_gaussian_vae(WEIGHTS, BIAS)
    exact = exact_log_likelihood(pixels, WEIGHTS, BIAS)
    np.testing.assert_allclose(evaluation.iwae_log_likelihood(vae, pixels, num_samples=7, seed=1), exact, atol=2e-4)
    # One draw per image is noisy even with the exact posterior: average 400 (standard error about 0.01).
    assert evaluation.elbo(vae, pixels, num_samples=400, seed=0) == pytest.approx(exact.mean(), abs=0.04)
    weights = evaluation.log_importance_weights(vae, pixels[:3], num_samples=5, chunk_size=2, seed=0)
    assert weights.shape == (5, 3)
    np.testing.assert_allclose(weights, np.broadcast_to(exact[:3], (5, 3)), atol=2e-4)


def test_iwae_increases_with_k_towards_exact_log_likelihood():
    pixels = np.random.default_rng(4).uniform(size=(400, *SHAPE)).astype("float32")
    vae = linear_gaussian_vae(WEIGHTS, BIAS, posterior_scale=2.0)
    exact = exact_log_likelihood(pixels, WEIGHTS, BIAS).mean()
    elbo = evaluation.elbo(vae, pixels, num_samples=200, seed=0)
    bounds = [evaluation.iwae_bound(vae, pixels, num_samples=k, seed=3, max_decoded=40_000) for k in (2, 10, 500)]
    assert elbo < exact - 0.3  # a wide q gives a loose ELBO
    # E[log w] is the ELBO (the mean of 50 * 400 weights has a standard error of about 0.02).
    log_w = evaluation.log_importance_weights(vae, pixels, num_samples=50, seed=1)
    assert float(log_w.mean()) == pytest.approx(elbo, abs=0.1)
    assert elbo < bounds[0] < bounds[1] < bounds[2] <= exact + 0.01
    assert bounds[2] == pytest.approx(exact, abs=0.02)


def test_iwae_bound_is_above_elbo_and_grows_with_k_on_a_trained_model():
    x = make_images(64, shape=(8, 8, 1), seed=1)
    vae = tiny_vae(likelihood="optimal")
    vae.fit(x, batch_size=16, epochs=15, verbose=0)
    elbo = evaluation.elbo(vae, x, num_samples=20, seed=0)
    bounds = [evaluation.iwae_bound(vae, x, num_samples=k, seed=5) for k in (5, 50)]
    assert elbo < bounds[0] < bounds[1]
    # ELBO with the running sigma agrees with the model's own running-sigma ELBO.
    assert elbo == pytest.approx(float(np.mean(vae.elbo_with_running_sigma(x))), abs=3.0)


def test_iwae_accepts_a_dataset_and_checks_arguments(pixels):
    vae = linear_gaussian_vae(WEIGHTS, BIAS)
    dataset = tf.data.Dataset.from_tensor_slices((pixels, np.zeros(len(pixels)))).batch(16)
    assert evaluation.iwae_bound(vae, dataset, num_samples=3) == pytest.approx(
        exact_log_likelihood(pixels, WEIGHTS, BIAS).mean(), abs=2e-4)
    with pytest.raises(ValueError, match="num_samples=0"):
        evaluation.iwae_bound(vae, pixels, num_samples=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluation.iwae_bound(vae, pixels * 3, num_samples=2)


def test_bits_per_dim_and_dequantization():
    assert evaluation.bits_per_dim(-4 * math.log(2) * 3, 4) == pytest.approx(3.0)
    assert evaluation.bits_per_dim(4 * math.log(2), 4, levels=256) == pytest.approx(7.0)
    x = np.array([0.0, 1 / 255, 1.0], "float32").reshape(1, 3, 1, 1)
    y = evaluation.dequantize(np.repeat(x, 500, axis=0), seed=0)
    low = np.array([0, 1, 255]).reshape(1, 3, 1, 1) / 256
    assert ((y >= low) & (y < low + 1 / 256)).all()
    np.testing.assert_allclose(y.mean(axis=0), low[0] + 0.5 / 256, atol=2e-4)


def test_active_units_and_kl_with_a_dead_dimension():
    weights = np.array([[0.8, 0.0, 0.0], [0.8, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, -0.5, 0.0]])
    vae = linear_gaussian_vae(weights, BIAS)
    x = np.random.default_rng(1).uniform(size=(300, *SHAPE)).astype("float32")
    stats = evaluation.posterior_statistics(vae, x, batch_size=128)
    assert stats["active_units"] == 2 and stats["collapsed_units"] == 1 and stats["latent_dim"] == 3
    q = vae.posterior_distribution(x)
    expected = np.mean(tfd.kl_divergence(q, kv.latents.standard_normal((3,))))
    assert stats["kl"] == pytest.approx(float(expected), rel=1e-4)
    assert stats["kl_per_dim"][2] == pytest.approx(0.0, abs=1e-5)
    # Closed form of a dimension's mean KL: 0.5 * (E[m**2] + s**2 - 1) - log s.
    means, stddevs = evaluation.posterior_moments(vae, x)
    d = 0
    closed = 0.5 * (np.mean(means[:, d] ** 2) + stddevs[0, d] ** 2 - 1) - np.log(stddevs[0, d])
    assert stats["kl_per_dim"][d] == pytest.approx(closed, rel=1e-4)
    between = np.mean(np.var(means[:, :2], axis=0))  # a threshold between the two live variances
    assert evaluation.active_units(means, threshold=between) == 1


def test_mutual_information_limits():
    rng = np.random.default_rng(0)
    # Identical posteriors: z carries no information about x, so I = 0 and the marginal KL is the KL.
    means, stddevs = np.tile([[0.5, -1.0]], (200, 1)), np.tile([[0.3, 2.0]], (200, 1))
    result = evaluation.aggregate_posterior_kl(means, stddevs, seed=0)
    q = tfd.MultivariateNormalDiag(means[0], stddevs[0])
    kl = float(tfd.kl_divergence(q, tfd.MultivariateNormalDiag(np.zeros(2), np.ones(2))))
    assert result["mutual_information"] == pytest.approx(0.0, abs=1e-9)
    assert result["marginal_kl"] == pytest.approx(kl, abs=0.3)
    # Far-apart, narrow posteriors: each z identifies its image, I = log N.
    means = rng.normal(size=(200, 2)) * 10.0
    result = evaluation.aggregate_posterior_kl(means, np.full((200, 2), 1e-3), seed=0)
    assert result["mutual_information"] == pytest.approx(math.log(200), abs=1e-3)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    cov, mu = a @ a.T + np.eye(5), rng.normal(size=5)
    assert evaluation.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-6)
    var1, var2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    mu2 = rng.normal(size=5)
    expected = np.sum((mu - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert evaluation.frechet_distance(mu, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError, match="Mismatched"):
        evaluation.frechet_distance(mu, cov, mu[:3], cov)


def test_fid_of_a_set_with_itself_is_zero_and_shifts_add_up():
    images = make_images(50, shape=(4, 4, 1), seed=2)

    def features(batch, training=False):
        return np.asarray(batch).reshape(len(batch), -1)[:, :3]

    assert evaluation.fid(images, images, features) == pytest.approx(0.0, abs=1e-6)
    shifted = np.clip(images + 0.0, 0, 1)
    shifted[:, 0, 0, 0] = np.clip(images[:, 0, 0, 0] * 0.5, 0, 1)
    f_real, f_gen = features(images), features(shifted)
    statistics = evaluation.feature_statistics(f_real) + evaluation.feature_statistics(f_gen)
    expected = evaluation.frechet_distance(*statistics)
    assert evaluation.fid(images, shifted, features) == pytest.approx(expected)
    assert expected > 0


def test_feature_model_is_trained_once_cached_and_never_overwrites(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(80) % 4
    x = make_images(80, shape=(8, 8, 1), seed=3)
    x[np.arange(80), labels * 2, 0, 0] = 1.0  # a learnable mark of the class
    dataset = tmp_path / "toy.npz"
    np.savez(dataset, x=x, y=labels, x_test=x[:20], y_test=labels[:20])
    cache = tmp_path / "cache"
    first = feature_model.get(str(dataset), epochs=1, directory=cache, verbose=False)
    assert first.path.exists() and "test accuracy" in first.name
    assert f"toy_npz_classifier_{feature_model.VERSION}" in first.name
    assert first(x[:3]).shape == (3, feature_model.FEATURE_UNITS)
    stamp = os.stat(first.path).st_mtime_ns
    second = feature_model.get(str(dataset), epochs=1, directory=cache, verbose=False)
    assert os.stat(second.path).st_mtime_ns == stamp
    np.testing.assert_allclose(np.asarray(first(x[:3])), np.asarray(second(x[:3])), atol=1e-6)
    # A file that is not a classifier is an error, and it is left as it was.
    first.path.write_bytes(b"user data")
    with pytest.raises(ValueError, match="left alone"):
        feature_model.get(str(dataset), directory=cache, verbose=False)
    assert first.path.read_bytes() == b"user data"
    _ = rng


def test_feature_model_needs_labels(tmp_path):
    dataset = tmp_path / "unlabelled.npz"
    np.savez(dataset, x=make_images(10, shape=(4, 4, 1)))
    with pytest.raises(ValueError, match="no labels"):
        feature_model.get(str(dataset), directory=tmp_path / "cache", verbose=False)


def test_evaluate_saved_model_writes_eval_json_and_pngs(tmp_path):
    import json

    x = make_images(40, shape=(8, 8, 1), seed=4)
    np.savez(tmp_path / "toy.npz", x=x[:30], x_test=x[30:])
    vae = tiny_vae(latent_dim=3)
    vae.fit(x[:30], batch_size=10, epochs=2, verbose=0)
    vae.save(tmp_path / "model.keras")
    out = tmp_path / "eval"
    kwargs = dict(dataset=str(tmp_path / "toy.npz"), out=out, iwae_samples=4, feature_model="none", batch_size=4)
    results = evaluation.evaluate_saved_model(tmp_path / "model.keras", **kwargs)
    saved = json.loads((out / "eval.json").read_text())
    assert saved["num_images"] == 10 and saved["latent_dim"] == 3 and saved["iwae"] == results["iwae"]
    assert results["iwae"] >= results["elbo"] - 5.0
    assert results["bits_per_dim"] == pytest.approx(-results["iwae"] / (64 * math.log(2)))
    assert {"mutual_information", "marginal_kl", "active_units", "bits_per_dim_dequantized"} <= set(results)
    for name in ("samples", "reconstructions", "interpolation", "traversal", "kl_per_dim"):
        assert (out / f"{name}.png").stat().st_size > 0
    stamp = (out / "eval.json").read_text()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        evaluation.evaluate_saved_model(tmp_path / "model.keras", **kwargs)
    assert (out / "eval.json").read_text() == stamp
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        evaluation.evaluate_saved_model(tmp_path / "missing.keras", **kwargs)


def test_evaluate_command_line(tmp_path):
    """The CLI wiring, in a subprocess (each command defines its own absl flags)."""
    import subprocess
    import sys

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text("{}")
    (tmp_path / "model.keras").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "keras_vae", "evaluate", f"--model={tmp_path / 'model.keras'}",
         f"--out={tmp_path / 'eval'}"], capture_output=True, text=True)
    assert done.returncode != 0 and "refusing to overwrite" in done.stderr
    assert (tmp_path / "eval" / "eval.json").read_text() == "{}"


def test_latent_families_are_scored_and_sampled_from_their_own_prior(tmp_path):
    x = make_images(8, (8, 8, 1))
    keras.utils.set_random_seed(0)
    hierarchical = kv.models.build_hierarchical_vae((8, 8, 1), network="mlp", latent_dim=2, top_latent_dim=2,
                                                    hidden_units=8, seed=0)
    assert evaluation.iwae_bound(hierarchical, x, 32, seed=0) > evaluation.elbo(hierarchical, x, seed=0)
    stats = evaluation.posterior_statistics(hierarchical, x)
    assert len(stats["kl_per_dim"]) == 4 and "not a Gaussian" in stats["mutual_information"]
    # FID samples come from the family's own prior (z2, then z1 ~ p(z1|z2)), not from N(0, I) at z1.
    noise = kv.noise.SeededNoise([0, 0])
    samples = evaluation.prior_samples(hierarchical, 7, batch_size=7)
    draw = kv.latents.draw(hierarchical.prior_distribution({}), noise, 7)
    np.testing.assert_allclose(samples, np.asarray(hierarchical.decode(draw[-1])[0]), atol=1e-6)
    assert evaluation.prior_samples(hierarchical, 7, batch_size=4).shape == (7, 8, 8, 1)
    conditional = kv.models.build_conditional_vae((8, 8, 1), num_classes=3, network="mlp", latent_dim=2)
    with pytest.raises(ValueError, match="samples given y"):
        evaluation.prior_samples(conditional, 2)
    assert evaluation.prior_samples(conditional, 2, conditions={"y": np.array([1])}).shape == (2, 8, 8, 1)
