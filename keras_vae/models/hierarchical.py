"""`HierarchicalVAE`: two stochastic levels with top-down inference.

Generative model:  p(z2) p(z1|z2) p(x|z1),  p(z2) = N(0, I),
                   p(z1|z2) = N(m_p(z2), s_p(z2)**2) (a small dense network).
Inference model:   q(z2|x) q(z1|x, z2): the encoder features go up once,
                   z2 is drawn, and q(z1|x, z2) is a Gaussian head on the
                   features concatenated with z2 (ladder / top-down order).

`precision_weighted` is the ladder VAE's alternative merge (a bottom-up
Gaussian times the top-down prior), whose posterior is never wider than the
prior; the model uses the concatenation.

The ELBO has one KL per level (analytic given the sampled z2):

    elbo = log p(x|z1) - KL(q(z2|x) || p(z2)) - KL(q(z1|x, z2) || p(z1|z2))

`encode`/`decode` work on z1, the level the decoder reads, so a
hierarchical model is used like a `VAE` of latent size `latent_dims[0]`;
`sample` draws z2 ~ p(z2), then z1 ~ p(z1|z2) (the generic walk down the
joint prior, `keras_vae.latents.draw`).

References:
    Sonderby et al. Ladder Variational Autoencoders. NeurIPS 2016.
    arXiv:1602.02282.
"""

from __future__ import annotations

import keras
import tensorflow_probability as tfp
from keras import ops

from keras_vae import latents, networks
from keras_vae.checks import positive_int
from keras_vae.models.vae import VAE, build
from keras_vae.posteriors import DiagonalGaussian

tfd = tfp.distributions


def precision_weighted(loc_a, scale_a, loc_b, scale_b):
    """The normalised product of two diagonal Gaussians: `(loc, scale)`.

    Example:

    >>> import numpy as np
    >>> loc, scale = precision_weighted(np.float32(0.0), np.float32(1.0), np.float32(2.0), np.float32(1.0))
    >>> float(loc), round(float(scale), 4)
    (1.0, 0.7071)
    """
    precision_a, precision_b = 1.0 / ops.square(scale_a), 1.0 / ops.square(scale_b)
    variance = 1.0 / (precision_a + precision_b)
    return variance * (loc_a * precision_a + loc_b * precision_b), ops.sqrt(variance)


@keras.saving.register_keras_serializable(package="keras_vae")
class HierarchicalVAE(VAE):
    """A two-level VAE: p(z2) p(z1|z2) p(x|z1) with q(z2|x) q(z1|x, z2).

    Its posterior and prior are `tfd.JointDistributionSequential`s over
    `[z2, z1]`; `kl_per_dim` is `(batch, z2 + z1)`, each level's KL given the
    draw of z2. `encode`/`decode` work on z1 (the decoder's level), at
    z2 = E[z2|x] for `encode`.

    Metrics are those of `VAE` plus `kl_z1` and `kl_z2` (nats per image);
    `kl = kl_z1 + kl_z2` and `elbo = -rec - kl`.

    Args:
        encoder: A functional model from images `(H, W, C)` to features.
        decoder: A functional model from z1 `(latent_dims[0],)` to decoder parameters.
        latent_dims: Sizes `(z1, z2)`. Defaults to `(20, 10)`.
        likelihood: A `Likelihood` or a name. Defaults to `"optimal"`.
        beta: KL weight (both levels). Defaults to 1.0.
        free_bits: Per-dimension KL floor (both levels). Defaults to 0.0.
        hidden_units: Width of the top-down network z2 -> p(z1|z2). Defaults to 256.
        seed: Seed for the sampling noise. Defaults to None.

    Example:

    >>> import keras, numpy as np, keras_vae as kv
    >>> hvae = build_hierarchical_vae((8, 8, 1), network="mlp", latent_dim=4, seed=0)
    >>> hvae.latent_dims
    (4, 2)
    >>> hvae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
    >>> sorted(hvae.fit(x, batch_size=8, verbose=0).history)
    ['beta', 'elbo', 'kl', 'kl_z1', 'kl_z2', 'loss', 'rec', 'sigma']
    """

    extra_metric_names = ("kl_z1", "kl_z2")
    latent_choices = ()  # its own latent and prior

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        latent_dims=(20, 10),
        likelihood="optimal",
        beta: float = 1.0,
        free_bits: float = 0.0,
        hidden_units: int = 256,
        seed: int | None = None,
        **kwargs,
    ):
        latent_dims = tuple(latent_dims)
        positive = all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in latent_dims)
        if len(latent_dims) != 2 or not positive:
            raise ValueError(
                f"Expected latent_dims = (z1_size, z2_size), positive integers. Received: latent_dims={latent_dims!r}"
            )
        positive_int("hidden_units", hidden_units)
        self.latent_dims = latent_dims
        self.hidden_units = hidden_units
        # `VAE.__init__` builds the model; the extra layers are made in `build`.
        super().__init__(
            encoder, decoder, latent_dims[0], likelihood, beta, free_bits,
            posterior=DiagonalGaussian(latent_dims[1], name="q_z2"), seed=seed, **kwargs,
        )

    def build(self, input_shape):
        if not hasattr(self, "p_z1"):
            self.q_z1 = DiagonalGaussian(self.latent_dims[0], name="q_z1_given_x_z2")
            self.top_down = keras.layers.Dense(self.hidden_units, activation="relu", name="top_down")
            self.p_z1 = DiagonalGaussian(self.latent_dims[0], name="p_z1_given_z2")
        features = self.encoder.output_shape
        for layer, shape in (
            (self.q_z1, (*features[:-1], features[-1] + self.latent_dims[1])),
            (self.top_down, (None, self.latent_dims[1])),
            (self.p_z1, (None, self.hidden_units)),
        ):
            if not layer.built:
                layer.build(shape)
        super().build(input_shape)

    @classmethod
    def networks_for(cls, input_shape, network, params_per_channel, latent_dim=20, top_latent_dim=None, **arguments):
        """The networks of `network`; the decoder reads z1 of `latent_dim` numbers."""
        top = top_latent_dim if top_latent_dim is not None else max(latent_dim // 2, 1)
        return {**networks.encoder_and_decoder(network, input_shape, latent_dim, params_per_channel),
                "latent_dims": (latent_dim, top), **arguments}

    # ------------------------------------------------------------ the contract
    def posterior_distribution(self, inputs, training: bool = False):
        """q(z2|x) q(z1|x, z2) as a `tfd.JointDistributionSequential` over `[z2, z1]`."""
        inputs = self.as_inputs(inputs)
        features = self.encoder(inputs["x"], training=training)
        return tfd.JointDistributionSequential([
            self.posterior.distribution(features),
            lambda z2: self.q_z1.distribution(ops.concatenate([features, z2], axis=-1)),
        ])

    def prior_distribution(self, inputs=None, training: bool = False):
        """p(z2) p(z1|z2) as a `tfd.JointDistributionSequential` over `[z2, z1]`, p(z2) = N(0, I)."""
        return tfd.JointDistributionSequential([
            latents.standard_normal((self.latent_dims[1],)),
            lambda z2: self.p_z1.distribution(self.top_down(z2, training=training)),
        ])

    def decoder_latent(self, z):
        """The decoder reads z1, the last level."""
        return z[-1]

    def auxiliary_terms(self, q, z, kl_per_dim, training: bool = False):
        """Metrics `kl_z2` and `kl_z1`: the KL of each level (nats per image)."""
        top = self.latent_dims[1]
        return {}, {
            "kl_z2": ops.mean(ops.sum(kl_per_dim[:, :top], axis=-1)),
            "kl_z1": ops.mean(ops.sum(kl_per_dim[:, top:], axis=-1)),
        }

    # -------------------------------------------------------- user-facing API
    def encode_levels(self, x):
        """`((mean_z1, stddev_z1), (mean_z2, stddev_z2))`, with q(z1|x, z2) at z2 = its mean."""
        summary = latents.summary(self.posterior_distribution(self._checked_inputs(x, ())))
        return (summary["mean"], summary["stddev"]), (summary["mean_z2"], summary["stddev_z2"])


def build_hierarchical_vae(input_shape, **arguments) -> HierarchicalVAE:
    """Builds a two-level `HierarchicalVAE` (see `keras_vae.models.vae.build`): `latent_dim` is the
    size of z1 (default 20), `top_latent_dim` of z2 (default `max(latent_dim // 2, 1)`);
    `hidden_units`, `beta`, ...

    Example:

    >>> build_hierarchical_vae((28, 28, 1), latent_dim=20).latent_dims
    (20, 10)
    """
    return build(HierarchicalVAE, input_shape, **arguments)
