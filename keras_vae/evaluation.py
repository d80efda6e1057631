"""The numbers a VAE is judged by: likelihood bounds, posterior-collapse statistics and FID.

All log-likelihoods are in nats per image, summed over pixels with their
normalising constants, like the model's training metrics.

- `elbo` and `iwae_bound`: lower bounds on log p(x). For a Gaussian decoder
  p(x) is a *density* on pixel values in [0, 1] (it can exceed 1, so the
  "log-likelihood" can be positive and bits/dim negative); it is not the
  probability of 8-bit images. `dequantize` plus `bits_per_dim(...,
  levels=256)` turns it into a proper bound on the discrete probability.
- `posterior_statistics`: KL per latent dimension, active units, mutual
  information I(x; z) and the marginal KL(m(z) || p(z)) of the aggregate
  posterior m(z) = mean_n q(z | x_n).
- `frechet_distance` and `fid`: the Frechet distance between Gaussian fits
  to features of two image sets, with any feature model (see
  `keras_vae.feature_model` for the small classifier we use on MNIST).

Example:

>>> import numpy as np, keras_vae as kv
>>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="gaussian", seed=0)
>>> x = np.full((4, 8, 8, 1), 0.5, "float32")
>>> bound = iwae_bound(vae, x, num_samples=8, seed=0)
>>> bool(bound >= elbo(vae, x, seed=0) - 1.0)
True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import numpy as np
import scipy.linalg
import scipy.special
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import latents, logs
from keras_vae.checks import positive_int
from keras_vae.data import validate_images
from keras_vae.likelihoods import Bernoulli, Gaussian
from keras_vae.noise import SeededNoise
from keras_vae.posteriors import WhitenedGaussian
from keras_vae.video import validate_videos

tfd = tfp.distributions

ACTIVE_UNIT_THRESHOLD = 0.01
COLLAPSE_NATS = 0.1


# ---------------------------------------------------------------- data access
def as_array(data, image_shape=None) -> np.ndarray:
    """Collects images from an array or a `tf.data.Dataset` into one checked float32 array.

    Args:
        data: Images `(N, H, W, C)` in [0, 1], or a dataset (batched or not)
            of images or of `(images, labels)` tuples.
        image_shape: The expected `(H, W, C)`, or None for any.

    Returns:
        A float32 array `(N, H, W, C)`.

    Example:

    >>> as_array(tf.data.Dataset.from_tensor_slices(np.zeros((3, 2, 2, 1), "float32")).batch(2)).shape
    (3, 2, 2, 1)
    """
    if isinstance(data, tf.data.Dataset):
        parts = []
        for element in data.as_numpy_iterator():
            images = element[0] if isinstance(element, tuple) else element
            parts.append(images if images.ndim == 4 else images[None])
        if not parts:
            raise ValueError("The dataset is empty: it yields no images.")
        data = np.concatenate(parts)
    x = np.asarray(data)
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype("float32", copy=False)
    validate_images(x, image_shape)
    return x


def as_inputs(model, data) -> dict:
    """The model's inputs from `data`: `{"x": images, **conditions}` as checked numpy arrays.

    Args:
        model: A `VAE` of any family (its `condition_specs()` name the conditions).
        data: Images, an `(images, labels)` tuple, an inputs dict, or a
            dataset of images or of `(images, labels)` tuples.

    Example:

    >>> import keras_vae as kv
    >>> vae = kv.build_vae((2, 2, 1), network="mlp", latent_dim=2)
    >>> sorted(as_inputs(vae, np.zeros((3, 2, 2, 1), "float32")))
    ['x']
    """
    names = list(model.condition_specs())
    videos = model.input_specs()["x"].shape.rank == 5  # a model of videos (N, T, H, W, C)
    if videos and not isinstance(data, (dict, tuple, tf.data.Dataset)):  # whole videos: the model splits them
        data = {name: np.asarray(value) for name, value in model.as_inputs(np.asarray(data)).items()}
    if isinstance(data, tf.data.Dataset):
        parts = [element if isinstance(element, tuple) else (element,) for element in data.as_numpy_iterator()]
        if not parts:
            raise ValueError("The dataset is empty: it yields no images.")
        data = tuple(np.concatenate([p[i] if p[0].ndim == 4 else p[i][None] for p in parts])
                     for i in range(len(parts[0])))
    if isinstance(data, dict):
        inputs = dict(data)
    elif isinstance(data, tuple):
        inputs = {"x": data[0], **dict(zip(names, data[1:], strict=False))}
    else:
        inputs = {"x": data}
    missing = [name for name in names if inputs.get(name) is None]
    if missing:
        raise ValueError(f"{type(model).__name__} needs {', '.join(missing)} besides the images: pass "
                         f"(images, {', '.join(missing)}).")
    if videos:
        inputs["x"] = np.asarray(inputs["x"], "float32")
        validate_videos(inputs["x"], model.image_shape, min_frames=1)
    else:
        inputs["x"] = as_array(inputs["x"], getattr(model, "image_shape", None))
    for name in names:
        inputs[name] = np.asarray(inputs[name])
        if len(inputs[name]) != len(inputs["x"]):
            raise ValueError(f"Expected one {name} per image: {len(inputs['x'])} images, {len(inputs[name])} {name}.")
    return {name: inputs[name] for name in ("x", *names)}


def input_batches(inputs: dict, batch_size: int, progress: bool = False, label: str = "") -> Iterable[dict]:
    """Slices of an inputs dict, `batch_size` images each."""
    for rows in _batches(np.arange(len(inputs["x"])), batch_size, progress, label):
        yield {name: value[rows] for name, value in inputs.items()}


def _batches(x: np.ndarray, batch_size: int, progress: bool, label: str) -> Iterable[np.ndarray]:
    positive_int("batch_size", batch_size)
    bar = logs.progress_bar(len(x), label) if progress else None
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        yield batch
        if bar is not None:
            bar.add(len(batch))


# ------------------------------------------------------------- likelihood
def _log_weights(model, inputs, num_samples, seed, likelihood, head):
    """`model.log_importance_weights` with the noise of `seed`, scored with `likelihood`.

    `likelihood` and `head` (the model's posterior head) are arguments so
    that the compiled trace is keyed on them: `latent_whitening.whiten_latents`
    swaps the head of a model in place.
    """
    with model.substituted(likelihood=likelihood):
        return model.log_importance_weights(inputs, num_samples, SeededNoise(seed))


_compiled_log_weights = tf.function(_log_weights, reduce_retracing=True, autograph=False)


def _elbo_per_image(model, inputs, seed, likelihood, head):
    """`model.compute_terms`' ELBO per image (the running sigma) with the noise of `seed`, scored with
    `likelihood`; `likelihood` and `head` key the trace as in `_log_weights`."""
    with model.substituted(likelihood=likelihood):
        return model.compute_terms(inputs, SeededNoise(seed), fit_sigma=False)["elbo_per_image"]


_compiled_elbo_per_image = tf.function(_elbo_per_image, reduce_retracing=True, autograph=False)


def log_importance_weights(model, x, num_samples: int, chunk_size: int | None = None, seed: int | None = None,
                           likelihood=None):
    """Importance weights of `num_samples` draws from q(z|x) for each image, `(num_samples, batch)`.

    log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x), from
    `VAE.log_importance_weights` (any family). Draws are decoded
    `chunk_size` at a time so that the decoder sees at most
    `chunk_size * batch` latents at once.

    Args:
        model: A `VAE` of any family.
        x: Images `(batch, H, W, C)` (or an inputs dict / `(images, labels)`).
        num_samples: Number of importance samples K.
        chunk_size: Draws per decoder call. Defaults to all K at once.
        seed: Seed of the draws. Defaults to None.
        likelihood: Score with this `Likelihood` instead of the model's (e.g.
            a fixed-sigma Gaussian to evaluate a beta-VAE at its implied
            sigma). Defaults to None.

    Returns:
        A numpy array `(num_samples, batch)` of log w in nats.
    """
    positive_int("num_samples", num_samples)
    chunk_size = chunk_size or num_samples
    inputs = {name: tf.convert_to_tensor(value) for name, value in as_inputs(model, x).items()}
    seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)
    parts = []
    for index, start in enumerate(range(0, num_samples, chunk_size)):
        count = tf.constant(min(chunk_size, num_samples - start), tf.int32)  # a tensor: chunks share one trace
        draw_seed = tf.constant([seed, index], tf.int32)
        parts.append(_compiled_log_weights(model, inputs, count, draw_seed, likelihood, model.posterior).numpy())
    return np.concatenate(parts)


def _max_chunk(batch_size: int, num_samples: int, max_decoded: int) -> int:
    return max(1, min(num_samples, max_decoded // max(batch_size, 1)))


def iwae_log_likelihood(
    model,
    data,
    num_samples: int = 1000,
    batch_size: int = 100,
    max_decoded: int = 10_000,
    seed: int | None = None,
    progress: bool = False,
    likelihood=None,
    label: str | None = None,
) -> np.ndarray:
    """The IWAE estimate of log p(x) for each image, `(N,)` nats.

    log p(x) >= L_K(x) = E[log (1/K) sum_k p(x, z_k) / q(z_k | x)],  z_k ~ q(z|x)

    L_1 is the ELBO, L_K grows with K and tends to log p(x) (Burda et al.).
    The decoder's sigma for optimal modes is the running sigma the model
    carries (not refitted to the test images), so the bound is the
    likelihood of a fixed model. For Gaussian decoders this is a density on
    [0, 1] pixel values; see `dequantize` for a discrete bound.

    Args:
        model: A `VAE`.
        data: Images `(N, H, W, C)` in [0, 1] or a `tf.data.Dataset`.
        num_samples: K. Defaults to 1000.
        batch_size: Images per batch. Defaults to 100.
        max_decoded: At most this many latents are decoded in one call
            (memory: K = 1000 on 100 images runs as 10 calls of 10,000).
            Defaults to 10,000.
        seed: Seed of the draws. Defaults to None.
        progress: Show a progress bar. Defaults to False.
        likelihood: Score with this `Likelihood` instead of the model's.
            Defaults to None.
        label: What the progress bar says it computes. Defaults to
            `"IWAE bound, K=..."`.

    Returns:
        A float64 numpy array of per-image bounds.

    References:
        Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders.
        ICLR 2016. arXiv:1509.00519.
    """
    positive_int("num_samples", num_samples)
    inputs = as_inputs(model, data)
    chunk = _max_chunk(min(batch_size, len(inputs["x"])), num_samples, max_decoded)
    bounds = []
    label = label or f"IWAE bound, K={num_samples}"
    for index, batch in enumerate(input_batches(inputs, batch_size, progress, label)):
        batch_seed = None if seed is None else seed + index
        log_w = log_importance_weights(model, batch, num_samples, chunk, batch_seed, likelihood).astype("float64")
        bounds.append(scipy.special.logsumexp(log_w, axis=0) - math.log(num_samples))
    return np.concatenate(bounds)


def iwae_bound(model, data, num_samples: int = 1000, **kwargs) -> float:
    """The mean IWAE bound on log p(x) over `data`, nats per image.

    Takes the arguments of `iwae_log_likelihood` (batch_size, max_decoded,
    seed, progress, likelihood, label).

    Example:

    >>> import keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="gaussian")
    >>> isinstance(iwae_bound(vae, np.zeros((2, 8, 8, 1), "float32"), num_samples=4), float)
    True
    """
    return float(np.mean(iwae_log_likelihood(model, data, num_samples, **kwargs)))


def elbo(model, data, num_samples: int = 1, batch_size: int = 100, seed: int | None = None,
         progress: bool = False, likelihood=None) -> float:
    """The mean ELBO over `data` (beta = 1), nats per image.

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), from `VAE.compute_terms`
    (any family: the function the model trains with), averaged over
    `num_samples` draws. Like `iwae_bound`, optimal sigma modes use the
    model's running sigma, so the two are comparable (the training metric
    `elbo` instead refits sigma to each batch). Batch `i`'s draw `k` uses the
    noise `SeededNoise([seed, i * num_samples + k])`.

    Args:
        model: A `VAE` of any family.
        data: Images (or `(images, labels)`) or a `tf.data.Dataset`.
        num_samples: Draws per image for E_q. Defaults to 1.
        batch_size: Images per batch. Defaults to 100.
        seed: Seed of the draws. Defaults to None.
        progress: Show a progress bar. Defaults to False.
        likelihood: Score with this `Likelihood` instead of the model's.
            Defaults to None.

    Returns:
        A float.
    """
    positive_int("num_samples", num_samples)
    inputs = as_inputs(model, data)
    seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)
    values = []
    label = f"ELBO, {num_samples} draw{'s' if num_samples > 1 else ''} of z per image"
    for index, batch in enumerate(input_batches(inputs, batch_size, progress, label)):
        batch = {name: tf.convert_to_tensor(value) for name, value in batch.items()}
        draws = [_compiled_elbo_per_image(model, batch, tf.constant([seed, index * num_samples + k], tf.int64),
                                          likelihood, model.posterior).numpy() for k in range(num_samples)]
        values.append(np.mean(np.stack(draws), axis=0))
    return float(np.mean(np.concatenate(values)))


def dequantize(x, levels: int = 256, seed: int | None = None) -> np.ndarray:
    """Uniform dequantization: `(round(x * (levels - 1)) + u) / levels`, u ~ U[0, 1).

    A density p on [0, 1]^D evaluated at dequantized images gives a bound on
    the probability of the discrete images: log P(x) >= E_u[log p(y)] - D log(levels).
    Use it with `bits_per_dim(..., levels=levels)`.

    Example:

    >>> y = dequantize(np.ones((1, 2, 2, 1), "float32"), seed=0)
    >>> bool(((y >= 255 / 256) & (y < 1)).all())
    True
    """
    x = np.asarray(x, "float32")
    rng = np.random.default_rng(seed)
    integers = np.round(x * (levels - 1))
    return ((integers + rng.uniform(size=x.shape)) / levels).astype("float32")


def bits_per_dim(log_likelihood: float, num_dims: int, levels: int | None = None) -> float:
    """Converts a log-likelihood in nats per image to bits per dimension (lower is better).

    bits/dim = -log_likelihood / (num_dims * ln 2), plus log2(levels) when the
    log-likelihood is a density of dequantized images (`dequantize`), which
    makes it a bound on the discrete probability of `levels`-level images.
    Without `levels` a Gaussian decoder's number is a continuous density on
    [0, 1] and can be negative.

    Example:

    >>> bits_per_dim(-784 * math.log(2), 784)
    1.0
    >>> bits_per_dim(0.0, 784, levels=256)
    8.0
    """
    positive_int("num_dims", num_dims)
    bits = -float(log_likelihood) / (num_dims * math.log(2))
    return bits + (math.log2(levels) if levels else 0.0)


# -------------------------------------------------------- posterior collapse
def posterior_moments(model, data, batch_size: int = 500, head=None) -> tuple[np.ndarray, np.ndarray]:
    """The means and (marginal) standard deviations of q(z|x) for all images, each `(N, D)`.

    Latents of any shape are flattened to D numbers (`keras_vae.latents.moments`).

    Args:
        model: A `VAE` of any family.
        data: Images (or `(images, labels)`) or a `tf.data.Dataset`.
        batch_size: Images per encoder call. Defaults to 500.
        head: Read the moments from this head on the encoder features
            instead (e.g. a `WhitenedGaussian`'s base head). Defaults to None.

    Returns:
        `(means, stddevs)` as NumPy arrays.
    """
    inputs = as_inputs(model, data)
    means, stddevs = [], []
    for batch in input_batches(inputs, batch_size, False, ""):
        if head is not None:
            loc, scale = head(model.encoder(tf.convert_to_tensor(batch["x"]), training=False))
        else:
            loc, scale = latents.moments(model.posterior_distribution(batch))
        means.append(np.asarray(loc).reshape(len(batch["x"]), -1))
        stddevs.append(np.asarray(scale).reshape(len(batch["x"]), -1))
    return np.concatenate(means), np.concatenate(stddevs)


def model_kl_per_dimension(model, data, batch_size: int = 500, seed: int = 0) -> np.ndarray:
    """The mean over images of the model's own KL(q || p) per latent dimension, flattened: `(D,)` nats.

    The terms of `VAE.compute_terms` (any family; a joint posterior's levels
    given one draw of the levels above, seeded by `seed`).
    """
    inputs = as_inputs(model, data)
    parts = [np.asarray(model.compute_terms(batch, SeededNoise([seed, index]), fit_sigma=False)["kl_per_dim"])
             for index, batch in enumerate(input_batches(inputs, batch_size, False, ""))]
    return np.concatenate([part.reshape(len(part), -1) for part in parts]).mean(axis=0)


def collapse_statistics_reason(model, data) -> str | None:
    """Why active units, mutual information and marginal KL are not defined for `model`, or None.

    They are defined for a Gaussian posterior (diagonal or correlated) under
    the prior N(0, I). Example:

    >>> import keras_vae as kv
    >>> print(collapse_statistics_reason(kv.build_vae((2, 2, 1), network="mlp", latent_dim=2),
    ...                                  np.zeros((2, 2, 2, 1), "float32")))
    None
    """
    inputs = {name: value[:2] for name, value in as_inputs(model, data).items()}
    q, p = model.posterior_distribution(inputs), model.prior_distribution(inputs)
    if not latents.is_gaussian(q):
        return (f"not defined for {type(model).__name__}: q(z|x) is a {type(q).__name__}, not a Gaussian "
                "(active units, mutual information and marginal KL are computed for Gaussian posteriors)")
    if not latents.is_standard_normal(p):
        return (f"not defined for {type(model).__name__}: its prior is a {type(p).__name__}, not N(0, I) "
                "(mutual information and marginal KL are computed against N(0, I))")
    return None


def active_units(means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Counts latent dimensions whose posterior mean varies over the data.

    A dimension d is active when Cov_x(E_q[z_d | x]) > threshold (Burda et
    al. use 0.01).

    Args:
        means: Posterior means `(N, latent_dim)` (`posterior_moments`).
        threshold: Variance threshold. Defaults to 0.01.

    Returns:
        The number of active dimensions.

    Example:

    >>> active_units(np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.05]]))
    1
    """
    return int(np.sum(np.var(np.asarray(means, "float64"), axis=0) > threshold))


def _log_normal(z, means, stddevs):
    """log N(z_i | means_n, stddevs_n) for all pairs: `(len(z), len(means))`."""
    z = z[:, None, :]
    return np.sum(
        -0.5 * ((z - means[None]) / stddevs[None]) ** 2 - np.log(stddevs[None]) - 0.5 * math.log(2 * math.pi),
        axis=-1,
    )


def aggregate_posterior_kl(means, stddevs, seed: int | None = 0, chunk: int = 256, prior=None) -> dict:
    """Mutual information I(x; z) and marginal KL(m(z) || p(z)) from one draw per image.

    With m(z) = (1/N) sum_n q(z | x_n) the aggregate posterior, the average KL
    splits as (Hoffman and Johnson, "ELBO surgery"):

        mean_n KL(q(z|x_n) || p(z)) = I(x; z) + KL(m(z) || p(z))

    Both terms are estimated with z_n ~ q(z | x_n), one draw per image:
    I = mean_n [log q(z_n|x_n) - log m(z_n)], KL_m = mean_n [log m(z_n) - log p(z_n)],
    with log m evaluated exactly over the N images (O(N**2)). The estimate of
    I is at most log N, so use enough images (a few thousand).

    Args:
        means: Posterior means `(N, latent_dim)`.
        stddevs: Posterior standard deviations `(N, latent_dim)`.
        seed: Seed of the draws. Defaults to 0.
        chunk: Draws scored against all N posteriors at once. Defaults to 256.
        prior: `(loc, scale_tril)` of a Gaussian prior N(loc, T T^T) over these
            codes. Defaults to N(0, I). (A `WhitenedGaussian` model is scored
            on its base codes, whose prior is N(shift, W^-1 W^-T); both terms
            are unchanged by the affine map between the two.)

    Returns:
        A dict with `mutual_information` and `marginal_kl` (nats).

    References:
        Hoffman, Johnson. ELBO surgery. NIPS 2016 AABI workshop.
        Rybkin et al. arXiv:2006.13202 (Table 3 reports both).
    """
    means, stddevs = np.asarray(means, "float64"), np.asarray(stddevs, "float64")
    count = len(means)
    z = means + stddevs * np.random.default_rng(seed).standard_normal(means.shape)
    log_q_own = np.sum(-0.5 * ((z - means) / stddevs) ** 2 - np.log(stddevs) - 0.5 * math.log(2 * math.pi), axis=-1)
    log_m = np.concatenate([
        scipy.special.logsumexp(_log_normal(z[start : start + chunk], means, stddevs), axis=1) - math.log(count)
        for start in range(0, count, chunk)
    ])
    if prior is None:
        white, log_det = z, 0.0
    else:
        loc, scale_tril = (np.asarray(t, "float64") for t in prior)
        white = scipy.linalg.solve_triangular(scale_tril, (z - loc).T, lower=True).T
        log_det = float(np.sum(np.log(np.diag(scale_tril))))
    log_p = np.sum(-0.5 * white**2 - 0.5 * math.log(2 * math.pi), axis=-1) - log_det
    return {
        "mutual_information": float(np.mean(log_q_own - log_m)),
        "marginal_kl": float(np.mean(log_m - log_p)),
    }


def posterior_statistics(
    model,
    data,
    batch_size: int = 500,
    threshold: float = ACTIVE_UNIT_THRESHOLD,
    collapse_nats: float = COLLAPSE_NATS,
    seed: int | None = 0,
) -> dict:
    """Posterior-collapse diagnostics of a model of any family over `data`.

    `kl_per_dim` is the model's own KL per latent dimension (flattened).
    Active units, mutual information and marginal KL need a Gaussian
    posterior and the prior N(0, I); for other models those entries hold the
    reason instead (`collapse_statistics_reason`).

    Args:
        model: A `VAE` of any family.
        data: Images (or `(images, labels)`) or a `tf.data.Dataset`.
        batch_size: Images per encoder call. Defaults to 500.
        threshold: Active-unit variance threshold. Defaults to 0.01.
        collapse_nats: A dimension whose mean KL is below this counts as
            collapsed. Defaults to 0.1.
        seed: Seed of the aggregate-posterior draws. Defaults to 0.

    Returns:
        A dict: `kl` (nats per image), `kl_per_dim` (list), `kl_estimator`
        (`"analytic"` or `"monte_carlo"`), `active_units`, `collapsed_units`
        (KL below `collapse_nats`), `latent_dim`, `mutual_information`,
        `marginal_kl`.

    Example:

    >>> import keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=3)
    >>> stats = posterior_statistics(vae, np.zeros((5, 8, 8, 1), "float32"))
    >>> stats["latent_dim"], len(stats["kl_per_dim"])
    (3, 3)
    """
    inputs = as_inputs(model, data)
    seed = 0 if seed is None else seed
    kl_by_dim = model_kl_per_dimension(model, inputs, batch_size, seed)
    results = {
        "kl": float(kl_by_dim.sum()),
        "kl_per_dim": kl_by_dim.tolist(),
        "collapsed_units": int(np.sum(kl_by_dim < collapse_nats)),
        "latent_dim": int(kl_by_dim.size),
    }
    first = {name: value[:2] for name, value in inputs.items()}
    results["kl_estimator"] = latents.kl_estimator(model.posterior_distribution(first), model.prior_distribution(first))
    reason = collapse_statistics_reason(model, inputs)
    if reason is not None:
        return {**results, "active_units": reason, "mutual_information": reason, "marginal_kl": reason}
    head = model.posterior
    if isinstance(head, WhitenedGaussian):
        # One encoder pass: the head's mean follows from its base codes, and MI and marginal KL are
        # exact on the base codes, whose prior is N(shift, W^-1 W^-T).
        base_means, base_scales = (np.asarray(t, "float64") for t in posterior_moments(model, inputs, batch_size,
                                                                                      head=head.base))
        shift, whitening = (np.asarray(w.numpy(), "float64") for w in (head.shift, head.whitening))
        means = (base_means - shift) @ whitening.T
        aggregate = aggregate_posterior_kl(base_means, base_scales, seed, prior=(shift, np.linalg.inv(whitening)))
    else:
        means, stddevs = posterior_moments(model, inputs, batch_size)
        aggregate = aggregate_posterior_kl(means, stddevs, seed)
    return {**results, "active_units": active_units(means, threshold), **aggregate}


# ---------------------------------------------------------------------- FID
def frechet_distance(mu1, cov1, mu2, cov2, eps: float = 1e-6) -> float:
    """The Frechet distance between N(mu1, cov1) and N(mu2, cov2).

    d**2 = |mu1 - mu2|**2 + tr(cov1 + cov2 - 2 (cov1 cov2)**(1/2))

    The matrix square root is scipy's `sqrtm`; when it fails (near-singular
    covariances) `eps` is added to both diagonals, as in the reference FID code.

    Example:

    >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2))
    4.0
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, "float64")), np.atleast_1d(np.asarray(mu2, "float64"))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, "float64")), np.atleast_2d(np.asarray(cov2, "float64"))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"Mismatched statistics: mu1 {mu1.shape}, cov1 {cov1.shape}, mu2 {mu2.shape}, cov2 {cov2.shape}."
        )
    for name, value in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} has NaN or inf entries.")
    with warnings.catch_warnings():  # singular products (dead feature units) are handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean)
    return float(max(distance, 0.0))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples) of features `(N, F)`."""
    features = np.asarray(features, "float64").reshape(len(features), -1)
    if len(features) < 2:
        raise ValueError(f"Expected at least 2 feature vectors. Received {len(features)}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def compute_features(feature_model: Callable, images, batch_size: int = 500, progress: bool = False,
                     label: str = "FID features") -> np.ndarray:
    """Runs `feature_model` over images in batches: `(N, F)` (a progress bar saying `label` if `progress`)."""
    images = np.asarray(images, "float32")
    outputs = [np.asarray(feature_model(batch, training=False)) for batch in _batches(images, batch_size, progress,
                                                                                      label)]
    return np.concatenate(outputs).reshape(len(images), -1)


def fid(real, generated, feature_model: Callable, batch_size: int = 500, progress: bool = False,
        label: str = "generated images") -> float:
    """Frechet distance between feature statistics of real and generated images.

    FID depends on the feature model and on the number of images (it is
    biased upwards for small sets): report both with the number. InceptionV3
    weights cannot be downloaded here; `keras_vae.feature_model.get` gives a
    small classifier trained on the dataset instead.

    Args:
        real: Images `(N, H, W, C)` in [0, 1] or a dataset.
        generated: Images `(M, H, W, C)` in [0, 1] or a dataset.
        feature_model: A callable (e.g. a Keras model) from images to features.
        batch_size: Images per feature-model call. Defaults to 500.
        progress: A progress bar for each feature pass. Defaults to False.
        label: What `generated` is, for the progress bars. Defaults to
            `"generated images"`.

    Returns:
        The FID (lower is better; 0 for identical statistics).
    """
    real = as_array(real)
    generated = as_array(generated, real.shape[1:])
    return frechet_distance(
        *feature_statistics(compute_features(feature_model, real, batch_size, progress,
                                             f"FID of {label}: features of the real images")),
        *feature_statistics(compute_features(feature_model, generated, batch_size, progress,
                                             f"FID of {label}: features of the {label}")),
    )


# ---------------------------------------------------------------- images
def prior_samples(model, num_samples: int, batch_size: int = 500, seed: int | None = 0, conditions=None) -> np.ndarray:
    """Decoder means at z ~ p(z[| y]) (or the fitted sampler) for any family: `(num_samples, H, W, C)`.

    Batch `i` draws with the noise `SeededNoise([seed, i])`.

    Args:
        model: A `VAE` of any family.
        num_samples: How many images.
        batch_size: Images per decoder call. Defaults to 500.
        seed: Seed of the draws. Defaults to 0.
        conditions: For a conditional model, `{name: values}` cycled over the
            samples (e.g. the test labels). Defaults to None.
    """
    positive_int("num_samples", num_samples)
    names = list(model.condition_specs())
    if names and not conditions:
        raise ValueError(f"{type(model).__name__} samples given {', '.join(names)}: pass conditions={{...}}.")
    seed = 0 if seed is None else seed
    images = []
    for index, start in enumerate(range(0, num_samples, batch_size)):
        count = min(batch_size, num_samples - start)
        rows = np.arange(start, start + count)
        inputs = {name: np.asarray(conditions[name])[rows % len(conditions[name])] for name in names}
        noise = SeededNoise([seed, index])
        z = latents.draw(model.sampling_distribution(inputs), noise, count)
        images.append(np.asarray(model.decoded(model.decoder_latent(z), inputs, noise)[0]))
    return np.concatenate(images)


def reconstructions(model, data, batch_size: int = 500) -> np.ndarray:
    """Decoder means at the posterior's mode: `(N, H, W, C)`."""
    inputs = as_inputs(model, data)
    return np.concatenate([np.asarray(model(batch, training=False))
                           for batch in input_batches(inputs, batch_size, False, "")])


# ------------------------------------------------------------------ report
def report(
    model,
    data,
    iwae_samples: int = 100,
    feature_extractor=None,
    feature_model_name: str | None = None,
    fid_samples: int = 1000,
    dequantized_bits: bool = True,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Every number of this module for one model on one image set, as a JSON-ready dict.

    Args:
        model: A `VAE` of any family.
        data: Test images `(N, H, W, C)` in [0, 1] (or `(images, labels)`,
            an inputs dict) or a dataset.
        iwae_samples: K of the IWAE bound. Defaults to 100.
        feature_extractor: Features for FID (`feature_model.get(...)`), or
            None to skip FID. Defaults to None.
        feature_model_name: What to call it in the report. Defaults to
            the extractor's `name` attribute.
        fid_samples: Prior samples for the FID. Defaults to 1000.
        dequantized_bits: Also bound the discrete bits/dim with uniform
            dequantization (a second IWAE pass). Defaults to True.
        batch_size: Images per batch. Defaults to 100.
        seed: Seed of every draw. Defaults to 0.
        progress: Progress bars on the long loops. Defaults to False.

    Returns:
        A dict of nats per image, bits/dim, posterior statistics and FIDs.
    """
    inputs = as_inputs(model, data)
    x = inputs["x"]
    conditions = {name: value for name, value in inputs.items() if name != "x"}
    num_dims = int(np.prod(x.shape[1:]))
    likelihood = model.likelihood
    continuous = isinstance(likelihood, Gaussian)  # a density on [0, 1]; the others are discrete
    results = {
        "num_images": len(x),
        "likelihood": type(likelihood).__name__ + (f"(sigma={likelihood.sigma!r})" if continuous else ""),
        "units": "nats per image; bits per dimension",
        "note": (
            "ELBO and IWAE score optimal-sigma models with their running (inference) sigma. "
            + ("For this continuous decoder they are log densities on [0, 1] pixel values, so bits_per_dim can "
               "be negative; bits_per_dim_dequantized bounds the probability of 8-bit images."
               if continuous else "")
            + ("A Bernoulli decoder on grey-level pixels is a cross-entropy, not a normalised likelihood of the "
               "images: its ELBO, IWAE and bits_per_dim compare only with other Bernoulli models."
               if isinstance(likelihood, Bernoulli) else "")
        ),
        "elbo": elbo(model, inputs, batch_size=batch_size, seed=seed, progress=progress),
    }
    results["iwae"] = iwae_bound(model, inputs, iwae_samples, batch_size=batch_size, seed=seed, progress=progress)
    results["iwae_samples"] = iwae_samples
    results["bits_per_dim"] = bits_per_dim(results["iwae"], num_dims)
    if dequantized_bits and continuous:
        noisy = {**inputs, "x": dequantize(x, seed=seed)}
        log_density = iwae_bound(model, noisy, iwae_samples, batch_size=batch_size, seed=seed + 1, progress=progress,
                                 label=f"IWAE bound, K={iwae_samples}, on dequantized images (8-bit bits/dim)")
        results["bits_per_dim_dequantized"] = bits_per_dim(log_density, num_dims, levels=256)
    results.update(posterior_statistics(model, inputs, seed=seed))
    if feature_extractor is not None:
        name = feature_model_name or getattr(feature_extractor, "name", type(feature_extractor).__name__)
        results["fid_feature_model"] = name
        samples = prior_samples(model, fid_samples, seed=seed, conditions=conditions)
        results["fid_prior"] = fid(x, samples, feature_extractor, progress=progress, label="prior samples")
        results["fid_reconstruction"] = fid(x, reconstructions(model, inputs), feature_extractor, progress=progress,
                                            label="reconstructions")
        results["fid_images"] = {"real": len(x), "prior_samples": fid_samples, "reconstructions": len(x)}
        sampler = getattr(model, "sampler", None)  # what the prior samples drew z from (`sampling_distribution`)
        results["prior_samples_from"] = "prior" if sampler is None else type(sampler).__name__
    return results


def evaluate_saved_model(
    model_path,
    dataset: str = "mnist",
    out=None,
    split: str = "test",
    test_fraction: float = 0.1,
    max_images: int = 0,
    feature_model: str = "auto",
    overwrite: bool = False,
    video_options: dict | None = None,
    num_futures: int = 100,
    disentanglement_samples: int = 2000,
    disentanglement_points: int = 500,
    **report_kwargs,
) -> dict:
    """Loads a saved VAE, runs `report` on a dataset split and writes `eval.json` and the PNGs.

    What `python -m keras_vae evaluate` runs.

    Args:
        model_path: A `.keras` file.
        dataset: A name for `keras_vae.data.load_arrays`. Defaults to `"mnist"`.
        out: Output folder. Defaults to `eval/` beside the model.
        split: `"train"`, `"test"` or `"all"`. Defaults to `"test"`.
        test_fraction: Test share for datasets without a test split.
        max_images: Use at most this many images (0: all). Defaults to 0.
        feature_model: `"auto"` (the dataset's cached classifier,
            `keras_vae.feature_model.get`) or `"none"` (no FID).
        overwrite: Replace files evaluate writes (`eval.json`, the PNGs of
            `plots.model_figures`) that are already in `out`. Defaults to False.
        video_options: `keras_vae.video.load_videos` options of a video
            dataset (`num_frames`, `num_digits`, `num_sequences`; a zero or
            missing `num_frames` is the model's `num_frames`, and `frame_size`
            is the model's frame size). Defaults to None.
        num_futures: Futures per test video of a model with its own
            `evaluation_report` (videos: the N of the best-of-N SSIM/PSNR).
            Defaults to 100.
        disentanglement_samples: A factor-labelled dataset (`sprites`, an
            `.npz` with `factors`): draws MIG, SAP and DCI train on (half as
            many to test; `disentanglement.report`). Defaults to 2,000.
        disentanglement_points: Training points of the BetaVAE and FactorVAE
            scores (half as many to score). Defaults to 500.
        **report_kwargs: Passed to `report` (iwae_samples, fid_samples, ...);
            `batch_size` and `seed` also to a model's `evaluation_report`.

    Returns:
        The report, also written to `out/eval.json`; a factor-labelled dataset
        adds `disentanglement` (the metrics, the factor x latent mutual
        information, sample counts and seed), drawn as `mutual_information.png`,
        and names each traversal row's most informative factor.

    Raises:
        FileNotFoundError: If there is no model file.
        FileExistsError: If any file it would write exists and not `overwrite`.
        ValueError: If the model file is broken or not a keras_vae model (`files.load_vae`).
    """
    from pathlib import Path

    from keras_vae import data as data_lib
    from keras_vae import disentanglement, experiment, files, plots
    from keras_vae import feature_model as feature_model_lib

    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"No saved model at {model_path}.")
    out = Path(out) if out else model_path.parent / "eval"
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not a folder.")
    files.check_writable(out, "--out")
    files.refuse_existing([out / name for name in experiment.EVAL_FILES], overwrite,
                          "Choose another output folder (--out) or pass overwrite (--overwrite).")
    if feature_model not in ("auto", "none"):
        raise ValueError(f"Expected feature_model 'auto' or 'none'. Received: feature_model={feature_model!r}")
    model = files.load_vae(model_path, "model")
    options = {key: value for key, value in (video_options or {}).items() if value}
    options.setdefault("num_frames", getattr(model, "num_frames", 15))
    options["frame_size"] = model.image_shape[0]
    if dataset == "sprites":  # sprites of the model's size
        dataset = f"sprites:{model.image_shape[0]}"
    x, y = data_lib.load_arrays(dataset, split, test_fraction, with_labels=True, video_options=options)
    if hasattr(model, "evaluation_report"):  # a model with a report of its own (e.g. of videos)
        results, figures = model.evaluation_report(x[:max_images] if max_images else x,
                                                   batch_size=report_kwargs.get("batch_size", 100),
                                                   seed=report_kwargs.get("seed", 0), num_samples=num_futures)
        results.update(model=str(model_path), dataset=dataset, split=split)
        out.mkdir(parents=True, exist_ok=True)
        for name, write in figures.items():
            write(out / name)
        files.write_json(out / "eval.json", results)
        return results
    names = list(model.condition_specs())
    if names and y is None:
        raise ValueError(f"{model_path} is a {type(model).__name__}, which needs labels, but {dataset} has none.")
    if names:
        y = data_lib.validate_labels(y, len(x), name=f"the labels of {dataset}")
    inputs = {"x": x, **({names[0]: y} if names else {})}
    inputs = {name: value[:max_images] if max_images else value for name, value in inputs.items()}
    # factor labels are checked before any work; a conditional model's posterior needs its labels too
    truth = None if names else disentanglement.ground_truth(dataset, inputs["x"], split, test_fraction)
    features = feature_model_lib.get(dataset) if feature_model == "auto" else None
    results = report(model, inputs, feature_extractor=features, feature_model_name=features.name if features else None,
                     **report_kwargs)
    results.update(model=str(model_path), dataset=dataset, split=split)
    factor_report = None
    if truth is not None:
        factor_report = results["disentanglement"] = disentanglement.report(
            model, truth, seed=report_kwargs.get("seed", 0), num_train=disentanglement_samples,
            num_test=max(1, disentanglement_samples // 2), num_points=disentanglement_points)
    out.mkdir(parents=True, exist_ok=True)
    plots.model_figures(model, inputs, out, kl_per_dim=results["kl_per_dim"], seed=report_kwargs.get("seed", 0),
                        dim_labels=factor_report["most_informative_factor"] if factor_report else None)
    if factor_report:
        plots.information_heatmap(
            factor_report["mutual_information"], factor_report["factor_names"], out / "mutual_information.png",
            title=f"Mutual information I(factor; z_d), nats, {dataset} ({split}): MIG {factor_report['mig']:.2f}, "
                  f"SAP {factor_report['sap']:.2f}, DCI disentanglement {factor_report['dci_disentanglement']:.2f}",
            decoder=plots.decoder_caption(model, plots.decoder_sigma(model, {k: v[:32] for k, v in inputs.items()})))
    files.write_json(out / "eval.json", results)
    return results
