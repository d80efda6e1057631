"""Encoder heads q(z|x): Keras layers that map encoder features to `tfd` posteriors."""

from __future__ import annotations

import keras
import tensorflow_probability as tfp
from keras import ops

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="keras_vae")
class DiagonalGaussian(keras.layers.Layer):
    """A diagonal Gaussian posterior `N(loc, diag(scale**2))` from encoder features.

    A dense layer maps the features to `2 * latent_dim` numbers: the mean and
    a raw scale, mapped by `softplus(raw) + min_scale` so that the scale is
    positive and never collapses to zero.

    Args:
        latent_dim: Number of latent dimensions.
        min_scale: Floor of the posterior scale. Defaults to 1e-4.

    Call arguments:
        features: Encoder features, `(batch, num_features)`.

    Returns:
        `(loc, scale)`, each `(batch, latent_dim)`.

    Example:

    >>> import numpy as np
    >>> head = DiagonalGaussian(latent_dim=3)
    >>> q = head.distribution(np.zeros((2, 5), "float32"))
    >>> q.event_shape.as_list(), q.batch_shape.as_list()
    ([3], [2])
    """

    def __init__(self, latent_dim: int, min_scale: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1:
            raise ValueError(f"Expected a positive integer. Received: latent_dim={latent_dim!r}")
        if min_scale < 0:
            raise ValueError(f"Expected min_scale >= 0. Received: min_scale={min_scale}")
        self.latent_dim = latent_dim
        self.min_scale = float(min_scale)
        self.dense = keras.layers.Dense(2 * latent_dim, name="loc_and_scale")

    def build(self, features_shape):
        self.dense.build(features_shape)

    def call(self, features):
        loc, raw_scale = ops.split(self.dense(features), 2, axis=-1)
        return loc, ops.softplus(raw_scale) + self.min_scale

    def compute_output_shape(self, features_shape):
        shape = (features_shape[0], self.latent_dim)
        return shape, shape

    def distribution(self, features) -> tfd.MultivariateNormalDiag:
        """q(z|x) as a `tfd.MultivariateNormalDiag` (reparameterised sampling)."""
        loc, scale = self(features)
        return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "min_scale": self.min_scale}


def standard_normal_prior(latent_dim: int) -> tfd.MultivariateNormalDiag:
    """The prior p(z) = N(0, I) over `latent_dim` dimensions."""
    return tfd.MultivariateNormalDiag(loc=ops.zeros((latent_dim,)), scale_diag=ops.ones((latent_dim,)))


def kl_per_dimension(posterior: tfd.MultivariateNormalDiag):
    """Analytic KL(q || N(0, 1)) per latent dimension, `(batch, latent_dim)` nats.

    Computed with `tfd.kl_divergence` on the factor Normals, so that free bits
    can floor each dimension; the sum over dimensions equals
    `tfd.kl_divergence(posterior, standard_normal_prior(latent_dim))`.
    """
    factors = tfd.Normal(loc=posterior.loc, scale=posterior.stddev())
    return tfd.kl_divergence(factors, tfd.Normal(loc=0.0, scale=1.0))
