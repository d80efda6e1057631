"""The decoder to serve: the same function with its transposed convolutions rewritten as convolutions.

A "same"-padded `Conv2DTranspose` with square kernel k and stride s where
k / s is an odd integer is exactly a `Conv2D` with kernel k / s and s**2
times the filters followed by `depth_to_space(s)`. TFLite runs the latter
inside its XNNPACK delegate; `keras_vae.export` serves decoders rewritten
this way (`benchmarks/results/serving.md` measures the speed-up).

Example:

>>> import keras_vae as kv
>>> decoder = kv.networks.conv_decoder((28, 28, 1), latent_dim=2)
>>> "_TransposedAsConv" in [type(layer).__name__ for layer in serving_decoder(decoder).layers]
True
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _kernel_as_conv(kernel: np.ndarray, stride: int) -> np.ndarray:
    """A `Conv2DTranspose` kernel `(k, k, out, in)` -> the equivalent `Conv2D` kernel.

    With m = k / stride odd and "same" padding, output pixel
    `(stride*i + a, stride*j + b)` of the transposed convolution is a stride-1
    m x m convolution of the input around `(i, j)` using the taps
    `kernel[stride*(m-1) - stride*u + a, stride*(m-1) - stride*v + b]`; stacking
    the `stride**2` phases as channels `(a*stride + b)*out + c` makes
    `depth_to_space(stride)` put them back in place.
    """
    size, _, filters, channels = kernel.shape
    m = size // stride
    out = np.empty((m, m, channels, stride * stride * filters), kernel.dtype)
    for u in range(m):
        for v in range(m):
            for a in range(stride):
                for b in range(stride):
                    phase = (a * stride + b) * filters
                    tap = kernel[stride * (m - 1 - u) + a, stride * (m - 1 - v) + b]  # (filters, channels)
                    out[u, v, :, phase : phase + filters] = tap.T
    return out


class _TransposedAsConv(keras.layers.Layer):
    """A snapshot of a `Conv2DTranspose` as `Conv2D` + `depth_to_space`: same outputs, faster.

    TFLite runs a transposed convolution whose output shape depends on the
    batch (a `None` batch) outside the XNNPACK delegate; a plain convolution
    and `depth_to_space` run inside it (0.6 ms instead of 1.8 ms for the conv
    decoder at batch 1 on a 2-core machine). Export-only: not serialisable.
    """

    def __init__(self, source: keras.layers.Conv2DTranspose):
        super().__init__(name=f"{source.name}_as_conv", dtype=source.dtype_policy)
        self.source = source
        self.stride = source.strides[0]
        self.conv = keras.layers.Conv2D(
            self.stride**2 * source.filters, source.kernel_size[0] // self.stride,
            padding="same", use_bias=source.use_bias, dtype=source.dtype_policy,
        )

    def build(self, input_shape):
        self.conv.build(input_shape)
        weights = [_kernel_as_conv(keras.ops.convert_to_numpy(self.source.kernel), self.stride)]
        if self.source.use_bias:
            weights.append(np.tile(keras.ops.convert_to_numpy(self.source.bias), self.stride**2))
        self.conv.set_weights(weights)

    def call(self, inputs):
        outputs = self.conv(inputs)
        if self.stride > 1:
            outputs = tf.nn.depth_to_space(outputs, self.stride)
        return self.source.activation(outputs)

    def compute_output_shape(self, input_shape):
        return self.source.compute_output_shape(input_shape)


def _rewritable(layer) -> bool:
    if not isinstance(layer, keras.layers.Conv2DTranspose):
        return False
    (height, width), (stride_h, stride_w) = layer.kernel_size, layer.strides
    return (
        height == width and stride_h == stride_w and height % stride_h == 0 and (height // stride_h) % 2 == 1
        and layer.padding == "same" and tuple(layer.dilation_rate) == (1, 1)
        and layer.data_format == "channels_last" and layer.output_padding is None
    )


def serving_decoder(decoder: keras.Model) -> keras.Model:
    """The decoder to export: same function, transposed convolutions as convolutions.

    Every "same"-padded `Conv2DTranspose` with square kernel k and stride s
    where k / s is an odd integer (the conv network's k6/s2 and k5/s1) becomes
    a `Conv2D` with kernel k / s and s**2 times the filters followed by
    `depth_to_space(s)`, which is exactly the same linear map (outputs agree
    to float rounding, ~1e-7). Other layers are shared, not copied; other
    decoders (not functional, or with nothing to rewrite) come back as they are.

    Returns:
        A functional `keras.Model` with the decoder's inputs and outputs.
    """
    if not isinstance(decoder, keras.Model) or not any(_rewritable(layer) for layer in decoder.layers):
        return decoder
    try:
        return keras.models.clone_model(
            decoder, clone_function=lambda layer: _TransposedAsConv(layer) if _rewritable(layer) else layer
        )
    except (ValueError, TypeError, NotImplementedError):  # a subclassed decoder: export it as it is
        return decoder


