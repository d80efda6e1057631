"""Calibrated from the first step to the served model: a data-dependent start and a refit of the served sigma.

- `start(model, inputs)`: before the first training step, a learned (or
  per-pixel) sigma is set to the RMSE of the untrained model's reconstruction
  of the first batch, with the very draw of z the first step will use, so
  that every Gaussian mode starts calibrated (the learned sigma otherwise
  starts at 1 and needs hundreds of steps). `VAE.fit` calls it; it runs once
  per model (the likelihood's `started` weight is saved with it) and not at
  all with `Gaussian(..., data_dependent_start=False)`.
- `refit_sigma(model, data)`: after training, the running MSE of an optimal
  sigma mode is recomputed over `data` (the training set) at the final
  weights in one pass, like a batch-norm recalibration: the MSE of the
  model's reconstructions (the decoder mean at the posterior's mode). The
  sigma that `decode`, `sample`, export and the running-sigma ELBO use is
  then the RMSE of the trained model, not an average that remembers the
  large errors of the first steps and of early, wide posteriors.
  `kv.callbacks.SigmaRefit` runs it at the end of `fit`.

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
from keras import ops

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


def refit_sigma(model, data, batch_size: int = 500) -> float | None:
    """Sets an optimal sigma mode's running MSE to the MSE over `data` at the current weights.

    One pass over the reconstructions (the decoder mean at the posterior's
    mode, `keras_vae.latents.mode`; no draw). The MSE shares sigma as the mode does (`"optimal"`: all pixels;
    `"optimal_per_channel"`: per channel; `"optimal_per_image"`: the mean of
    the per-image MSEs, the statistic its running average keeps).

    Args:
        model: A `VAE` of any family.
        data: Training images (or `(images, labels)`) or a dataset.
        batch_size: Images per batch. Defaults to 500.

    Returns:
        The served sigma afterwards (its mean over channels), or None when
        the likelihood has no optimal sigma.
    """
    likelihood = model.likelihood
    if not likelihood.is_optimal:
        return None
    layer = likelihood.optimal_sigma
    total, count = 0.0, 0
    for batch in evaluation.input_batches(evaluation.as_inputs(model, data), batch_size):
        z = model.decoder_latent(latents.mode(model.posterior_distribution(batch)))
        squared = np.square(batch["x"] - np.asarray(likelihood.mean(model.decoder_params(z, batch))))
        reduction_axes = tuple(range(squared.ndim - (layer.reduction == "channel")))  # all (but the channels)
        total = total + squared.sum(axis=reduction_axes)
        count += squared.size // np.size(total)
    mse = np.asarray(total / count, "float32")
    # `running_log_sigma` divides by the bias correction 1 - momentum**num_updates: undo it.
    correction = 1.0 - layer.momentum ** max(float(layer.num_updates.numpy()), 1.0)
    layer.running_mse.assign(np.asarray(mse * correction, layer.running_mse.dtype))
    return float(np.mean(np.exp(np.asarray(ops.convert_to_tensor(likelihood.soft_clip(layer.running_log_sigma()))))))
