"""VAE models, one file each."""

from keras_vae.models.conditional import ConditionalVAE, build_conditional_vae
from keras_vae.models.gumbel import GumbelSoftmaxVAE, build_gumbel_vae
from keras_vae.models.hierarchical import HierarchicalVAE, build_hierarchical_vae
from keras_vae.models.sequence import SequenceVAE, build_sequence_vae
from keras_vae.models.spatial import SpatialVAE, build_spatial_vae
from keras_vae.models.vae import VAE, build, build_vae, default_argument
from keras_vae.models.vlae import VLAE, build_vlae
from keras_vae.models.vqvae import VQVAE, build_vqvae

# `--model` names -> builders taking (input_shape, network, latent_dim, likelihood, sigma,
# beta, free_bits, seed); the conditional builder also needs `num_classes`.
BUILDERS = {
    "vae": build_vae,
    "hierarchical": build_hierarchical_vae,
    "vqvae": build_vqvae,
    "gumbel": build_gumbel_vae,
    "conditional": build_conditional_vae,
    "spatial": build_spatial_vae,
    "sequence": build_sequence_vae,
}
NAMES = tuple(BUILDERS)
# `--model` names -> the family each builder builds (its constructor holds the defaults, e.g. of beta).
FAMILIES = {
    "vae": VAE,
    "hierarchical": HierarchicalVAE,
    "vqvae": VQVAE,
    "gumbel": GumbelSoftmaxVAE,
    "conditional": ConditionalVAE,
    "spatial": SpatialVAE,
    "sequence": SequenceVAE,
}


def get(name: str):
    """Returns the builder of the model called `name` (one of `NAMES`).

    Example:

    >>> get("hierarchical").__name__
    'build_hierarchical_vae'
    """
    if name not in BUILDERS:
        raise ValueError(f"Unknown model {name!r}. Expected one of {NAMES}.")
    return BUILDERS[name]


def default_beta(name: str) -> float:
    """The `beta` default of the model called `name`: 1e-6 for `"spatial"`, 1.0 for the others.

    Example:

    >>> default_beta("spatial"), default_beta("vae")
    (1e-06, 1.0)
    """
    beta = default_argument(FAMILIES.get(name, VAE), "beta")
    return 1.0 if beta is None else float(beta)


__all__ = [
    "BUILDERS",
    "FAMILIES",
    "NAMES",
    "VAE",
    "build",
    "default_beta",
    "VLAE",
    "VQVAE",
    "ConditionalVAE",
    "GumbelSoftmaxVAE",
    "HierarchicalVAE",
    "SequenceVAE",
    "SpatialVAE",
    "build_conditional_vae",
    "build_gumbel_vae",
    "build_hierarchical_vae",
    "build_sequence_vae",
    "build_spatial_vae",
    "build_vae",
    "build_vlae",
    "build_vqvae",
    "get",
]
