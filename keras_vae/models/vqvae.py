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
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from keras_vae.checks import positive_int
from keras_vae.layers import cross_replica_sum
from keras_vae.models.spatial import SpatialVAE
from keras_vae.models.vae import build
from keras_vae.noise import gumbel
from keras_vae.pixelcnn import MaskedConv2D

tfd = tfp.distributions

_USAGE_DECAY = 0.95
_EPSILON = 1e-5


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
        positive_int("num_codes", num_codes)
        positive_int("embedding_dim", embedding_dim)
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
        # `tf.argmin`, not Keras': Keras' adds a BitwiseAnd (for -0.0), which is not a TFLite builtin.
        indices = tf.argmin(distances, axis=1, output_type=tf.int32)
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


class VectorQuantized(tfd.Distribution):
    """The VQ-VAE posterior: a point mass at the quantised map z_q, batch `(batch,)`, event `(h, w, D)`.

    Its reparameterised draw is the straight-through `z_e + stop_gradient(z_q - z_e)`
    (the value z_q, the gradient of the encoder output z_e); `log_prob` is 0
    (a point mass on a discrete code). `indices` is the code index map.
    """

    def __init__(self, z_q, z_e, indices, name: str = "VectorQuantized"):
        parameters = dict(locals())
        self.z_q, self.z_e, self.indices = z_q, z_e, indices
        super().__init__(dtype=tf.float32, reparameterization_type=tfd.FULLY_REPARAMETERIZED, validate_args=False,
                         allow_nan_stats=True, parameters=parameters, name=name)

    def _batch_shape(self):
        return self.z_q.shape[:1]

    def _event_shape(self):
        return self.z_q.shape[1:]

    def _log_prob(self, z):
        return tf.zeros(tf.shape(z)[:1])

    def _mean(self):
        return self.z_q

    def _stddev(self):
        return tf.zeros_like(self.z_q)

    def draw(self, noise, num_samples=None):
        """The straight-through value (no noise is used)."""
        straight_through = self.z_e + tf.stop_gradient(self.z_q - self.z_e)
        return straight_through if num_samples is None else tf.repeat(straight_through[None], num_samples, axis=0)

    def draw_mode(self):
        return self.z_q

    def summary(self) -> dict:
        return {"mean": self.z_q, "stddev": tf.zeros_like(self.z_q), "indices": self.indices}


class CodePrior(tfd.Distribution):
    """The VQ-VAE prior: a PixelCNN over the code index map, as a distribution over quantised maps z_q.

    `log_prob(z_q)` is the PixelCNN's log-probability of the map's code
    indices; `draw(noise, n)` samples index maps one position at a time
    (Gumbel-max on `noise`'s uniforms, in a `tf.while_loop`) and looks up
    their codes. KL(VectorQuantized || CodePrior) = -log prior(indices)
    (registered with `tfd.RegisterKL`).
    """

    def __init__(self, model: VQVAE, training: bool = False, name: str = "CodePrior"):
        parameters = dict(locals())
        self.model, self.training = model, training
        super().__init__(dtype=tf.float32, reparameterization_type=tfd.NOT_REPARAMETERIZED, validate_args=False,
                         allow_nan_stats=True, parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _batch_shape(self):
        return tf.TensorShape([])

    def _event_shape(self):
        return tf.TensorShape(self.model.latent_shape)

    def log_prob_indices(self, indices):
        """log prior(indices), summed over the map: `(batch,)` nats."""
        return self.model.prior_log_prob(indices, self.training)

    def _log_prob(self, z):
        indices, _ = self.model.quantizer.nearest_codes(z)
        return self.log_prob_indices(indices)

    def draw_indices(self, noise, num_samples):
        """Index maps `(num_samples, h, w)` drawn position by position."""
        height, width = self.model.latent_shape[:2]
        positions, codes = height * width, self.model.num_codes
        scores_noise = gumbel(noise, tf.stack([num_samples, positions, codes]))

        def step(position, indices):
            logits = tf.reshape(self.model.prior_logits(indices), (-1, positions, codes))
            scores = tf.gather(logits + scores_noise, position, axis=1)
            code = tf.argmax(scores, axis=-1, output_type=tf.int32)
            here = tf.reshape(tf.one_hot(position, positions, dtype=tf.int32), (1, height, width))
            return position + 1, indices * (1 - here) + code[:, None, None] * here

        start = tf.zeros(tf.stack([num_samples, height, width]), tf.int32)
        _, indices = tf.while_loop(lambda position, _: position < positions, step, (tf.constant(0), start))
        return tf.ensure_shape(indices, (None, height, width))

    def draw(self, noise, num_samples=None):
        return self.model.quantizer.lookup(self.draw_indices(noise, 1 if num_samples is None else num_samples))


@tfd.RegisterKL(VectorQuantized, CodePrior)
def _kl_vector_quantized_code_prior(q, p, name=None):
    """KL of a point mass on a code map to the code prior: -log prior(indices)."""
    return -p.log_prob_indices(q.indices)


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

    extra_metric_names = ("vq_loss", "perplexity")
    latent_choices = ()  # its own latent and prior
    latent_is_discrete = True

    def config_value(self, name: str):
        """The codebook's settings live in the quantizer."""
        if name in ("embedding_dim", "commitment_weight", "ema", "ema_decay", "restart_dead_codes"):
            return getattr(self.quantizer, name)
        return super().config_value(name)

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
        positive_int("prior_filters", prior_filters)
        positive_int("prior_layers", prior_layers)
        self.num_codes = num_codes
        self.prior_filters = prior_filters
        self.prior_layers = prior_layers
        quantizer = VectorQuantizer(
            num_codes, embedding_dim, commitment_weight, ema, ema_decay, restart_dead_codes, seed=seed, name="quantizer"
        )
        super().__init__(
            encoder, decoder, embedding_dim, likelihood, beta, 0.0, posterior=quantizer, seed=seed, **kwargs
        )

    @classmethod
    def networks_for(cls, input_shape, network, params_per_channel, latent_dim=16, downsampling=4, filters=32,
                     free_bits=0.0, **arguments):
        """The spatial networks for codes of `latent_dim` numbers (`free_bits` must be 0: no continuous KL)."""
        if free_bits:
            raise ValueError(f"VQVAE has no continuous KL to floor. Received: free_bits={free_bits}")
        spatial = super().networks_for(input_shape, network, params_per_channel, latent_dim, downsampling, filters)
        spatial["embedding_dim"] = spatial.pop("latent_dim")
        return {**spatial, **arguments}

    @property
    def quantizer(self) -> VectorQuantizer:
        return self.posterior

    def build(self, input_shape):
        if getattr(self, "prior", None) is None:  # the base class sets no prior layer for a VQVAE
            # The PixelCNN masks of keras_vae.pixelcnn, over one "colour" (the code) per position.
            layers = [MaskedConv2D(self.prior_filters, 5, "A", name="prior_masked_a"), keras.layers.ReLU()]
            for i in range(1, self.prior_layers):
                layers += [MaskedConv2D(self.prior_filters, 3, "B", name=f"prior_masked_b{i}"), keras.layers.ReLU()]
            layers.append(keras.layers.Conv2D(self.num_codes, 1, name="prior_logits"))
            self.prior = keras.Sequential(layers, name="prior")
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

    # ------------------------------------------------------------ the contract
    def posterior_distribution(self, inputs, training: bool = False):
        """The point mass at the quantised encoder output (`VectorQuantized`)."""
        inputs = self.as_inputs(inputs)
        z_e = self.quantizer.project(self.encoder(inputs["x"], training=training))
        indices, z_q = self.quantizer.nearest_codes(z_e)
        return VectorQuantized(z_q, z_e, indices)

    def prior_distribution(self, inputs=None, training: bool = False):
        """The PixelCNN prior over code maps (`CodePrior`)."""
        return CodePrior(self, training=training)

    def auxiliary_terms(self, q, z, kl_per_dim, training: bool = False):
        """The loss `vq_loss` (codebook + commitment, per image) and the metric `perplexity`;
        in training, the codebook state is updated (usage, EMA, dead-code restarts)."""
        codebook_loss, commitment_loss = self.quantizer.losses_per_image(q.z_e, q.z_q)
        if training:
            self.quantizer.update(q.z_e, q.indices)
        return {"vq_loss": codebook_loss + commitment_loss}, {"perplexity": perplexity(q.indices, self.num_codes)}

    def extra_signatures(self, decoded_outputs, checked) -> dict:
        """`decode_indices(indices: (None, h, w) int32) -> decode's outputs`."""
        spec = tf.TensorSpec((None, *self.latent_shape[:2]), tf.int32, name="indices")

        def decode_indices(indices):
            indices = checked(indices, spec)
            in_range = tf.debugging.Assert(
                tf.reduce_all((indices >= 0) & (indices < self.num_codes)),
                [f"Expected code indices in [0, {self.num_codes}). Received:", indices],
            )
            with tf.control_dependencies([in_range]):
                return decoded_outputs(self.quantizer.lookup(indices), {})

        return {"decode_indices": (decode_indices, [spec])}

    # -------------------------------------------------------- user-facing API
    def encode_indices(self, x):
        """The code index map of `x`: `(batch, h, w)` int32."""
        return self.quantizer.nearest_codes(self.quantizer.project(self.encoder(self._checked(x), training=False)))[0]

    def decode_indices(self, indices):
        """`(mean, sigma)` of p(x|z_q) for an index map `(batch, h, w)`."""
        return self.decode(self.quantizer.lookup(indices))

    def sample_indices(self, num_samples: int):
        """Index maps drawn from the PixelCNN prior, one position at a time: `(num_samples, h, w)`."""
        positive_int("num_samples", num_samples)
        return CodePrior(self).draw_indices(self.noise(), num_samples)


def build_vqvae(input_shape, **arguments) -> VQVAE:
    """Builds a `VQVAE` (see `keras_vae.models.vae.build`) with `spatial_encoder` / `spatial_decoder`:
    codes of `latent_dim` numbers (default 16), `num_codes` (default 64), `downsampling` (default 4,
    7x7 codes for MNIST), `filters` (default 32), `ema`, `commitment_weight`, ...

    Example:

    >>> build_vqvae((28, 28, 1)).latent_shape
    (7, 7, 16)
    """
    return build(VQVAE, input_shape, **arguments)
