"""Small reusable layers for calibrated decoders: `SoftClip` and `OptimalSigma`.

Both work in a functional `keras.Model`, in a subclassed model and inside a
plain `tf.function`; neither depends on the rest of keras_vae.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

OPTIMAL_SIGMA_REDUCTIONS = ("batch", "image", "channel")

# Keeps log(mse) finite when a reconstruction is exact; far below any
# sigma the soft clip at -6 allows (exp(-12) ~ 6e-6).
MSE_EPSILON = 1e-12


def cross_replica_sum(value):
    """Sums `value` over the replicas of a `tf.distribute` strategy.

    Inside `strategy.run` (what `model.fit` does under a strategy) this is a
    differentiable all-reduce: its gradient is the all-reduce of the
    gradients, so a loss built from global statistics back-propagates into
    every replica's share of the batch. On one device, or in a cross-replica
    context, the value passes through unchanged.

    Args:
        value: A tensor of the same shape on every replica.

    Returns:
        The sum over replicas, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> float(cross_replica_sum(np.float32(3.0)))
    3.0
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return ops.convert_to_tensor(value)
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def soft_clip(x, low: float = -6.0):
    """Softly clips `x` from below: `low + softplus(x - low)`.

    Smooth, monotone, equal to `x` far above `low` and never below `low`.

    Args:
        x: A tensor.
        low: The floor. Defaults to -6 (the sigma-VAE floor for log sigma).

    Returns:
        A tensor of the shape of `x`, `>= low`.
    """
    return low + ops.softplus(x - low)


@keras.saving.register_keras_serializable(package="keras_vae")
class SoftClip(keras.layers.Layer):
    """Soft lower clip, `low + softplus(x - low)`, applied to log sigma.

    A hard clip kills the gradient below the floor; this one keeps a small
    gradient everywhere, so a decoder that drives log sigma low can recover.

    Args:
        low: The floor. Defaults to -6.0.

    Call arguments:
        inputs: A tensor of any shape (e.g. log sigma).

    Returns:
        A tensor of the same shape, every value `>= low`.

    Example:

    >>> import numpy as np
    >>> clipped = SoftClip(low=-6.0)(np.array([-100.0, 0.0], "float32"))
    >>> [round(float(v), 3) for v in clipped]
    [-6.0, 0.002]
    """

    def __init__(self, low: float = -6.0, **kwargs):
        super().__init__(**kwargs)
        self.low = float(low)

    def call(self, inputs):
        return soft_clip(inputs, self.low)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "low": self.low}


@keras.saving.register_keras_serializable(package="keras_vae")
class OptimalSigma(keras.layers.Layer):
    """The maximum-likelihood Gaussian log sigma for given targets and means.

    For a Gaussian decoder with mean `mu`, the sigma that maximises
    `sum log N(x | mu, sigma**2)` is `sigma***2 = mean((x - mu)**2)`, the mean
    taken over the pixels that share that sigma:

    - `"batch"`: one sigma for the whole batch (the sigma-VAE);
    - `"image"`: one sigma per image (the BS-VAE);
    - `"channel"`: one sigma per channel, shared over batch and pixels.

    In training the layer also keeps a running (bias-corrected exponential)
    average of the mean squared error, so that at inference, when no target
    is available, `running_log_sigma()` gives the calibrated sigma of the
    trained model. The returned log sigma is not clipped: combine with
    `SoftClip` (the `Gaussian` likelihood does).

    Args:
        reduction: `"batch"`, `"image"` or `"channel"`. Defaults to `"batch"`.
        momentum: Momentum of the running average. Defaults to 0.99.

    Call arguments:
        targets: Images `x`, shape `(batch, height, width, channels)`.
        means: Decoder means of the same shape.
        training: Whether to update the running average. Defaults to False.

    Returns:
        log sigma*, shaped to broadcast against the images: `()` for
        `"batch"`, `(batch, 1, 1, 1)` for `"image"`, `(channels,)` for
        `"channel"`.

    References:
        Rybkin, Daniilidis, Levine. Simple and Effective VAE Training with
        Calibrated Decoders. ICML 2021. arXiv:2006.13202.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((2, 4, 4, 1), "float32")
    >>> mu = np.full((2, 4, 4, 1), 0.1, "float32")
    >>> log_sigma = OptimalSigma("batch")(x, mu)
    >>> round(float(np.exp(log_sigma)), 4)
    0.1
    """

    def __init__(self, reduction: str = "batch", momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        if reduction not in OPTIMAL_SIGMA_REDUCTIONS:
            raise ValueError(
                f"Expected reduction in {OPTIMAL_SIGMA_REDUCTIONS}. Received: reduction={reduction!r}"
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Expected 0 <= momentum < 1. Received: momentum={momentum}")
        self.reduction = reduction
        self.momentum = float(momentum)

    def build(self, targets_shape, means_shape=None):
        shape = (targets_shape[-1],) if self.reduction == "channel" else ()
        self.running_mse = self.add_weight(
            shape=shape, initializer="zeros", trainable=False, name="running_mse", aggregation="mean"
        )
        self.num_updates = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="num_updates", aggregation="mean"
        )

    def mean_squared_error(self, targets, means):
        """The mean squared error over the axes that share one sigma.

        Under a `tf.distribute` strategy the `"batch"` and `"channel"` MSEs
        are those of the GLOBAL batch: the sums of squares and the pixel
        counts are all-reduced over replicas (not the per-replica means), so
        every replica uses the sigma a single device would. `"image"` needs
        no reduction.
        """
        squared = ops.square(ops.convert_to_tensor(targets, means.dtype) - means)
        if self.reduction == "image":
            return ops.mean(squared, axis=(1, 2, 3), keepdims=True)
        axes = (0, 1, 2, 3) if self.reduction == "batch" else (0, 1, 2)
        sums = ops.reshape(ops.sum(squared, axis=axes), (-1,))
        count = ops.cast(ops.size(squared), sums.dtype) / ops.cast(ops.size(sums), sums.dtype)
        totals = cross_replica_sum(ops.concatenate([sums, ops.reshape(count, (1,))]))
        mse = totals[:-1] / totals[-1]
        return mse[0] if self.reduction == "batch" else mse

    def call(self, targets, means, training=False):
        means = ops.convert_to_tensor(means)
        mse = self.mean_squared_error(targets, means)
        if training:
            self.update_running_mse(mse)
        return 0.5 * ops.log(mse + MSE_EPSILON)

    def update_running_mse(self, mse):
        """Folds a batch's MSE into the running average (no gradient)."""
        batch_mse = ops.stop_gradient(mse)
        if self.reduction == "image":
            # The global batch's mean over images, so replicas stay in step.
            count = ops.cast(ops.shape(batch_mse)[0], batch_mse.dtype)
            totals = cross_replica_sum(ops.stack([ops.sum(batch_mse), count]))
            batch_mse = totals[0] / totals[1]
        self.running_mse.assign(
            self.momentum * self.running_mse + (1.0 - self.momentum) * batch_mse
        )
        self.num_updates.assign_add(1.0)

    def running_log_sigma(self):
        """log sigma from the running MSE: `()` or `(channels,)`.

        Raises:
            ValueError: If the layer has never seen training data.
        """
        if not self.built:
            raise ValueError(
                "OptimalSigma has no running average yet: call it with training=True first."
            )
        # Bias correction as in Adam: the average starts at zero.
        correction = 1.0 - ops.power(self.momentum, ops.maximum(self.num_updates, 1.0))
        mse = self.running_mse / correction
        return 0.5 * ops.log(mse + MSE_EPSILON)

    def set_running_mse(self, mse) -> None:
        """Makes `running_log_sigma()` serve `0.5 * log(mse)` (a refit), keeping the update count.

        Args:
            mse: `()` or `(channels,)`, as the layer's reduction shares it.
        """
        correction = 1.0 - ops.power(self.momentum, ops.maximum(self.num_updates, 1.0))
        self.running_mse.assign(ops.cast(ops.convert_to_tensor(mse), self.running_mse.dtype) * correction)

    def compute_output_shape(self, targets_shape, means_shape=None):
        if self.reduction == "batch":
            return ()
        if self.reduction == "image":
            return (targets_shape[0], 1, 1, 1)
        return (targets_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "momentum": self.momentum}
