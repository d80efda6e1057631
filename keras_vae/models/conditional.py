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
import tensorflow as tf
from keras import ops

from keras_vae import networks
from keras_vae.checks import positive_int
from keras_vae.models.vae import VAE, build


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

    latent_choices = ()  # its latent is conditioned on the label: no learned prior, flow or sampler of z alone

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
        positive_int("condition_dim", condition_dim)
        self.condition_dim = condition_dim
        self.categorical = bool(categorical)
        super().__init__(encoder, decoder, latent_dim, likelihood, beta, free_bits, posterior, seed, **kwargs)

    def _check_decoder_input(self, decoder_input_shape, image_shape) -> None:
        decoder_in = tuple(decoder_input_shape[1:])
        expected = (self.latent_dim + self.condition_dim,)
        if decoder_in != expected:
            raise ValueError(
                f"The decoder takes inputs of shape {decoder_in}, but latent_dim + condition_dim = {expected[0]}."
            )

    def build(self, input_shape):
        if not self.posterior.built:
            features = self.encoder.output_shape
            self.posterior.build((*features[:-1], features[-1] + self.condition_dim))
        super().build(input_shape)

    @classmethod
    def networks_for(cls, input_shape, network, params_per_channel, latent_dim=20, *, num_classes, **arguments):
        """The networks of `network`; the decoder reads z and the one-hot (or vector) condition."""
        return {**networks.encoder_and_decoder(network, input_shape, latent_dim + num_classes, params_per_channel),
                "latent_dim": latent_dim, "condition_dim": num_classes, **arguments}

    # ------------------------------------------------------------ the contract
    def condition_specs(self) -> dict[str, tf.TensorSpec]:
        """`y`: int32 labels `(None,)` when categorical, else float vectors `(None, condition_dim)`."""
        if self.categorical:
            return {"y": tf.TensorSpec((None,), tf.int32, name="y")}
        return {"y": tf.TensorSpec((None, self.condition_dim), tf.float32, name="y")}

    def condition(self, y, rows=None):
        """y as float vectors `(rows, condition_dim)` (labels are one-hot encoded).

        Args:
            y: Labels `(batch,)` (or one label, repeated) when `categorical`,
                else vectors `(batch, condition_dim)`; one row, or one per input.
            rows: The batch to broadcast one row to. Defaults to None.
        """
        if y is None:
            raise ValueError("ConditionalVAE needs a condition y (labels or vectors); received None.")
        if isinstance(y, (list, tuple, int, np.integer, np.ndarray)):
            y = np.asarray(y)
            if self.categorical and y.size and (y.min() < 0 or y.max() >= self.condition_dim):
                raise ValueError(
                    f"Expected labels in [0, {self.condition_dim}). Received labels in [{y.min()}, {y.max()}]."
                )
        if self.categorical:
            labels = tf.reshape(tf.cast(tf.convert_to_tensor(y), tf.int32), (-1,))
            in_range = tf.debugging.Assert(
                tf.reduce_all((labels >= 0) & (labels < self.condition_dim)),
                [f"Expected labels y in [0, {self.condition_dim}). Received:", labels],
            )
            with tf.control_dependencies([in_range]):
                vectors = tf.one_hot(labels, self.condition_dim)
        else:
            vectors = tf.convert_to_tensor(y, tf.float32)
            if len(vectors.shape) != 2 or vectors.shape[-1] != self.condition_dim:
                raise ValueError(f"Expected conditions of shape (batch, {self.condition_dim}). "
                                 f"Received: y.shape={tuple(vectors.shape)}")
        if rows is None:
            return vectors
        count = tf.shape(vectors)[0]
        one_or_all = tf.debugging.Assert(
            tf.logical_or(tf.equal(count, 1), tf.equal(count, rows)),
            ["Expected y with one row, or one row per input. Received rows, expected:", count, rows],
        )
        with tf.control_dependencies([one_or_all]):
            return tf.broadcast_to(vectors, tf.stack([rows, self.condition_dim]))

    def posterior_distribution(self, inputs, training: bool = False):
        """q(z|x, y): the head reads the encoder features and y."""
        inputs = self.as_inputs(inputs)
        x = inputs["x"]
        y_vec = self.condition(inputs["y"], tf.shape(x)[0])
        return self.posterior.distribution(ops.concatenate([self.encoder(x, training=training), y_vec], axis=-1))

    def decoder_params(self, z, inputs, training: bool = False):
        y_vec = self.condition(inputs["y"], tf.shape(z)[0])
        return self.decoder_network(ops.concatenate([z, y_vec], axis=-1), training=training)

    def sample(self, num_samples: int, y=None):
        """Decoder means at z ~ N(0, I) given y: `(num_samples, H, W, C)`.

        Args:
            num_samples: How many images.
            y: One label (or vector) for all, or one per sample. Defaults to
                the labels `0, 1, ..., condition_dim - 1, 0, 1, ...` (categorical
                only).
        """
        if y is None:
            if not self.categorical:
                raise ValueError("sample needs y when the condition is a vector (categorical=False).")
            if isinstance(num_samples, int) and num_samples > 0:
                y = np.arange(num_samples) % self.condition_dim
        return super().sample(num_samples, y)


def build_conditional_vae(input_shape, num_classes: int, **arguments) -> ConditionalVAE:
    """Builds a `ConditionalVAE` (see `keras_vae.models.vae.build`) of labels `0..num_classes-1`
    (or, with `categorical=False`, condition vectors of `num_classes` numbers); `latent_dim` (default 20), ...

    Example:

    >>> build_conditional_vae((28, 28, 1), num_classes=10).decoder.input_shape
    (None, 30)
    """
    return build(ConditionalVAE, input_shape, num_classes=num_classes, **arguments)
