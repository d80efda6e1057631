"""`GumbelSoftmaxVAE`: a VAE with categorical latents and a concrete (Gumbel-softmax) posterior.

The latent is `num_variables` categorical variables of `num_classes` classes
each. q(z|x) is `tfd.RelaxedOneHotCategorical(temperature, logits)`; its
reparameterised sample is

    z = softmax((logits + g) / temperature),   g = -log(-log(u)), u ~ U(0, 1)

which lies on the simplex and tends to a one-hot vector as the temperature
goes to 0. With `hard=True` the forward pass uses `one_hot(argmax z)` and the
gradient that of `z` (straight-through). The KL is that of the categorical
q to a uniform prior, `sum_k q_k log(K q_k)` per variable (TFP's KL of two
`OneHotCategorical`s). In evaluation the
model samples exact one-hot codes from the categorical q, so the reported
`elbo` is a true (one-sample) ELBO of the discrete model.

The temperature is a non-trainable variable, annealed by
`annealing.TemperatureAnnealing(annealing.exponential(rate, end=0.5))`.

References:
    Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax.
    ICLR 2017. arXiv:1611.01144.
    Maddison, Mnih, Teh. The Concrete Distribution. ICLR 2017. arXiv:1611.00712.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from keras_vae import networks
from keras_vae.checks import positive_int
from keras_vae.models.vae import VAE, build
from keras_vae.noise import gumbel_from_uniform

tfd = tfp.distributions


def gumbel_softmax_sample(logits, temperature, uniform, hard: bool = False):
    """A reparameterised draw of `RelaxedOneHotCategorical(temperature, logits)`.

    Args:
        logits: `(..., num_classes)`.
        temperature: A positive scalar.
        uniform: U(0, 1) noise of the shape of `logits`.
        hard: Return `one_hot(argmax)` in the forward pass with the relaxed
            sample's gradient (straight-through). Defaults to False.

    Returns:
        A tensor of the shape of `logits` whose last axis sums to 1.

    Example:

    >>> import numpy as np
    >>> z = gumbel_softmax_sample(np.zeros((2, 3), "float32"), 1.0, np.full((2, 3), 0.5, "float32"))
    >>> np.asarray(z).sum(axis=-1).round(4).tolist(), round(float(np.asarray(z).max()), 3)
    ([1.0, 1.0], 0.333)
    """
    soft = ops.softmax((logits + gumbel_from_uniform(uniform)) / temperature, axis=-1)
    if not hard:
        return soft
    hard_sample = ops.one_hot(ops.argmax(soft, axis=-1), ops.shape(logits)[-1], dtype=soft.dtype)
    return soft + ops.stop_gradient(hard_sample - soft)


@keras.saving.register_keras_serializable(package="keras_vae")
class GumbelSoftmax(keras.layers.Layer):
    """A categorical posterior head: features -> logits `(batch, num_variables, num_classes)`.

    Args:
        num_variables: Number of categorical latent variables.
        num_classes: Classes per variable.

    Call arguments:
        features: Encoder features, `(batch, num_features)`.

    Returns:
        `(probs, stddev)` of the one-hot categorical q, each
        `(batch, num_variables, num_classes)`.

    Example:

    >>> import numpy as np
    >>> head = GumbelSoftmax(num_variables=4, num_classes=3)
    >>> q = head.distribution(np.zeros((2, 5), "float32"))
    >>> q.batch_shape.as_list(), q.event_shape.as_list()
    ([2], [4, 3])
    """

    def __init__(self, num_variables: int, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        positive_int("num_variables", num_variables)
        positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"Expected num_classes >= 2. Received: num_classes={num_classes}")
        self.num_variables = num_variables
        self.num_classes = num_classes
        self.dense = keras.layers.Dense(num_variables * num_classes, name="logits")

    def build(self, features_shape):
        self.dense.build(features_shape)

    def logits(self, features):
        """Unnormalised log-probabilities `(batch, num_variables, num_classes)`."""
        return ops.reshape(self.dense(features), (-1, self.num_variables, self.num_classes))

    def call(self, features):
        probs = ops.softmax(self.logits(features), axis=-1)
        return probs, ops.sqrt(probs * (1.0 - probs))

    def compute_output_shape(self, features_shape):
        shape = (features_shape[0], self.num_variables, self.num_classes)
        return shape, shape

    def distribution(self, features) -> tfd.Independent:
        """q(z|x): `num_variables` one-hot categoricals, batch `(batch,)`, event `(num_variables, num_classes)`."""
        return tfd.Independent(tfd.OneHotCategorical(logits=self.logits(features), dtype=tf.float32), 1)

    def get_config(self):
        return {**super().get_config(), "num_variables": self.num_variables, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="keras_vae")
class GumbelSoftmaxVAE(VAE):
    """A VAE with `num_variables` categorical latents of `num_classes` classes each.

    `encode(x)` gives the categorical probabilities (and their one-hot
    stddevs), `(batch, num_variables, num_classes)`; `decode` takes one-hot
    (or relaxed) codes of that shape; `sample(n)` decodes
    uniformly drawn one-hot codes. Metrics: those of `VAE` and `temperature`.

    Args:
        encoder: A functional model from images `(H, W, C)` to features.
        decoder: A functional model from `(num_variables * num_classes,)` to decoder parameters.
        num_variables: Number of categorical variables. Defaults to 20.
        num_classes: Classes per variable. Defaults to 10.
        likelihood: A `Likelihood` or a name. Defaults to `"optimal"`.
        beta: KL weight. Defaults to 1.0.
        free_bits: Per-variable KL floor in nats. Defaults to 0.0.
        temperature: Initial temperature (a non-trainable variable). Defaults to 1.0.
        hard: Straight-through one-hot samples in training. Defaults to False.
        seed: Seed for the Gumbel noise. Defaults to None.

    Example:

    >>> import keras, numpy as np
    >>> vae = build_gumbel_vae((8, 8, 1), network="mlp", latent_dim=4, num_classes=3, seed=0)
    >>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
    >>> sorted(vae.fit(x, batch_size=8, verbose=0).history)
    ['beta', 'elbo', 'kl', 'loss', 'rec', 'sigma', 'temperature']
    >>> vae.sample(2).shape
    TensorShape([2, 8, 8, 1])
    """

    extra_metric_names = ("temperature",)
    latent_choices = ()  # its own latent and prior
    latent_is_discrete = True
    config_attributes = {**VAE.config_attributes, "temperature": "initial_temperature"}

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        num_variables: int = 20,
        num_classes: int = 10,
        likelihood="optimal",
        beta: float = 1.0,
        free_bits: float = 0.0,
        temperature: float = 1.0,
        hard: bool = False,
        seed: int | None = None,
        **kwargs,
    ):
        positive_int("num_variables", num_variables)
        positive_int("num_classes", num_classes)
        if not temperature > 0:
            raise ValueError(f"Expected temperature > 0. Received: temperature={temperature}")
        self.num_variables = num_variables
        self.num_classes = num_classes
        self.initial_temperature = float(temperature)
        self.hard = bool(hard)
        super().__init__(
            encoder, decoder, num_variables * num_classes, likelihood, beta, free_bits,
            posterior=GumbelSoftmax(num_variables, num_classes), seed=seed, **kwargs,
        )

    def build(self, input_shape):
        if not hasattr(self, "temperature"):
            self.temperature = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(self.initial_temperature),
                trainable=False,
                name="temperature",
            )
        super().build(input_shape)

    # ------------------------------------------------------------ the contract
    @property
    def latent_shape(self) -> tuple[int, int]:
        """One-hot codes `(num_variables, num_classes)`; the decoder reads them flattened."""
        return (self.num_variables, self.num_classes)

    def _check_decoder_input(self, decoder_input_shape, image_shape) -> None:
        if tuple(decoder_input_shape[1:]) != (self.num_variables * self.num_classes,):
            raise ValueError(f"The decoder takes inputs of shape {tuple(decoder_input_shape[1:])}, but the codes "
                             f"have num_variables * num_classes = {self.num_variables * self.num_classes} entries.")

    def prior_distribution(self, inputs=None, training: bool = False):
        """p(z): uniform one-hot codes, `num_variables` independent uniform categoricals."""
        logits = tf.zeros(self.latent_shape)
        return tfd.Independent(tfd.OneHotCategorical(logits=logits, dtype=tf.float32), 1)

    def reparameterize(self, q, noise, training: bool = False):
        """Training: the relaxed (or straight-through) sample at the current temperature;
        otherwise an exact one-hot draw (Gumbel-max)."""
        if not training:
            return super().reparameterize(q, noise)
        logits = q.distribution.logits_parameter()
        return gumbel_softmax_sample(logits, self.temperature, noise.uniform(tf.shape(logits)), hard=self.hard)

    def decoder_params(self, z, inputs, training: bool = False):
        return self.decoder_network(ops.reshape(z, (-1, self.num_variables * self.num_classes)), training=training)

    def _metric_value(self, name: str, terms: dict):
        return self.temperature if name == "temperature" else super()._metric_value(name, terms)

    @classmethod
    def networks_for(cls, input_shape, network, params_per_channel, latent_dim=20, num_classes=10, **arguments):
        """The networks of `network` for `latent_dim` variables of `num_classes` one-hot classes."""
        return {**networks.encoder_and_decoder(network, input_shape, latent_dim * num_classes, params_per_channel),
                "num_variables": latent_dim, "num_classes": num_classes, **arguments}

    # -------------------------------------------------------- user-facing API
    def relaxed_sample(self, x, temperature=None, hard: bool = False, seed=None):
        """Gumbel-softmax codes of `x`, `(batch, num_variables, num_classes)`, on the simplex."""
        logits = self.posterior.logits(self.encoder(self._checked(x), training=False))
        temperature = self.temperature if temperature is None else temperature
        return gumbel_softmax_sample(logits, temperature, self.noise(seed).uniform(tf.shape(logits)), hard=hard)


def build_gumbel_vae(input_shape, **arguments) -> GumbelSoftmaxVAE:
    """Builds a `GumbelSoftmaxVAE` (see `keras_vae.models.vae.build`): `latent_dim` (default 20)
    categorical variables of `num_classes` (default 10) classes; `temperature`, `hard`, `beta`, ...

    Example:

    >>> build_gumbel_vae((28, 28, 1), latent_dim=20, num_classes=10).decoder.input_shape
    (None, 200)
    """
    return build(GumbelSoftmaxVAE, input_shape, **arguments)
