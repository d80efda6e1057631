"""PixelCNN pieces: `MaskedConv2D` (type A/B, channel-aware) and a z-conditioned PixelCNN decoder.

Pixels are ordered in raster order (row by row, left to right) and, within
a pixel, by channel (R before G before B). A masked convolution only lets
output position i see inputs that come before i in that order (type A) or
up to and including i (type B), so a stack "A, then B, B, ..." outputs at
each pixel parameters that depend only on the pixels before it:
`p(x|z) = prod_i p(x_i | x_<i, z)`, which can be trained in one pass with
the true image as input (teacher forcing) and sampled pixel by pixel.

Channel awareness: feature maps are split into `image_channels` equal,
contiguous groups; group g may see groups < g at the centre pixel (type A)
or <= g (type B), so the parameters of colour c see colours < c of the same
pixel. The decoder's output follows the same grouping, matching the
channel-major parameter layout of `keras_vae.likelihoods.discrete`.

The view of the decoder (its receptive field) is set by the number of
masked layers and their kernel size: `receptive_field = 1 + num_layers *
(kernel_size - 1)`, the side of the square window centred on a pixel that
holds everything the decoder sees (its upper half and the pixels to the
left). Plain masked stacks have the PixelCNN "blind spot" to the upper
right; that is fine for a decoder whose view is meant to be restricted.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

MASK_TYPES = ("A", "B")
CONDITIONINGS = ("spatial", "broadcast")


def causal_mask(kernel_size: int, in_channels: int, out_channels: int, mask_type: str, image_channels: int = 1):
    """The 0/1 mask of a masked convolution kernel, `(k, k, in_channels, out_channels)`.

    Args:
        kernel_size: Odd kernel side k.
        in_channels: Input feature channels (a multiple of `image_channels`).
        out_channels: Output feature channels (a multiple of `image_channels`).
        mask_type: `"A"` (the centre pixel sees only earlier colour groups) or
            `"B"` (also its own group).
        image_channels: Number of colour groups. Defaults to 1.

    Returns:
        A float32 numpy array.

    Example:

    >>> causal_mask(3, 1, 1, "A")[..., 0, 0]
    array([[1., 1., 1.],
           [1., 0., 0.],
           [0., 0., 0.]], dtype=float32)
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"Expected mask_type in {MASK_TYPES}. Received: mask_type={mask_type!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"Expected an odd positive kernel size. Received: kernel_size={kernel_size}")
    for name, count in (("in_channels", in_channels), ("out_channels", out_channels)):
        if count % image_channels:
            raise ValueError(
                f"Channel-aware masks split features into {image_channels} colour groups, so {name} must be a "
                f"multiple of {image_channels}. Received: {name}={count}"
            )
    centre = kernel_size // 2
    mask = np.zeros((kernel_size, kernel_size, in_channels, out_channels), "float32")
    mask[:centre] = 1.0
    mask[centre, :centre] = 1.0
    in_group = np.arange(in_channels) * image_channels // in_channels
    out_group = np.arange(out_channels) * image_channels // out_channels
    allowed = in_group[:, None] < out_group[None, :] if mask_type == "A" else in_group[:, None] <= out_group[None, :]
    mask[centre, centre] = allowed.astype("float32")
    return mask


# Registered as "keras_vae.pixelcnn>MaskedConv2D" (the name .keras files already use). The VLAE
# decoder and the VQ-VAE's prior over code maps both use it.
@keras.saving.register_keras_serializable(package="keras_vae.pixelcnn")
class MaskedConv2D(keras.layers.Layer):
    """A 'same'-padded 2-D convolution whose kernel is multiplied by a causal mask.

    Args:
        filters: Output channels (a multiple of `image_channels`).
        kernel_size: Odd kernel side.
        mask_type: `"A"` (first layer: excludes the current pixel's own
            colour) or `"B"` (later layers). Defaults to `"B"`.
        image_channels: Number of colour groups for channel-aware masks.
            Defaults to 1.
        use_bias: Whether to add a bias. Defaults to True.

    Call arguments:
        inputs: `(batch, height, width, in_channels)`.

    Returns:
        `(batch, height, width, filters)`.

    References:
        van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural
        Networks. ICML 2016. arXiv:1601.06759.

    Example:

    >>> import numpy as np
    >>> layer = MaskedConv2D(4, 3, mask_type="A")
    >>> layer(np.zeros((1, 5, 5, 1), "float32")).shape
    TensorShape([1, 5, 5, 4])
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        mask_type: str = "B",
        image_channels: int = 1,
        use_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mask_type not in MASK_TYPES:
            raise ValueError(f"Expected mask_type in {MASK_TYPES}. Received: mask_type={mask_type!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Expected an odd positive kernel size. Received: kernel_size={kernel_size}")
        if filters < 1 or filters % image_channels:
            raise ValueError(
                f"Expected filters to be a positive multiple of image_channels={image_channels}. "
                f"Received: filters={filters}"
            )
        self.filters = filters
        self.kernel_size = kernel_size
        self.mask_type = mask_type
        self.image_channels = image_channels
        self.use_bias = use_bias

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.mask = ops.convert_to_tensor(
            causal_mask(self.kernel_size, in_channels, self.filters, self.mask_type, self.image_channels)
        )
        self.kernel = self.add_weight(
            shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
            initializer="glorot_uniform",
            name="kernel",
        )
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias") if self.use_bias else None

    def call(self, inputs):
        outputs = ops.conv(inputs, self.kernel * self.mask, strides=1, padding="same")
        return outputs + self.bias if self.use_bias else outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "mask_type": self.mask_type,
            "image_channels": self.image_channels,
            "use_bias": self.use_bias,
        }


def num_masked_layers(receptive_field: int, kernel_size: int = 3) -> int:
    """How many masked k x k layers give a `receptive_field` x `receptive_field` view.

    Example:

    >>> num_masked_layers(7, kernel_size=3)
    3
    """
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"Expected an odd kernel size >= 3. Received: kernel_size={kernel_size}")
    if receptive_field < kernel_size or (receptive_field - 1) % (kernel_size - 1):
        raise ValueError(
            f"receptive_field must be 1 + num_layers * (kernel_size - 1) = {kernel_size}, "
            f"{2 * kernel_size - 1}, ... for kernel_size={kernel_size}. Received: receptive_field={receptive_field}"
        )
    return (receptive_field - 1) // (kernel_size - 1)


def _conditioner(latent_dim: int, height: int, width: int, filters: int, conditioning: str) -> keras.Model:
    """z -> a `(H, W, filters)` map: upsampled by transposed convolutions, or one vector broadcast."""
    z = keras.Input((latent_dim,), name="z")
    if conditioning == "broadcast":
        h = layers.Reshape((1, 1, filters))(layers.Dense(filters)(z))
        return keras.Model(z, layers.UpSampling2D((height, width))(h), name="conditioner")
    seed_h, seed_w = -(-height // 4), -(-width // 4)
    h = layers.Dense(seed_h * seed_w * 2 * filters, activation="relu")(z)
    h = layers.Reshape((seed_h, seed_w, 2 * filters))(h)
    h = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="relu")(h)
    h = layers.Conv2DTranspose(filters, 4, strides=2, padding="same")(h)
    return keras.Model(z, layers.Cropping2D(((0, 4 * seed_h - height), (0, 4 * seed_w - width)))(h), name="conditioner")


def _autoregressive_net(
    width: int, channels: int, params_per_channel: int, filters: int, num_layers: int, kernel_size: int
) -> keras.Model:
    """[x, conditioning map] -> parameters, any number of rows (so sampling can run on a strip)."""
    x_in = keras.Input((None, width, channels), name="x")
    cond = keras.Input((None, width, filters), name="conditioning")
    h = layers.Rescaling(2.0, offset=-1.0)(x_in)
    h = MaskedConv2D(filters, kernel_size, "A", channels, name="masked_a")(h)
    h = layers.ReLU()(layers.Add()([h, layers.Conv2D(filters, 1, name="cond_0")(cond)]))
    for index in range(1, num_layers):
        update = MaskedConv2D(filters, kernel_size, "B", channels, name=f"masked_b{index}")(h)
        update = layers.Add()([update, layers.Conv2D(filters, 1, name=f"cond_{index}")(cond)])
        h = layers.Add()([h, layers.ReLU()(update)])  # residual: the view grows, the signal stays
    h = layers.ReLU()(MaskedConv2D(filters, 1, "B", channels, name="head_1x1")(h))
    params = MaskedConv2D(channels * params_per_channel, 1, "B", channels, name="params")(h)
    return keras.Model([x_in, cond], params, name="pixelcnn")


def pixelcnn_decoder(
    output_shape,
    latent_dim: int = 20,
    params_per_channel: int = 256,
    filters: int = 32,
    receptive_field: int = 7,
    kernel_size: int = 3,
    conditioning: str = "spatial",
    name: str = "pixelcnn_decoder",
) -> keras.Model:
    """A PixelCNN decoder conditioned on z, with a restricted view (the VLAE decoder).

    The functional model takes `[z, x]` (x: the image itself, teacher
    forcing) and returns likelihood parameters `(B, H, W, C * P)` where
    those at pixel i depend on z and on the pixels before i only. It holds
    two sub-models that `VLAE` uses for sampling: `"conditioner"`
    (z -> `(H, W, filters)`: upsampled with transposed convolutions, or one
    vector broadcast to every pixel) and `"pixelcnn"` (one masked type-A
    layer, `num_layers - 1` residual type-B layers, each adding a 1x1
    projection of the conditioning map, then two 1x1 masked layers).

    Args:
        output_shape: The image shape `(height, width, channels)`.
        latent_dim: Size of z. Defaults to 20.
        params_per_channel: Likelihood parameters per image channel (256 for
            `Categorical256`). Defaults to 256.
        filters: Feature channels (a multiple of the image channels).
            Defaults to 32.
        receptive_field: Side of the square window the decoder sees:
            `1 + num_layers * (kernel_size - 1)`, at most the image size.
            Defaults to 7.
        kernel_size: Odd side of the masked kernels. Defaults to 3.
        conditioning: `"spatial"` or `"broadcast"`. Defaults to `"spatial"`.
        name: Model name. Defaults to `"pixelcnn_decoder"`.

    Returns:
        A functional `keras.Model` from `[z, x]` to parameters.

    References:
        Chen et al. Variational Lossy Autoencoder. ICLR 2017. arXiv:1611.02731.

    Example:

    >>> decoder = pixelcnn_decoder((8, 8, 1), latent_dim=2, params_per_channel=256, receptive_field=5)
    >>> decoder.output_shape
    (None, 8, 8, 256)
    """
    shape = tuple(output_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"Expected output_shape=(height, width, channels). Received: output_shape={shape}")
    height, width, channels = shape
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"Expected conditioning in {CONDITIONINGS}. Received: conditioning={conditioning!r}")
    if filters < 1 or filters % channels:
        raise ValueError(
            f"Expected filters to be a positive multiple of channels={channels}. Received: filters={filters}"
        )
    num_layers = num_masked_layers(receptive_field, kernel_size)
    if receptive_field > min(height, width):
        raise ValueError(
            f"receptive_field={receptive_field} is larger than the {height}x{width} image; "
            f"use at most {min(height, width)}."
        )
    z = keras.Input((latent_dim,), name="z")
    x = keras.Input(shape, name="x")
    conditioner = _conditioner(latent_dim, height, width, filters, conditioning)
    net = _autoregressive_net(width, channels, params_per_channel, filters, num_layers, kernel_size)
    return keras.Model([z, x], net([x, conditioner(z)]), name=name)


def receptive_field_of(decoder: keras.Model) -> int:
    """The receptive field of a `pixelcnn_decoder` model, read from its masked layers.

    Example:

    >>> receptive_field_of(pixelcnn_decoder((8, 8, 1), latent_dim=2, receptive_field=5))
    5
    """
    net = decoder.get_layer("pixelcnn")
    masked = [layer for layer in net.layers if isinstance(layer, MaskedConv2D) and layer.kernel_size > 1]
    return 1 + sum(layer.kernel_size - 1 for layer in masked)
