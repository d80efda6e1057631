"""Tests for keras_vae/models/conditional.py (and the CLI path that passes labels)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import experiment
from keras_vae.models.conditional import build_conditional_vae
from tests.conftest import assert_round_trip, assert_step_lowers_loss, make_images

SHAPE = (8, 8, 1)


def tiny(likelihood="optimal", **kwargs):
    keras.utils.set_random_seed(0)
    model = build_conditional_vae(SHAPE, num_classes=3, network="mlp", latent_dim=2, likelihood=likelihood,
                                  seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.parametrize("likelihood", ["optimal", "per_pixel"])
def test_one_step_lowers_loss(likelihood):
    model = tiny(likelihood)
    x, y = make_images(12, SHAPE), np.arange(12) % 3
    assert_step_lowers_loss(model, lambda: model.compute_terms((x, y))["loss"], x, y)


def test_decoder_output_changes_with_y():
    model = tiny()
    x, y = make_images(12, SHAPE), np.arange(12) % 3
    model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    z = np.zeros((4, 2), "float32")
    means = [np.asarray(model.decode(z, label)[0]) for label in range(3)]
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert np.max(np.abs(means[a] - means[b])) > 1e-4
    # The posterior sees y too.
    assert np.max(np.abs(np.asarray(model.encode(x[:2], 0)[0]) - np.asarray(model.encode(x[:2], 1)[0]))) > 1e-5


def test_vector_conditions():
    keras.utils.set_random_seed(0)
    model = build_conditional_vae(SHAPE, num_classes=4, network="mlp", latent_dim=2, categorical=False, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = make_images(8, SHAPE)
    y = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["elbo"][-1])
    assert model.sample(3, y=y[:3]).shape == (3, *SHAPE)
    with pytest.raises(ValueError, match="needs y"):
        model.sample(3)


def test_shapes_save_load_and_errors(tmp_path):
    model = tiny()
    x, y = make_images(6, SHAPE), np.arange(6) % 3
    model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    mean, stddev = model.encode(x, y)
    assert mean.shape == (6, 2) and stddev.shape == (6, 2)
    assert model.decode(mean, y)[0].shape == (6, *SHAPE)
    assert model.sample(5).shape == (5, *SHAPE)
    assert model.sample(2, y=1).shape == (2, *SHAPE)
    assert np.asarray(model.elbo(x, y)).shape == (6,)
    loaded = assert_round_trip(model, tmp_path / "c.keras", x, y, method="reconstruct")
    assert isinstance(loaded, kv.ConditionalVAE) and loaded.condition_dim == 3
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        model.decode(mean, np.full(6, 3))
    with pytest.raises(ValueError, match="needs labels"):
        model.fit(x, batch_size=6, verbose=0)


def test_train_command_passes_labels(tmp_path):
    x = make_images(48, SHAPE)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(48) % 3)
    config = experiment.RunConfig(dataset=str(tmp_path / "d.npz"), model="conditional", network="mlp",
                                  latent_dim=2, epochs=1, batch_size=16, out=str(tmp_path / "run"))
    model, _ = experiment.train(config, verbose=0)
    assert isinstance(model, kv.ConditionalVAE) and model.condition_dim == 3
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(saved["test_elbo"]) and 0 < saved["test_mse"] < 1
    with pytest.raises(ValueError, match="needs labels"):
        np.savez(tmp_path / "n.npz", x=x)
        experiment.train(experiment.RunConfig(dataset=str(tmp_path / "n.npz"), model="conditional",
                                              out=str(tmp_path / "run2")), verbose=0)
