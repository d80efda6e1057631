"""`Gaussian`: pixels N(mu, sigma**2) with a fixed, learned, optimal or per-pixel sigma (sigma-VAE)."""

from __future__ import annotations

import math

import keras
import tensorflow_probability as tfp
from keras import ops

from keras_vae.layers import MSE_EPSILON, OptimalSigma, SoftClip
from keras_vae.likelihoods.base import IMAGE_AXES, Likelihood

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
      scale 30 it crosses from sigma=1 to sigma=0.1 in about 80 steps
      instead of 2,300, so it keeps up with the falling error of the first
      epoch;
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
        log_sigma_scale: Speed-up of the learned log sigma. Defaults to 30.
        momentum: Momentum of the optimal modes' running MSE. Defaults to 0.99.
        data_dependent_start: Start a learned or per-pixel sigma at the RMSE
            of the untrained reconstruction of the first training batch
            (`keras_vae.calibration`); False keeps the paper's start (sigma 1).
            Defaults to True.

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
        log_sigma_scale: float = 30.0,
        momentum: float = 0.99,
        data_dependent_start: bool = True,
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
        self.data_dependent_start = bool(data_dependent_start)
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
        if self.sigma == "per_pixel":
            # Added to the decoder's raw log sigma; set (with the learned one) by `start_at`.
            self.log_sigma_offset = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="log_sigma_offset"
            )
        if self.has_data_dependent_start:
            self.started = self.add_weight(shape=(), initializer="zeros", trainable=False, name="started")
        if self.optimal_sigma is not None:
            channels = self.image_channels(params_shape[-1])
            image_shape = (*params_shape[:-1], channels)
            self.optimal_sigma.build(image_shape, image_shape)

    @property
    def is_optimal(self) -> bool:
        """Whether sigma is fitted analytically to the data."""
        return self.optimal_sigma is not None

    @property
    def refit_reduction(self) -> str | None:
        """What `refit_to` takes: how an MSE is shared (`"batch"`, `"image"`,
        `"channel"`), `"standardised"` for a per-pixel sigma, None for a fixed
        sigma (nothing to refit)."""
        if self.is_optimal:
            return self.optimal_sigma.reduction
        return {"learned": "batch", "per_pixel": "standardised"}.get(self.sigma)

    def refit_to(self, mse) -> None:
        """Serves sigma = sqrt(`mse`): the running MSE of an optimal mode, or the learned log sigma.

        A per-pixel sigma is rescaled instead: `mse` is then the mean of
        `((x - mean) / sigma)**2` at the current sigma, and every predicted
        sigma is multiplied by `sqrt(mse)` (through the offset of its log),
        the scale that maximises the likelihood of the data it was measured on.

        Args:
            mse: The MSE the sigma is shared over: `()`, or `(channels,)` for
                `"optimal_per_channel"`; for `"per_pixel"`, the mean squared
                standardised error `()`.
        """
        if self.refit_reduction is None:
            super().refit_to(mse)
        log_ratio = 0.5 * ops.log(ops.convert_to_tensor(mse, "float32") + MSE_EPSILON)
        if self.is_optimal:
            self.optimal_sigma.set_running_mse(mse)
        elif self.sigma == "per_pixel":
            self.log_sigma_offset.assign_add(log_ratio)
        else:
            self.log_sigma_variable.assign(log_ratio / self.log_sigma_scale)

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
            log_sigma = raw + self.log_sigma_offset
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
        return tfd.Independent(tfd.Normal(loc=mean, scale=scale), IMAGE_AXES)

    def mean(self, params):
        return self._mean_and_raw_log_sigma(params)[0]

    def stddev(self, params, x=None):
        mean, raw = self._mean_and_raw_log_sigma(params)
        return ops.broadcast_to(ops.exp(self._log_sigma(mean, raw, x, False)), ops.shape(mean))

    @property
    def has_data_dependent_start(self) -> bool:
        """Whether `start_at` calibrates this likelihood before training (learned and per-pixel sigma)."""
        return self.data_dependent_start and self.sigma in ("learned", "per_pixel")

    def start_at(self, targets, params) -> None:
        """The data-dependent start: the learned (or per-pixel) log sigma becomes log RMSE of the decoder means.

        For `"learned"` the shared log sigma is set to the optimal sigma of
        the batch (the `"optimal"` mode's sigma, `0.5 * log(MSE)`); for
        `"per_pixel"` the offset added to the decoder's raw log sigma is set so
        that its mean over the batch is that value. Marks the layer `started`
        (saved with the model), so a later `fit` does not start again.

        Args:
            targets: Images `(batch, H, W, C)`.
            params: The decoder's outputs at the batch's latents.
        """
        means, raw_log_sigma = self._mean_and_raw_log_sigma(params)
        log_sigma = 0.5 * ops.log(OptimalSigma("batch").mean_squared_error(targets, means) + MSE_EPSILON)
        if self.sigma == "learned":
            self.log_sigma_variable.assign(log_sigma / self.log_sigma_scale)
        else:
            self.log_sigma_offset.assign(log_sigma - ops.mean(raw_log_sigma))
        self.started.assign(1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "data_dependent_start": self.data_dependent_start,
            "sigma": self.sigma,
            "min_log_sigma": self.min_log_sigma,
            "log_sigma_scale": self.log_sigma_scale,
            "momentum": self.momentum,
        }
