"""`ConditionalVAE`: q(z|x, y) and p(x|z, y) conditioned on a label or a vector y.

The condition enters the posterior head (concatenated to the encoder
features) and the decoder (concatenated to z), so the usual image encoders
and decoders of `keras_vae.networks` serve unchanged: the decoder just takes
`latent_dim + condition_dim` inputs. Data are `(images, labels)` pairs:
`model.fit(x, y)` or a dataset from `data.load(..., with_labels=True)`.

References:
    Sohn, Lee, Yan. Learning Structured Output Representation using Deep
    Conditional Generative Models. NeurIPS 2015.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_vae import likelihoods as likelihoods_lib
from keras_vae import networks
from keras_vae.models.vae import VAE, _global_batch_means, checked_pixels
from keras_vae.objectives import elbo_terms
from keras_vae.posteriors import kl_per_dimension


@keras.saving.register_keras_serializable(package="keras_vae")
class ConditionalVAE(VAE):
    """A VAE whose encoder and decoder both see a condition y.

    Args:
        encoder: A functional model from images `(H, W, C)` to features.
        decoder: A functional model from `(latent_dim + condition_dim,)` to
            decoder parameters `(H, W, C * params_per_channel)`.
        latent_dim: Size of z.
        condition_dim: Number of classes (when `categorical`) or the size of y.
        categorical: y are integer labels in `[0, condition_dim)`, one-hot
            encoded by the model; otherwise float vectors `(condition_dim,)`.
            Defaults to True.
        likelihood, beta, free_bits, posterior, seed: As in `VAE`.

    Example:

    >>> import keras, numpy as np
    >>> cvae = build_conditional_vae((8, 8, 1), num_classes=3, network="mlp", latent_dim=2, seed=0)
    >>> cvae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
    >>> history = cvae.fit(x, np.arange(16) % 3, batch_size=8, epochs=1, verbose=0)
    >>> cvae.sample(4, y=[0, 1, 2, 0]).shape
    TensorShape([4, 8, 8, 1])
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        latent_dim: int,
        condition_dim: int,
        categorical: bool = True,
        likelihood="optimal",
        beta: float = 1.0,
        free_bits: float = 0.0,
        posterior: keras.layers.Layer | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        if not isinstance(condition_dim, int) or isinstance(condition_dim, bool) or condition_dim < 1:
            raise ValueError(f"Expected a positive integer. Received: condition_dim={condition_dim!r}")
        self.condition_dim = condition_dim
        self.categorical = bool(categorical)
        super().__init__(encoder, decoder, latent_dim, likelihood, beta, free_bits, posterior, seed, **kwargs)

    def _check_networks(self):
        decoder_in = tuple(self.decoder.input_shape[1:])
        expected = (self.latent_dim + self.condition_dim,)
        if decoder_in != expected:
            raise ValueError(
                f"The decoder takes inputs of shape {decoder_in}, but latent_dim + condition_dim = {expected[0]}."
            )
        # The parent checks everything else against a decoder of `latent_dim` inputs.
        latent_dim, self.latent_dim = self.latent_dim, expected[0]
        try:
            return super()._check_networks()
        finally:
            self.latent_dim = latent_dim

    def build(self, input_shape):
        if not self.posterior.built:
            features = self.encoder.output_shape
            self.posterior.build((*features[:-1], features[-1] + self.condition_dim))
        super().build(input_shape)

    # ------------------------------------------------------------ conditions
    def condition(self, y, batch_size=None):
        """y as float vectors `(batch, condition_dim)` (labels are one-hot encoded).

        Args:
            y: Labels `(batch,)` (or a single int, repeated `batch_size` times)
                when `categorical`, else vectors `(batch, condition_dim)`.
            batch_size: The expected batch, to check or broadcast y. Defaults to None.
        """
        if y is None:
            raise ValueError("ConditionalVAE needs a condition y (labels or vectors); received None.")
        if isinstance(y, (list, tuple, int, np.integer, np.ndarray)):
            y = np.asarray(y)
            if self.categorical:
                if y.ndim == 0 and batch_size is not None:
                    y = np.full((batch_size,), int(y))
                if y.size and (y.min() < 0 or y.max() >= self.condition_dim):
                    raise ValueError(
                        f"Expected labels in [0, {self.condition_dim}). Received labels in [{y.min()}, {y.max()}]."
                    )
        if self.categorical:
            y = ops.reshape(ops.convert_to_tensor(y), (-1,))
            return ops.one_hot(ops.cast(y, "int32"), self.condition_dim)
        y = ops.convert_to_tensor(y, "float32")
        if len(y.shape) != 2 or y.shape[-1] != self.condition_dim:
            raise ValueError(
                f"Expected conditions of shape (batch, {self.condition_dim}). Received: y.shape={tuple(y.shape)}"
            )
        return y

    def _features(self, x, y_vec, training):
        return ops.concatenate([self.encoder(x, training=training), y_vec], axis=-1)

    def _decode_params(self, z, y_vec, training=False):
        return self.decoder(ops.concatenate([z, y_vec], axis=-1), training=training)

    # ------------------------------------------------------------- the ELBO
    def compute_terms(self, x, y=None, training: bool = False) -> dict:
        """One-sample ELBO terms of `(x, y)` pairs, as `VAE.compute_terms`."""
        x = ops.convert_to_tensor(x, "float32")
        y_vec = self.condition(y)
        q = self.posterior.distribution(self._features(x, y_vec, training))
        z = q.loc + q.stddev() * self._replica_noise(ops.shape(q.loc))
        p = self.likelihood.distribution(self._decode_params(z, y_vec, training), x, training=training)
        log_likelihood = p.log_prob(x)
        kl_per_dim = kl_per_dimension(q)
        terms = elbo_terms(*_global_batch_means(log_likelihood, kl_per_dim), self.beta, self.free_bits)
        terms["sigma"] = ops.mean(p.stddev())
        terms["log_likelihood"] = log_likelihood
        terms["kl_per_dim"] = kl_per_dim
        return terms

    def _step_inputs(self, data) -> tuple:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("ConditionalVAE trains on (images, labels): call fit(x, y) or pass (x, y) batches.")
        return checked_pixels(x), y

    def fit(self, x=None, y=None, *args, **kwargs):
        if isinstance(x, np.ndarray) and y is None:
            raise ValueError("ConditionalVAE.fit needs labels: fit(x, y).")
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if isinstance(x, np.ndarray) and y is None:
            raise ValueError("ConditionalVAE.evaluate needs labels: evaluate(x, y).")
        return super().evaluate(x, y, *args, **kwargs)

    # -------------------------------------------------------- user-facing API
    def call(self, inputs, training: bool = False):
        """Reconstruction of `inputs = (x, y)`: decoder mean at the posterior mean."""
        x, y = inputs
        y_vec = self.condition(y)
        loc, _ = self.posterior(self._features(x, y_vec, training))
        return self.likelihood.mean(self._decode_params(loc, y_vec, training))

    def posterior_distribution(self, x, y):
        """q(z|x, y) as a `tfd.MultivariateNormalDiag`."""
        x = self._checked(x)
        return self.posterior.distribution(self._features(x, self.condition(y, x.shape[0]), False))

    def encode(self, x, y):
        """Returns `(mean, stddev)` of q(z|x, y), each `(batch, latent_dim)`."""
        x = self._checked(x)
        return self.posterior(self._features(x, self.condition(y, x.shape[0]), False))

    def decode(self, z, y):
        """Returns `(mean, sigma)` of p(x|z, y), each `(batch, H, W, C)`."""
        z = ops.convert_to_tensor(z, "float32")
        if len(z.shape) != 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"Expected z of shape (batch, {self.latent_dim}). Received: z.shape={tuple(z.shape)}")
        params = self._decode_params(z, self.condition(y, z.shape[0]))
        return self.likelihood.mean(params), self.likelihood.stddev(params)

    def sample(self, num_samples: int, y=None):
        """Decoder means at z ~ N(0, I) given y: `(num_samples, H, W, C)`.

        Args:
            num_samples: How many images.
            y: One label (or vector) for all, or one per sample. Defaults to
                the labels `0, 1, ..., condition_dim - 1, 0, 1, ...` (categorical
                only).
        """
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"Expected a positive integer. Received: num_samples={num_samples!r}")
        if y is None:
            if not self.categorical:
                raise ValueError("sample needs y when the condition is a vector (categorical=False).")
            y = np.arange(num_samples) % self.condition_dim
        y_vec = self.condition(y, num_samples)
        if y_vec.shape[0] == 1 and num_samples > 1:
            y_vec = ops.repeat(y_vec, num_samples, axis=0)
        z = keras.random.normal((num_samples, self.latent_dim), seed=self.seed_generator)
        return self.likelihood.mean(self._decode_params(z, y_vec))

    def reconstruct(self, x, y):
        """Decoder mean at the posterior mean: `(batch, H, W, C)`."""
        return self((self._checked(x), y), training=False)

    def elbo(self, x, y):
        """The one-sample ELBO of each `(x, y)`, `(batch,)` nats, at beta = 1."""
        terms = self.compute_terms(self._checked(x), y, training=False)
        return terms["log_likelihood"] - ops.sum(terms["kl_per_dim"], axis=-1)

    def elbo_with_running_sigma(self, x, y):
        """Like `elbo`, but optimal modes use the running sigma."""
        x = self._checked(x)
        y_vec = self.condition(y, x.shape[0])
        q = self.posterior.distribution(self._features(x, y_vec, False))
        z = q.loc + q.stddev() * keras.random.normal(ops.shape(q.loc), seed=self.seed_generator)
        log_likelihood = self.likelihood.distribution(self._decode_params(z, y_vec)).log_prob(x)
        return log_likelihood - ops.sum(kl_per_dimension(q), axis=-1)

    def get_config(self):
        return {**super().get_config(), "condition_dim": self.condition_dim, "categorical": self.categorical}


def build_conditional_vae(
    input_shape,
    num_classes: int,
    network: str = "conv",
    latent_dim: int = 20,
    likelihood="optimal",
    sigma: float | None = None,
    beta: float = 1.0,
    free_bits: float = 0.0,
    seed: int | None = None,
    categorical: bool = True,
) -> ConditionalVAE:
    """Builds a `ConditionalVAE` from a network name (labels `0..num_classes-1`, or vectors).

    Args:
        input_shape: Image shape `(height, width, channels)`.
        num_classes: Number of classes (or the condition size if not `categorical`).
        network: `"conv"`, `"mlp"` or `"resnet"`. Defaults to `"conv"`.
        latent_dim, likelihood, sigma, beta, free_bits, seed: As in `build_vae`.
        categorical: Integer labels (True) or float vectors. Defaults to True.

    Example:

    >>> build_conditional_vae((28, 28, 1), num_classes=10).decoder.input_shape
    (None, 30)
    """
    likelihood = likelihoods_lib.get(likelihood, sigma=sigma)
    encoder_fn, decoder_fn = networks.get(network)
    return ConditionalVAE(
        encoder=encoder_fn(input_shape),
        decoder=decoder_fn(
            input_shape, latent_dim=latent_dim + num_classes, params_per_channel=likelihood.params_per_channel
        ),
        latent_dim=latent_dim,
        condition_dim=num_classes,
        categorical=categorical,
        likelihood=likelihood,
        beta=beta,
        free_bits=free_bits,
        seed=seed,
    )
