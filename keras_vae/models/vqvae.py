"""`VQVAE`: a vector-quantised autoencoder with a learned autoregressive prior over its codes.

x -> encoder -> z_e (an `(h, w, D)` map) -> nearest of K codebook vectors
-> z_q -> decoder -> p(x|z_q). The decoder sees `z_e + stop_gradient(z_q - z_e)`
(straight-through), so the reconstruction gradient reaches the encoder. Per
image, summed over the latent map:

    codebook   = sum (stop_gradient(z_e) - z_q)**2         (absent with EMA)
    commitment = commitment_weight * sum (z_e - stop_gradient(z_q))**2
    loss       = -log p(x|z_q) + codebook + commitment + beta * prior_nll

With `ema=True` the codebook follows exponential moving averages of the
vectors assigned to each code instead of the codebook loss. With
`restart_dead_codes=True` a code whose (moving-average) share of the
assignments falls below `dead_code_threshold / K` is moved onto a random
encoder output of the batch.

The prior is a small PixelCNN (masked convolutions) over the index map,
trained in the same step on the (gradient-free) indices: `sample(n)` draws
index maps from it position by position and decodes them. The posterior is
a point mass, so KL(q || prior) = -log prior(indices) and

    elbo = log p(x|z_q) + log prior(indices)

is reported as `elbo` (with `kl` = the prior's NLL, nats per image), next
to `perplexity`, `exp(entropy)` of the batch's code usage (K when all codes
are used equally).

References:
    van den Oord, Vinyals, Kavukcuoglu. Neural Discrete Representation
    Learning. NeurIPS 2017. arXiv:1711.00937.
    van den Oord et al. Pixel Recurrent Neural Networks. ICML 2016.
    arXiv:1601.06759.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_vae import likelihoods as likelihoods_lib
from keras_vae.layers import cross_replica_sum
from keras_vae.models.spatial import SpatialVAE, spatial_decoder, spatial_encoder
from keras_vae.models.vae import _global_batch_means
from keras_vae.pixelcnn import MaskedConv2D

_USAGE_DECAY = 0.95
_EPSILON = 1e-5


def _check_positive_int(value, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Expected a positive integer. Received: {name}={value!r}")


@keras.saving.register_keras_serializable(package="keras_vae")
class VectorQuantizer(keras.layers.Layer):
    """Projects encoder features to `embedding_dim` and snaps each vector to its nearest code.

    Args:
        num_codes: Codebook size K.
        embedding_dim: Code size D.
        commitment_weight: Weight of the commitment loss. Defaults to 0.25.
        ema: Update the codebook by moving averages instead of a loss. Defaults to False.
        ema_decay: Decay of those averages. Defaults to 0.99.
        restart_dead_codes: Move rarely used codes onto encoder outputs. Defaults to True.
        dead_code_threshold: A code is dead when its usage share is below
            `dead_code_threshold / num_codes`. Defaults to 0.03.

    Call arguments:
        features: An encoder feature map `(batch, h, w, F)`.

    Returns:
        `(z_q, zeros)`: the quantised map `(batch, h, w, D)` and the (zero)
        stddev of the point-mass posterior, the shapes `VAE.encode` returns.

    Example:

    >>> import numpy as np
    >>> vq = VectorQuantizer(num_codes=8, embedding_dim=2)
    >>> z_q, stddev = vq(np.zeros((1, 3, 3, 4), "float32"))
    >>> z_q.shape, float(np.max(np.abs(stddev)))
    (TensorShape([1, 3, 3, 2]), 0.0)
    """

    def __init__(
        self,
        num_codes: int,
        embedding_dim: int,
        commitment_weight: float = 0.25,
        ema: bool = False,
        ema_decay: float = 0.99,
        restart_dead_codes: bool = True,
        dead_code_threshold: float = 0.03,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int(num_codes, "num_codes")
        _check_positive_int(embedding_dim, "embedding_dim")
        if commitment_weight < 0:
            raise ValueError(f"Expected commitment_weight >= 0. Received: commitment_weight={commitment_weight}")
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"Expected 0 < ema_decay < 1. Received: ema_decay={ema_decay}")
        self.num_codes = num_codes
        self.embedding_dim = embedding_dim
        self.commitment_weight = float(commitment_weight)
        self.ema = bool(ema)
        self.ema_decay = float(ema_decay)
        self.restart_dead_codes = bool(restart_dead_codes)
        self.dead_code_threshold = float(dead_code_threshold)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.projection = keras.layers.Conv2D(embedding_dim, 1, name="projection")

    def build(self, features_shape):
        self.projection.build(features_shape)
        limit = 1.0 / self.num_codes
        # `update` computes the same new state on every replica (from all-reduced
        # statistics; restarts from the first replica's draws): keep the first's.
        replicated = "only_first_replica"
        self.codebook = self.add_weight(
            shape=(self.num_codes, self.embedding_dim),
            initializer=keras.initializers.RandomUniform(-limit, limit),
            trainable=not self.ema,
            name="codebook",
            aggregation=replicated,
        )
        self.usage = self.add_weight(
            shape=(self.num_codes,), initializer=keras.initializers.Constant(limit), trainable=False, name="usage",
            aggregation=replicated,
        )
        if self.ema:
            # Count 1 and sum = initial code: a code that is never used keeps its value.
            self.ema_count = self.add_weight(
                shape=(self.num_codes,), initializer="ones", trainable=False, name="ema_count", aggregation=replicated
            )
            self.ema_sum = self.add_weight(
                shape=(self.num_codes, self.embedding_dim), initializer="zeros", trainable=False, name="ema_sum",
                aggregation=replicated,
            )
            self.ema_sum.assign(self.codebook)

    def project(self, features):
        """z_e: the encoder features projected to `(batch, h, w, embedding_dim)`."""
        return self.projection(features)

    def nearest_codes(self, z_e):
        """`(indices (batch, h, w) int32, z_q (batch, h, w, D))`: the nearest codes (Euclidean)."""
        flat = ops.reshape(z_e, (-1, self.embedding_dim))
        distances = (
            ops.sum(ops.square(flat), axis=1, keepdims=True)
            - 2.0 * ops.matmul(flat, ops.transpose(self.codebook))
            + ops.sum(ops.square(self.codebook), axis=1)[None, :]
        )
        indices = ops.cast(ops.argmin(distances, axis=1), "int32")
        z_q = ops.reshape(ops.take(self.codebook, indices, axis=0), (-1, *z_e.shape[1:]))
        return ops.reshape(indices, (-1, *z_e.shape[1:-1])), z_q

    def lookup(self, indices):
        """The code vectors of an index map: `(..., D)`."""
        return ops.take(self.codebook, ops.cast(indices, "int32"), axis=0)

    def losses_per_image(self, z_e, z_q):
        """`(codebook, commitment)` losses per image, summed over the map, `(batch,)` each."""
        axes = tuple(range(1, len(z_e.shape)))
        commitment = self.commitment_weight * ops.sum(ops.square(z_e - ops.stop_gradient(z_q)), axis=axes)
        if self.ema:
            return ops.zeros_like(commitment), commitment
        return ops.sum(ops.square(ops.stop_gradient(z_e) - z_q), axis=axes), commitment

    def update(self, z_e, indices):
        """Training-time state: code usage, EMA codebook and dead-code restarts (no gradient).

        Under a `tf.distribute` strategy the code counts and sums are those of
        the global batch (all-reduced), so every replica computes the same state.
        """
        flat = ops.stop_gradient(ops.reshape(z_e, (-1, self.embedding_dim)))
        one_hot = ops.one_hot(ops.reshape(indices, (-1,)), self.num_codes)
        counts = cross_replica_sum(ops.sum(one_hot, axis=0))
        share = counts / ops.maximum(ops.sum(counts), 1.0)
        usage = _USAGE_DECAY * self.usage + (1.0 - _USAGE_DECAY) * share
        self.usage.assign(usage)
        if self.ema:
            decay = self.ema_decay
            count = decay * self.ema_count + (1.0 - decay) * counts
            total = decay * self.ema_sum + (1.0 - decay) * cross_replica_sum(ops.matmul(ops.transpose(one_hot), flat))
            n = ops.sum(count)
            smoothed = (count + _EPSILON) / (n + self.num_codes * _EPSILON) * n  # Laplace smoothing
            self.ema_count.assign(count)
            self.ema_sum.assign(total)
            self.codebook.assign(total / smoothed[:, None])
        if self.restart_dead_codes:
            dead = usage < self.dead_code_threshold / self.num_codes
            picks = keras.random.randint((self.num_codes,), 0, ops.shape(flat)[0], seed=self.seed_generator)
            candidates = ops.take(flat, picks, axis=0)
            self.codebook.assign(ops.where(dead[:, None], candidates, self.codebook))
            self.usage.assign(ops.where(dead, 1.0 / self.num_codes, usage))
            if self.ema:
                self.ema_count.assign(ops.where(dead, 1.0, self.ema_count))
                self.ema_sum.assign(ops.where(dead[:, None], candidates, self.ema_sum))

    def call(self, features):
        _, z_q = self.nearest_codes(self.project(features))
        return z_q, ops.zeros_like(z_q)

    def compute_output_shape(self, features_shape):
        shape = (*features_shape[:-1], self.embedding_dim)
        return shape, shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_codes": self.num_codes,
            "embedding_dim": self.embedding_dim,
            "commitment_weight": self.commitment_weight,
            "ema": self.ema,
            "ema_decay": self.ema_decay,
            "restart_dead_codes": self.restart_dead_codes,
            "dead_code_threshold": self.dead_code_threshold,
            "seed": self.seed,
        }


def perplexity(indices, num_codes: int):
    """exp(entropy) of the code usage in `indices`: 1 (one code) to `num_codes` (uniform).

    Example:

    >>> import numpy as np
    >>> round(float(perplexity(np.array([0, 1, 2, 3]), num_codes=8)), 3)
    4.0
    """
    one_hot = ops.one_hot(ops.reshape(ops.cast(indices, "int32"), (-1,)), num_codes)
    counts = cross_replica_sum(ops.sum(one_hot, axis=0))  # the global batch's usage under a strategy
    probs = counts / ops.maximum(ops.sum(counts), 1.0)
    return ops.exp(-ops.sum(probs * ops.log(probs + 1e-10)))


@keras.saving.register_keras_serializable(package="keras_vae")
class VQVAE(SpatialVAE):
    """VQ-VAE with a PixelCNN prior over the code map, trained together by `fit`.

    `encode(x)` returns `(z_q, zeros)` (the point-mass posterior),
    `encode_indices(x)` the index map, `decode(z_q)` and
    `decode_indices(indices)` the decoder `(mean, sigma)`, `sample(n)` images
    from the prior. Metrics: `loss`, `elbo`, `rec`, `kl` (prior NLL), `sigma`,
    `beta`, `vq_loss`, `perplexity`.

    Args:
        encoder: A functional model from images to a feature map `(h, w, F)`.
        decoder: A functional model from `(h, w, embedding_dim)` to decoder parameters.
        num_codes: Codebook size K. Defaults to 64.
        embedding_dim: Code size D. Defaults to 16.
        likelihood: A `Likelihood` or a name. Defaults to `"optimal"`.
        commitment_weight: Defaults to 0.25.
        ema: EMA codebook updates instead of the codebook loss. Defaults to False.
        ema_decay: Defaults to 0.99.
        restart_dead_codes: Defaults to True.
        prior_filters: Width of the PixelCNN prior. Defaults to 64.
        prior_layers: Masked convolutions in the prior (>= 1). Defaults to 4.
        beta: Weight of the prior NLL in the loss (it trains only the prior). Defaults to 1.0.
        seed: Seed for restarts and sampling. Defaults to None.

    Example:

    >>> import keras, numpy as np
    >>> vq = build_vqvae((8, 8, 1), latent_dim=4, num_codes=8, downsampling=4, seed=0)
    >>> vq.latent_shape
    (2, 2, 4)
    >>> vq.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
    >>> sorted(vq.fit(x, batch_size=8, verbose=0).history)
    ['beta', 'elbo', 'kl', 'loss', 'perplexity', 'rec', 'sigma', 'vq_loss']
    >>> vq.sample(3).shape
    TensorShape([3, 8, 8, 1])
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        num_codes: int = 64,
        embedding_dim: int = 16,
        likelihood="optimal",
        commitment_weight: float = 0.25,
        ema: bool = False,
        ema_decay: float = 0.99,
        restart_dead_codes: bool = True,
        prior_filters: int = 64,
        prior_layers: int = 4,
        beta: float = 1.0,
        seed: int | None = None,
        **kwargs,
    ):
        _check_positive_int(prior_filters, "prior_filters")
        _check_positive_int(prior_layers, "prior_layers")
        self.num_codes = num_codes
        self.prior_filters = prior_filters
        self.prior_layers = prior_layers
        quantizer = VectorQuantizer(
            num_codes, embedding_dim, commitment_weight, ema, ema_decay, restart_dead_codes, seed=seed, name="quantizer"
        )
        super().__init__(
            encoder, decoder, embedding_dim, likelihood, beta, 0.0, posterior=quantizer, seed=seed, **kwargs
        )

    @property
    def quantizer(self) -> VectorQuantizer:
        return self.posterior

    def build(self, input_shape):
        if not hasattr(self, "prior"):
            # The PixelCNN masks of keras_vae.pixelcnn, over one "colour" (the code) per position.
            layers = [MaskedConv2D(self.prior_filters, 5, "A", name="prior_masked_a"), keras.layers.ReLU()]
            for i in range(1, self.prior_layers):
                layers += [MaskedConv2D(self.prior_filters, 3, "B", name=f"prior_masked_b{i}"), keras.layers.ReLU()]
            layers.append(keras.layers.Conv2D(self.num_codes, 1, name="prior_logits"))
            self.prior = keras.Sequential(layers, name="prior")
            self.trackers.update({name: keras.metrics.Mean(name=name) for name in ("vq_loss", "perplexity")})
        if not self.prior.built:
            self.prior.build((None, *self.latent_shape[:2], self.num_codes))
        super().build(input_shape)

    # --------------------------------------------------------------- prior
    def prior_logits(self, indices, training: bool = False):
        """PixelCNN logits `(batch, h, w, K)`; position (i, j) sees only earlier positions."""
        return self.prior(ops.one_hot(ops.cast(indices, "int32"), self.num_codes), training=training)

    def prior_log_prob(self, indices, training: bool = False):
        """log prior(indices), summed over the map: `(batch,)` nats."""
        log_probs = ops.log_softmax(self.prior_logits(indices, training), axis=-1)
        picked = ops.sum(log_probs * ops.one_hot(ops.cast(indices, "int32"), self.num_codes), axis=-1)
        return ops.sum(ops.reshape(picked, (ops.shape(picked)[0], -1)), axis=-1)

    # ------------------------------------------------------------- the ELBO
    def compute_terms(self, x, training: bool = False) -> dict:
        """Loss and metrics of a batch; `kl_per_dim` is `(batch, 1)`: the prior NLL."""
        x = ops.convert_to_tensor(x, "float32")
        z_e = self.quantizer.project(self.encoder(x, training=training))
        indices, z_q = self.quantizer.nearest_codes(z_e)
        codebook_loss, commitment_loss = self.quantizer.losses_per_image(z_e, z_q)
        if training:
            self.quantizer.update(z_e, indices)
        z = z_e + ops.stop_gradient(z_q - z_e)  # straight-through
        p = self.likelihood.distribution(self.decoder(z, training=training), x, training=training)
        log_likelihood = p.log_prob(x)
        prior_nll = -self.prior_log_prob(ops.stop_gradient(indices), training)
        # Means over the global batch (under a strategy: all-reduced), as in VAE.compute_terms.
        mean_log_likelihood, means = _global_batch_means(
            log_likelihood, ops.stack([prior_nll, codebook_loss + commitment_loss], axis=-1)
        )
        rec = -ops.mean(mean_log_likelihood)
        means = ops.mean(means, axis=0)  # a batch of one under a strategy, per image on one device
        kl, vq_loss = means[0], means[1]
        return {
            "loss": rec + vq_loss + self.beta * kl,
            "elbo": -rec - kl,
            "rec": rec,
            "kl": kl,
            "vq_loss": vq_loss,
            "perplexity": perplexity(indices, self.num_codes),
            "sigma": ops.mean(p.stddev()),
            "log_likelihood": log_likelihood,
            "kl_per_dim": prior_nll[:, None],
        }

    # -------------------------------------------------------- user-facing API
    def encode_indices(self, x):
        """The code index map of `x`: `(batch, h, w)` int32."""
        return self.quantizer.nearest_codes(self.quantizer.project(self.encoder(self._checked(x), training=False)))[0]

    def decode_indices(self, indices):
        """`(mean, sigma)` of p(x|z_q) for an index map `(batch, h, w)`."""
        return self.decode(self.quantizer.lookup(indices))

    def sample_indices(self, num_samples: int):
        """Index maps drawn from the PixelCNN prior, one position at a time: `(num_samples, h, w)`."""
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"Expected a positive integer. Received: num_samples={num_samples!r}")
        height, width = self.latent_shape[:2]
        indices = ops.zeros((num_samples, height, width), "int32")
        for row in range(height):
            for column in range(width):
                logits = self.prior_logits(indices)[:, row, column, :]
                uniform = keras.random.uniform(ops.shape(logits), seed=self.seed_generator)
                draw = ops.cast(ops.argmax(logits - ops.log(-ops.log(uniform + 1e-20) + 1e-20), axis=-1), "int32")
                position = np.zeros((1, height, width), bool)
                position[0, row, column] = True
                indices = ops.where(position, draw[:, None, None], indices)
        return indices

    def sample(self, num_samples: int):
        """Decoder means at index maps from the prior: `(num_samples, H, W, C)`."""
        return self.decode_indices(self.sample_indices(num_samples))[0]

    def elbo_with_running_sigma(self, x):
        """log p(x|z_q) with the running sigma plus log prior(indices): `(batch,)` nats."""
        x = self._checked(x)
        indices, z_q = self.quantizer.nearest_codes(self.quantizer.project(self.encoder(x, training=False)))
        log_likelihood = self.likelihood.distribution(self.decoder(z_q, training=False)).log_prob(x)
        return log_likelihood + self.prior_log_prob(indices)

    # ------------------------------------------------------------ config
    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        quantizer = self.quantizer
        return {
            **keras.Model.get_config(self),
            "encoder": serialize(self.encoder),
            "decoder": serialize(self.decoder),
            "num_codes": self.num_codes,
            "embedding_dim": self.latent_dim,
            "likelihood": serialize(self.likelihood),
            "commitment_weight": quantizer.commitment_weight,
            "ema": quantizer.ema,
            "ema_decay": quantizer.ema_decay,
            "restart_dead_codes": quantizer.restart_dead_codes,
            "prior_filters": self.prior_filters,
            "prior_layers": self.prior_layers,
            "beta": self.initial_beta,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "likelihood"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_vqvae(
    input_shape,
    network: str = "conv",
    latent_dim: int = 16,
    likelihood="optimal",
    sigma: float | None = None,
    beta: float = 1.0,
    free_bits: float = 0.0,
    seed: int | None = None,
    num_codes: int = 64,
    downsampling: int = 4,
    filters: int = 32,
    **kwargs,
) -> VQVAE:
    """Builds a `VQVAE` with `spatial_encoder` / `spatial_decoder`.

    Args:
        input_shape: Image shape `(height, width, channels)`.
        network: Only `"conv"` (accepted for a common builder signature).
        latent_dim: Code size D. Defaults to 16.
        likelihood, sigma, seed: As in `build_vae`.
        beta: Weight of the prior NLL. Defaults to 1.0.
        free_bits: Must be 0 (no continuous KL to floor).
        num_codes: Codebook size K. Defaults to 64.
        downsampling: Power-of-two downsampling to the code map. Defaults to 4 (7x7 for MNIST).
        filters: Width of the first encoder layer. Defaults to 32.
        **kwargs: Further `VQVAE` arguments (`ema`, `commitment_weight`, ...).

    Example:

    >>> build_vqvae((28, 28, 1)).latent_shape
    (7, 7, 16)
    """
    if network != "conv":
        raise ValueError(f"VQVAE uses convolutional networks only. Received: network={network!r}")
    if free_bits:
        raise ValueError(f"VQVAE has no continuous KL to floor. Received: free_bits={free_bits}")
    likelihood = likelihoods_lib.get(likelihood, sigma=sigma)
    return VQVAE(
        encoder=spatial_encoder(input_shape, downsampling, filters),
        decoder=spatial_decoder(input_shape, latent_dim, likelihood.params_per_channel, downsampling, filters),
        num_codes=num_codes,
        embedding_dim=latent_dim,
        likelihood=likelihood,
        beta=beta,
        seed=seed,
        **kwargs,
    )
