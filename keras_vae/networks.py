"""Encoder and decoder networks for images of any height, width and channel count.

Encoders map images `(H, W, C)` to a flat feature vector; the posterior head
(`keras_vae.posteriors`) turns the features into q(z|x). Decoders map a
latent vector to raw likelihood parameters `(H, W, C * params_per_channel)`;
the likelihood layer turns those into p(x|z). Decoders upsample to a multiple
of their stride and crop to the exact image size, so odd sizes work.

- `conv`: exactly the small network of the sigma-VAE paper's reference code
  (its last layer a `NarrowConv2DTranspose`: the same transposed convolution,
  computed faster).
- `beta_vae_conv`: the network of the beta-VAE paper (Higgins et al. 2017,
  Table 1, row 3) as disentanglement_lib trains it on dSprites: four
  stride-2 convolutions and a 256-unit dense layer each way.
- `mlp`: two dense layers each way.
- `resnet`: residual blocks at each resolution (BS-VAE style).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
from keras import layers

from keras_vae.conv_transpose import NarrowConv2DTranspose

NAMES = ("conv", "beta_vae_conv", "mlp", "resnet")


def check_image_shape(shape, argument: str) -> tuple[int, int, int]:
    """Returns `shape` as a tuple if it is `(height, width, channels)` of positive ints, else raises ValueError."""
    shape = tuple(shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            f"Expected {argument} to be (height, width, channels) of positive integers. "
            f"Received: {argument}={shape}"
        )
    return shape


def crop_to(x, height: int, width: int):
    """Crops a decoder map (from the centre) down to `height x width`."""
    extra_h, extra_w = x.shape[1] - height, x.shape[2] - width
    if extra_h == 0 and extra_w == 0:
        return x
    return layers.Cropping2D(
        ((extra_h // 2, extra_h - extra_h // 2), (extra_w // 2, extra_w - extra_w // 2)),
        name="crop_to_image",
    )(x)


def _decoder_seed(latent_dim: int, height: int, width: int, factor: int, channels: int, name: str,
                  hidden: tuple[int, ...] = (), activation: str | None = None):
    """Latent input -> Dense ReLU layers of sizes `hidden` -> Dense -> a `ceil(H/f) x ceil(W/f) x channels` map.

    `f` is `factor`; the last Dense layer applies `activation` (none by default).
    """
    z = keras.Input((latent_dim,), name="z")
    seed_h, seed_w = math.ceil(height / factor), math.ceil(width / factor)
    x = z
    for units in hidden:
        x = layers.Dense(units, activation="relu")(x)
    x = layers.Dense(seed_h * seed_w * channels, activation=activation, name=f"{name}_dense")(x)
    return z, layers.Reshape((seed_h, seed_w, channels))(x)


def conv_encoder(input_shape, name: str = "conv_encoder") -> keras.Model:
    """The sigma-VAE paper's encoder: Conv(32,k3,s1)-Conv(64,k4,s2)-Conv(128,k5,s2), ReLU, flatten.

    Args:
        input_shape: `(height, width, channels)`.
        name: Model name. Defaults to `"conv_encoder"`.

    Returns:
        A functional `keras.Model` from images to features `(batch, ceil(H/4) * ceil(W/4) * 128)`.

    Example:

    >>> conv_encoder((28, 28, 1)).output_shape
    (None, 6272)
    """
    shape = check_image_shape(input_shape, "input_shape")
    x_in = keras.Input(shape, name="x")
    x = layers.Conv2D(32, 3, strides=1, padding="same", activation="relu")(x_in)
    x = layers.Conv2D(64, 4, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(128, 5, strides=2, padding="same", activation="relu")(x)
    return keras.Model(x_in, layers.Flatten()(x), name=name)


def conv_decoder(
    output_shape, latent_dim: int = 20, params_per_channel: int = 1, name: str = "conv_decoder"
) -> keras.Model:
    """The sigma-VAE paper's decoder: Dense(h*w*128)-ConvT(64,k6,s2)-ConvT(32,k6,s2)-ConvT(C,k5,s1).

    ReLU between the transposed convolutions, no activation on the dense
    layer; the likelihood applies the output nonlinearity (sigmoid mean).

    Args:
        output_shape: The image shape `(height, width, channels)`.
        latent_dim: Size of z. Defaults to 20.
        params_per_channel: Decoder outputs per image channel (2 for a
            per-pixel sigma). Defaults to 1.
        name: Model name. Defaults to `"conv_decoder"`.

    Returns:
        A functional `keras.Model` from z to `(batch, H, W, C * params_per_channel)`.

    Example:

    >>> conv_decoder((27, 27, 1), latent_dim=8).output_shape
    (None, 27, 27, 1)
    """
    height, width, channels = check_image_shape(output_shape, "output_shape")
    z, x = _decoder_seed(latent_dim, height, width, 4, 128, name)
    x = layers.Conv2DTranspose(64, 6, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(32, 6, strides=2, padding="same", activation="relu")(x)
    # Same layer as Conv2DTranspose; 2.3-2.9x faster to train with 1-2 output channels (conv_transpose.py).
    x = NarrowConv2DTranspose(channels * params_per_channel, 5, strides=1, padding="same")(x)
    return keras.Model(z, crop_to(x, height, width), name=name)


def beta_vae_conv_encoder(input_shape, name: str = "beta_vae_conv_encoder") -> keras.Model:
    """disentanglement_lib's `conv_encoder`: Conv(32,k4,s2)-Conv(32,k4,s2)-Conv(64,k2,s2)-Conv(64,k2,s2)-Dense(256).

    ReLU after every layer; the posterior head reads the 256 features.

    Args:
        input_shape: `(height, width, channels)`.
        name: Model name. Defaults to `"beta_vae_conv_encoder"`.

    Returns:
        A functional `keras.Model` from images to features `(batch, 256)`.

    Example:

    >>> beta_vae_conv_encoder((64, 64, 1)).output_shape
    (None, 256)
    """
    shape = check_image_shape(input_shape, "input_shape")
    x_in = keras.Input(shape, name="x")
    x = x_in
    for filters, kernel_size in ((32, 4), (32, 4), (64, 2), (64, 2)):
        x = layers.Conv2D(filters, kernel_size, strides=2, padding="same", activation="relu")(x)
    x = layers.Dense(256, activation="relu")(layers.Flatten()(x))
    return keras.Model(x_in, x, name=name)


def beta_vae_conv_decoder(
    output_shape, latent_dim: int = 20, params_per_channel: int = 1, name: str = "beta_vae_conv_decoder"
) -> keras.Model:
    """disentanglement_lib's `deconv_decoder`: Dense(256)-Dense(h*w*64)-ConvT(64/32/32/C, k4, s2).

    ReLU after every layer but the last; the seed map `h x w x 64` is
    `ceil(H/16) x ceil(W/16) x 64` (4x4 at 64x64, as in disentanglement_lib).

    Args:
        output_shape: The image shape `(height, width, channels)`.
        latent_dim: Size of z. Defaults to 20.
        params_per_channel: Decoder outputs per image channel. Defaults to 1.
        name: Model name. Defaults to `"beta_vae_conv_decoder"`.

    Returns:
        A functional `keras.Model` from z to `(batch, H, W, C * params_per_channel)`.

    Example:

    >>> beta_vae_conv_decoder((32, 32, 1), latent_dim=10).output_shape
    (None, 32, 32, 1)
    """
    height, width, channels = check_image_shape(output_shape, "output_shape")
    z, x = _decoder_seed(latent_dim, height, width, 16, 64, name, hidden=(256,), activation="relu")
    for filters in (64, 32, 32):
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(channels * params_per_channel, 4, strides=2, padding="same")(x)
    return keras.Model(z, crop_to(x, height, width), name=name)


def mlp_encoder(input_shape, hidden=(512, 256), name: str = "mlp_encoder") -> keras.Model:
    """Flatten, then dense ReLU layers of sizes `hidden`.

    Example:

    >>> mlp_encoder((28, 28, 1)).output_shape
    (None, 256)
    """
    shape = check_image_shape(input_shape, "input_shape")
    x_in = keras.Input(shape, name="x")
    x = layers.Flatten()(x_in)
    for units in hidden:
        x = layers.Dense(units, activation="relu")(x)
    return keras.Model(x_in, x, name=name)


def mlp_decoder(
    output_shape, latent_dim: int = 20, params_per_channel: int = 1, hidden=(256, 512), name: str = "mlp_decoder"
) -> keras.Model:
    """Dense ReLU layers of sizes `hidden`, then a dense layer reshaped to the image.

    Example:

    >>> mlp_decoder((32, 32, 3), latent_dim=4, params_per_channel=2).output_shape
    (None, 32, 32, 6)
    """
    height, width, channels = check_image_shape(output_shape, "output_shape")
    z = keras.Input((latent_dim,), name="z")
    x = z
    for units in hidden:
        x = layers.Dense(units, activation="relu")(x)
    x = layers.Dense(height * width * channels * params_per_channel)(x)
    return keras.Model(z, layers.Reshape((height, width, channels * params_per_channel))(x), name=name)


def _residual_block(x, filters: int):
    """x + Conv3x3(ReLU(Conv3x3(ReLU(x)))): the pre-activation block."""
    h = layers.Conv2D(filters, 3, padding="same")(layers.ReLU()(x))
    h = layers.Conv2D(filters, 3, padding="same")(layers.ReLU()(h))
    return layers.Add()([x, h])


def resnet_encoder(input_shape, filters=(64, 128), blocks: int = 1, name: str = "resnet_encoder") -> keras.Model:
    """Residual encoder: stride-2 convolution then `blocks` residual blocks per stage.

    Example:

    >>> resnet_encoder((64, 64, 3)).output_shape
    (None, 32768)
    """
    shape = check_image_shape(input_shape, "input_shape")
    x_in = keras.Input(shape, name="x")
    x = layers.Conv2D(filters[0] // 2, 3, padding="same")(x_in)
    for width in filters:
        x = layers.Conv2D(width, 4, strides=2, padding="same")(layers.ReLU()(x))
        for _ in range(blocks):
            x = _residual_block(x, width)
    return keras.Model(x_in, layers.Flatten()(layers.ReLU()(x)), name=name)


def resnet_decoder(
    output_shape,
    latent_dim: int = 20,
    params_per_channel: int = 1,
    filters=(128, 64),
    blocks: int = 1,
    name: str = "resnet_decoder",
) -> keras.Model:
    """Residual decoder: residual blocks then a stride-2 transposed convolution per stage.

    Example:

    >>> resnet_decoder((28, 28, 1)).output_shape
    (None, 28, 28, 1)
    """
    height, width, channels = check_image_shape(output_shape, "output_shape")
    z, x = _decoder_seed(latent_dim, height, width, 2 ** len(filters), filters[0], name)
    for stage in range(len(filters)):
        for _ in range(blocks):
            x = _residual_block(x, x.shape[-1])
        next_width = filters[stage + 1] if stage + 1 < len(filters) else filters[-1] // 2
        x = layers.Conv2DTranspose(next_width, 4, strides=2, padding="same")(layers.ReLU()(x))
    x = layers.Conv2D(channels * params_per_channel, 3, padding="same")(layers.ReLU()(x))
    return keras.Model(z, crop_to(x, height, width), name=name)


_BUILDERS: dict[str, tuple[Callable, Callable]] = {
    "conv": (conv_encoder, conv_decoder),
    "beta_vae_conv": (beta_vae_conv_encoder, beta_vae_conv_decoder),
    "mlp": (mlp_encoder, mlp_decoder),
    "resnet": (resnet_encoder, resnet_decoder),
}


def get(name: str) -> tuple[Callable, Callable]:
    """Returns the `(encoder_builder, decoder_builder)` pair called `name`.

    Example:

    >>> encoder_fn, decoder_fn = get("conv")
    >>> encoder_fn.__name__
    'conv_encoder'
    """
    if name not in _BUILDERS:
        raise ValueError(f"Unknown network {name!r}. Expected one of {NAMES}.")
    return _BUILDERS[name]


def encoder_and_decoder(network: str, input_shape, latent_dim: int, params_per_channel: int = 1) -> dict:
    """`{"encoder": ..., "decoder": ...}` of the network called `network`, the decoder reading `latent_dim` numbers.

    Example:

    >>> encoder_and_decoder("mlp", (8, 8, 1), latent_dim=3, params_per_channel=2)["decoder"].output_shape
    (None, 8, 8, 2)
    """
    encoder_fn, decoder_fn = get(network)
    return {"encoder": encoder_fn(input_shape),
            "decoder": decoder_fn(input_shape, latent_dim=latent_dim, params_per_channel=params_per_channel)}
