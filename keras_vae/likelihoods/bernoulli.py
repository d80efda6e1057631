"""`Bernoulli`: pixels with logits from the decoder."""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from keras_vae.likelihoods.base import IMAGE_AXES, Likelihood

tfd = tfp.distributions


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
        return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), IMAGE_AXES)
