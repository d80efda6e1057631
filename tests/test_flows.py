"""The IAF posterior (keras_vae.flows): autoregressive masks, the log-determinant, log q, bad input, the harness."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import flows, latents
from keras_vae.models.gumbel import GumbelSoftmax
from keras_vae.noise import SeededNoise
from tests.conftest import make_images
from tests.harness import run_family_test

X = make_images(16, (8, 8, 1), seed=3)


def _random_flow_head(latent_dim=4, num_flows=2, units=16, features=5):
    """A built head whose flows are not the identity (the output layers start at zero)."""
    head = flows.IAFPosterior(latent_dim, num_flows, units)
    head.build((None, features))
    rng = np.random.default_rng(0)
    for network in head.networks:
        network.kernels[2].assign(0.3 * rng.normal(size=network.kernels[2].shape).astype("float32"))
        network.biases[2].assign(0.1 * rng.normal(size=network.biases[2].shape).astype("float32"))
    return head, rng.normal(size=(6, features)).astype("float32")


def test_each_flow_output_depends_only_on_earlier_inputs():
    network = flows.MaskedAutoregressiveNetwork(latent_dim=5, hidden_units=12)
    network.build((None, 5), (None, 3))
    network.kernels[2].assign(np.random.default_rng(1).normal(size=(12, 10)).astype("float32"))
    z = tf.constant(np.random.default_rng(2).normal(size=(4, 5)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        shift, log_scale = network(z, tf.ones((4, 3)))
    for output in (shift, log_scale):
        jacobian = np.abs(tape.batch_jacobian(output, z).numpy()).max(axis=0)  # (out d, in d')
        assert np.all(np.triu(jacobian) == 0.0)  # no dependence on inputs d' >= d
        assert np.all(np.tril(jacobian, -1)[1:, :1] > 0.0)  # but a real one on the first input


def test_log_determinant_matches_the_autodiff_jacobian():
    head, features = _random_flow_head()
    _, _, context = head(features)
    bijector = head.bijector(context)
    eps = tf.constant(np.random.default_rng(3).normal(size=(6, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(eps)
        z = bijector.forward(eps)
    jacobian = tape.batch_jacobian(z, eps).numpy().astype("float64")
    sign, by_autodiff = np.linalg.slogdet(jacobian)
    assert np.all(sign != 0)
    assert np.abs(by_autodiff).max() > 0.1  # the flow is not volume-preserving here
    np.testing.assert_allclose(bijector.forward_log_det_jacobian(eps, event_ndims=1).numpy(), by_autodiff,
                               rtol=1e-4, atol=1e-4)


def test_log_q_of_the_draw_equals_the_exact_inversion():
    head, features = _random_flow_head()
    q = head.distribution(features)
    z = latents.draw(q, SeededNoise([1, 2]))  # cached: log q without inverting the flow
    cached = q.log_prob(z).numpy()
    inverted = q.log_prob(tf.constant(z.numpy())).numpy()  # a new tensor: TFP inverts the flow step by step
    np.testing.assert_allclose(cached, inverted, rtol=1e-4, atol=1e-4)
    base = q.distribution
    eps = q.bijector.inverse(tf.constant(z.numpy()))
    expected = base.log_prob(eps) - q.bijector.forward_log_det_jacobian(eps, event_ndims=1)
    np.testing.assert_allclose(cached, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_an_untrained_flow_is_its_base_head():
    head = flows.IAFPosterior(3, num_flows=2, hidden_units=8)
    features = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    q = head.distribution(features)
    base = head.base.distribution(features)
    np.testing.assert_allclose(latents.mode(q).numpy(), base.mean().numpy(), atol=1e-6)
    z = latents.draw(q, SeededNoise([0, 0]))
    np.testing.assert_allclose(q.log_prob(z).numpy(), base.log_prob(z).numpy(), rtol=1e-5)


def test_flow_kl_is_monte_carlo_and_the_config_round_trips():
    head = flows.IAFPosterior(3, num_flows=3, hidden_units=8)
    q = head.distribution(np.zeros((2, 5), "float32"))
    assert latents.kl_estimator(q, latents.standard_normal((3,))) == latents.MONTE_CARLO
    again = flows.IAFPosterior.from_config(head.get_config())
    assert again.get_config() == head.get_config()


def test_bad_flows_raise_before_training():
    with pytest.raises(ValueError, match="discrete"):
        flows.IAFPosterior(6, base=GumbelSoftmax(2, 3))
    with pytest.raises(ValueError, match="num_flows"):
        flows.IAFPosterior(3, num_flows=0)
    with pytest.raises(ValueError, match="hidden_units"):
        flows.IAFPosterior(3, hidden_units=-1)
    with pytest.raises(ValueError, match="latent_dim=2, but latent_dim=3"):
        flows.IAFPosterior(3, base=kv.DiagonalGaussian(2))


def test_iaf_vae_meets_the_contract(tmp_path):
    keras.utils.set_random_seed(0)
    model = kv.build_vae((8, 8, 1), network="mlp", latent_dim=3, likelihood="learned", seed=0,
                         posterior=flows.IAFPosterior(3, num_flows=2, hidden_units=16))
    run_family_test(model, {"x": X}, tmp_path)
    assert not kv.latent_whitening.supports(model)


def test_iwae_weights_and_the_elbo_score_the_flowed_posterior_not_its_base():
    keras.utils.set_random_seed(0)
    model = kv.build_vae((8, 8, 1), network="mlp", latent_dim=4, likelihood="learned", seed=0,
                         posterior=flows.IAFPosterior(4, num_flows=2, hidden_units=16))
    model(X[:2])
    rng = np.random.default_rng(5)
    for network in model.posterior.networks:  # a flow far from the identity, conditioned on x
        network.kernels[2].assign(0.5 * rng.normal(size=network.kernels[2].shape).astype("float32"))
    x = tf.constant(X[:3])
    log_w = model.log_importance_weights({"x": x}, 2, noise=SeededNoise([4, 5])).numpy()
    repeated = {"x": tf.reshape(tf.repeat(x[None], 2, axis=0), (6, 8, 8, 1))}
    q = model.posterior_distribution(repeated)
    z = latents.draw(q, SeededNoise([4, 5]))
    z_copy = tf.constant(z.numpy())  # a new tensor: log q by inverting the flow, not TFP's cache
    log_joint = (model.likelihood_distribution(z_copy, repeated).log_prob(repeated["x"])
                 + model.prior_distribution().log_prob(z_copy))
    flowed = log_joint - q.log_prob(z_copy)
    np.testing.assert_allclose(log_w, flowed.numpy().reshape(2, 3), rtol=1e-4, atol=1e-3)
    base = log_joint - q.distribution.log_prob(z_copy)  # the base density at z: a different, wrong weight
    assert np.abs(base.numpy() - flowed.numpy()).max() > 1.0
    contexts = model.posterior(model.encoder(x))[2].numpy()
    assert np.abs(contexts[0] - contexts[1]).max() > 1e-3  # the flows see the image through the context h(x)
    terms = model.compute_terms({"x": x}, noise=SeededNoise([6, 7]), fit_sigma=False)
    assert terms["kl_per_dim"].shape == (3, 1)  # the Monte Carlo KL of the flow at the step's draw
