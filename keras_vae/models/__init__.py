"""VAE models, one file each."""

from keras_vae.models.conditional import ConditionalVAE, build_conditional_vae
from keras_vae.models.gumbel import GumbelSoftmaxVAE, build_gumbel_vae
from keras_vae.models.hierarchical import HierarchicalVAE, build_hierarchical_vae
from keras_vae.models.spatial import SpatialVAE, build_spatial_vae
from keras_vae.models.vae import VAE, build_vae
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
}
NAMES = tuple(BUILDERS)


def get(name: str):
    """Returns the builder of the model called `name` (one of `NAMES`).

    Example:

    >>> get("hierarchical").__name__
    'build_hierarchical_vae'
    """
    if name not in BUILDERS:
        raise ValueError(f"Unknown model {name!r}. Expected one of {NAMES}.")
    return BUILDERS[name]


__all__ = [
    "BUILDERS",
    "NAMES",
    "VAE",
    "VLAE",
    "VQVAE",
    "ConditionalVAE",
    "GumbelSoftmaxVAE",
    "HierarchicalVAE",
    "SpatialVAE",
    "build_conditional_vae",
    "build_gumbel_vae",
    "build_hierarchical_vae",
    "build_spatial_vae",
    "build_vae",
    "build_vlae",
    "build_vqvae",
    "get",
]
