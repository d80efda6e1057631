"""Tests for keras_vae/models/spatial.py."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import data
from keras_vae.commands import train as train_command
from keras_vae.models.spatial import build_spatial_vae, latent_map_shape
from tests.conftest import assert_round_trip, assert_step_lowers_loss, make_images

SHAPE = (16, 16, 3)


def tiny(likelihood="optimal", **kwargs):
    keras.utils.set_random_seed(0)
    model = build_spatial_vae(SHAPE, latent_dim=4, likelihood=likelihood, filters=8, seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.parametrize("likelihood", ["optimal_per_image", "per_pixel"])
def test_one_step_lowers_loss(likelihood):
    model = tiny(likelihood)
    x = make_images(8, SHAPE)
    assert_step_lowers_loss(model, lambda: model.compute_terms(x)["loss"], x)


def test_latent_keeps_its_spatial_shape_and_default_beta():
    model = tiny()
    assert model.latent_shape == (2, 2, 4) == latent_map_shape(SHAPE, 8, 4)
    assert float(model.beta.numpy()) == pytest.approx(1e-6)
    x = make_images(5, SHAPE)
    mean, stddev = model.encode(x)
    assert mean.shape == (5, 2, 2, 4) and stddev.shape == (5, 2, 2, 4)
    decoded, sigma = model.decode(mean)
    assert decoded.shape == (5, *SHAPE) and sigma.shape == (5, *SHAPE)
    assert model.sample(2).shape == (2, *SHAPE)
    with pytest.raises(ValueError, match="z of shape"):
        model.decode(np.zeros((1, 4), "float32"))


def test_kl_is_summed_over_the_map_and_weighted_by_beta():
    model = tiny()
    x = make_images(4, SHAPE)
    terms = {k: np.asarray(v, "float64") for k, v in model.compute_terms(x).items()}
    mu, sigma = (np.asarray(v, "float64") for v in model.encode(x))
    by_hand = 0.5 * np.sum(mu**2 + sigma**2 - 1.0 - 2.0 * np.log(sigma), axis=(1, 2, 3)).mean()
    np.testing.assert_allclose(terms["kl"], by_hand, rtol=1e-4)
    np.testing.assert_allclose(terms["loss"], terms["rec"] + 1e-6 * terms["kl"], rtol=1e-6)
    np.testing.assert_allclose(terms["elbo"], -terms["rec"] - terms["kl"], rtol=1e-6)
    assert np.asarray(model.elbo(x)).shape == (4,)
    assert np.asarray(model.elbo_with_running_sigma(x)).shape == (4,)


def test_save_load(tmp_path):
    model = tiny()
    x = make_images(4, SHAPE)
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    loaded = assert_round_trip(model, tmp_path / "s.keras", x, method="encode")
    assert isinstance(loaded, kv.SpatialVAE) and loaded.latent_shape == model.latent_shape
    np.testing.assert_array_equal(np.asarray(loaded.reconstruct(x)), np.asarray(model.reconstruct(x)))


def test_downsampling_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="downsampling"):
        build_spatial_vae(SHAPE, downsampling=6)


def test_learns_real_mnist_instead_of_a_constant_image():
    """Regression: the conv stacks collapsed to an all-black image on real MNIST.

    Without normalisation the logits ran to -1000 within ~20 Adam steps and
    the sigmoid mean froze at 0 (MSE = mean(x**2), above even the best
    constant image). 80 steps on 512 digits must beat the constant image.
    """
    images = data.load_arrays("mnist", "train")
    train, held_out = images[:512], images[-256:]
    constant = float(np.mean((held_out - train.mean(0)) ** 2))
    keras.utils.set_random_seed(0)
    model = build_spatial_vae((28, 28, 1), filters=16, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(train, batch_size=32, epochs=5, verbose=0)
    mse = float(np.mean((np.asarray(model.reconstruct(held_out)) - held_out) ** 2))
    assert mse < 0.6 * constant, (mse, constant)


@pytest.fixture
def parsed_train_flags():
    def parse(*args):
        train_command.FLAGS.unparse_flags()
        train_command.FLAGS(["train", *args])
        return {field: train_command.FLAGS[field].value for field in ("model", "beta")}

    yield parse
    train_command.FLAGS.unparse_flags()


def test_cli_uses_the_spatial_default_beta_unless_given(parsed_train_flags, monkeypatch):
    configs = []
    monkeypatch.setattr("keras_vae.experiment.train", lambda config, **kwargs: configs.append(config) or (None, {
        "test_elbo": 0.0, "test_mse": 0.0, "sigma": 1.0, "images_per_second": 1.0}))
    for args, beta in [(["--model=spatial"], 1e-6), (["--model=spatial", "--beta=1.0"], 1.0),
                       (["--model=vae"], 1.0), (["--model=vae", "--beta=0.5"], 0.5)]:
        parsed_train_flags(*args)
        train_command.main(["train"])
        assert configs[-1].beta == beta, (args, configs[-1].beta)
    spatial_default = inspect.signature(kv.SpatialVAE).parameters["beta"].default
    assert train_command.model_default_beta("spatial") == 1e-6 == spatial_default
