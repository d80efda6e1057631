"""Calibrated from the first step to the served model: a data-dependent start and a refit of the served sigma.

- `start(model, inputs)`: before the first training step, a learned (or
  per-pixel) sigma is set to the RMSE of the untrained model's reconstruction
  of the first batch, with the very draw of z the first step will use, so
  that every Gaussian mode starts calibrated (the learned sigma otherwise
  starts at 1 and needs hundreds of steps). `VAE.fit` calls it; it runs once
  per model (the likelihood's `started` weight is saved with it) and not at
  all with `Gaussian(..., data_dependent_start=False)`.
- `refit_sigma(model, data)`: after training, the served sigma (an optimal
  mode's running MSE, or a learned sigma) is recomputed over `data` at the
  final weights in one pass, like a batch-norm recalibration: the MSE of the
  model's reconstructions (the decoder mean at the posterior's mode). The
  sigma that `decode`, `sample`, export and the running-sigma ELBO use is
  then the RMSE of the trained model, not an average that remembers the
  large errors of the first steps and of early, wide posteriors. `data` is
  the train split, or images held out of training (`train --refit_split`),
  whose error is the one unseen images get. `kv.callbacks.SigmaRefit` runs it
  at the end of `fit`.

Both go through the model contract, so they serve every family.

Example:

>>> import keras, numpy as np, keras_vae as kv
>>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="learned", seed=0)
>>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
>>> start(vae, {"x": x}), float(vae.likelihood.started.numpy()), start(vae, {"x": x})
(True, 1.0, False)
"""

from __future__ import annotations

import numpy as np

from keras_vae import evaluation, latents
from keras_vae.noise import SeededNoise


def start(model, inputs: dict) -> bool:
    """The data-dependent start of `model`'s likelihood on one batch; returns whether it ran.

    The draw of z is the one the next training step makes (the noise of the
    model's seed generator state, which this does not advance), so the first
    step's learned sigma is exactly the optimal sigma of that batch.

    Args:
        model: A `VAE` of any family.
        inputs: The first training batch, `{"x": images, **conditions}`.
    """
    likelihood = model.likelihood
    if not likelihood.has_data_dependent_start or float(likelihood.started.numpy()):
        return False
    noise = SeededNoise(model.seed_generator.state.value)
    z = model.reparameterize(model.posterior_distribution(inputs), noise, training=True)
    likelihood.start_at(inputs["x"], model.decoder_params(model.decoder_latent(z), inputs))
    return True


def refit_sigma(model, data, batch_size: int = 500, max_passes: int = 3) -> float | None:
    """Sets the served sigma of `model` to the RMSE of its reconstructions of `data`.

    One pass over the reconstructions (the decoder mean at the posterior's
    mode, `keras_vae.latents.mode`; no draw). The MSE is shared as the
    likelihood shares sigma (`refit_reduction`: `"optimal"` and `"learned"`:
    all pixels; `"optimal_per_channel"`: per channel; `"optimal_per_image"`:
    the mean of the per-image MSEs, the statistic its running average keeps).
    An optimal mode's running MSE takes the value; a learned sigma's log
    sigma does. A per-pixel sigma (`"standardised"`) is rescaled instead, so
    that the mean of `((x - mean) / sigma)**2` over `data` is 1 (the
    maximum-likelihood scale of its predictions); the pass is repeated, up to
    `max_passes`, until the soft clip of log sigma leaves that mean within
    0.2% of 1. Refit on the train split, it removes the memory of the first
    steps; refit on images held out of training, it also sees the error on
    unseen images, which is what a served model meets.

    Args:
        model: A `VAE` of any family.
        data: Images (or `(images, labels)`) or a dataset.
        batch_size: Images per batch. Defaults to 500.
        max_passes: Passes over `data` for a per-pixel sigma. Defaults to 3.

    Returns:
        The served sigma afterwards (its mean over channels; for a per-pixel
        sigma, its mean over the pixels of `data`), or None when the
        likelihood has nothing to refit (a fixed sigma, not Gaussian).
    """
    likelihood = model.likelihood
    reduction = likelihood.refit_reduction
    if reduction is None:
        return None
    if reduction == "standardised":
        for _ in range(max_passes):
            statistic, mean_sigma = _refit_statistic(model, data, batch_size, reduction)
            likelihood.refit_to(statistic)
            if abs(float(statistic) - 1.0) < 2e-3:
                break
        return mean_sigma / float(np.sqrt(statistic))  # the sigmas measured, rescaled as the refit rescaled them
    statistic, _ = _refit_statistic(model, data, batch_size, reduction)
    likelihood.refit_to(statistic)
    served = likelihood.log_sigma(np.zeros((1, 1, 1, likelihood.params_per_channel * np.size(statistic)), "float32"))
    return float(np.mean(np.exp(np.asarray(served))))


def _refit_statistic(model, data, batch_size: int, reduction: str) -> tuple[np.ndarray, float]:
    """One pass over the reconstructions of `data`: what `refit_to` takes (see `refit_sigma`), and for
    `"standardised"` the mean of the per-pixel sigmas (0 otherwise)."""
    likelihood = model.likelihood
    total, count, sigma_sum = 0.0, 0, 0.0
    for batch in evaluation.input_batches(evaluation.as_inputs(model, data), batch_size):
        z = model.decoder_latent(latents.mode(model.posterior_distribution(batch)))
        params = model.decoder_params(z, batch)
        squared = np.square(batch["x"] - np.asarray(likelihood.mean(params)))
        if reduction == "standardised":  # a sigma per pixel: the errors in units of it
            sigma = np.asarray(likelihood.stddev(params))
            squared, sigma_sum = squared / np.square(sigma), sigma_sum + float(np.sum(sigma))
        reduction_axes = tuple(range(squared.ndim - (reduction == "channel")))  # all (but the channels)
        total = total + squared.sum(axis=reduction_axes)
        count += squared.size // np.size(total)
    return np.asarray(total / count, "float32"), sigma_sum / count
