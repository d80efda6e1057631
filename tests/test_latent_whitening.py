"""Latent whitening: an exact affine map of z that makes the Gaussian fit of the codes the prior.

Checked: the new codes are white, reconstructions and the decoder are the old
model re-parameterised, the ELBO rises by exactly the returned KL, the
correlated posterior's KL, IWAE, statistics, saving and export are right, and
every refusal happens before any weight changes.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from ai_edge_litert.interpreter import Interpreter

import keras_vae as kv
from keras_vae import evaluation, experiment, export, latent_centering, latent_whitening
from tests.conftest import make_images, tiny_vae
from tests.test_export import _assert_same_scores

tfd = tfp.distributions
OFFSET = np.array([1.5, -2.0, 0.5], "float32")
MIXING = np.array([[3.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.3]], "float32")  # correlates the means


def correlated_vae(network: str = "mlp", shape=(8, 8, 1), likelihood="optimal") -> kv.VAE:
    """A tiny VAE whose posterior means are offset, scaled and correlated (mean head edited by hand)."""
    vae = tiny_vae(shape, likelihood=likelihood, network=network, latent_dim=3)
    dense = vae.posterior.dense
    kernel, bias = dense.kernel.numpy(), dense.bias.numpy()
    kernel[:, :3] = 20.0 * kernel[:, :3] @ MIXING
    bias[:3] += OFFSET
    dense.kernel.assign(kernel)
    dense.bias.assign(bias)
    return vae


def _aggregate_moments(vae, x):
    """Mean and covariance of the aggregate posterior of the model's own (possibly correlated) q(z|x)."""
    q = vae.posterior_distribution(x)
    means = np.asarray(q.mean(), np.float64)
    centred = means - means.mean(axis=0)
    return means.mean(axis=0), centred.T @ centred / len(x) + np.asarray(q.covariance(), np.float64).mean(axis=0)


def test_codes_are_white_after_whitening_and_the_gain_is_the_closed_form_kl():
    x = make_images(64)
    vae = correlated_vae()
    means, scales = (np.asarray(t, np.float64) for t in vae.encode(x))
    m, c = _aggregate_moments(vae, x)
    assert abs(np.corrcoef(means.T)[0, 1]) > 0.5  # the codes really were correlated
    gain = latent_whitening.whiten_latents(vae, x, batch_size=24)  # batches of uneven size
    closed_form = 0.5 * (np.trace(c) + m @ m - 3 - np.linalg.slogdet(c)[1])
    np.testing.assert_allclose(gain, closed_form, rtol=1e-6)
    assert gain > m @ m / 2 + 0.5  # more than centring alone would gain
    new_mean, new_cov = _aggregate_moments(vae, x)
    np.testing.assert_allclose(new_mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(new_cov, np.eye(3), atol=1e-4)
    assert isinstance(vae.posterior, kv.WhitenedGaussian)
    np.testing.assert_allclose(latent_whitening.whiten_latents(vae, x), 0.0, atol=1e-6)  # again: nothing to gain


def test_aggregate_posterior_gaussian_adds_the_mean_posterior_variance():
    means = np.array([[1.0, 0.0], [-1.0, 2.0], [0.0, 1.0]])
    scales = np.array([[0.5, 1.0], [0.5, 0.0], [0.5, 1.0]])
    m, c = latent_whitening.aggregate_posterior_gaussian(means, scales)
    np.testing.assert_allclose(m, [0.0, 1.0])
    np.testing.assert_allclose(c, np.cov(means.T, bias=True) + np.diag([0.25, 2.0 / 3.0]))


@pytest.mark.parametrize("network,shape", [("mlp", (8, 8, 1)), ("conv", (12, 12, 1)), ("resnet", (8, 8, 3))])
def test_reconstructions_and_decoder_are_the_old_model_reparameterised(network, shape):
    x = make_images(32, shape)
    vae = correlated_vae(network, shape)
    base_means, base_scales = latent_whitening.base_moments(vae, x)
    reconstruction = np.asarray(vae.reconstruct(x))
    latent_whitening.whiten_latents(vae, x)
    np.testing.assert_allclose(np.asarray(vae.reconstruct(x)), reconstruction, atol=1e-4)
    head = vae.posterior
    shift, whitening = head.shift.numpy().astype(np.float64), head.whitening.numpy().astype(np.float64)
    np.testing.assert_array_equal(whitening, np.tril(whitening))
    # q(z'|x) = N(W (mu - m), W diag(s^2) W^T) of the old codes.
    q = vae.posterior_distribution(x)
    np.testing.assert_allclose(q.mean(), (base_means - shift) @ whitening.T, atol=1e-4)
    want_cov = np.einsum("ij,nj,kj->nik", whitening, base_scales**2, whitening)
    np.testing.assert_allclose(q.covariance(), want_cov, rtol=1e-4, atol=1e-6)
    # The decoder at z' is the old decoder at z = m + W^-1 z' (the same seed rebuilds the old model).
    z = np.random.default_rng(1).standard_normal((8, 3))
    old = correlated_vae(network, shape)
    old_z = (shift + z @ np.linalg.inv(whitening).T).astype("float32")
    np.testing.assert_allclose(np.asarray(vae.decoder(z.astype("float32"), training=False)),
                               np.asarray(old.decoder(old_z, training=False)), atol=1e-4)


@pytest.mark.parametrize("likelihood", ["optimal", "learned", "bernoulli"])
def test_elbo_rises_by_the_returned_gain(likelihood):
    x = make_images(48)
    vae = correlated_vae(likelihood=likelihood)
    vae.fit(x, batch_size=16, epochs=2, verbose=0)  # an untrained running sigma is tiny and amplifies round-off
    before = evaluation.elbo(vae, x, seed=3)
    gain = latent_whitening.whiten_latents(vae, x)
    after = evaluation.elbo(vae, x, seed=3)  # same noise, mapped by the same affine map: same reconstructions
    assert gain > 1.0
    np.testing.assert_allclose(after - before, gain, rtol=1e-3)


def test_kl_per_dimension_of_a_correlated_posterior_sums_to_the_tfp_kl():
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(4, 3)).astype("float32")
    tril = np.tril(rng.normal(size=(4, 3, 3))).astype("float32")
    tril[:, range(3), range(3)] = np.abs(tril[:, range(3), range(3)]) + 0.1
    q = tfd.MultivariateNormalTriL(loc=loc, scale_tril=tril)
    terms = np.asarray(kv.latents.kl_per_dimension(q, kv.latents.standard_normal((3,))))
    prior = kv.latents.standard_normal((3,))
    np.testing.assert_allclose(terms.sum(axis=-1), tfd.kl_divergence(q, prior), rtol=1e-5)
    # Chain rule: the first dimension's term is the KL of its marginal.
    marginal = tfd.Normal(loc[:, 0], np.abs(tril[:, 0, 0]))
    np.testing.assert_allclose(terms[:, 0], tfd.kl_divergence(marginal, tfd.Normal(0.0, 1.0)), rtol=1e-5)
    diagonal = tfd.MultivariateNormalDiag(loc=loc, scale_diag=np.abs(tril[:, range(3), range(3)]))
    diagonal_terms = kv.latents.kl_per_dimension(diagonal, kv.latents.standard_normal((3,)))
    np.testing.assert_allclose(np.asarray(diagonal_terms).sum(axis=-1),
                               tfd.kl_divergence(diagonal, prior), rtol=1e-5)


def test_iwae_and_evaluate_use_the_new_head_not_a_stale_trace():
    x = make_images(16)
    vae = correlated_vae()
    evaluation.iwae_bound(vae, x, num_samples=4, seed=0)  # traces the IWAE weights with the diagonal head
    kl_before = vae.evaluate(x, batch_size=16, verbose=0, return_dict=True)["kl"]  # builds test_function
    gain = latent_whitening.whiten_latents(vae, x)
    compiled = evaluation.log_importance_weights(vae, tf.constant(x), 4, seed=0)
    eager = evaluation._log_weights(vae, {"x": tf.constant(x)}, 4, tf.constant([0, 0], tf.int32), None, vae.posterior)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-3)
    kl_after = vae.evaluate(x, batch_size=16, verbose=0, return_dict=True)["kl"]
    np.testing.assert_allclose(kl_before - kl_after, gain, rtol=1e-3)  # the KL is analytic: no noise


def test_posterior_statistics_of_a_whitened_model():
    x = make_images(64)
    vae = correlated_vae()
    before = evaluation.posterior_statistics(vae, x)
    gain = latent_whitening.whiten_latents(vae, x)
    after = evaluation.posterior_statistics(vae, x)
    q = vae.posterior_distribution(x)
    np.testing.assert_allclose(after["kl"], np.mean(tfd.kl_divergence(q, kv.latents.standard_normal((3,)))),
                               rtol=1e-4)
    np.testing.assert_allclose(before["kl"] - after["kl"], gain, rtol=1e-4)
    np.testing.assert_allclose(after["mutual_information"], before["mutual_information"], rtol=1e-6)
    assert after["marginal_kl"] < before["marginal_kl"] - 0.5 * gain
    assert after["active_units"] == 3


def test_whitened_model_saves_reloads_and_trains_on(tmp_path):
    x = make_images(32)
    vae = correlated_vae()
    vae.fit(x, batch_size=16, epochs=1, verbose=0)  # builds the train function with the diagonal head
    latent_whitening.whiten_latents(vae, x)
    vae.save(tmp_path / "whitened.keras")
    loaded = keras.models.load_model(tmp_path / "whitened.keras")
    assert isinstance(loaded.posterior, kv.WhitenedGaussian)
    for got, want in zip(loaded.encode(x), vae.encode(x), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    z = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded.decode(z)[0]), np.asarray(vae.decode(z)[0]))
    # At learning rate 0 the train step only measures: its KL is the whitened model's, not a stale trace's.
    vae.optimizer.learning_rate.assign(0.0)
    kl = vae.fit(x, batch_size=16, epochs=1, verbose=0).history["kl"][0]  # the batch shape already traced
    np.testing.assert_allclose(kl, evaluation.posterior_statistics(vae, x)["kl"], rtol=1e-4)
    vae.optimizer.learning_rate.assign(1e-3)
    fixed = [w.numpy().copy() for w in (vae.posterior.shift, vae.posterior.whitening)]
    history = vae.fit(x, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for variable, value in zip((vae.posterior.shift, vae.posterior.whitening), fixed, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)  # not trainable
    kl = vae.evaluate(x, batch_size=32, verbose=0, return_dict=True)["kl"]
    np.testing.assert_allclose(kl, evaluation.posterior_statistics(vae, x)["kl"], rtol=1e-4)


def test_export_of_a_whitened_model_serves_its_correlated_posterior(tmp_path):
    shape = (12, 12, 1)
    x = make_images(32, shape)
    vae = correlated_vae("conv", shape)
    vae.fit(x, batch_size=16, epochs=1, verbose=0)
    latent_whitening.whiten_latents(vae, x)
    loaded = tf.saved_model.load(str(export.saved_model(vae, tmp_path / "serving", name="vae", version=1)))
    encoded = loaded.signatures["encode"](x=tf.constant(x[:4]))
    for got, want in zip((encoded["mean"], encoded["stddev"]), vae.encode(x[:4]), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    x_many = np.repeat(x[:1], 256, axis=0)
    _assert_same_scores(loaded.signatures["elbo"](x=tf.constant(x_many))["elbo"], vae.elbo_with_running_sigma(x_many))
    interpreter = Interpreter(model_path=str(export.tflite(vae, tmp_path / "vae.tflite", signatures=export.SIGNATURES)))
    encoded = interpreter.get_signature_runner("encode")(x=x[:4])
    np.testing.assert_allclose(encoded["mean"], vae.encode(x[:4])[0], atol=1e-5)
    _assert_same_scores(interpreter.get_signature_runner("elbo")(x=x_many)["elbo"], vae.elbo_with_running_sigma(x_many))


def test_refusals_happen_before_any_change():
    hierarchical = kv.models.get("hierarchical")((8, 8, 1), network="mlp", latent_dim=2)
    assert not latent_whitening.supports(hierarchical)
    with pytest.raises(TypeError, match="plain keras_vae.VAE"):
        latent_whitening.whiten_latents(hierarchical, make_images(8))
    vae = correlated_vae()
    weights = [w.copy() for w in vae.get_weights()]
    bad = make_images(8)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        latent_whitening.whiten_latents(vae, bad)
    with pytest.raises(ValueError, match="more images than latent dimensions"):
        latent_whitening.whiten_latents(vae, make_images(3))
    for a, b in zip(weights, vae.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(vae.posterior, kv.DiagonalGaussian)
    latent_whitening.whiten_latents(vae, make_images(16))
    with pytest.raises(TypeError, match="DiagonalGaussian posterior head"):  # centring folds into the mean head
        latent_centering.center_latents(vae, make_images(16))


@pytest.mark.parametrize("every_epoch", [False, True])
def test_callback_whitens_after_training(every_epoch):
    x = make_images(48)
    vae = correlated_vae()
    whitening = kv.callbacks.LatentWhitening(x, every_epoch=every_epoch)
    history = vae.fit(x, batch_size=16, epochs=2, verbose=0, callbacks=[whitening])
    assert len(whitening.gains) == (2 if every_epoch else 1)
    assert whitening.gains[0] > 1.0
    mean, cov = _aggregate_moments(vae, x)
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(cov, np.eye(3), atol=1e-4)
    assert ("latent_whitening_nats" in history.history) == every_epoch
    if every_epoch:
        np.testing.assert_allclose(history.history["latent_whitening_nats"], whitening.gains, rtol=1e-6)


def test_callback_refuses_too_few_images_before_training():
    vae = correlated_vae()
    weights = [w.copy() for w in vae.get_weights()]
    with pytest.raises(ValueError, match="more images than latent dimensions"):
        vae.fit(make_images(16), batch_size=8, epochs=1, verbose=0,
                callbacks=[kv.callbacks.LatentWhitening(make_images(3))])
    for a, b in zip(weights, vae.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_whitens_by_default_and_refuses_bad_settings_before_work(tmp_path):
    path = tmp_path / "blobs.npz"
    np.savez(path, x=make_images(48))
    config = experiment.RunConfig(dataset=str(path), network="mlp", latent_dim=2, epochs=2, batch_size=16,
                                  out=str(tmp_path / "run"))
    assert config.align_latents == "whiten"
    experiment.train(config, verbose=0)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["latent_alignment_nats"] > 0 and saved["flags"]["align_latents"] == "whiten"
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    mean, cov = _aggregate_moments(model, kv.data.load_arrays(str(path), "train"))
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(cov, np.eye(2), atol=1e-4)
    for bad, message in (({"align_latents": "white"}, "align_latents"), ({"latent_dim": 60}, "more train images")):
        with pytest.raises(ValueError, match=message):
            experiment.train(dataclasses.replace(config, out=str(tmp_path / "bad"), **bad), verbose=0)
        assert not (tmp_path / "bad").exists()
