"""`Likelihood`: the base class of the decoder heads that turn decoder outputs into p(x|z).

A decoder network outputs raw parameters of shape `(batch, H, W, C * k)`,
where `k = likelihood.params_per_channel`. The likelihood layer owns whatever
state the distribution needs (a learned log sigma, the running MSE of an
optimal sigma) and builds a `tfd.Distribution` whose event is one whole
image, so `log_prob` is summed over pixels and includes the normalising
constants (nats per image).
"""

from __future__ import annotations

import keras
import tensorflow_probability as tfp
from keras import ops

tfd = tfp.distributions

IMAGE_AXES = 3  # the event of p(x|z): one (H, W, C) image


class Likelihood(keras.layers.Layer):
    """Base class: a decoder head that builds p(x|z) from raw decoder outputs.

    Subclasses set `params_per_channel` and implement `distribution`.
    `call(params)` returns the mean image, so the layer also works in a
    functional model.
    """

    params_per_channel: int = 1
    # Calibration hooks (`keras_vae.calibration`); the Gaussian likelihood has both.
    is_optimal: bool = False  # sigma fitted analytically, with a running statistic
    has_data_dependent_start: bool = False  # a sigma that `start_at` sets from the first batch
    # What `refit_to` is given: the MSE shared over "batch" (one sigma), "image" or "channel"; "standardised":
    # the mean squared standardised error of a sigma that varies over pixels; None: no refit.
    refit_reduction: str | None = None

    def start_at(self, targets, params) -> None:
        """Sets this likelihood's sigma from a first batch (see `has_data_dependent_start`)."""
        raise NotImplementedError(f"{type(self).__name__} has no data-dependent start.")

    def refit_to(self, mse) -> None:
        """Serves sigma = sqrt(`mse`) from now on, or a per-pixel sigma rescaled by it (see `refit_reduction`)."""
        raise NotImplementedError(f"{type(self).__name__} has no sigma to refit.")

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
