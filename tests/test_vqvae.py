"""Tests for keras_vae/models/vqvae.py."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import data
from keras_vae.models.vqvae import build_vqvae, perplexity
from keras_vae.pixelcnn import MaskedConv2D
from tests.conftest import assert_round_trip, assert_step_lowers_loss, make_images

SHAPE = (8, 8, 1)


def tiny(likelihood="optimal", num_codes=8, **kwargs):
    keras.utils.set_random_seed(0)
    model = build_vqvae(SHAPE, latent_dim=3, num_codes=num_codes, likelihood=likelihood, downsampling=4,
                        filters=8, prior_filters=8, prior_layers=2, seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.parametrize("likelihood, ema", [("optimal", False), ("per_pixel", True)])
def test_one_step_lowers_loss(likelihood, ema):
    model = tiny(likelihood, ema=ema, restart_dead_codes=False)
    x = make_images(12, SHAPE)
    assert_step_lowers_loss(model, lambda: model.compute_terms(x)["loss"], x)


def test_quantiser_picks_the_nearest_code_and_straight_through_reaches_the_encoder():
    model = tiny()
    x = make_images(6, SHAPE)
    quantizer = model.quantizer
    z_e = quantizer.project(model.encoder(x))
    indices, z_q = quantizer.nearest_codes(z_e)
    codebook = np.asarray(quantizer.codebook)
    flat = np.asarray(z_e).reshape(-1, 3)
    brute_force = ((flat[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(np.asarray(indices).ravel(), brute_force)
    np.testing.assert_allclose(np.asarray(z_q).reshape(-1, 3), codebook[brute_force])
    with tf.GradientTape() as tape:
        rec = model.compute_terms(x)["rec"]
    encoder_gradients = tape.gradient(rec, model.encoder.trainable_variables)
    assert all(g is not None for g in encoder_gradients)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in encoder_gradients) > 0
    # Without the straight-through estimator the reconstruction could not reach the encoder:
    with tf.GradientTape() as tape:
        params = model.decoder(quantizer.nearest_codes(quantizer.project(model.encoder(x)))[1])
        no_st = model.likelihood.distribution(params, x).log_prob(x)
    assert all(g is None for g in tape.gradient(no_st, model.encoder.trainable_variables))


def test_prior_is_autoregressive_and_normalised():
    model = tiny(num_codes=3)
    assert model.latent_shape[:2] == (2, 2)
    maps = np.array(list(itertools.product(range(3), repeat=4)), "int32").reshape(-1, 2, 2)
    total = np.exp(np.asarray(model.prior_log_prob(maps), "float64")).sum()
    np.testing.assert_allclose(total, 1.0, rtol=1e-4)
    # Mask A: a position never sees itself or later positions.
    layer = MaskedConv2D(2, 3, mask_type="A")  # the prior's first layer (keras_vae.pixelcnn)
    assert any(isinstance(sub, MaskedConv2D) for sub in model.prior.layers)
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 1)).astype("float32")
    changed = x.copy()
    changed[0, 2, 1:, 0] += 1.0  # position (2, 1) and everything after it in raster order
    changed[0, 3, :, 0] += 1.0
    before, after = np.asarray(layer(x)), np.asarray(layer(changed))
    np.testing.assert_array_equal(before[0, :2], after[0, :2])
    np.testing.assert_array_equal(before[0, 2, :2], after[0, 2, :2])
    assert np.abs(before - after).max() > 0


def test_perplexity_and_dead_code_restart():
    indices = np.array([0, 0, 1, 2])
    probabilities = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(float(perplexity(indices, 8)), np.exp(-(probabilities * np.log(probabilities)).sum()),
                               rtol=1e-5)
    model = tiny()
    quantizer = model.quantizer
    z_e = quantizer.project(model.encoder(make_images(6, SHAPE)))
    indices, _ = quantizer.nearest_codes(z_e)
    flat, used = np.asarray(z_e).reshape(-1, 3), np.unique(np.asarray(indices))
    # Codes used in this batch keep a healthy usage; the others are dead.
    quantizer.usage.assign(np.where(np.isin(np.arange(8), used), 1 / 8, 1e-6).astype("float32"))
    before = np.asarray(quantizer.codebook)
    quantizer.update(z_e, indices)
    after = np.asarray(quantizer.codebook)
    np.testing.assert_array_equal(after[used], before[used])
    for code in np.setdiff1d(np.arange(8), used):
        assert np.min(np.abs(flat - after[code]).sum(-1)) < 1e-6  # moved onto an encoder output
    np.testing.assert_allclose(np.asarray(quantizer.usage)[np.setdiff1d(np.arange(8), used)], 1 / 8)


def test_ema_codebook_moves_to_the_assigned_mean():
    model = tiny(ema=True, restart_dead_codes=False)
    quantizer = model.quantizer
    assert not quantizer.codebook.trainable
    z_e = quantizer.project(model.encoder(make_images(6, SHAPE)))
    indices, _ = quantizer.nearest_codes(z_e)
    before = np.asarray(quantizer.codebook)
    steps, decay = 400, quantizer.ema_decay
    for _ in range(steps):
        quantizer.update(z_e, indices)
    flat, used = np.asarray(z_e).reshape(-1, 3), np.asarray(indices).ravel()
    kept = decay**steps  # the weight left on the initial (count 1, sum = code) state
    for code in np.unique(used):
        count = np.sum(used == code)
        expected = (kept * before[code] + (1 - kept) * flat[used == code].sum(0)) / (kept + (1 - kept) * count)
        np.testing.assert_allclose(np.asarray(quantizer.codebook)[code], expected, atol=1e-3)
        np.testing.assert_allclose(expected, flat[used == code].mean(0), atol=0.05 * np.abs(flat).max())
    unused = np.setdiff1d(np.arange(8), used)
    # Unused codes are kept (up to the smoothing).
    np.testing.assert_allclose(np.asarray(quantizer.codebook)[unused], before[unused], rtol=1e-2)


def test_shapes_metrics_and_save_load(tmp_path):
    model = tiny()
    x = make_images(6, SHAPE)
    history = model.fit(x, batch_size=6, epochs=1, verbose=0)
    assert {"vq_loss", "perplexity", "elbo", "kl"} <= set(history.history)
    z_q, stddev = model.encode(x)
    assert z_q.shape == (6, 2, 2, 3) and float(np.abs(stddev).max()) == 0.0
    indices = model.encode_indices(x)
    assert indices.shape == (6, 2, 2)
    np.testing.assert_allclose(np.asarray(model.decode_indices(indices)[0]), np.asarray(model.decode(z_q)[0]))
    assert model.sample(3).shape == (3, *SHAPE)
    assert 0 <= int(np.asarray(model.sample_indices(2)).max()) < 8
    loaded = assert_round_trip(model, tmp_path / "v.keras", x, method="reconstruct")
    assert isinstance(loaded, kv.VQVAE)
    np.testing.assert_array_equal(np.asarray(loaded.prior_log_prob(indices)), np.asarray(model.prior_log_prob(indices)))
    np.testing.assert_array_equal(np.asarray(loaded.quantizer.usage), np.asarray(model.quantizer.usage))


def test_learns_real_mnist_instead_of_a_constant_image():
    """Regression: on real MNIST the decoder froze at an all-black image (see spatial_decoder)."""
    images = data.load_arrays("mnist", "train")
    train, held_out = images[:512], images[-256:]
    constant = float(np.mean((held_out - train.mean(0)) ** 2))
    keras.utils.set_random_seed(0)
    model = build_vqvae((28, 28, 1), latent_dim=8, num_codes=16, filters=16, prior_filters=8, prior_layers=2, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(train, batch_size=32, epochs=5, verbose=0)
    indices = model.encode_indices(held_out)
    mse = float(np.mean((np.asarray(model.decode_indices(indices)[0]) - held_out) ** 2))
    assert mse < 0.6 * constant, (mse, constant)
    assert len(np.unique(np.asarray(indices))) > 1  # the reconstruction goes through more than one code
