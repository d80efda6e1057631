"""Whitening the latent space: the best Gaussian prior, folded into the model as an exact step.

Centring (`keras_vae.latent_centering`) moves the mean of the aggregate
posterior onto the prior's. Whitening goes on to its covariance. Fit the codes
of the data with the Gaussian N(m, C) of their aggregate posterior,

    m = E_x[mu(x)],   C = Cov_x[mu(x)] + E_x[diag(s(x)**2)],

and let z = m + L z', where C = L L^T (Cholesky). The decoder takes z' through
its first Dense layer, whose kernel and bias absorb the affine map, and the
encoder's head becomes a `WhitenedGaussian`: q(z'|x) = N(L^{-1}(mu - m),
L^{-1} diag(s**2) L^{-T}). The prior stays N(0, I) and reconstructions are
unchanged. The model is then the old one with the prior N(m, C), which is the
Gaussian prior with the highest mean ELBO over the data. The ELBO rises by
exactly KL(N(m, C) || N(0, I)) nats per image. Centring is the special case
C = I, which gains |m|**2 / 2.

A calibrated decoder spends its rate on tight posteriors, so the codes of
real images fill an anisotropic, correlated region that draws z ~ N(0, I)
often miss; sampling N(m, C) lands in it (`benchmarks/results/paper_table.md`).

Sampling and export do not change: prior samples are still decoder(z') with
z' ~ N(0, I). The posterior is no longer diagonal. `encode` returns its mean
and marginal standard deviations, `posterior_distribution` the exact
`tfd.MultivariateNormalTriL`, and `kl_per_dimension` an exact chain-rule split
of its KL.

Example:

>>> import numpy as np, keras_vae as kv
>>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
>>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=3)
>>> gain = whiten_latents(vae, x)
>>> means = np.asarray(vae.encode(x)[0])
>>> bool(np.allclose(means.mean(axis=0), 0.0, atol=1e-4)), type(vae.posterior).__name__
(True, 'WhitenedGaussian')
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import evaluation, latent_centering
from keras_vae.models.vae import VAE
from keras_vae.posteriors import DiagonalGaussian, WhitenedGaussian

tfd = tfp.distributions


HEADS = (DiagonalGaussian, WhitenedGaussian)  # the posterior heads `whiten_latents` folds into


def check_supported(model) -> keras.layers.Dense:
    """Raises unless `whiten_latents` can fold a Gaussian prior into `model`; returns its first decoder Dense.

    Raises:
        TypeError: If `model` is not a plain `VAE` with a `DiagonalGaussian` or
            `WhitenedGaussian` head.
        ValueError: If z does not feed exactly one Dense layer with a bias.
    """
    return latent_centering.check_supported(model, heads=HEADS)


def supports(model) -> bool:
    """Whether `whiten_latents` can fold a Gaussian prior into `model` (see `whiten_latents`)."""
    return latent_centering.supports(model, heads=HEADS)


def base_moments(model: VAE, data, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """The base head's means and scales of every image, each `(N, latent_dim)` float64.

    For a `DiagonalGaussian` head these are the posterior's; for a
    `WhitenedGaussian` head they are its base head's, before the affine map.
    """
    head = model.posterior.base if isinstance(model.posterior, WhitenedGaussian) else model.posterior
    means, scales = evaluation.posterior_moments(model, data, batch_size, head=head)
    return means.astype(np.float64), scales.astype(np.float64)


def aggregate_posterior_gaussian(means: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the aggregate posterior of diagonal Gaussians N(means_n, diag(scales_n**2)).

    Args:
        means: Posterior means `(N, latent_dim)`.
        scales: Posterior scales `(N, latent_dim)`.

    Returns:
        `(m, C)`: `m = mean_n means_n`, `C = Cov_n(means_n) + mean_n diag(scales_n**2)`
        (the covariance over the N images, not the unbiased one).

    Example:

    >>> m, c = aggregate_posterior_gaussian(np.array([[1.0], [-1.0]]), np.array([[0.5], [0.5]]))
    >>> m.tolist(), c.tolist()
    ([0.0], [[1.25]])
    """
    means, scales = np.asarray(means, np.float64), np.asarray(scales, np.float64)
    centred = means - means.mean(axis=0)
    covariance = centred.T @ centred / len(means) + np.diag(np.mean(scales**2, axis=0))
    return means.mean(axis=0), covariance


def _mvn(loc: np.ndarray, scale_tril: np.ndarray) -> tfd.MultivariateNormalTriL:
    return tfd.MultivariateNormalTriL(loc=tf.constant(loc, tf.float64), scale_tril=tf.constant(scale_tril, tf.float64))


def whiten_latents(model: VAE, data, batch_size: int = 500) -> float:
    """Folds the Gaussian fit N(m, C) of the aggregate posterior over `data` into `model` as its prior.

    An exact reparameterisation (see the module docstring). Reconstructions
    are unchanged, the prior stays N(0, I), and the mean ELBO over `data` rises
    by the returned gain. A `DiagonalGaussian` head is replaced by a
    `WhitenedGaussian` one that wraps it. A whitened model can be whitened
    again, which refits the prior (gain about 0 right after a whitening). The
    weights are changed in place. The optimizer state is kept, so training can
    go on afterwards.

    Args:
        model: A `VAE` with a `DiagonalGaussian` or `WhitenedGaussian`
            posterior whose decoder feeds z to one Dense layer (all of
            `keras_vae.networks`).
        data: The images to fit on, usually the training set: more images
            than latent dimensions (a few thousand is typical).
        batch_size: Images per encoder call. Defaults to 500.

    Returns:
        The ELBO gain in nats per image, KL(N(m, C) || old prior), where the
        old prior is N(0, I) for a model that was not whitened before.

    Raises:
        TypeError: For other model families or posterior heads.
        ValueError: If z does not feed exactly one Dense layer with a bias, if
            `data` has no more images than latent dimensions, or for bad
            images (shape, dtype, range, NaN).

    Example:

    >>> import numpy as np, keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=3)
    >>> whiten_latents(vae, np.zeros((8, 8, 8, 1), "float32")) >= 0.0
    True
    """
    dense = check_supported(model)
    means, scales = base_moments(model, data, batch_size)
    if len(means) <= model.latent_dim:
        raise ValueError(
            f"Whitening fits a {model.latent_dim}x{model.latent_dim} covariance, so it needs more images than "
            f"latent dimensions. Received {len(means)} images."
        )
    mean, covariance = aggregate_posterior_gaussian(means, scales)
    cholesky = np.linalg.cholesky(covariance)
    head = _whitened_head(model)
    old_shift = np.asarray(head.shift.numpy(), np.float64)
    old_whitening = np.asarray(head.whitening.numpy(), np.float64)
    old_prior = _mvn(old_shift, np.linalg.inv(old_whitening))  # the old prior over the base codes
    gain = float(tfd.kl_divergence(_mvn(mean, cholesky), old_prior).numpy())
    # The decoder read z_old = W_old (z_base - m_old); now z_base = m + L z_new.
    linear, offset = old_whitening @ cholesky, old_whitening @ (mean - old_shift)
    kernel = np.asarray(dense.kernel.numpy(), np.float64)
    dense.bias.assign((np.asarray(dense.bias.numpy(), np.float64) + offset @ kernel).astype(dense.bias.dtype))
    dense.kernel.assign((linear.T @ kernel).astype(dense.kernel.dtype))
    head.shift.assign(mean.astype(head.shift.dtype))
    head.whitening.assign(np.tril(np.linalg.inv(cholesky)).astype(head.whitening.dtype))
    return gain


def _whitened_head(model: VAE) -> WhitenedGaussian:
    """The model's `WhitenedGaussian` head, wrapping a `DiagonalGaussian` one in place if needed."""
    head = model.posterior
    if isinstance(head, WhitenedGaussian):
        return head
    assert isinstance(head, DiagonalGaussian)
    whitened = WhitenedGaussian(head, dtype=head.dtype_policy, name=f"whitened_{head.name}")
    whitened.build(model.encoder.output_shape)
    model.replace_sublayer("posterior", whitened)
    return whitened
