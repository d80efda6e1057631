"""`VLAE`: a VAE whose decoder is a PixelCNN with a restricted view (Variational Lossy Autoencoder).

The decoder models `p(x|z) = prod_i p(x_i | x_<i, z)` with a PixelCNN whose
receptive field is kept small, so that local texture is modelled by the
decoder and global structure has to be carried by z. With a large receptive
field the decoder can model much of the images on its own and the KL term
shrinks, towards zero in the limit (posterior collapse); the restricted view
is what keeps the KL up (`benchmarks/results/vlae.md` measures both).

Training is one teacher-forced pass: the decoder reads z and the true image
x and outputs the parameters of every pixel's conditional at once. Decoding
and sampling are autoregressive, one pixel (and channel) at a time, in a
`tf.function` loop; slow, but exact.

References:
    Chen, Kingma, Salimans, Duan, Dhariwal, Schulman, Sutskever, Abbeel.
    Variational Lossy Autoencoder. ICLR 2017. arXiv:1611.02731.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_vae import networks, pixelcnn
from keras_vae.models.vae import VAE, build


@keras.saving.register_keras_serializable(package="keras_vae")
class VLAE(VAE):
    """A `VAE` with an autoregressive decoder `[z, x] -> parameters` (see `pixelcnn_decoder`).

    Takes the arguments of `VAE`; the decoder must be a
    `keras_vae.pixelcnn.pixelcnn_decoder` model (inputs `[z, x]`, with the
    sub-models `"conditioner"` and `"pixelcnn"`). Use a discrete likelihood
    (`"logistic_mixture"`, `"categorical"`) for exact bits per dimension.

    `decode(z)` and `sample(n)` draw images pixel by pixel; `reconstruct(x)`
    decodes the posterior mean greedily (each pixel set to its conditional
    mean, rounded to the 1/255 grid), which is deterministic.

    Example:

    >>> import keras_vae as kv
    >>> vlae = kv.build_vlae((6, 6, 1), latent_dim=2, receptive_field=3, filters=8, seed=0)
    >>> vlae.sample(2).shape
    TensorShape([2, 6, 6, 1])
    """

    def _check_decoder_input(self, decoder_input_shape, image_shape) -> None:
        """Raises a ValueError unless the decoder is a `pixelcnn_decoder` of `[z, x]`."""
        try:
            z_shape, x_shape = (tuple(shape[1:]) for shape in decoder_input_shape)
            self.decoder.get_layer("conditioner"), self.decoder.get_layer("pixelcnn")
        except (AttributeError, TypeError, ValueError) as error:
            raise ValueError(
                "VLAE needs a decoder built by keras_vae.pixelcnn.pixelcnn_decoder: inputs [z, x] and the "
                f"sub-models 'conditioner' and 'pixelcnn'. Received: {self.decoder.name!r}."
            ) from error
        if z_shape != (self.latent_dim,) or x_shape != image_shape:
            raise ValueError(
                f"The decoder takes [z, x] of shapes [{z_shape}, {x_shape}], but latent_dim={self.latent_dim} "
                f"and the encoder reads images {image_shape}."
            )

    @classmethod
    def networks_for(cls, input_shape, network, params_per_channel, latent_dim=20, receptive_field=5, kernel_size=3,
                     filters=32, conditioning="spatial", **arguments):
        """The encoder of `network` and a `keras_vae.pixelcnn.pixelcnn_decoder` with that view."""
        decoder = pixelcnn.pixelcnn_decoder(input_shape, latent_dim=latent_dim, params_per_channel=params_per_channel,
                                            filters=filters, receptive_field=receptive_field,
                                            kernel_size=kernel_size, conditioning=conditioning)
        return {"encoder": networks.get(network)[0](input_shape), "decoder": decoder, "latent_dim": latent_dim,
                **arguments}

    @property
    def receptive_field(self) -> int:
        """The side of the window each pixel's conditional sees."""
        return pixelcnn.receptive_field_of(self.decoder)

    # ------------------------------------------------------------ the contract
    def decoder_params(self, z, inputs, training: bool = False):
        """The teacher-forced decoder: every pixel's conditional given z and the true earlier pixels."""
        return self.decoder_network([z, inputs["x"]], training=training)

    def decoded(self, z, inputs, noise=None, greedy: bool = False):
        """Generates images from z pixel by pixel: `(images, conditional stddevs)`.

        Each pixel is drawn from its conditional (seeds from `noise`), or with
        `greedy` set to its conditional mean rounded to the 1/255 grid.
        """
        noise = noise or self.noise()
        seed = tf.cast(noise.uniform((2,)) * 2.0**31, tf.int32)
        return self._generate(greedy)(ops.convert_to_tensor(z, "float32"), seed)

    # ------------------------------------------------------- autoregression
    def _autoregressive(self, z, seed, greedy: bool):
        height, width, channels = self.image_shape
        per_channel = self.likelihood.params_per_channel
        conditioning = self.decoder.get_layer("conditioner")(z, training=False)
        net = self.decoder.get_layer("pixelcnn")
        # Row i's conditionals read only rows i - reach .. i, so each step runs
        # the network on that strip of rows (exact: masks never look below).
        reach = (self.receptive_field - 1) // 2
        strip = min(reach + 1, height)
        batch = ops.shape(z)[0]
        canvas = tf.zeros((batch, height, width, channels))
        positions = tf.reshape(tf.eye(height * width * channels), (-1, 1, height, width, channels))

        def step(index, canvas):
            row, col, channel = index // (width * channels), (index // channels) % width, index % channels
            start = tf.maximum(row - reach, 0)
            params = net([canvas[:, start : start + strip], conditioning[:, start : start + strip]], training=False)
            pixel = params[:, row - start, col, channel * per_channel : (channel + 1) * per_channel]
            dist = self.likelihood.distribution(tf.reshape(pixel, (-1, 1, 1, per_channel)))
            if greedy:
                value = tf.round(dist.mean() * 255.0) / 255.0
            else:
                value = dist.sample(seed=tf.random.experimental.stateless_fold_in(seed, index))
            return index + 1, canvas + positions[index] * tf.reshape(value, (-1, 1, 1, 1))

        _, images = tf.while_loop(
            lambda index, _: index < height * width * channels, step, (tf.constant(0), canvas)
        )
        images = tf.ensure_shape(images, (None, height, width, channels))
        return images, self.likelihood.stddev(self.decoder([z, images], training=False))

    def _generate(self, greedy: bool):
        functions = self.__dict__.setdefault("_generate_functions", {})
        if greedy not in functions:
            functions[greedy] = tf.function(
                lambda z, seed: self._autoregressive(z, seed, greedy), reduce_retracing=True
            )
        return functions[greedy]


def build_vlae(input_shape, likelihood="logistic_mixture", **arguments) -> VLAE:
    """Builds a `VLAE` (see `keras_vae.models.vae.build`): an encoder of `keras_vae.networks`
    (`network`, default `"conv"`) and a `pixelcnn_decoder` with `receptive_field` (default 5,
    `1 + layers * (kernel_size - 1)`, at most the image size), `kernel_size` (default 3),
    `filters` (default 32) and `conditioning` (`"spatial"` or `"broadcast"`); `latent_dim`
    (default 20), `beta`, `free_bits`, `seed`. The likelihood defaults to `"logistic_mixture"`.

    Example:

    >>> vlae = build_vlae((28, 28, 1), latent_dim=8, receptive_field=5)
    >>> vlae.receptive_field, vlae.decoder.output_shape
    (5, (None, 28, 28, 15))
    """
    return build(VLAE, input_shape, likelihood=likelihood, **arguments)
