"""VAE: the ELBO, gradients, beta and free bits, sigma learning, fit/evaluate, callbacks, saving, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae.latents import kl_per_dimension, standard_normal
from tests.conftest import assert_round_trip, make_images, tiny_vae


def terms_with_fixed_noise(vae, x, **kwargs):
    """compute_terms with the sampling noise reset, so two calls draw the same z."""
    vae.seed_generator.state.assign(np.array([7, 0], vae.seed_generator.state.dtype))
    return vae.compute_terms(x, **kwargs)


def gradients(vae, loss_fn):
    with tf.GradientTape() as tape:
        loss = loss_fn()
    return [np.asarray(g) for g in tape.gradient(loss, vae.trainable_variables)]


def test_fixed_sigma_gradients_equal_beta_vae_on_summed_squared_error(images):
    sigma = 0.3
    vae = tiny_vae(likelihood=kv.Gaussian(sigma=sigma))
    effective = float(vae.likelihood.stddev(np.zeros((1, 8, 8, 1), "float32"))[0, 0, 0, 0])  # soft clip
    beta = 2 * effective**2
    x = tf.constant(images)

    def gaussian_loss():
        return terms_with_fixed_noise(vae, x)["loss"]

    def beta_vae_loss():  # written out independently: sum of squared errors + beta * KL
        vae.seed_generator.state.assign(np.array([7, 0], vae.seed_generator.state.dtype))
        q = vae.posterior.distribution(vae.encoder(x))
        z = q.loc + q.stddev() * kv.noise.SeededNoise(vae.seed_generator.next()).normal(tf.shape(q.loc))
        mean = tf.sigmoid(vae.decoder(z))
        sse = tf.reduce_sum(tf.square(x - mean), axis=(1, 2, 3))
        kl = kl_per_dimension(q, standard_normal((q.event_shape[0],)))
        return tf.reduce_mean(sse) + beta * tf.reduce_mean(tf.reduce_sum(kl, -1))

    for g_gauss, g_beta in zip(gradients(vae, gaussian_loss), gradients(vae, beta_vae_loss)):
        np.testing.assert_allclose(g_gauss * beta, g_beta, rtol=2e-4, atol=1e-6)


def test_elbo_is_log_likelihood_minus_kl_and_matches_terms(images):
    vae = tiny_vae(likelihood="optimal_per_image", beta=3.0)
    terms = terms_with_fixed_noise(vae, images)
    per_image = terms["log_likelihood"] - tf.reduce_sum(terms["kl_per_dim"], -1)
    np.testing.assert_allclose(float(terms["elbo"]), float(tf.reduce_mean(per_image)), rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss"]), float(terms["rec"] + 3.0 * terms["kl"]), rtol=1e-5)
    assert vae.elbo(images).shape == (len(images),)


def test_beta_and_free_bits_change_the_loss_as_defined(images):
    vae = tiny_vae(likelihood="gaussian", free_bits=0.0)
    base = terms_with_fixed_noise(vae, images)
    vae.beta.assign(4.0)
    vae.free_bits = 5.0  # far above every dimension's KL: each dimension counts 5 nats
    floored = terms_with_fixed_noise(vae, images)
    np.testing.assert_allclose(float(floored["loss"]), float(base["rec"]) + 4.0 * 5.0 * vae.latent_dim, rtol=1e-5)
    np.testing.assert_allclose(float(floored["elbo"]), float(base["elbo"]), rtol=1e-6)


def test_learned_sigma_moves_toward_the_rmse():
    x = make_images(64)
    vae = tiny_vae(likelihood="learned")
    start = float(vae.likelihood.log_sigma_variable) * vae.likelihood.log_sigma_scale
    vae.fit(x, batch_size=8, epochs=20, verbose=0)  # 160 Adam steps of ~0.03 in log sigma
    learned = float(np.log(vae.likelihood.stddev(np.zeros((1, 8, 8, 1), "float32"))[0, 0, 0, 0]))
    rmse = float(np.sqrt(np.mean((vae.reconstruct(x) - x) ** 2)))
    assert abs(learned - np.log(rmse)) < abs(start - np.log(rmse)) / 2


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "learned", "optimal", "optimal_per_image",
                                        "optimal_per_channel", "per_pixel"])
def test_every_likelihood_trains_and_lowers_the_loss_without_nan(likelihood):
    x = make_images(64)
    vae = tiny_vae(likelihood=likelihood)
    before = vae.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    history = vae.fit(x, batch_size=16, epochs=8, verbose=0)
    after = vae.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    assert all(np.isfinite(v) for values in history.history.values() for v in values)
    assert after["loss"] < before["loss"]
    assert set(history.history) == {"loss", "elbo", "rec", "kl", "sigma", "beta"}


def test_optimal_sigma_running_average_is_used_at_inference():
    x = make_images(64)
    # momentum 0 and one batch per epoch: the running MSE is the last training step's MSE.
    vae = tiny_vae(likelihood=kv.Gaussian(sigma="optimal", momentum=0.0))
    history = vae.fit(x, batch_size=64, epochs=5, verbose=0)
    mean, sigma = vae.decode(vae.encode(x)[0])
    assert mean.shape == sigma.shape == x.shape
    np.testing.assert_allclose(np.asarray(sigma), history.history["sigma"][-1], rtol=1e-5)


def test_fit_on_tf_data_with_keras_callbacks(tmp_path):
    x = make_images(32)
    vae = tiny_vae(likelihood="optimal")
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(8)
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="elbo", mode="max", save_best_only=True),
        keras.callbacks.TensorBoard(str(tmp_path / "tb")),
        keras.callbacks.EarlyStopping(monitor="val_elbo", mode="max", patience=1),
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
    ]
    history = vae.fit(dataset, validation_data=dataset, epochs=3, callbacks=callbacks, verbose=0)
    assert "val_elbo" in history.history
    restored = keras.models.load_model(tmp_path / "best.keras")
    assert isinstance(restored, kv.VAE)
    assert any((tmp_path / "tb").rglob("*.v2"))
    assert vae.evaluate(dataset, verbose=0, return_dict=True)["elbo"] < 0


@pytest.mark.parametrize("likelihood", ["optimal", "learned", "per_pixel", "bernoulli"])
def test_save_load_round_trip_is_identical(tmp_path, likelihood):
    x = make_images(16)
    vae = tiny_vae(likelihood=likelihood, beta=2.0)
    vae.fit(x, batch_size=8, epochs=2, verbose=0)
    vae.beta.assign(0.5)
    loaded = assert_round_trip(vae, tmp_path / "m.keras", x, method="reconstruct")
    z = np.random.default_rng(0).normal(size=(4, 2)).astype("float32")
    for a, b in zip(vae.decode(z), loaded.decode(z)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(loaded.beta) == 0.5 and loaded.likelihood.get_config() == vae.likelihood.get_config()


def test_unfitted_model_saves_its_weights(tmp_path):
    vae = tiny_vae(likelihood="optimal")
    assert len(vae.weights) > 0 and vae.built
    assert_round_trip(vae, tmp_path / "fresh.keras", make_images(4), method="reconstruct")


@pytest.mark.parametrize("network", ["conv", "beta_vae_conv", "mlp", "resnet"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (27, 27, 1), (32, 32, 3), (64, 64, 3)])
def test_each_network_and_image_size_trains_one_step(network, shape):
    x = make_images(4, shape)
    vae = tiny_vae(shape, likelihood="per_pixel", network=network, latent_dim=3)
    history = vae.fit(x, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert vae.reconstruct(x).shape == x.shape and vae.sample(2).shape == (2, *shape)


def test_encode_decode_sample_shapes(images):
    vae = tiny_vae()
    mean, stddev = vae.encode(images)
    assert mean.shape == stddev.shape == (len(images), 2)
    assert np.all(np.asarray(stddev) > 0)
    assert vae.sample(5).shape == (5, 8, 8, 1)
    assert isinstance(vae.posterior_distribution(images), kv.posteriors.tfd.MultivariateNormalDiag)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 8, 8), "float32"), "rank 4"),
        (np.zeros((4, 8, 8, 3), "float32"), "channel mismatch"),
        (np.zeros((4, 9, 9, 1), "float32"), "shape"),
        (np.full((4, 8, 8, 1), np.nan, "float32"), "NaN"),
        (np.full((4, 8, 8, 1), 255.0, "float32"), r"\[0, 1\]"),
        (np.zeros((4, 8, 8, 1), "uint8"), "uint8"),
        (np.zeros((0, 8, 8, 1), "float32"), "empty"),
    ],
)
def test_bad_input_fails_before_training(bad, message):
    vae = tiny_vae()
    weights = [np.array(w) for w in vae.weights]
    with pytest.raises(ValueError, match=message):
        vae.fit(bad, epochs=1, verbose=0)
    assert int(vae.optimizer.iterations) == 0
    assert all(np.array_equal(w, np.asarray(v)) for w, v in zip(weights, vae.weights))


def test_bad_dataset_and_construction_errors():
    vae = tiny_vae()
    with pytest.raises(ValueError, match="Received element shape"):
        vae.fit(tf.data.Dataset.from_tensor_slices(np.zeros((4, 9, 9, 1), "float32")).batch(2), verbose=0)
    with pytest.raises(ValueError, match="uint8"):
        vae.evaluate(tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 1), "uint8")).batch(2), verbose=0)
    images = make_images(4)
    with pytest.raises(ValueError, match=r"unbatched\? call \.batch"):
        vae.fit(tf.data.Dataset.from_tensor_slices(images), verbose=0)
    with pytest.raises(ValueError, match=r"map dict elements to their image tensor first"):
        vae.fit(tf.data.Dataset.from_tensor_slices({"image": images}).batch(2), verbose=0)
    assert int(vae.optimizer.iterations.numpy()) == 0  # all refused before any step


@pytest.mark.parametrize("bad_value, seen", [(np.nan, r"non-finite pixels:\] \[1\]"),
                                             (np.inf, r"non-finite pixels:\] \[1\]"),
                                             (255.0, r"non-finite pixels:\] \[0\].*\[to\] \[255\]")])
def test_a_tf_data_batch_with_nan_inf_or_8_bit_values_fails_with_a_clear_message(bad_value, seen):
    vae = tiny_vae()
    images = make_images(8)
    images[5, 2, 2, 0] = bad_value  # in the third batch of 2
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"Expected pixel values in \[0, 1\][^\n]*{seen}"):
        vae.fit(dataset, epochs=1, verbose=0)
    assert all(np.isfinite(np.asarray(w)).all() for w in vae.trainable_weights)  # the bad batch changed nothing
    with pytest.raises(ValueError, match="params_per_channel=2"):
        kv.VAE(kv.networks.mlp_encoder((8, 8, 1)), kv.networks.mlp_decoder((8, 8, 1), latent_dim=2),
               latent_dim=2, likelihood="per_pixel")
    with pytest.raises(ValueError, match="latent_dim=3"):
        kv.VAE(kv.networks.mlp_encoder((8, 8, 1)), kv.networks.mlp_decoder((8, 8, 1), latent_dim=2), latent_dim=3)
    with pytest.raises(ValueError, match="free_bits"):
        tiny_vae(free_bits=-1.0)
    with pytest.raises(ValueError, match="z of shape"):
        vae.decode(np.zeros((2, 5), "float32"))
