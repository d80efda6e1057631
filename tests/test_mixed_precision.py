"""Mixed precision: networks compute in float16/bfloat16; likelihood, KL, sigma and the loss stay float32."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_vae as kv
from tests.conftest import make_images, tiny_vae

SHAPE = (8, 8, 1)


@pytest.fixture
def precision():
    """Sets a policy for the test and restores the previous one afterwards."""
    previous = keras.mixed_precision.global_policy()
    yield kv.distribute.set_precision
    keras.mixed_precision.set_global_policy(previous)


def _dtypes(vae) -> dict:
    return {
        "encoder": vae.encoder.layers[1].compute_dtype,
        "decoder": vae.decoder.layers[-1].compute_dtype,
        "posterior": vae.posterior.compute_dtype,
        "likelihood": vae.likelihood.compute_dtype,
        "optimal_sigma": vae.likelihood.optimal_sigma.compute_dtype,
        "soft_clip": vae.likelihood.soft_clip.compute_dtype,
    }


@pytest.mark.parametrize("policy, low", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_run_trains_without_nan_and_keeps_float32_terms(precision, policy, low):
    assert precision(policy) == policy
    vae = tiny_vae(SHAPE, likelihood="optimal", network="conv")
    assert _dtypes(vae) == {"encoder": low, "decoder": low, "posterior": "float32", "likelihood": "float32",
                            "optimal_sigma": "float32", "soft_clip": "float32"}
    assert isinstance(vae.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    x = make_images(32, SHAPE)
    history = vae.fit(x, batch_size=8, epochs=2, verbose=0).history
    assert all(np.all(np.isfinite(values)) for values in history.values())
    assert history["loss"][-1] < history["loss"][0]
    assert vae.decoder(np.zeros((2, 2), "float32")).dtype == low  # the network really is low precision
    terms = vae.compute_terms(x, training=True)
    for name in ("loss", "elbo", "rec", "kl", "sigma", "log_likelihood", "kl_per_dim"):
        assert terms[name].dtype == "float32", name
    assert vae.likelihood.optimal_sigma.running_mse.dtype == "float32"
    assert all(w.dtype == "float32" for w in vae.weights if w.dtype.startswith("float"))


def test_bfloat16_elbo_matches_float32_for_the_same_weights(precision):
    x = make_images(16, SHAPE)
    reference = tiny_vae(SHAPE, likelihood="optimal_per_image", network="conv")
    reference.fit(x, batch_size=8, epochs=1, verbose=0)
    precision("mixed_bfloat16")
    low = tiny_vae(SHAPE, likelihood="optimal_per_image", network="conv")
    low.set_weights(reference.get_weights())
    state = np.asarray(reference.seed_generator.state)
    elbo_32 = np.asarray(reference.elbo(x))
    low.seed_generator.state.assign(state)  # the same posterior noise
    elbo_16 = np.asarray(low.elbo(x))
    assert elbo_16.dtype == np.float32
    # bfloat16 activations keep ~3 significant digits; the float32 sums keep the ELBO within 2%.
    np.testing.assert_allclose(elbo_16, elbo_32, rtol=0.02)
    assert not np.allclose(elbo_16, elbo_32, rtol=1e-6)  # the networks did run in bfloat16


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="mixed_precision=.*float8"):
        kv.distribute.set_precision("float8")
