"""`NarrowConv2DTranspose`: a `Conv2DTranspose` that is fast with few output filters.

The conv decoder ends in a stride-1 transposed convolution from 32 channels
to the image's single channel. TensorFlow computes it as the input gradient
of a convolution, which oneDNN runs slowly on CPU
(`benchmarks/results/profile_layers.md`). With stride 1 and "same" padding,
each filter of the same linear map is a depthwise convolution with the
flipped kernel, summed over channels, and its gradients are the two
convolutions TensorFlow would run anyway. Weights, config and outputs are
those of `Conv2DTranspose`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Up to this many filters the depthwise form (one depthwise convolution per
# filter) trains faster: on the conv decoder's 28x28x32 input at batch 128,
# 2.9x with 1 filter, 2.3x with 2, 1.5x with 3, no gain at 6
# (`benchmarks/profile_layers.py`).
MAX_DEPTHWISE_FILTERS = 3


@tf.autograph.experimental.do_not_convert
@tf.custom_gradient
def _depthwise_conv_transpose(inputs, kernel):
    """Stride-1 "same" transposed convolution with `kernel` `(kh, kw, filters, in)`, filter by filter."""
    flipped = tf.transpose(tf.reverse(kernel, axis=[0, 1]), [0, 1, 3, 2])  # (kh, kw, in, filters)
    outputs = tf.concat(
        [
            tf.reduce_sum(
                tf.nn.depthwise_conv2d(inputs, flipped[..., f : f + 1], strides=[1, 1, 1, 1], padding="SAME"),
                axis=-1, keepdims=True,
            )
            for f in range(kernel.shape[2])
        ],
        axis=-1,
    )

    def gradient(upstream):
        # The gradients TensorFlow registers for Conv2DBackpropInput.
        d_inputs = tf.nn.conv2d(upstream, kernel, strides=1, padding="SAME")
        d_kernel = tf.raw_ops.Conv2DBackpropFilter(
            input=upstream, filter_sizes=tf.shape(kernel), out_backprop=inputs,
            strides=[1, 1, 1, 1], padding="SAME",
        )
        return d_inputs, d_kernel

    return outputs, gradient


@keras.saving.register_keras_serializable(package="keras_vae")
class NarrowConv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose`, computed faster when it maps to 1-3 filters.

    Takes the arguments of `Conv2DTranspose` and holds the same weights, so
    weights move between the two with `set_weights`. When the layer has at
    most `MAX_DEPTHWISE_FILTERS` (3) filters, stride 1, "same" padding, odd
    kernel sizes, no dilation or output padding, channels-last data and a
    float32 compute dtype, each filter runs as a depthwise convolution with
    the flipped kernel (summed over input channels), with a custom gradient;
    otherwise (more filters, strides, bfloat16 or float16, which oneDNN
    already runs fast) it is exactly `Conv2DTranspose`.

    Example:

    >>> import numpy as np
    >>> layer = NarrowConv2DTranspose(1, 5, padding="same")
    >>> layer(np.zeros((2, 28, 28, 32), "float32")).shape
    TensorShape([2, 28, 28, 1])
    >>> layer.uses_depthwise_path
    True
    """

    @property
    def uses_depthwise_path(self) -> bool:
        """Whether this layer runs as a depthwise convolution (see the class docstring)."""
        kernel_height, kernel_width = self.kernel_size
        return bool(
            self.filters <= MAX_DEPTHWISE_FILTERS and tuple(self.strides) == (1, 1) and self.padding == "same"
            and kernel_height % 2 == 1 and kernel_width % 2 == 1 and tuple(self.dilation_rate) == (1, 1)
            and self.output_padding is None and self.data_format == "channels_last"
            and self.compute_dtype == "float32" and keras.backend.backend() == "tensorflow"
        )

    def call(self, inputs):
        if not self.uses_depthwise_path:
            return super().call(inputs)
        outputs = _depthwise_conv_transpose(tf.convert_to_tensor(inputs), tf.convert_to_tensor(self.kernel))
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)
