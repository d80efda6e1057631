"""Shared test helpers: small image batches, tiny models and a saving round trip."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_vae as kv  # noqa: E402


def make_images(count: int = 16, shape=(8, 8, 1), seed: int = 0) -> np.ndarray:
    """Smooth random images in [0, 1] (blobs, so that a VAE can learn them)."""
    rng = np.random.default_rng(seed)
    height, width, channels = shape
    yy, xx = np.mgrid[0:height, 0:width]
    centres = rng.uniform(0, 1, size=(count, 2)) * [height, width]
    blobs = np.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 6.0)
    colours = rng.uniform(0.3, 1.0, size=(count, 1, 1, channels))
    return np.clip(blobs[..., None] * colours, 0.0, 1.0).astype("float32")


def tiny_vae(shape=(8, 8, 1), likelihood="optimal", network="mlp", latent_dim=2, **kwargs) -> kv.VAE:
    """A small, compiled VAE for fast tests."""
    keras.utils.set_random_seed(kwargs.pop("seed", 0))
    vae = kv.build_vae(shape, network=network, latent_dim=latent_dim, likelihood=likelihood, seed=0, **kwargs)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    return vae


def assert_round_trip(model, path, *inputs, method: str = "__call__", atol: float = 0.0) -> keras.Model:
    """Saves `model` to `.keras`, loads it and checks `method(*inputs)` gives identical outputs."""
    model.save(path)
    loaded = keras.models.load_model(path)
    before = getattr(model, method)(*inputs)
    after = getattr(loaded, method)(*inputs)
    for a, b in zip(keras.tree.flatten(before), keras.tree.flatten(after)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)
    return loaded


@pytest.fixture
def images():
    return make_images()


def assert_step_lowers_loss(model, compute_loss, *batch) -> tuple[float, float]:
    """One `train_on_batch(*batch)` lowers `compute_loss()` (evaluated twice with the same noise).

    The model's seed state is reset before each evaluation, so both losses
    use the same sampling noise and differ only by the training step.
    """
    state = np.asarray(model.seed_generator.state.value)

    def loss() -> float:
        model.seed_generator.state.assign(state)
        return float(compute_loss())

    before = loss()
    model.train_on_batch(*batch)
    after = loss()
    assert np.isfinite(after) and after < before, (before, after)
    return before, after
