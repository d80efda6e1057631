"""Latent centring: an exact shift of z (same reconstructions, ELBO up by |m|^2/2), its checks and its callback."""

import json

import keras
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import evaluation, experiment, latent_centering
from tests.conftest import make_images, tiny_vae

OFFSET = np.array([1.5, -2.0, 0.5], "float32")


def offset_vae(network: str = "mlp", shape=(8, 8, 1), likelihood="optimal") -> kv.VAE:
    """A tiny VAE whose posterior means sit around OFFSET (the bias of the mean head moved by hand)."""
    vae = tiny_vae(shape, likelihood=likelihood, network=network, latent_dim=3)
    bias = vae.posterior.dense.bias
    bias.assign(np.concatenate([OFFSET, np.zeros(3, "float32")]) + bias.numpy())
    return vae


def test_shift_is_the_aggregate_posterior_mean_and_centres_it():
    x = make_images(64)
    vae = offset_vae()
    means = np.asarray(vae.encode(x)[0], np.float64)
    shift = latent_centering.center_latents(vae, x, batch_size=24)  # batches of uneven size
    np.testing.assert_allclose(shift, means.mean(axis=0), rtol=1e-6)
    assert np.linalg.norm(shift) > 2.0  # the offset was really there
    np.testing.assert_allclose(np.asarray(vae.encode(x)[0]).mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(latent_centering.center_latents(vae, x), 0.0, atol=1e-5)  # a second call: no-op


@pytest.mark.parametrize("network,shape", [("mlp", (8, 8, 1)), ("conv", (12, 12, 1)), ("resnet", (8, 8, 3))])
def test_reconstructions_scales_and_decoder_are_the_same_model_shifted(network, shape):
    x = make_images(32, shape)
    vae = offset_vae(network, shape)
    loc, scale = (np.asarray(t) for t in vae.encode(x))
    reconstruction = np.asarray(vae.reconstruct(x))
    z = np.random.default_rng(1).standard_normal((8, 3)).astype("float32")
    shift = latent_centering.center_latents(vae, x)
    new_loc, new_scale = (np.asarray(t) for t in vae.encode(x))
    np.testing.assert_allclose(new_loc, loc - shift, atol=1e-5)
    np.testing.assert_array_equal(new_scale, scale)
    np.testing.assert_allclose(np.asarray(vae.reconstruct(x)), reconstruction, atol=1e-5)
    # The decoder at z is the old decoder at z + m (the same seed rebuilds the old model).
    old = offset_vae(network, shape)
    np.testing.assert_allclose(np.asarray(vae.decoder(z, training=False)),
                               np.asarray(old.decoder(z + shift.astype("float32"), training=False)), atol=1e-4)


@pytest.mark.parametrize("likelihood", ["optimal", "learned", "bernoulli"])
def test_elbo_rises_by_half_the_squared_shift(likelihood):
    x = make_images(48)
    vae = offset_vae(likelihood=likelihood)
    vae.fit(x, batch_size=16, epochs=2, verbose=0)  # an untrained running sigma is tiny and amplifies round-off
    before = evaluation.elbo(vae, x, seed=3)
    shift = latent_centering.center_latents(vae, x)
    after = evaluation.elbo(vae, x, seed=3)  # same noise: the reconstruction term is unchanged
    assert shift @ shift / 2 > 0.2
    np.testing.assert_allclose(after - before, shift @ shift / 2, rtol=1e-3)


def test_centred_model_saves_and_reloads(tmp_path):
    x = make_images(32)
    vae = offset_vae()
    latent_centering.center_latents(vae, x)
    vae.save(tmp_path / "centred.keras")
    loaded = keras.models.load_model(tmp_path / "centred.keras")
    np.testing.assert_allclose(np.asarray(loaded.encode(x)[0]).mean(axis=0), 0.0, atol=1e-5)
    z = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded.decode(z)[0]), np.asarray(vae.decode(z)[0]))


def _decoder(first_layer, latent_dim: int = 3) -> keras.Model:
    z = keras.Input((latent_dim,))
    h = first_layer(z)
    h = keras.layers.Dense(64)(keras.layers.Flatten()(h))
    return keras.Model(z, keras.layers.Reshape((8, 8, 1))(h))


@pytest.mark.parametrize(
    "decoder,message",
    [
        (lambda: _decoder(keras.layers.Dense(16, use_bias=False)), "no bias"),
        (lambda: _decoder(keras.layers.Reshape((3, 1))), "exactly one Dense layer"),
    ],
)
def test_unsupported_decoders_are_refused_before_any_change(decoder, message):
    vae = kv.VAE(kv.networks.mlp_encoder((8, 8, 1)), decoder(), latent_dim=3)
    weights = [w.copy() for w in vae.get_weights()]
    assert not latent_centering.supports(vae)
    with pytest.raises(ValueError, match=message):
        latent_centering.center_latents(vae, make_images(8))
    for a, b in zip(weights, vae.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_sequential_decoder_is_supported():
    decoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(64), keras.layers.Reshape((8, 8, 1))])
    vae = kv.VAE(kv.networks.mlp_encoder((8, 8, 1)), decoder, latent_dim=3)
    assert latent_centering.supports(vae)
    x = make_images(16)
    latent_centering.center_latents(vae, x)
    np.testing.assert_allclose(np.asarray(vae.encode(x)[0]).mean(axis=0), 0.0, atol=1e-5)


def test_other_model_families_and_bad_images_are_refused():
    hierarchical = kv.models.get("hierarchical")((8, 8, 1), network="mlp", latent_dim=2)
    assert not latent_centering.supports(hierarchical)
    with pytest.raises(TypeError, match="plain keras_vae.VAE"):
        latent_centering.center_latents(hierarchical, make_images(8))
    with pytest.raises(TypeError, match="plain keras_vae.VAE"):
        latent_centering.center_latents(keras.Sequential([keras.layers.Dense(2)]), make_images(8))
    vae = offset_vae()
    bad = make_images(8)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        latent_centering.center_latents(vae, bad)
    with pytest.raises(ValueError, match="shape"):
        latent_centering.center_latents(vae, make_images(8, (6, 6, 1)))


@pytest.mark.parametrize("every_epoch", [False, True])
def test_callback_centres_after_training(every_epoch):
    x = make_images(48)
    vae = offset_vae()
    centring = kv.callbacks.LatentCentering(x, every_epoch=every_epoch)
    history = vae.fit(x, batch_size=16, epochs=2, verbose=0, callbacks=[centring])
    assert len(centring.shifts) == (2 if every_epoch else 1)
    assert np.linalg.norm(centring.shifts[0]) > 1.0  # training alone moved the offset only part of the way
    np.testing.assert_allclose(np.asarray(vae.encode(x)[0]).mean(axis=0), 0.0, atol=1e-5)
    assert ("latent_shift_nats" in history.history) == every_epoch
    if every_epoch:
        np.testing.assert_allclose(history.history["latent_shift_nats"][0],
                                   centring.shifts[0] @ centring.shifts[0] / 2, rtol=1e-6)


def test_callback_refuses_an_unsupported_model_before_training():
    vae = kv.VAE(kv.networks.mlp_encoder((8, 8, 1)), _decoder(keras.layers.Reshape((3, 1))), latent_dim=3)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    weights = [w.copy() for w in vae.get_weights()]
    with pytest.raises(ValueError, match="exactly one Dense layer"):
        vae.fit(make_images(16), batch_size=8, epochs=1, verbose=0,
                callbacks=[kv.callbacks.LatentCentering(make_images(16))])
    for a, b in zip(weights, vae.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("center", [True, False])
def test_train_centres_the_saved_model_when_told_to(tmp_path, center):
    path = tmp_path / "blobs.npz"
    x = make_images(48)
    np.savez(path, x=x)
    config = experiment.RunConfig(dataset=str(path), network="mlp", latent_dim=2, epochs=2, batch_size=16,
                                  out=str(tmp_path / "run"), align_latents="center" if center else "none")
    model, metrics = experiment.train(config, verbose=0)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    x_train = kv.data.load_arrays(str(path), "train")
    mean = np.asarray(keras.models.load_model(tmp_path / "run" / "model.keras").encode(x_train)[0]).mean(axis=0)
    if center:
        assert saved["latent_alignment_nats"] > 0 and saved["flags"]["align_latents"] == "center"
        assert isinstance(model.posterior, kv.DiagonalGaussian)
        np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    else:
        assert saved["latent_alignment_nats"] is None
        assert np.abs(mean).max() > 1e-3  # trained codes are not centred by themselves


def test_callback_refuses_images_of_the_wrong_shape_and_a_bad_batch_size_before_training():
    vae = offset_vae()
    weights = [w.copy() for w in vae.get_weights()]
    with pytest.raises(ValueError, match="shape"):
        vae.fit(make_images(16), batch_size=8, epochs=1, verbose=0,
                callbacks=[kv.callbacks.LatentCentering(make_images(16, (6, 6, 1)))])
    for a, b in zip(weights, vae.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="batch_size"):
        kv.callbacks.LatentCentering(make_images(16), batch_size=0)
