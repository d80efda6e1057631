"""Every family through the one harness of the model contract (tests/harness.py)."""

import numpy as np
import pytest
import tensorflow_probability as tfp

import keras_vae as kv
from keras_vae import latent_whitening, models
from tests.conftest import make_images
from tests.harness import run_family_test

tfd = tfp.distributions
X = make_images(16, (8, 8, 1), seed=3)
LABELS = np.arange(16) % 3


@kv.models.vae.keras.saving.register_keras_serializable(package="keras_vae_tests")
class HalfScaleVAE(kv.VAE):
    """A user's family: its own posterior (independent Normals at half the head's scale)."""

    def posterior_distribution(self, inputs, training=False):
        q = super().posterior_distribution(inputs, training)
        return tfd.Independent(tfd.Normal(q.mean(), 0.5 * q.stddev()), reinterpreted_batch_ndims=1)


def _user_subclass():
    return HalfScaleVAE(kv.networks.mlp_encoder((8, 8, 1)), kv.networks.mlp_decoder((8, 8, 1), latent_dim=3),
                        latent_dim=3, likelihood="learned", seed=0)


def _whitened():
    model = models.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="learned", seed=0)
    latent_whitening.whiten_latents(model, make_images(64, (8, 8, 1), seed=4))
    return model


BUILDERS = {
    "vae": lambda: models.build_vae((8, 8, 1), network="conv", latent_dim=3, likelihood="learned", seed=0),
    "bernoulli": lambda: models.build_vae((8, 8, 1), network="mlp", latent_dim=3, likelihood="bernoulli", seed=0),
    "hierarchical": lambda: models.build_hierarchical_vae((8, 8, 1), network="mlp", latent_dim=3,
                                                          likelihood="learned", seed=0),
    "gumbel": lambda: models.build_gumbel_vae((8, 8, 1), network="mlp", latent_dim=3, num_classes=3, hard=True,
                                              likelihood="learned", seed=0),
    "conditional": lambda: models.build_conditional_vae((8, 8, 1), num_classes=3, network="mlp", latent_dim=2,
                                                        likelihood="learned", seed=0),
    "spatial": lambda: models.build_spatial_vae((8, 8, 1), latent_dim=2, downsampling=4, likelihood="learned",
                                                beta=1.0, seed=0),
    "vqvae": lambda: models.build_vqvae((8, 8, 1), latent_dim=4, num_codes=8, downsampling=4, likelihood="learned",
                                        restart_dead_codes=False, seed=0),
    "vlae": lambda: kv.build_vlae((6, 6, 1), latent_dim=2, receptive_field=3, filters=8, seed=0),
    "whitened": _whitened,
    "user_subclass": _user_subclass,
}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_family_meets_the_contract(family, tmp_path):
    model = BUILDERS[family]()
    if family == "vlae":
        inputs = {"x": np.round(X[:, :6, :6] * 255) / 255}
    else:
        inputs = {"x": X, **({"y": LABELS} if model.condition_specs() else {})}
    run_family_test(model, inputs, tmp_path)
