"""Keras callbacks for training a VAE: posterior collapse, images in TensorBoard, latent centring and
whitening, and the refit of an optimal sigma. The schedules' callbacks `KLAnnealing` and
`TemperatureAnnealing` (from `keras_vae.annealing`) are here too, so `kv.callbacks` holds them all.

Example:

>>> import keras, numpy as np, keras_vae as kv
>>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
>>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=4)
>>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
>>> monitor, centring = CollapseMonitor(x), LatentCentering(x)
>>> history = vae.fit(x, batch_size=16, epochs=1, verbose=0, callbacks=[monitor, centring])
>>> sorted(k for k in history.history if k.startswith("posterior_"))
['posterior_active_units', 'posterior_collapsed_fraction', 'posterior_marginal_kl', 'posterior_mutual_information']
>>> len(centring.shifts)  # centred once, when training ended
1
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_vae import calibration, evaluation, latent_centering, latent_whitening
from keras_vae.annealing import KLAnnealing, TemperatureAnnealing  # noqa: F401 - kv.callbacks.KLAnnealing
from keras_vae.checks import positive_int
from keras_vae.data import validate_images


class PosteriorCollapseWarning(UserWarning):
    """Too many latent dimensions carry (almost) no information."""


class CollapseMonitor(keras.callbacks.Callback):
    """Logs posterior-collapse statistics each epoch and warns when the posterior collapses.

    At the end of every `every`-th epoch it computes, over `data`, the KL of
    each latent dimension, the active units, the mutual information I(x; z)
    and the marginal KL(m(z) || p(z)) (see `evaluation.posterior_statistics`),
    adds them to the epoch logs as `posterior_*` (so they reach the History,
    CSVLogger and TensorBoard callbacks that run after it), keeps them in
    `self.history`, and issues a `PosteriorCollapseWarning` when more than
    `max_collapsed_fraction` of the dimensions have a KL below `collapse_nats`.

    Args:
        data: Images `(N, H, W, C)` to measure on (a held-out set; a few
            hundred to a few thousand images).
        every: Measure every this many epochs. Defaults to 1.
        collapse_nats: KL below which a dimension counts as collapsed.
            Defaults to 0.1.
        max_collapsed_fraction: Warn above this share of collapsed
            dimensions. Defaults to 0.2.
        log_dir: If given, also write the statistics and a KL-per-dimension
            histogram as TensorBoard summaries there. Defaults to None.
    """

    def __init__(self, data, every: int = 1, collapse_nats: float = evaluation.COLLAPSE_NATS,
                 max_collapsed_fraction: float = 0.2, log_dir=None):
        super().__init__()
        positive_int("every", every)
        if not 0.0 <= max_collapsed_fraction <= 1.0:
            raise ValueError(f"Expected 0 <= max_collapsed_fraction <= 1. Received: {max_collapsed_fraction}")
        self.data = evaluation.as_array(data)
        self.every = every
        self.collapse_nats = float(collapse_nats)
        self.max_collapsed_fraction = float(max_collapsed_fraction)
        self.log_dir = log_dir
        self.history: list[dict] = []
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        stats = evaluation.posterior_statistics(self.model, self.data, collapse_nats=self.collapse_nats)
        fraction = stats["collapsed_units"] / stats["latent_dim"]
        summary = {
            "posterior_active_units": stats["active_units"],
            "posterior_collapsed_fraction": fraction,
            "posterior_mutual_information": stats["mutual_information"],
            "posterior_marginal_kl": stats["marginal_kl"],
        }
        # Families without a Gaussian posterior get the reason instead of a number: not a log entry.
        summary = {name: float(value) for name, value in summary.items() if not isinstance(value, str)}
        if logs is not None:
            logs.update(summary)
        self.history.append({"epoch": epoch, **stats})
        if fraction > self.max_collapsed_fraction:
            warnings.warn(
                f"Posterior collapse at epoch {epoch + 1}: {stats['collapsed_units']} of {stats['latent_dim']} "
                f"latent dimensions have KL < {self.collapse_nats} nats ({fraction:.0%} > "
                f"{self.max_collapsed_fraction:.0%}). Consider KL warm-up, free bits or a calibrated decoder.",
                PosteriorCollapseWarning,
                stacklevel=2,
            )
        if self.log_dir is not None:
            self._write(epoch, summary, np.asarray(stats["kl_per_dim"]))

    def _write(self, epoch: int, summary: dict, kl_per_dim: np.ndarray) -> None:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        with self._writer.as_default(step=epoch):
            for name, value in summary.items():
                tf.summary.scalar(name, value)
            tf.summary.histogram("posterior_kl_per_dim", kl_per_dim)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ImageLogger(keras.callbacks.Callback):
    """Writes prior samples and reconstructions to TensorBoard as images each epoch.

    Images: `samples` (a tiled grid of decoder means at fixed z ~ N(0, I), so
    epochs are comparable) and `reconstructions` (originals on odd rows,
    reconstructions below them), under `log_dir` (use the same folder as
    `keras.callbacks.TensorBoard` to see them beside the losses).

    Args:
        log_dir: The TensorBoard log folder.
        images: Images `(N, H, W, C)` to reconstruct (the first 16 are used).
        num_samples: Prior samples per grid. Defaults to 16.
        every: Log every this many epochs. Defaults to 1.
        seed: Seed of the fixed prior draws. Defaults to 0.
        conditions: For a model with conditions, `{name: values}` of the
            `images` (e.g. `{"y": labels}`); the samples cycle over them.
            Defaults to None.
    """

    def __init__(self, log_dir, images, num_samples: int = 16, every: int = 1, seed: int = 0, conditions=None):
        super().__init__()
        positive_int("every", every)
        positive_int("num_samples", num_samples)
        self.log_dir = log_dir
        self.images = evaluation.as_array(images)[:16]
        self.conditions = {name: np.asarray(values)[:16] for name, values in (conditions or {}).items()}
        self.num_samples = num_samples
        self.every = every
        self.seed = seed
        self._writer = None

    def grids(self) -> dict:
        """The current `samples` and `reconstructions` grids, each `(height, width, C)` in [0, 1]."""
        from keras_vae import plots

        samples = evaluation.prior_samples(self.model, self.num_samples, seed=self.seed,  # the same z each epoch
                                           conditions=self.conditions)
        reconstructions = np.asarray(self.model.reconstruct(self.images, *self.conditions.values()))
        columns = min(len(self.images), 8)
        rows = []
        for start in range(0, len(self.images), columns):
            rows += [self.images[start : start + columns], reconstructions[start : start + columns]]
        return {"samples": plots.tile(samples), "reconstructions": plots.tile(np.concatenate(rows), columns)}

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        with self._writer.as_default(step=epoch):
            for name, grid in self.grids().items():
                tf.summary.image(name, grid[None], step=epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _LatentAlignment(keras.callbacks.Callback):
    """Runs an exact latent-space step when training ends, or after every epoch (logging its ELBO gain)."""

    log_key = ""

    def __init__(self, data, every_epoch: bool = False, batch_size: int = 500):
        super().__init__()
        positive_int("batch_size", batch_size)
        self.data = evaluation.as_array(data)
        self.every_epoch = bool(every_epoch)
        self.batch_size = batch_size

    def _check(self) -> None:
        raise NotImplementedError

    def _align(self) -> float:
        """Applies the step to `self.model`; returns its ELBO gain in nats."""
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        self._check()
        validate_images(self.data, self.model.image_shape)  # a wrong shape fails now, not after fit

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epoch:
            gain = self._align()
            if logs is not None:
                logs[self.log_key] = gain

    def on_train_end(self, logs=None):
        if not self.every_epoch:
            self._align()


class LatentCentering(_LatentAlignment):
    """Centres the latent space on the prior at the end of training (or of every epoch).

    Calls `keras_vae.latent_centering.center_latents(model, data)`: an exact
    shift of z that makes the posterior means average to 0 over `data`, raises
    the ELBO by `|m|**2 / 2` nats and leaves reconstructions unchanged, so that
    draws z ~ N(0, I) land on the codes of real images. The model is checked
    when training begins, so an unsupported model fails before any epoch runs.

    Args:
        data: Images `(N, H, W, C)` to centre on, usually the training set.
        every_epoch: Centre after every epoch (and log `latent_shift_nats`,
            the ELBO gain `|m|**2 / 2`) instead of only when training ends.
            Defaults to False.
        batch_size: Images per encoder call. Defaults to 500.

    Attributes:
        shifts: The shift m of each centring, `(latent_dim,)` arrays.

    Example: see the module docstring (used beside `CollapseMonitor`).
    """

    log_key = "latent_shift_nats"

    def __init__(self, data, every_epoch: bool = False, batch_size: int = 500):
        super().__init__(data, every_epoch, batch_size)
        self.shifts: list[np.ndarray] = []

    def _check(self) -> None:
        latent_centering.check_supported(self.model)

    def _align(self) -> float:
        shift = latent_centering.center_latents(self.model, self.data, self.batch_size)
        self.shifts.append(shift)
        return float(shift @ shift / 2)


class LatentWhitening(_LatentAlignment):
    """Fits the prior to the codes when training ends (or after every epoch) by whitening the latent space.

    Calls `keras_vae.latent_whitening.whiten_latents(model, data)`: an exact
    affine map of z that makes the Gaussian fit of the aggregate posterior over
    `data` the standard normal. It raises the ELBO by KL(N(m, C) || N(0, I))
    nats, leaves reconstructions unchanged, and makes draws z ~ N(0, I) land
    where the codes of real images are. The model is checked when training
    begins, so an unsupported model fails before any epoch runs.

    Args:
        data: Images `(N, H, W, C)` to fit on, usually the training set (more
            images than latent dimensions).
        every_epoch: Whiten after every epoch (and log `latent_whitening_nats`,
            the ELBO gain) instead of only when training ends. Defaults to False.
        batch_size: Images per encoder call. Defaults to 500.

    Attributes:
        gains: The ELBO gain of each whitening, in nats per image.

    Example:

    >>> import numpy as np, keras_vae as kv
    >>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2)
    >>> vae.compile(optimizer="adam")
    >>> whitening = LatentWhitening(x)
    >>> _ = vae.fit(x, batch_size=16, epochs=1, verbose=0, callbacks=[whitening])
    >>> len(whitening.gains), type(vae.posterior).__name__
    (1, 'WhitenedGaussian')
    """

    log_key = "latent_whitening_nats"

    def __init__(self, data, every_epoch: bool = False, batch_size: int = 500):
        super().__init__(data, every_epoch, batch_size)
        self.gains: list[float] = []

    def _check(self) -> None:
        latent_whitening.check_supported(self.model)
        if len(self.data) <= self.model.latent_dim:
            raise ValueError(
                f"Whitening needs more images than latent dimensions ({self.model.latent_dim}). "
                f"Received {len(self.data)} images."
            )

    def _align(self) -> float:
        gain = latent_whitening.whiten_latents(self.model, self.data, self.batch_size)
        self.gains.append(gain)
        return gain


class SigmaRefit(keras.callbacks.Callback):
    """Refits the served sigma to `data` when training ends (`keras_vae.calibration.refit_sigma`).

    The running average of the MSE that optimal modes keep still remembers
    the large errors of the first steps; this sets it (or a learned sigma)
    to the MSE of the trained model over `data` (the training set, or images
    held out of it), and rescales a per-pixel sigma to its maximum-likelihood
    scale there, so the served sigma is calibrated. A fixed sigma is left alone.

    Args:
        data: The images to refit on (or `(images, labels)`).
        batch_size: Images per batch. Defaults to 500.

    Example:

    >>> import keras, numpy as np, keras_vae as kv
    >>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="optimal")
    >>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> refit = SigmaRefit(x)
    >>> _ = vae.fit(x, batch_size=16, verbose=0, callbacks=[refit])
    >>> refit.sigma > 0
    True
    """

    def __init__(self, data, batch_size: int = 500):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.sigma = None

    def on_train_end(self, logs=None):
        self.sigma = calibration.refit_sigma(self.model, self.data, self.batch_size)
