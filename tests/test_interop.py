"""Our layers inside other people's TensorFlow code, and `.keras` files in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf
from scipy import stats

import keras_vae as kv
from tests.conftest import assert_round_trip, make_images, tiny_vae

SHAPE = (4, 4, 1)


def _softplus(x):
    return np.log1p(np.exp(x))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _dense_head(layer: kv.DiagonalGaussian, features):
    """loc and scale of a DiagonalGaussian computed by hand from its Dense weights."""
    kernel, bias = (w.numpy() for w in layer.dense.weights)
    out = features @ kernel + bias
    loc, raw = np.split(out, 2, axis=-1)
    return loc, _softplus(raw) + layer.min_scale


def test_layers_in_a_functional_model(tmp_path):
    rng = np.random.default_rng(0)
    features_in = keras.Input((6,), name="features")
    params_in = keras.Input((*SHAPE[:2], 2), name="params")
    head = kv.DiagonalGaussian(latent_dim=3)
    loc, scale = head(features_in)
    likelihood = kv.Gaussian(sigma="per_pixel")
    mean = likelihood(params_in)  # a likelihood layer's call is its mean image
    log_sigma = kv.SoftClip(-6.0)(params_in[..., 1:])
    model = keras.Model([features_in, params_in], [loc, scale, mean, log_sigma])

    features = rng.normal(size=(5, 6)).astype("float32")
    params = rng.normal(scale=4.0, size=(5, *SHAPE[:2], 2)).astype("float32")
    params[..., 1] -= 6.0  # log sigmas near the floor, where the clip matters
    got = model([features, params])
    want_loc, want_scale = _dense_head(head, features)
    np.testing.assert_allclose(got[0], want_loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want_scale, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[2], _sigmoid(params[..., :1]), rtol=1e-5)
    np.testing.assert_allclose(got[3], -6.0 + _softplus(params[..., 1:] + 6.0), rtol=1e-5)

    # ... and the model saves to .keras and loads (safe_mode on) with identical outputs.
    assert_round_trip(model, tmp_path / "functional.keras", [features, params])


def test_likelihood_and_posterior_in_a_plain_tf_function():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(3, *SHAPE)).astype("float32")
    params = rng.normal(size=(3, *SHAPE)).astype("float32")
    features = rng.normal(size=(3, 5)).astype("float32")
    gaussian = kv.Gaussian(sigma="learned", log_sigma_scale=10.0)
    gaussian.build(params.shape)
    gaussian.log_sigma_variable.assign(-0.2)  # log sigma = -2 before the clip
    head = kv.DiagonalGaussian(latent_dim=2)
    head.build(features.shape)

    @tf.function
    def loss_and_gradient(x, params, features):
        with tf.GradientTape() as tape:
            nll = -gaussian.distribution(params).log_prob(x)
            prior = kv.latents.standard_normal((head.latent_dim,))
            kl = tf.reduce_sum(kv.latents.kl_per_dimension(head.distribution(features), prior), axis=-1)
            loss = tf.reduce_mean(nll + kl)
        return nll, kl, tape.gradient(loss, gaussian.log_sigma_variable)

    nll, kl, gradient = loss_and_gradient(x, params, features)
    log_sigma = -6.0 + _softplus(-2.0 + 6.0)
    mu = _sigmoid(params)
    want_nll = -stats.norm.logpdf(x, mu, np.exp(log_sigma)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(nll, want_nll, rtol=1e-5)
    loc, scale = _dense_head(head, features)
    np.testing.assert_allclose(kl, (0.5 * (loc**2 + scale**2 - 1) - np.log(scale)).sum(-1), rtol=1e-5)
    # d mean(nll) / d v = mean(sum(1 - ((x - mu) / sigma)**2)) * d log_sigma / d v
    per_image = (1.0 - ((x - mu) / np.exp(log_sigma)) ** 2).sum(axis=(1, 2, 3)).mean()
    np.testing.assert_allclose(gradient, per_image * 10.0 * _sigmoid(-2.0 + 6.0), rtol=1e-4)


def test_bernoulli_and_optimal_sigma_in_tf_function_and_tf_data():
    rng = np.random.default_rng(2)
    x = (rng.uniform(size=(4, *SHAPE)) > 0.5).astype("float32")
    logits = rng.normal(size=(4, *SHAPE)).astype("float32")
    bernoulli = kv.Bernoulli()
    log_prob = tf.function(lambda x, logits: bernoulli.distribution(logits).log_prob(x))(x, logits)
    p = _sigmoid(logits)
    np.testing.assert_allclose(log_prob, (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=(1, 2, 3)), rtol=1e-5)

    # OptimalSigma keeps its running MSE when trained from a tf.function.
    layer = kv.OptimalSigma("image", momentum=0.5)
    step = tf.function(lambda x, mu: layer(x, mu, training=True))
    means = np.clip(x + rng.normal(scale=0.2, size=x.shape), 0, 1).astype("float32")
    per_image = step(x, means)
    mse = ((x - means) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(np.exp(2 * np.asarray(per_image)).ravel(), mse, rtol=1e-5)
    np.testing.assert_allclose(np.exp(2 * layer.running_log_sigma()), mse.mean(), rtol=1e-5)
    assert float(layer.num_updates.numpy()) == 1.0

    # SoftClip as a step of a tf.data pipeline (graph mode, no Keras model around it).
    clip = kv.SoftClip(low=-1.0)
    values = np.linspace(-5, 5, 11).astype("float32")
    clipped = np.concatenate(list(tf.data.Dataset.from_tensor_slices(values).batch(4).map(clip).as_numpy_iterator()))
    np.testing.assert_allclose(clipped, -1.0 + _softplus(values + 1.0), rtol=1e-5)


def test_trained_vae_loads_in_a_fresh_process_with_identical_outputs(tmp_path):
    vae = tiny_vae((8, 8, 1), likelihood="optimal", network="conv", latent_dim=3)
    vae.fit(make_images(32, (8, 8, 1), seed=3), batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    vae.save(path)
    x = make_images(4, (8, 8, 1), seed=4)
    z = np.random.default_rng(4).normal(size=(4, 3)).astype("float32")
    np.savez(tmp_path / "inputs.npz", x=x, z=z)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import keras_vae  # registers the keras_vae classes for safe deserialisation
        import keras
        path, inputs, outputs = sys.argv[1:]
        data = np.load(inputs)
        model = keras.models.load_model(path, safe_mode=True)
        assert type(model).__name__ == "VAE", type(model)
        mean, sigma = model.decode(data["z"])
        loc, scale = model.encode(data["x"])
        np.savez(outputs, mean=mean, sigma=sigma, loc=loc, scale=scale,
                 reconstruction=model.reconstruct(data["x"]))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
        check=False, capture_output=True, text=True, env=env, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    mean, sigma = vae.decode(z)
    loc, scale = vae.encode(x)
    expected = {"mean": mean, "sigma": sigma, "loc": loc, "scale": scale, "reconstruction": vae.reconstruct(x)}
    for name, want in expected.items():
        np.testing.assert_array_equal(out[name], np.asarray(want), err_msg=name)
    # The calibrated (running) sigma came along, not the untrained floor.
    assert 0.01 < float(out["sigma"].mean()) < 1.0
