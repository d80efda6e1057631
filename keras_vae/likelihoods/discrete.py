"""Discrete likelihoods for 8-bit images: `Categorical256` and `DiscretizedLogisticMixture`.

Both model each pixel channel as one of the 256 values `k / 255`,
`k = 0..255`, so `log_prob` is an exact log-probability (a log-mass, not a
density) and `-log p(x|z) / (H * W * C * log 2)` is in bits per dimension.
Targets must lie on that 1/255 grid (images that came from `uint8`); other
targets raise a `ValueError` (an `InvalidArgumentError` inside a graph)
unless the likelihood was built with `quantize=True`, which rounds them to
the nearest level.

Decoder parameter layout (`params_per_channel` numbers per image channel):
the last axis of the decoder output, `C * params_per_channel`, is read as
`(C, params_per_channel)`, channel-major, so that the parameters of image
channel `c` are the contiguous block `[c * P, (c + 1) * P)`. This is the
grouping the channel-aware masks of `keras_vae.pixelcnn` use.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from keras_vae.checks import positive_int
from keras_vae.layers import soft_clip
from keras_vae.likelihoods.base import IMAGE_AXES, Likelihood

tfd = tfp.distributions

NUM_LEVELS = 256
_MAX_LEVEL = float(NUM_LEVELS - 1)
_GRID_TOLERANCE = 1e-2  # in levels: float32 k / 255 * 255 is within 1e-4 of k


class PixelGrid(tfd.Distribution):
    """Maps a distribution over integer levels 0..255 to the pixel values `level / 255`.

    `log_prob(x)` is the base distribution's log-mass at `round(255 * x)`;
    `sample()` is a base sample divided by 255. The moments come from
    `moments()`, a callable returning the mean and variance in levels, so
    that each likelihood computes them exactly in the way that is cheap for it.

    Args:
        levels: A scalar-event distribution over 0..255 (batch shape `S`).
        moments: A callable returning `(mean, variance)` in levels, each of
            shape `S`.
        level_log_prob: Optional callable from integer levels to log-masses,
            equal to `levels.log_prob` but numerically safer (finite
            gradients everywhere). Defaults to `levels.log_prob`.
        name: Name of the distribution. Defaults to `"PixelGrid"`.
    """

    def __init__(self, levels: tfd.Distribution, moments, level_log_prob=None, name: str = "PixelGrid"):
        parameters = dict(locals())
        self._levels = levels
        self._moments = moments
        self._level_log_prob = level_log_prob or levels.log_prob
        super().__init__(
            dtype=tf.float32,
            reparameterization_type=tfd.NOT_REPARAMETERIZED,
            validate_args=False,
            allow_nan_stats=True,
            parameters=parameters,
            name=name,
        )

    @property
    def levels(self) -> tfd.Distribution:
        """The distribution over integer levels 0..255."""
        return self._levels

    def _batch_shape(self):
        return self._levels.batch_shape

    def _batch_shape_tensor(self):
        return self._levels.batch_shape_tensor()

    def _event_shape(self):
        return tf.TensorShape([])

    def _event_shape_tensor(self):
        return tf.constant([], dtype=tf.int32)

    def _log_prob(self, x):
        return self._level_log_prob(tf.round(tf.cast(x, tf.float32) * _MAX_LEVEL))

    def _sample_n(self, n, seed=None):
        return tf.cast(self._levels.sample(n, seed=seed), tf.float32) / _MAX_LEVEL

    def _mean(self):
        return self._moments()[0] / _MAX_LEVEL

    def _variance(self):
        return self._moments()[1] / _MAX_LEVEL**2

    def _stddev(self):
        return tf.sqrt(self._variance())


def check_on_grid(x, likelihood_name: str):
    """Raises unless every value of `x` is in [0, 1] and on the grid `k / 255`.

    Eagerly (numpy or eager tensors) this raises a `ValueError` that names
    the first bad value; inside a graph it adds an assertion that raises an
    `InvalidArgumentError` with the same explanation.

    Args:
        x: Images in [0, 1].
        likelihood_name: Named in the message.

    Returns:
        `x` as a float32 tensor.

    Example:

    >>> import numpy as np
    >>> check_on_grid(np.array([0.5], "float32"), "Categorical256")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Categorical256 models 8-bit pixels k / 255, but the target has the value 0.5 (127.5 / 255). ...
    """
    x = ops.convert_to_tensor(x, "float32")
    levels = x * _MAX_LEVEL
    off_grid = tf.logical_or(
        tf.abs(levels - tf.round(levels)) > _GRID_TOLERANCE,
        tf.logical_or(x < 0.0, x > 1.0),
    )
    hint = "Quantise the images (np.round(x * 255) / 255) or build the likelihood with quantize=True."
    if tf.executing_eagerly():
        bad = np.asarray(off_grid)
        if bad.any():
            value = float(np.asarray(x)[bad][0])
            raise ValueError(
                f"{likelihood_name} models 8-bit pixels k / 255, but the target has the value "
                f"{value:g} ({value * _MAX_LEVEL:g} / 255). {hint}"
            )
        return x
    message = f"{likelihood_name} models 8-bit pixels k / 255, but the target has values off that grid. {hint}"
    with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(tf.reduce_any(off_grid)), [message])]):
        return tf.identity(x)


class _DiscreteLikelihood(Likelihood):
    """Shared parts: the parameter layout, the grid check and the quantise flag."""

    def __init__(self, quantize: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.quantize = bool(quantize)

    def _split_channels(self, params):
        """`(B, H, W, C * P)` -> `(B, H, W, C, P)`."""
        params = ops.convert_to_tensor(params, "float32")
        channels = self.image_channels(params.shape[-1])
        return ops.reshape(params, (*ops.shape(params)[:-1], channels, self.params_per_channel))

    def validate(self, x) -> None:
        """Raises a `ValueError` naming a pixel off the 1/255 grid (unless `quantize`), eagerly."""
        if not self.quantize:
            check_on_grid(np.asarray(x, "float32"), type(self).__name__)

    def _checked_target(self, x):
        if x is None or self.quantize:
            return x
        return check_on_grid(x, self.__class__.__name__)

    def _levels(self, params) -> tuple[tfd.Distribution, object, object]:
        """The per-pixel distribution over levels, its `moments` and (or None) a safer log-mass."""
        raise NotImplementedError

    def distribution(self, params, x=None, training: bool = False):
        self._checked_target(x)
        return tfd.Independent(PixelGrid(*self._levels(params)), IMAGE_AXES)

    def get_config(self):
        return {**super().get_config(), "quantize": self.quantize}


@keras.saving.register_keras_serializable(package="keras_vae")
class Categorical256(_DiscreteLikelihood):
    """A 256-way softmax per pixel and channel: `tfd.Categorical(logits)` over k / 255.

    log p(x|z) = sum over pixels and channels of `log_softmax(logits)[255 * x]`

    `params_per_channel = 256`: the logits of channel `c` are the decoder
    outputs `[256 * c, 256 * (c + 1))`.

    Args:
        quantize: Round targets to the nearest level instead of raising on
            targets off the 1/255 grid. Defaults to False.

    References:
        van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural
        Networks. ICML 2016. arXiv:1601.06759.

    Example:

    >>> import numpy as np
    >>> dist = Categorical256().distribution(np.zeros((1, 1, 1, 256), "float32"))
    >>> round(float(dist.log_prob(np.full((1, 1, 1, 1), 1.0, "float32"))[0]), 4)  # -log 256
    -5.5452
    """

    params_per_channel = NUM_LEVELS

    def _levels(self, params):
        logits = self._split_channels(params)
        levels = tfd.Categorical(logits=logits, dtype=tf.float32)

        def moments():
            probs = tf.nn.softmax(logits, axis=-1)
            values = tf.range(NUM_LEVELS, dtype=tf.float32)
            mean = tf.reduce_sum(probs * values, axis=-1)
            variance = tf.reduce_sum(probs * tf.square(values - mean[..., None]), axis=-1)
            return mean, variance

        return levels, moments, None


@keras.saving.register_keras_serializable(package="keras_vae")
class DiscretizedLogisticMixture(_DiscreteLikelihood):
    """A mixture of discretised logistics per pixel and channel (PixelCNN++).

    Each channel value is `Y = clip(round(X), 0, 255) / 255` for a mixture
    `X ~ sum_k pi_k Logistic(m_k, s_k)` on the level scale, so

        P(Y = k) = F(k + 0.5) - F(k - 0.5)        for 0 < k < 255
        P(Y = 0) = F(0.5),   P(Y = 255) = 1 - F(254.5)

    (the edge bins take the tails), built as `tfd.MixtureSameFamily` of
    `tfd.QuantizedDistribution(tfd.Logistic)` (used for sampling). The
    log-mass is evaluated in a form that stays finite, with finite
    gradients, for any parameters (TFP's generic quantised log-prob gave
    NaN gradients in training):

        log P(Y = k) = -softplus(-a) - softplus(b) + log(-expm1(-1 / s))

    with `a = (k + 0.5 - m) / s`, `b = (k - 0.5 - m) / s`, and
    `log P(Y = 0) = -softplus(-a)`, `log P(Y = 255) = -softplus(b)`.

    `params_per_channel = 3 * num_mixtures`: for each image channel the
    mixture logits, the means and the log scales, `K` numbers each, on the
    PixelCNN++ `[-1, 1]` scale (`m = 127.5 * (1 + mean)` levels,
    `s = 127.5 * exp(log_scale)`), with the log scale soft-clipped below at
    -7. Unlike PixelCNN++'s RGB layout (10 K numbers, linear coupling of
    the channel means) the channels are conditionally independent given the
    parameters; a PixelCNN with channel-aware masks supplies the coupling.

    Args:
        num_mixtures: Number of logistic components K. Defaults to 5.
        quantize: Round targets to the nearest level instead of raising on
            targets off the 1/255 grid. Defaults to False.

    References:
        Salimans, Karpathy, Chen, Kingma. PixelCNN++: Improving the PixelCNN
        with Discretized Logistic Mixture Likelihood and Other Modifications.
        ICLR 2017. arXiv:1701.05517.

    Example:

    >>> import numpy as np
    >>> dist = DiscretizedLogisticMixture(num_mixtures=1).distribution(np.zeros((1, 1, 1, 3), "float32"))
    >>> round(float(dist.mean()[0, 0, 0, 0]), 4)  # symmetric around the middle grey
    0.5
    """

    MIN_LOG_SCALE = -7.0

    def __init__(self, num_mixtures: int = 5, quantize: bool = False, **kwargs):
        super().__init__(quantize=quantize, **kwargs)
        positive_int("num_mixtures", num_mixtures)
        self.num_mixtures = num_mixtures
        self.params_per_channel = 3 * num_mixtures

    def mixture_parameters(self, params):
        """Returns `(logits, loc, scale)` in levels, each `(B, H, W, C, K)`."""
        logits, means, log_scales = ops.split(self._split_channels(params), 3, axis=-1)
        half = _MAX_LEVEL / 2.0
        loc = half * (1.0 + means)
        scale = half * ops.exp(soft_clip(log_scales, self.MIN_LOG_SCALE))
        return logits, loc, scale

    def _levels(self, params):
        logits, loc, scale = self.mixture_parameters(params)
        # Y = ceiling(X - 0.5) = round(X): the bin of level k is (k - 0.5, k + 0.5].
        components = tfd.QuantizedDistribution(
            tfd.Logistic(loc=loc - 0.5, scale=scale), low=0.0, high=_MAX_LEVEL
        )
        levels = tfd.MixtureSameFamily(tfd.Categorical(logits=logits), components)

        def moments():
            # E[Y] = sum_{k=1}^{255} P(Y >= k) and E[Y^2] = sum_k (2k - 1) P(Y >= k),
            # with P(Y >= k) = sum_m pi_m sigmoid((loc_m - k + 0.5) / scale_m).
            weights = tf.nn.softmax(logits, axis=-1)

            def add_level(k, totals):
                above = tf.reduce_sum(weights * tf.sigmoid((loc - k + 0.5) / scale), axis=-1)
                return k + 1.0, (totals[0] + above, totals[1] + (2.0 * k - 1.0) * above)

            zeros = tf.zeros_like(logits[..., 0])
            _, (first, second) = tf.while_loop(
                lambda k, _: k <= _MAX_LEVEL, add_level, (tf.constant(1.0), (zeros, zeros))
            )
            return first, tf.maximum(second - tf.square(first), 0.0)

        def level_log_prob(level):
            level = level[..., None]  # against the K components
            upper, lower = (level + 0.5 - loc) / scale, (level - 0.5 - loc) / scale
            log_below_upper, log_above_lower = -tf.nn.softplus(-upper), -tf.nn.softplus(lower)
            interior = log_below_upper + log_above_lower + tf.math.log(-tf.math.expm1(-1.0 / scale))
            log_mass = tf.where(
                level < 0.5, log_below_upper, tf.where(level > _MAX_LEVEL - 0.5, log_above_lower, interior)
            )
            return tf.reduce_logsumexp(tf.nn.log_softmax(logits, axis=-1) + log_mass, axis=-1)

        return levels, moments, level_log_prob

    def get_config(self):
        return {**super().get_config(), "num_mixtures": self.num_mixtures}

