"""Tests for keras_vae/models/hierarchical.py."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_vae as kv
from keras_vae.models.hierarchical import build_hierarchical_vae, precision_weighted
from tests.conftest import assert_round_trip, assert_step_lowers_loss, make_images

SHAPE = (8, 8, 1)


def tiny(likelihood="optimal", **kwargs):
    keras.utils.set_random_seed(0)
    model = build_hierarchical_vae(SHAPE, network="mlp", latent_dim=4, likelihood=likelihood, seed=0,
                                   hidden_units=16, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.parametrize("likelihood", ["optimal_per_image", "learned"])
def test_one_step_lowers_loss(likelihood):
    model = tiny(likelihood)
    x = make_images(16, SHAPE)
    assert_step_lowers_loss(model, lambda: model.compute_terms(x)["loss"], x)


def test_elbo_is_the_sum_of_its_terms_and_kl_z2_is_closed_form():
    model = tiny()
    x = make_images(8, SHAPE)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    terms = {k: np.asarray(v) for k, v in model.compute_terms(x).items()}
    np.testing.assert_allclose(terms["elbo"], -terms["rec"] - terms["kl_z1"] - terms["kl_z2"], rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], terms["kl_z1"] + terms["kl_z2"], rtol=1e-5)
    np.testing.assert_allclose(terms["rec"], -terms["log_likelihood"].mean(), rtol=1e-5)
    assert terms["kl_per_dim"].shape == (8, 4 + 2)
    assert terms["kl_z1"] > 0 and terms["kl_z2"] > 0
    # q(z2|x) does not depend on the noise: its KL to N(0, I), by hand.
    _, (mu, sigma) = model.encode_levels(x)
    mu, sigma = np.asarray(mu, "float64"), np.asarray(sigma, "float64")
    by_hand = 0.5 * np.sum(mu**2 + sigma**2 - 1.0 - 2.0 * np.log(sigma), axis=1).mean()
    np.testing.assert_allclose(terms["kl_z2"], by_hand, rtol=1e-4)
    # The per-image ELBO has the same terms.
    elbo = np.asarray(model.elbo(x))
    assert elbo.shape == (8,) and np.all(np.isfinite(elbo))


def test_precision_weighted_is_the_normalised_product_of_gaussians():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=3), rng.normal(size=3)
    s1, s2 = rng.uniform(0.2, 2.0, size=3), rng.uniform(0.2, 2.0, size=3)
    loc, scale = (np.asarray(v, "float64") for v in precision_weighted(m1, s1, m2, s2))
    grid = np.linspace(-3, 3, 7)[:, None]

    def log_normal(x, m, s):
        return -0.5 * ((x - m) / s) ** 2 - np.log(s)

    # log N(x; loc, scale) - log N(x; m1, s1) - log N(x; m2, s2) does not depend on x.
    difference = log_normal(grid, loc, scale) - log_normal(grid, m1, s1) - log_normal(grid, m2, s2)
    np.testing.assert_allclose(difference, np.broadcast_to(difference[:1], difference.shape), atol=1e-5)


def test_shapes_and_save_load(tmp_path):
    model = tiny()
    x = make_images(4, SHAPE)
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    mean, stddev = model.encode(x)
    assert mean.shape == (4, 4) and stddev.shape == (4, 4)
    (_, _), (mean2, _) = model.encode_levels(x)
    assert mean2.shape == (4, 2)
    decoded, sigma = model.decode(mean)
    assert decoded.shape == (4, *SHAPE) and sigma.shape == (4, *SHAPE)
    assert model.sample(3).shape == (3, *SHAPE)
    loaded = assert_round_trip(model, tmp_path / "h.keras", x, method="reconstruct")
    assert isinstance(loaded, kv.HierarchicalVAE) and loaded.latent_dims == (4, 2)
    np.testing.assert_array_equal(np.asarray(loaded.encode(x)[1]), np.asarray(stddev))


def test_bad_latent_dims():
    with pytest.raises(ValueError, match="latent_dims"):
        kv.HierarchicalVAE(kv.networks.mlp_encoder(SHAPE), kv.networks.mlp_decoder(SHAPE, 4), latent_dims=(4,))
