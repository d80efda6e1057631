"""VAE models, one file each."""

from keras_vae.models.vae import VAE, build_vae

__all__ = ["VAE", "build_vae"]
