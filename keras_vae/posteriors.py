"""Encoder heads q(z|x): Keras layers that map encoder features to `tfd` posteriors."""

from __future__ import annotations

import keras
import tensorflow_probability as tfp
from keras import ops

from keras_vae.checks import positive_int

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
        positive_int("latent_dim", latent_dim)
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


@keras.saving.register_keras_serializable(package="keras_vae")
class WhitenedGaussian(keras.layers.Layer):
    """A diagonal Gaussian head followed by a fixed affine map of z: a correlated Gaussian posterior.

    With `(mu, s) = base(features)` the base head's mean and scale, the
    posterior is `q(z|x) = N(W (mu - shift), W diag(s**2) W^T)`, where `shift`
    and the lower-triangular `whitening` W are non-trainable weights. They
    start as 0 and the identity (so the head equals its base) and are set by
    `keras_vae.latent_whitening.whiten_latents`, which fits the aggregate
    posterior of the base codes with a Gaussian N(m, L L^T) and sets
    `shift = m`, `W = L^{-1}`. The scale `W diag(s)` is lower-triangular, so
    the KL to N(0, I) keeps an exact per-dimension split (`keras_vae.latents.kl_per_dimension`).

    Args:
        base: The `DiagonalGaussian` head that maps features to (mu, s), or
            its serialized config.

    Call arguments:
        features: Encoder features, `(batch, num_features)`.

    Returns:
        `(loc, stddev)`, each `(batch, latent_dim)`: the posterior mean and the
        marginal standard deviations `sqrt(diag(W diag(s**2) W^T))`.

    Example:

    >>> import numpy as np
    >>> head = WhitenedGaussian(DiagonalGaussian(latent_dim=3))
    >>> q = head.distribution(np.zeros((2, 5), "float32"))
    >>> type(q).__name__, q.event_shape.as_list()
    ('MultivariateNormalTriL', [3])
    """

    def __init__(self, base, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(base, keras.layers.Layer):
            base = keras.saving.deserialize_keras_object(base)
        if not isinstance(base, DiagonalGaussian):
            raise TypeError(f"Expected a DiagonalGaussian base head. Received: {type(base).__name__}")
        self.base = base
        self.latent_dim = base.latent_dim

    def build(self, features_shape):
        if not self.base.built:
            self.base.build(features_shape)
        dim = self.latent_dim
        self.shift = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="shift")
        self.whitening = self.add_weight(shape=(dim, dim), initializer="identity", trainable=False, name="whitening")

    def _loc_and_scale_tril(self, features):
        base_loc, base_scale = self.base(features)
        loc = ops.matmul(base_loc - self.shift, ops.transpose(self.whitening))
        return loc, self.whitening * base_scale[..., None, :]

    def call(self, features):
        loc, scale_tril = self._loc_and_scale_tril(features)
        return loc, ops.sqrt(ops.sum(ops.square(scale_tril), axis=-1))

    def compute_output_shape(self, features_shape):
        shape = (features_shape[0], self.latent_dim)
        return shape, shape

    def distribution(self, features) -> tfd.MultivariateNormalTriL:
        """q(z|x) as a `tfd.MultivariateNormalTriL` (reparameterised sampling)."""
        if not self.built:
            self.build(tuple(ops.shape(features)))
        loc, scale_tril = self._loc_and_scale_tril(features)
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)

    def get_config(self):
        return {**super().get_config(), "base": keras.saving.serialize_keras_object(self.base)}
