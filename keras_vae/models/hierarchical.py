"""`HierarchicalVAE`: two stochastic levels with top-down inference.

Generative model:  p(z2) p(z1|z2) p(x|z1),  p(z2) = N(0, I),
                   p(z1|z2) = N(m_p(z2), s_p(z2)**2) (a small dense network).
Inference model:   q(z2|x) q(z1|x, z2): the encoder features go up once,
                   z2 is drawn, and q(z1|x, z2) is a Gaussian head on the
                   features concatenated with z2 (ladder / top-down order).

`precision_weighted` is the ladder VAE's alternative merge (a bottom-up
Gaussian times the top-down prior). Its posterior can never be wider than
the prior; with it, a 10-epoch MNIST run (benchmarks/latents.py settings)
reached a test ELBO of 402 nats per image against 514 for the one-level VAE,
so the model uses the concatenation.

The ELBO has one KL per level (analytic given the sampled z2):

    elbo = log p(x|z1) - KL(q(z2|x) || p(z2)) - KL(q(z1|x, z2) || p(z1|z2))

`encode`/`decode` work on z1, the level the decoder reads, so a
hierarchical model is used like a `VAE` of latent size `latent_dims[0]`;
`sample` draws z2 ~ p(z2), then z1 ~ p(z1|z2).

References:
    Sonderby et al. Ladder Variational Autoencoders. NeurIPS 2016.
    arXiv:1602.02282.
"""

from __future__ import annotations

import keras
import tensorflow_probability as tfp
from keras import ops

from keras_vae import likelihoods as likelihoods_lib
from keras_vae import networks
from keras_vae.models.vae import VAE, _global_batch_means
from keras_vae.objectives import elbo_terms
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


def _kl_normal(loc_q, scale_q, loc_p, scale_p):
    return tfd.kl_divergence(tfd.Normal(loc_q, scale_q), tfd.Normal(loc_p, scale_p))


@keras.saving.register_keras_serializable(package="keras_vae")
class HierarchicalVAE(VAE):
    """A two-level VAE: p(z2) p(z1|z2) p(x|z1) with q(z2|x) q(z1|x, z2).

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
        if not isinstance(hidden_units, int) or hidden_units < 1:
            raise ValueError(f"Expected a positive integer. Received: hidden_units={hidden_units!r}")
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
            self.trackers.update({name: keras.metrics.Mean(name=name) for name in ("kl_z1", "kl_z2")})
        features = self.encoder.output_shape
        for layer, shape in (
            (self.q_z1, (*features[:-1], features[-1] + self.latent_dims[1])),
            (self.top_down, (None, self.latent_dims[1])),
            (self.p_z1, (None, self.hidden_units)),
        ):
            if not layer.built:
                layer.build(shape)
        super().build(input_shape)

    # ------------------------------------------------------------- the ELBO
    def _prior_z1(self, z2, training=False):
        return self.p_z1(self.top_down(z2, training=training))

    def _posterior_z1(self, features, z2):
        return self.q_z1(ops.concatenate([features, z2], axis=-1))

    def compute_terms(self, x, training: bool = False) -> dict:
        """One-sample ELBO terms; adds `kl_z1`, `kl_z2` (batch means) and per-image `kl_per_dim`
        `(batch, z1 + z2)` to the `VAE.compute_terms` dict."""
        x = ops.convert_to_tensor(x, "float32")
        features = self.encoder(x, training=training)
        loc2, scale2 = self.posterior(features)
        z2 = loc2 + scale2 * self._replica_noise(ops.shape(loc2))
        prior_loc1, prior_scale1 = self._prior_z1(z2, training)
        loc1, scale1 = self._posterior_z1(features, z2)
        z1 = loc1 + scale1 * self._replica_noise(ops.shape(loc1))
        p = self.likelihood.distribution(self.decoder(z1, training=training), x, training=training)
        log_likelihood = p.log_prob(x)
        kl_z1 = _kl_normal(loc1, scale1, prior_loc1, prior_scale1)
        kl_z2 = _kl_normal(loc2, scale2, 0.0, 1.0)
        kl_per_dim = ops.concatenate([kl_z1, kl_z2], axis=-1)
        terms = elbo_terms(*_global_batch_means(log_likelihood, kl_per_dim), self.beta, self.free_bits)
        terms["kl_z1"] = ops.mean(ops.sum(kl_z1, axis=-1))
        terms["kl_z2"] = ops.mean(ops.sum(kl_z2, axis=-1))
        terms["sigma"] = ops.mean(p.stddev())
        terms["log_likelihood"] = log_likelihood
        terms["kl_per_dim"] = kl_per_dim
        return terms

    # -------------------------------------------------------- user-facing API
    def encode_levels(self, x):
        """`((mean_z1, stddev_z1), (mean_z2, stddev_z2))`, with q(z1|x, z2) at z2 = its mean."""
        features = self.encoder(self._checked(x), training=False)
        loc2, scale2 = self.posterior(features)
        return self._posterior_z1(features, loc2), (loc2, scale2)

    def encode(self, x):
        """Returns `(mean, stddev)` of q(z1|x, z2 = E[z2|x]), each `(batch, latent_dims[0])`."""
        return self.encode_levels(x)[0]

    def posterior_distribution(self, x):
        """q(z1|x, z2 = E[z2|x]) as a `tfd.MultivariateNormalDiag`."""
        loc, scale = self.encode(x)
        return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)

    def call(self, x, training: bool = False):
        """The deterministic reconstruction: decoder mean at the posterior means."""
        features = self.encoder(x, training=training)
        loc2, _ = self.posterior(features)
        loc1, _ = self._posterior_z1(features, loc2)
        return self.likelihood.mean(self.decoder(loc1, training=training))

    def sample(self, num_samples: int):
        """Decoder means at z2 ~ N(0, I), z1 ~ p(z1|z2): `(num_samples, H, W, C)`."""
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"Expected a positive integer. Received: num_samples={num_samples!r}")
        z2 = keras.random.normal((num_samples, self.latent_dims[1]), seed=self.seed_generator)
        loc1, scale1 = self._prior_z1(z2)
        z1 = loc1 + scale1 * keras.random.normal(ops.shape(loc1), seed=self.seed_generator)
        return self.decode(z1)[0]

    def elbo_with_running_sigma(self, x):
        """Like `elbo`, but optimal modes use the running sigma."""
        x = self._checked(x)
        features = self.encoder(x, training=False)
        loc2, scale2 = self.posterior(features)
        z2 = loc2 + scale2 * keras.random.normal(ops.shape(loc2), seed=self.seed_generator)
        prior_loc1, prior_scale1 = self._prior_z1(z2)
        loc1, scale1 = self._posterior_z1(features, z2)
        z1 = loc1 + scale1 * keras.random.normal(ops.shape(loc1), seed=self.seed_generator)
        log_likelihood = self.likelihood.distribution(self.decoder(z1, training=False)).log_prob(x)
        kl = ops.sum(_kl_normal(loc1, scale1, prior_loc1, prior_scale1), -1)
        kl = kl + ops.sum(_kl_normal(loc2, scale2, 0.0, 1.0), -1)
        return log_likelihood - kl

    # ------------------------------------------------------------ config
    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            **keras.Model.get_config(self),
            "encoder": serialize(self.encoder),
            "decoder": serialize(self.decoder),
            "latent_dims": list(self.latent_dims),
            "likelihood": serialize(self.likelihood),
            "beta": self.initial_beta,
            "free_bits": self.free_bits,
            "hidden_units": self.hidden_units,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "likelihood"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_hierarchical_vae(
    input_shape,
    network: str = "conv",
    latent_dim: int = 20,
    likelihood="optimal",
    sigma: float | None = None,
    beta: float = 1.0,
    free_bits: float = 0.0,
    seed: int | None = None,
    top_latent_dim: int | None = None,
    hidden_units: int = 256,
) -> HierarchicalVAE:
    """Builds a two-level `HierarchicalVAE` from a network name.

    Args:
        input_shape: Image shape `(height, width, channels)`.
        network: `"conv"`, `"mlp"` or `"resnet"`. Defaults to `"conv"`.
        latent_dim: Size of z1 (the level the decoder reads). Defaults to 20.
        likelihood, sigma, beta, free_bits, seed: As in `build_vae`.
        top_latent_dim: Size of z2. Defaults to `max(latent_dim // 2, 1)`.
        hidden_units: Width of the top-down network. Defaults to 256.

    Example:

    >>> build_hierarchical_vae((28, 28, 1), latent_dim=20).latent_dims
    (20, 10)
    """
    likelihood = likelihoods_lib.get(likelihood, sigma=sigma)
    encoder_fn, decoder_fn = networks.get(network)
    top = top_latent_dim if top_latent_dim is not None else max(latent_dim // 2, 1)
    return HierarchicalVAE(
        encoder=encoder_fn(input_shape),
        decoder=decoder_fn(input_shape, latent_dim=latent_dim, params_per_channel=likelihood.params_per_channel),
        latent_dims=(latent_dim, top),
        likelihood=likelihood,
        beta=beta,
        free_bits=free_bits,
        hidden_units=hidden_units,
        seed=seed,
    )
