"""VLAE: teacher-forced ELBO, autoregressive decoding against the model's own conditionals, training, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import experiment
from keras_vae.likelihoods import Categorical256, DiscretizedLogisticMixture
from keras_vae.models.vlae import VLAE, build_vlae
from tests.conftest import assert_round_trip, make_images


def _vlae(shape=(4, 4, 1), likelihood=None, receptive_field=3, filters=6, latent_dim=2):
    keras.utils.set_random_seed(0)
    likelihood = likelihood or DiscretizedLogisticMixture(2)
    vlae = build_vlae(shape, latent_dim=latent_dim, likelihood=likelihood, receptive_field=receptive_field,
                      filters=filters, network="mlp", seed=0)
    vlae.compile(optimizer=keras.optimizers.Adam(1e-2))
    return vlae


def _conditional_means(vlae, z, images):
    """Each pixel's conditional mean given z and the earlier pixels of `images` (one teacher-forced pass)."""
    tensors = [keras.ops.convert_to_tensor(z), keras.ops.convert_to_tensor(images)]
    return np.asarray(vlae.likelihood.mean(vlae.decoder(tensors)))


@pytest.mark.parametrize("shape, receptive_field", [((5, 4, 1), 3), ((3, 3, 3), 3), ((7, 5, 1), 5)])
def test_greedy_decoding_is_a_fixed_point_of_the_conditionals(shape, receptive_field):
    # Every pixel of a greedy decode is its conditional mean (rounded) given the pixels before it:
    # checks the raster/channel order and the strip-of-rows shortcut against the full network.
    vlae = _vlae(shape, receptive_field=receptive_field, filters=6)
    z = np.random.default_rng(0).normal(size=(3, 2)).astype("float32") * 2
    images, sigma = vlae.decode(z, greedy=True)
    images = np.asarray(images)
    expected = np.round(_conditional_means(vlae, z, images) * 255) / 255
    np.testing.assert_allclose(images, expected, atol=1.5 / 255)
    assert np.mean(np.abs(images - expected) < 0.5 / 255) > 0.97  # off by one level only at float ties
    assert sigma.shape == images.shape and np.all(np.asarray(sigma) > 0)


def test_samples_follow_the_models_own_conditionals():
    # E[x_k] = E[E[x_k | x_<k]] and E[x_k x_(k-1)] = E[E[x_k | x_<k] x_(k-1)] for every pixel k.
    vlae = _vlae((3, 3, 1), likelihood=Categorical256())
    z = np.tile(np.array([[0.5, -1.0]], "float32"), (2000, 1))
    samples = np.asarray(vlae.decode(z)[0])
    means = _conditional_means(vlae, z, samples)
    x, m = samples.reshape(len(z), -1), means.reshape(len(z), -1)
    error = x.std(axis=0) / np.sqrt(len(z))
    assert np.all(np.abs(x.mean(0) - m.mean(0)) < 4 * error + 1e-4)
    assert np.all(np.abs((x[:, 1:] * x[:, :-1]).mean(0) - (m[:, 1:] * x[:, :-1]).mean(0)) < 4 * error[1:] + 1e-4)
    assert np.all(np.abs(samples * 255 - np.round(samples * 255)) < 1e-3)  # on the 8-bit grid


def test_training_lowers_the_negative_elbo_and_kl_is_reported():
    x = np.round(make_images(32, (6, 6, 1)) * 255) / 255
    vlae = _vlae((6, 6, 1), receptive_field=3)
    before = vlae.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    history = vlae.fit(x, batch_size=8, epochs=6, verbose=0)
    after = vlae.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    assert after["rec"] < before["rec"] - 20.0
    assert sorted(history.history) == ["beta", "elbo", "kl", "loss", "rec", "sigma"]
    np.testing.assert_allclose(after["elbo"], -after["rec"] - after["kl"], rtol=1e-5)


def test_off_grid_images_fail_with_a_clear_error():
    vlae = _vlae()
    with pytest.raises(ValueError, match="8-bit pixels k / 255.*quantize=True"):
        vlae.compute_terms(np.full((2, 4, 4, 1), 0.3, "float32"))


def test_save_and_load_gives_the_same_reconstructions(tmp_path):
    vlae = _vlae()
    x = np.round(make_images(4, (4, 4, 1)) * 255) / 255
    loaded = assert_round_trip(vlae, tmp_path / "vlae.keras", x, method="reconstruct", atol=1e-6)
    assert isinstance(loaded, VLAE) and loaded.receptive_field == 3


def test_rejects_a_decoder_that_is_not_autoregressive():
    with pytest.raises(ValueError, match="pixelcnn_decoder"):
        VLAE(kv.networks.mlp_encoder((4, 4, 1)), kv.networks.mlp_decoder((4, 4, 1), latent_dim=2, params_per_channel=6),
             latent_dim=2, likelihood=DiscretizedLogisticMixture(2))
    with pytest.raises(ValueError, match="receptive_field=7 is larger than the 4x4 image"):
        build_vlae((4, 4, 1), receptive_field=7)


def test_train_command_builds_a_vlae_for_the_pixelcnn_network(tmp_path):
    x = np.round(make_images(40, (8, 8, 1)) * 255) / 255
    np.savez(tmp_path / "blobs.npz", x=x)
    config = experiment.RunConfig(
        dataset=str(tmp_path / "blobs.npz"), likelihood="categorical", network="pixelcnn", receptive_field=3,
        latent_dim=2, batch_size=16, epochs=1, test_fraction=0.2, out=str(tmp_path / "run"),
    )
    model, metrics = experiment.train(config, verbose=0)
    assert isinstance(model, VLAE) and isinstance(model.likelihood, Categorical256) and model.receptive_field == 3
    assert np.isfinite(metrics["test_elbo"]) and (tmp_path / "run" / "samples.png").exists()
    with pytest.raises(ValueError, match="receptive_field=9 is larger than the 8x8 image"):
        experiment.train(experiment.RunConfig(**{**vars(config), "receptive_field": 9, "overwrite": True}))


def test_fit_refuses_off_grid_images_before_any_step_even_under_xla():
    # The in-graph check is a tf.debugging.Assert, which XLA drops: fit checks numpy data eagerly first.
    vlae = _vlae()
    vlae.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    with pytest.raises(ValueError, match=r"value 0\.3 \(76\.5 / 255\)"):
        vlae.fit(np.full((4, 4, 4, 1), 0.3, "float32"), batch_size=2, epochs=1, verbose=0)
    assert int(vlae.optimizer.iterations.numpy()) == 0
