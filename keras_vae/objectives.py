"""The VAE objective as one small pure function: the ELBO and the training loss."""

from __future__ import annotations

from keras import ops


def elbo_terms(log_likelihood, kl_per_dim, beta=1.0, free_bits: float = 0.0) -> dict:
    """The ELBO and the beta / free-bits training loss, averaged over the batch.

    loss = rec + beta * sum_d max(mean_batch KL_d, free_bits)
    elbo = -rec - sum_d mean_batch KL_d          (always at beta = 1)

    where `rec = -mean_batch log p(x|z)`. Free bits (Kingma et al. 2016) floor
    each latent dimension's batch-averaged KL at `free_bits` nats in the
    loss, so that the optimiser gains nothing by pushing a dimension below it;
    the reported `kl` and `elbo` never include the floor.

    Args:
        log_likelihood: log p(x|z) per image, `(batch,)`, summed over pixels.
        kl_per_dim: KL(q(z|x) || p(z)) per image and latent dimension,
            `(batch, latent_dim)`.
        beta: Weight of the KL term in the loss. Defaults to 1.0.
        free_bits: Per-dimension KL floor in nats. Defaults to 0.0.

    Returns:
        A dict of scalars: `loss`, `elbo`, `rec`, `kl` (nats per image).

    Example:

    >>> import numpy as np
    >>> terms = elbo_terms(np.array([-10.0, -20.0]), np.array([[1.0, 0.0], [3.0, 0.0]]),
    ...                    beta=2.0, free_bits=0.5)
    >>> {k: float(v) for k, v in terms.items()}
    {'loss': 20.0, 'elbo': -17.0, 'rec': 15.0, 'kl': 2.0}
    """
    rec = -ops.mean(log_likelihood)
    kl_by_dim = ops.mean(kl_per_dim, axis=0)
    kl = ops.sum(kl_by_dim)
    penalised_kl = ops.sum(ops.maximum(kl_by_dim, free_bits)) if free_bits > 0 else kl
    return {
        "loss": rec + beta * penalised_kl,
        "elbo": -rec - kl,
        "rec": rec,
        "kl": kl,
    }
