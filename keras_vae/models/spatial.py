"""`SpatialVAE`: a VAE whose latent is an `(h, w, c)` map (latent-diffusion style).

The encoder downsamples by `downsampling` (8 by default) to a feature map; a
1x1 convolution gives a diagonal Gaussian per latent pixel; the decoder maps
the latent map back to likelihood parameters. The KL weight defaults to a very
small 1e-6, so the model is close to a calibrated autoencoder whose latent
is smooth enough for a second-stage prior (a diffusion model, say); `sample`
draws z ~ N(0, I) and so gives poor images at such a small beta.

References:
    Rombach et al. High-Resolution Image Synthesis with Latent Diffusion
    Models. CVPR 2022. arXiv:2112.10752.
"""

from __future__ import annotations

import math

import keras
import tensorflow_probability as tfp
from keras import layers, ops

from keras_vae import latents
from keras_vae.checks import positive_int
from keras_vae.models.vae import VAE, build
from keras_vae.networks import check_image_shape, crop_to

tfd = tfp.distributions


def _num_stages(downsampling: int) -> int:
    stages = round(math.log2(downsampling)) if downsampling > 0 else -1
    if stages < 1 or 2**stages != downsampling:
        raise ValueError(f"Expected downsampling to be a power of two >= 2. Received: downsampling={downsampling!r}")
    return stages


def latent_map_shape(image_shape, downsampling: int, channels: int) -> tuple[int, int, int]:
    """The latent map shape `(ceil(H / d), ceil(W / d), channels)` for images `(H, W, C)`.

    Example:

    >>> latent_map_shape((28, 28, 1), downsampling=8, channels=4)
    (4, 4, 4)
    """
    height, width, _ = check_image_shape(image_shape, "image_shape")
    _num_stages(downsampling)
    return (math.ceil(height / downsampling), math.ceil(width / downsampling), channels)


_NORM_GROUPS = 8


def _conv_norm_relu(x, conv: layers.Layer):
    """`conv` (no bias, He init) -> GroupNormalization -> ReLU.

    The normalisation is what lets these stacks train with Adam on real
    images. Without it, 4-5 strided ReLU layers at Glorot init shrink the
    signal ~3x per layer, so at step 0 the decoder output ignores z and the
    only gradient is "darken every pixel" (MNIST is mostly 0). Adam moves
    every weight by ~lr in that one direction, the layers' gains compound
    (activations grew ~1.5x per step), the logits reach -1000 within ~20
    steps and the sigmoid mean saturates, where the Gaussian gradient
    `(mu - x) mu (1 - mu) / sigma**2` is exactly 0 in float32: a frozen
    all-black decoder. Per-image normalisation keeps every layer's output at
    unit scale whatever its weights' scale, so that growth cannot compound.
    """
    x = conv(x)
    x = layers.GroupNormalization(groups=math.gcd(_NORM_GROUPS, conv.filters), epsilon=1e-5)(x)
    return layers.Activation("relu")(x)


def _conv(filters: int, kernel_size: int, strides: int = 1, transpose: bool = False) -> layers.Layer:
    kind = layers.Conv2DTranspose if transpose else layers.Conv2D
    return kind(filters, kernel_size, strides=strides, padding="same", use_bias=False, kernel_initializer="he_uniform")


def spatial_encoder(
    input_shape, downsampling: int = 8, filters: int = 32, name: str = "spatial_encoder"
) -> keras.Model:
    """Conv(filters, k3) then one Conv(k4, stride 2) per halving: images to a feature map.

    Every convolution is followed by GroupNormalization (8 groups, or fewer
    when the width is not a multiple of 8) and a ReLU; see `_conv_norm_relu`
    for why the normalisation is needed.

    Args:
        input_shape: `(height, width, channels)`.
        downsampling: A power of two: the map is `ceil(H / d) x ceil(W / d)`. Defaults to 8.
        filters: Width of the first layer; each stage doubles it, up to 4x. Defaults to 32.
        name: Model name. Defaults to `"spatial_encoder"`.

    Returns:
        A functional `keras.Model` from images to `(batch, ceil(H/d), ceil(W/d), F)`.

    Example:

    >>> spatial_encoder((28, 28, 1), downsampling=8).output_shape
    (None, 4, 4, 128)
    """
    shape = check_image_shape(input_shape, "input_shape")
    positive_int("filters", filters)
    x_in = keras.Input(shape, name="x")
    x = _conv_norm_relu(x_in, _conv(filters, 3))
    for stage in range(_num_stages(downsampling)):
        x = _conv_norm_relu(x, _conv(filters * 2 ** min(stage + 1, 2), 4, strides=2))
    return keras.Model(x_in, x, name=name)


def spatial_decoder(
    output_shape,
    latent_channels: int = 4,
    params_per_channel: int = 1,
    downsampling: int = 8,
    filters: int = 32,
    name: str = "spatial_decoder",
) -> keras.Model:
    """The mirror of `spatial_encoder`: a latent map to likelihood parameters.

    Conv(k3) then one ConvTranspose(k4, stride 2) per doubling, each with
    GroupNormalization and ReLU, a final Conv(k3) to
    `C * params_per_channel`, cropped to the image size.

    Example:

    >>> spatial_decoder((28, 28, 1), latent_channels=4, params_per_channel=2).output_shape
    (None, 28, 28, 2)
    """
    height, width, channels = check_image_shape(output_shape, "output_shape")
    positive_int("filters", filters)
    stages = _num_stages(downsampling)
    z = keras.Input(latent_map_shape(output_shape, downsampling, latent_channels), name="z")
    x = _conv_norm_relu(z, _conv(filters * 4, 3))
    for stage in reversed(range(stages)):
        x = _conv_norm_relu(x, _conv(filters * 2 ** min(stage, 2), 4, strides=2, transpose=True))
    x = layers.Conv2D(channels * params_per_channel, 3, padding="same")(x)
    return keras.Model(z, crop_to(x, height, width), name=name)


@keras.saving.register_keras_serializable(package="keras_vae")
class SpatialDiagonalGaussian(keras.layers.Layer):
    """A diagonal Gaussian per latent pixel: a 1x1 convolution to mean and raw scale.

    Args:
        latent_channels: Channels of the latent map.
        min_scale: Floor of the posterior scale. Defaults to 1e-4.

    Call arguments:
        features: An encoder feature map `(batch, h, w, F)`.

    Returns:
        `(loc, scale)`, each `(batch, h, w, latent_channels)`.

    Example:

    >>> import numpy as np
    >>> q = SpatialDiagonalGaussian(4).distribution(np.zeros((2, 3, 3, 8), "float32"))
    >>> q.batch_shape.as_list(), q.event_shape.as_list()
    ([2], [3, 3, 4])
    """

    def __init__(self, latent_channels: int, min_scale: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        positive_int("latent_channels", latent_channels)
        self.latent_channels = latent_channels
        self.min_scale = float(min_scale)
        self.conv = layers.Conv2D(2 * latent_channels, 1, name="loc_and_scale")

    def build(self, features_shape):
        self.conv.build(features_shape)

    def call(self, features):
        loc, raw_scale = ops.split(self.conv(features), 2, axis=-1)
        return loc, ops.softplus(raw_scale) + self.min_scale

    def compute_output_shape(self, features_shape):
        shape = (*features_shape[:-1], self.latent_channels)
        return shape, shape

    def distribution(self, features) -> tfd.Independent:
        """q(z|x): batch shape `(batch,)`, event `(h, w, latent_channels)` (independent Normals)."""
        loc, scale = self(features)
        return tfd.Independent(tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=3)

    def get_config(self):
        return {**super().get_config(), "latent_channels": self.latent_channels, "min_scale": self.min_scale}


@keras.saving.register_keras_serializable(package="keras_vae")
class SpatialVAE(VAE):
    """A VAE with an `(h, w, latent_dim)` latent map and a tiny KL weight.

    Same loss, metrics and likelihoods as `VAE` (KL summed over the whole
    map); `encode` and `decode` keep the spatial shape.

    Args:
        encoder: A functional model from images `(H, W, C)` to a feature map `(h, w, F)`.
        decoder: A functional model from `(h, w, latent_dim)` to `(H, W, C * params_per_channel)`.
        latent_dim: Channels of the latent map. Defaults to 4.
        likelihood: A `Likelihood` or a name. Defaults to `"optimal"`.
        beta: KL weight. Defaults to 1e-6.
        free_bits: Per-dimension KL floor in nats. Defaults to 0.0.
        posterior: Defaults to `SpatialDiagonalGaussian(latent_dim)`.
        seed: Seed for the sampling noise. Defaults to None.

    Example:

    >>> import keras_vae as kv
    >>> vae = build_spatial_vae((16, 16, 1), latent_dim=4, downsampling=4)
    >>> vae.latent_shape
    (4, 4, 4)
    >>> vae.sample(2).shape
    TensorShape([2, 16, 16, 1])
    """

    latent_choices = ()  # a latent map, not one vector

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        latent_dim: int = 4,
        likelihood="optimal",
        beta: float = 1e-6,
        free_bits: float = 0.0,
        posterior: keras.layers.Layer | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        if posterior is None and isinstance(latent_dim, int) and latent_dim > 0:
            posterior = SpatialDiagonalGaussian(latent_dim)
        super().__init__(encoder, decoder, latent_dim, likelihood, beta, free_bits, posterior, seed, **kwargs)

    def _check_decoder_input(self, decoder_input_shape, image_shape) -> None:
        """The latent map is the encoder's feature map with `latent_dim` channels; the decoder reads it."""
        features = tuple(self.encoder.output_shape[1:])
        if len(features) != 3:
            raise ValueError(f"Expected the encoder to output a feature map (h, w, F). Received: {features}")
        self._latent_map_shape = (*features[:2], self.latent_dim)
        if tuple(decoder_input_shape[1:]) != self.latent_shape:
            raise ValueError(f"The decoder takes inputs of shape {tuple(decoder_input_shape[1:])}, but the latent "
                             f"map is {self.latent_shape}.")

    @classmethod
    def networks_for(cls, input_shape, network, params_per_channel, latent_dim=4, downsampling=8, filters=32,
                     **arguments):
        """`spatial_encoder` / `spatial_decoder` (only `network="conv"`) for a map of `latent_dim` channels."""
        if network != "conv":
            raise ValueError(f"{cls.__name__} uses convolutional networks only. Received: network={network!r}")
        return {"encoder": spatial_encoder(input_shape, downsampling, filters),
                "decoder": spatial_decoder(input_shape, latent_dim, params_per_channel, downsampling, filters),
                "latent_dim": latent_dim, **arguments}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """The latent map `(h, w, latent_dim)`."""
        return self._latent_map_shape

    def prior_distribution(self, inputs=None, training: bool = False):
        """p(z) = N(0, I) over the whole latent map."""
        return latents.standard_normal(self.latent_shape)


def build_spatial_vae(input_shape, **arguments) -> SpatialVAE:
    """Builds a `SpatialVAE` (see `keras_vae.models.vae.build`) with `spatial_encoder` /
    `spatial_decoder`: `latent_dim` latent channels (default 4), `downsampling` (default 8),
    `filters` (default 32), `beta` (default 1e-6), ...

    Example:

    >>> build_spatial_vae((28, 28, 1)).latent_shape
    (4, 4, 4)
    """
    return build(SpatialVAE, input_shape, **arguments)
