"""Centring the latent space: an exact, closed-form ELBO step that moves the codes onto the prior.

A VAE's loss does not change if every code is shifted by the same vector m
and the decoder undoes the shift: q(z|x) -> q(z - m|x), p(x|z) -> p(x|z + m).
Only the KL to the prior N(0, I) changes. Averaged over the data it changes by

    E_x KL(N(mu(x) - m, s(x)) || N(0, I)) - E_x KL(N(mu(x), s(x)) || N(0, I))
        = -m . E_x[mu(x)] + |m|**2 / 2,

which is smallest at m = E_x[mu(x)], the mean of the aggregate posterior, where
the ELBO rises by exactly |m|**2 / 2 nats per image. `center_latents` computes
that m and folds the shift into the weights: it subtracts m from the bias of the
posterior head's mean and adds `m @ kernel` to the bias of the decoder's first
Dense layer. The model keeps its architecture and its N(0, I) prior, and every
reconstruction is unchanged.

With a calibrated decoder the effective KL weight is small (beta = 2 sigma**2),
so little pulls the aggregate posterior's mean to 0 during training (its effect
on prior samples: `benchmarks/results/paper_table.md`).
`keras_vae.latent_whitening` fits the covariance too.

Example:

>>> import keras, numpy as np, keras_vae as kv
>>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
>>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=3)
>>> shift = center_latents(vae, x)
>>> bool(np.allclose(np.asarray(vae.encode(x)[0]).mean(axis=0), 0.0, atol=1e-5))
True
"""

from __future__ import annotations

import keras
import numpy as np

from keras_vae import evaluation
from keras_vae.models.vae import VAE
from keras_vae.posteriors import DiagonalGaussian


def _first_dense(decoder: keras.Model) -> keras.layers.Dense:
    """The decoder's only consumer of z, which must be a Dense layer with a bias."""
    if len(decoder.inputs) != 1:
        raise ValueError(f"Expected a decoder with one input (z). Received {len(decoder.inputs)} inputs.")
    z = decoder.inputs[0]
    consumers = [
        layer for layer in decoder.layers
        if not isinstance(layer, keras.layers.InputLayer) and any(t is z for t in keras.tree.flatten(layer.input))
    ]
    if len(consumers) != 1 or not isinstance(consumers[0], keras.layers.Dense):
        names = [f"{layer.name} ({type(layer).__name__})" for layer in consumers]
        raise ValueError(
            "Centring folds the shift into the decoder's first layer, so z must feed exactly one Dense layer. "
            f"Received z feeding {names or 'no layer'} in decoder {decoder.name!r}."
        )
    if not consumers[0].use_bias:
        raise ValueError(f"The decoder's first Dense layer {consumers[0].name!r} has no bias to fold the shift into.")
    return consumers[0]


def check_supported(model, heads: tuple[type, ...] = (DiagonalGaussian,)) -> keras.layers.Dense:
    """Raises unless `center_latents` can fold a shift into `model`; returns the decoder's first Dense layer.

    Args:
        model: The model to check.
        heads: The posterior head classes the caller can fold into.
            Defaults to `(DiagonalGaussian,)`.

    Raises:
        TypeError: If `model` is not a plain `VAE` with one of `heads`.
        ValueError: If z does not feed exactly one Dense layer with a bias.
    """
    if not isinstance(model, VAE) or not uses_plain_latent(model) or model.prior is not None:
        raise TypeError(
            "Expected a plain keras_vae.VAE, with the plain latent: q(z|x) from the head on the encoder features, "
            "p(z) = N(0, I), and a decoder of z alone (the base class's hooks; not a conditional, Gumbel-softmax, "
            f"hierarchical, spatial, VQ-VAE or VLAE model). Received: {type(model).__name__}"
        )
    if not isinstance(model.posterior, heads):
        expected = " or ".join(head.__name__ for head in heads)
        raise TypeError(f"Expected a {expected} posterior head. Received: {type(model.posterior).__name__}")
    return _first_dense(model.decoder)


_PLAIN_HOOKS = ("posterior_distribution", "prior_distribution", "reparameterize", "decoder_latent", "decoder_params")


def uses_plain_latent(model) -> bool:
    """Whether `model` keeps the base `VAE`'s latent hooks (so a map of z can be folded into it)."""
    return all(getattr(type(model), hook) is getattr(VAE, hook) for hook in _PLAIN_HOOKS)


def supports(model, heads: tuple[type, ...] = (DiagonalGaussian,)) -> bool:
    """Whether `center_latents` can fold a shift into `model` (see `center_latents` and `check_supported`)."""
    try:
        check_supported(model, heads)
    except (TypeError, ValueError):
        return False
    return True


def aggregate_posterior_mean(model: VAE, data, batch_size: int = 500) -> np.ndarray:
    """E_x[mu(x)], the mean of the posterior means over `data`: `(latent_dim,)` float64.

    Args:
        model: A `VAE`.
        data: Images `(N, H, W, C)` in [0, 1] or a `tf.data.Dataset` of them.
        batch_size: Images per encoder call. Defaults to 500.

    Returns:
        The mean as a float64 NumPy vector.
    """
    means, _ = evaluation.posterior_moments(model, data, batch_size)
    return np.asarray(means, np.float64).mean(axis=0)


def center_latents(model: VAE, data, batch_size: int = 500) -> np.ndarray:
    """Shifts the latent space of `model` so that its posterior means average to 0 over `data`.

    An exact reparameterisation (see the module docstring): reconstructions
    are unchanged and the mean ELBO over `data` rises by `|m|**2 / 2` nats.
    Prior samples change: z ~ N(0, I) now decodes as z + m did before.
    The weights are changed in place; optimizer state is kept, so training can
    go on afterwards.

    Args:
        model: A `VAE` with a `DiagonalGaussian` posterior whose decoder feeds z
            to one Dense layer (all of `keras_vae.networks`).
        data: The images to centre on, usually the training set.
        batch_size: Images per encoder call. Defaults to 500.

    Returns:
        The shift m, `(latent_dim,)` float64 (the old aggregate posterior mean).

    Raises:
        TypeError: For other model families or posterior heads.
        ValueError: If z does not feed exactly one Dense layer with a bias, or
            for bad images (shape, dtype, range, NaN).

    Example:

    >>> import numpy as np, keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=3)
    >>> center_latents(vae, np.zeros((4, 8, 8, 1), "float32")).shape
    (3,)
    """
    dense = check_supported(model)
    shift = aggregate_posterior_mean(model, data, batch_size)
    head = model.posterior.dense
    head_bias = np.asarray(head.bias.numpy(), np.float64)
    head_bias[: model.latent_dim] -= shift
    dense_bias = np.asarray(dense.bias.numpy(), np.float64) + shift @ np.asarray(dense.kernel.numpy(), np.float64)
    head.bias.assign(head_bias.astype(head.bias.dtype))
    dense.bias.assign(dense_bias.astype(dense.bias.dtype))
    return shift
