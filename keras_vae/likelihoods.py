"""Decoder likelihoods p(x|z): Keras layers that turn decoder outputs into `tfd` distributions.

A decoder network outputs raw parameters of shape `(batch, H, W, C * k)`,
where `k = likelihood.params_per_channel`. The likelihood layer owns whatever
state the distribution needs (a learned log sigma, the running MSE of an
optimal sigma) and builds a `tfd.Independent` distribution whose event is one
whole image, so `log_prob` is summed over pixels and includes the
normalising constants (nats per image).

The model does not know which likelihood it holds: it calls
`distribution(params, x, training)` and `log_prob(params, x, training)`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from keras_vae.layers import OptimalSigma, SoftClip

tfd = tfp.distributions

GAUSSIAN_SIGMA_MODES = (
    "learned",
    "optimal",
    "optimal_per_image",
    "optimal_per_channel",
    "per_pixel",
)
_OPTIMAL_REDUCTION = {
    "optimal": "batch",
    "optimal_per_image": "image",
    "optimal_per_channel": "channel",
}
_IMAGE_AXES = 3


class Likelihood(keras.layers.Layer):
    """Base class: a decoder head that builds p(x|z) from raw decoder outputs.

    Subclasses set `params_per_channel` and implement `distribution`.
    `call(params)` returns the mean image, so the layer also works in a
    functional model.
    """

    params_per_channel: int = 1

    def distribution(self, params, x=None, training: bool = False) -> tfd.Distribution:
        """Returns p(x|z) with batch shape `(batch,)` and event `(H, W, C)`.

        Args:
            params: Decoder outputs, `(batch, H, W, C * params_per_channel)`.
            x: Target images, used by likelihoods whose sigma is fitted to the
                data (optimal sigma). Defaults to None (use the running sigma).
            training: Whether to update running statistics. Defaults to False.
        """
        raise NotImplementedError

    def log_prob(self, params, x, training: bool = False):
        """log p(x|z) summed over pixels, one value per image (nats)."""
        x = ops.convert_to_tensor(x, "float32")
        return self.distribution(params, x, training=training).log_prob(x)

    def mean(self, params):
        """The mean image E[x|z]."""
        return self.distribution(params).mean()

    def validate(self, x) -> None:
        """Raises a `ValueError` if images `x` (numpy) are not data this likelihood can score.

        Called on training data before any step; the default accepts any
        pixels in [0, 1] (checked by `data.validate_images`).
        """

    def stddev(self, params, x=None):
        """The decoder standard deviation, broadcast to the image shape."""
        return self.distribution(params, x).stddev()

    def served_outputs(self, mean, stddev) -> dict:
        """The named outputs of an exported `decode`: `{mean, sigma}`."""
        return {"mean": mean, "sigma": stddev}

    def call(self, params):
        return self.mean(params)

    def compute_output_shape(self, params_shape):
        return (*params_shape[:-1], params_shape[-1] // self.params_per_channel)

    def image_channels(self, params_channels: int) -> int:
        """How many image channels a decoder with `params_channels` outputs describes."""
        if params_channels % self.params_per_channel:
            raise ValueError(
                f"{self.__class__.__name__} needs {self.params_per_channel} decoder outputs per image "
                f"channel, but the decoder outputs {params_channels} channels."
            )
        return params_channels // self.params_per_channel


@keras.saving.register_keras_serializable(package="keras_vae")
class Bernoulli(Likelihood):
    """Bernoulli pixels with logits from the decoder: `tfd.Bernoulli(logits)`.

    For grey-level images in [0, 1] the log-probability is the (negative)
    binary cross-entropy, as in most VAE code; it is not a normalised density
    for non-binary pixels, which is one reason to prefer a Gaussian.

    Example:

    >>> import numpy as np
    >>> dist = Bernoulli().distribution(np.zeros((1, 2, 2, 1), "float32"))
    >>> round(float(dist.log_prob(np.ones((1, 2, 2, 1), "float32"))[0]), 4)
    -2.7726
    """

    params_per_channel = 1

    def served_outputs(self, mean, stddev) -> dict:
        """`{mean, probs}`: a Bernoulli decoder's mean is its pixel probabilities."""
        return {"mean": mean, "probs": mean}

    def distribution(self, params, x=None, training: bool = False):
        logits = ops.convert_to_tensor(params, "float32")
        return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), _IMAGE_AXES)


@keras.saving.register_keras_serializable(package="keras_vae")
class Gaussian(Likelihood):
    """Gaussian pixels, `N(x | mu, sigma**2)`, with a fixed or calibrated sigma.

    The mean is `sigmoid(params)` (pixels live in [0, 1]). The sigma is:

    - a float: fixed (sigma=1 is the usual "MSE" decoder; it equals a
      beta-VAE with beta = 2 sigma**2 on the summed squared error);
    - `"learned"`: one shared log sigma trained by gradient descent (sigma-VAE).
      It is parameterised as `log_sigma = log_sigma_scale * v` with a
      trainable `v`, so Adam (whose steps have size ~lr in `v`) moves
      log sigma `log_sigma_scale` times faster: at lr 1e-3 and the default
      scale 10 it crosses from sigma=1 to sigma=0.1 in about 250 steps
      instead of 2,300;
    - `"optimal"`: sigma**2 = MSE over the batch (analytic optimum);
    - `"optimal_per_image"`: sigma**2 = MSE of each image (BS-VAE);
    - `"optimal_per_channel"`: sigma**2 = MSE per channel;
    - `"per_pixel"`: the decoder outputs 2C channels, mean and log sigma.

    In every mode log sigma is soft-clipped below at `min_log_sigma`
    (`-6 + softplus(log_sigma + 6)`), as in the sigma-VAE reference code; the
    clip is smooth, so it nudges sigmas near the floor up a little (a fixed
    sigma of 1 acts as 1.0025, 0.1 as 0.1025). Optimal modes fit sigma to the target
    when one is given, and otherwise use the running average of the MSE kept
    during training, so a trained model carries a calibrated sigma.

    log p(x|z) = -sum(0.5 * ((x - mu) / sigma)**2 + log sigma + 0.5 * log(2 * pi))

    Args:
        sigma: A positive float or one of `GAUSSIAN_SIGMA_MODES`. Defaults to
            `"optimal"`.
        min_log_sigma: The soft floor of log sigma. Defaults to -6.
        log_sigma_scale: Speed-up of the learned log sigma. Defaults to 10.
        momentum: Momentum of the optimal modes' running MSE. Defaults to 0.99.

    References:
        Rybkin, Daniilidis, Levine. Simple and Effective VAE Training with
        Calibrated Decoders. ICML 2021. arXiv:2006.13202.

    Example:

    >>> import numpy as np
    >>> dist = Gaussian(sigma=1.0).distribution(np.zeros((1, 1, 1, 1), "float32"))
    >>> round(float(dist.log_prob(np.full((1, 1, 1, 1), 0.5, "float32"))[0]), 4)  # sigma 1.0025
    -0.9214
    """

    def __init__(
        self,
        sigma: float | str = "optimal",
        min_log_sigma: float = -6.0,
        log_sigma_scale: float = 10.0,
        momentum: float = 0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(sigma, str):
            if sigma not in GAUSSIAN_SIGMA_MODES:
                raise ValueError(
                    f"Expected sigma to be a positive float or one of {GAUSSIAN_SIGMA_MODES}. "
                    f"Received: sigma={sigma!r}"
                )
        elif isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"Expected sigma to be a positive float. Received: sigma={sigma!r}")
        else:
            sigma = float(sigma)
        if log_sigma_scale <= 0:
            raise ValueError(f"Expected log_sigma_scale > 0. Received: log_sigma_scale={log_sigma_scale}")
        self.sigma = sigma
        self.min_log_sigma = float(min_log_sigma)
        self.log_sigma_scale = float(log_sigma_scale)
        self.momentum = float(momentum)
        self.params_per_channel = 2 if sigma == "per_pixel" else 1
        self.soft_clip = SoftClip(self.min_log_sigma)
        self.optimal_sigma = (
            OptimalSigma(_OPTIMAL_REDUCTION[sigma], momentum=momentum)
            if sigma in _OPTIMAL_REDUCTION
            else None
        )

    def build(self, params_shape):
        # Weightless, but built here so the whole model is built on construction: Keras
        # would otherwise trace `model(x)` to build it under a strategy, which a model
        # that needs more inputs (ConditionalVAE's labels) cannot do.
        self.soft_clip.build(())
        if self.sigma == "learned":
            self.log_sigma_variable = self.add_weight(
                shape=(), initializer="zeros", trainable=True, name="log_sigma_variable"
            )
        if self.optimal_sigma is not None:
            channels = self.image_channels(params_shape[-1])
            image_shape = (*params_shape[:-1], channels)
            self.optimal_sigma.build(image_shape, image_shape)

    @property
    def is_optimal(self) -> bool:
        """Whether sigma is fitted analytically to the data."""
        return self.optimal_sigma is not None

    def _mean_and_raw_log_sigma(self, params):
        params = ops.convert_to_tensor(params, "float32")
        if self.sigma == "per_pixel":
            channels = params.shape[-1] // 2
            return ops.sigmoid(params[..., :channels]), params[..., channels:]
        return ops.sigmoid(params), None

    def log_sigma(self, params, x=None, training: bool = False):
        """The soft-clipped log sigma, shaped to broadcast against the mean."""
        mean, raw = self._mean_and_raw_log_sigma(params)
        return self._log_sigma(mean, raw, x, training)

    def _log_sigma(self, mean, raw, x, training):
        if self.sigma == "per_pixel":
            log_sigma = raw
        elif self.sigma == "learned":
            log_sigma = self.log_sigma_scale * self.log_sigma_variable
        elif self.is_optimal:
            if x is None:
                log_sigma = self.optimal_sigma.running_log_sigma()
            else:
                log_sigma = self.optimal_sigma(x, mean, training=training)
        else:
            log_sigma = ops.convert_to_tensor(math.log(self.sigma), "float32")
        return self.soft_clip(log_sigma)

    def distribution(self, params, x=None, training: bool = False):
        mean, raw = self._mean_and_raw_log_sigma(params)
        scale = ops.exp(self._log_sigma(mean, raw, x, training))
        return tfd.Independent(tfd.Normal(loc=mean, scale=scale), _IMAGE_AXES)

    def mean(self, params):
        return self._mean_and_raw_log_sigma(params)[0]

    def stddev(self, params, x=None):
        mean, raw = self._mean_and_raw_log_sigma(params)
        return ops.broadcast_to(ops.exp(self._log_sigma(mean, raw, x, False)), ops.shape(mean))

    def get_config(self):
        return {
            **super().get_config(),
            "sigma": self.sigma,
            "min_log_sigma": self.min_log_sigma,
            "log_sigma_scale": self.log_sigma_scale,
            "momentum": self.momentum,
        }


_NAMED = {
    "bernoulli": lambda: Bernoulli(),
    "gaussian": lambda: Gaussian(sigma=1.0),
    **{mode: (lambda mode=mode: Gaussian(sigma=mode)) for mode in GAUSSIAN_SIGMA_MODES},
    # 8-bit likelihoods live in keras_vae.discrete_likelihoods (imported on use: it imports this module).
    "categorical": lambda: _discrete().Categorical256(),
    "logistic_mixture": lambda: _discrete().DiscretizedLogisticMixture(),
}
NAMES = tuple(_NAMED)


def _discrete():
    from keras_vae import discrete_likelihoods

    return discrete_likelihoods


def get(identifier: str | Likelihood, sigma: float | None = None) -> Likelihood:
    """Resolves a likelihood from a name or passes a layer through.

    Args:
        identifier: A `Likelihood` layer or one of `NAMES`: `"bernoulli"`,
            `"gaussian"` (fixed sigma, from `sigma`), `"learned"`,
            `"optimal"`, `"optimal_per_image"`, `"optimal_per_channel"`,
            `"per_pixel"`.
        sigma: The fixed sigma of `"gaussian"`. Defaults to 1.0.

    Returns:
        A `Likelihood` layer.

    Example:

    >>> get("optimal_per_image").sigma
    'optimal_per_image'
    """
    if isinstance(identifier, Likelihood):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if identifier not in _NAMED:
        raise ValueError(f"Unknown likelihood {identifier!r}. Expected one of {NAMES}.")
    if identifier == "gaussian" and sigma is not None:
        return Gaussian(sigma=sigma)
    return _NAMED[identifier]()
