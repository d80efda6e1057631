"""keras_vae: variational autoencoders with calibrated decoders, on Keras 3 and TFP.

Example:

>>> import keras_vae as kv
>>> vae = kv.build_vae((28, 28, 1), network="conv", likelihood="optimal")
>>> vae.likelihood.sigma
'optimal'
"""

import os as _os
import sys as _sys

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# `python -m keras_vae COMMAND` imports this package (while argv[0] is "-m") before its __main__ parses the
# flags; TensorFlow waits until then, so `--help` is fast and the logs can be quieted first. __main__ then
# imports the library with `importlib.reload(keras_vae)`.
_COMMAND_LINE = _sys.argv[:1] == ["-m"] and "-m" in _sys.orig_argv and \
    _sys.orig_argv[_sys.orig_argv.index("-m") + 1 :][:1] == ["keras_vae"]

if not _COMMAND_LINE:
    from keras_vae import distribute  # noqa: E402
    from keras_vae import annealing, conv_transpose, data, latents, layers, likelihoods, networks, noise, objectives  # noqa: E402
    from keras_vae import posteriors  # noqa: E402
    from keras_vae.layers import OptimalSigma, SoftClip  # noqa: E402
    from keras_vae.conv_transpose import NarrowConv2DTranspose  # noqa: E402
    from keras_vae.likelihoods import Bernoulli, Gaussian  # noqa: E402
    from keras_vae.models import VAE, build_vae  # noqa: E402
    from keras_vae.models import VQVAE, ConditionalVAE, GumbelSoftmaxVAE, HierarchicalVAE, SpatialVAE  # noqa: E402
    from keras_vae.posteriors import DiagonalGaussian, WhitenedGaussian  # noqa: E402
    from keras_vae import flows, priors, samplers  # noqa: E402
    from keras_vae.flows import IAFPosterior  # noqa: E402
    from keras_vae.priors import MixturePrior, StandardNormal, VampPrior  # noqa: E402
    from keras_vae.samplers import GaussianMixtureSampler, TwoStageSampler  # noqa: E402
    from keras_vae import pixelcnn  # noqa: E402
    from keras_vae.likelihoods import Categorical256, DiscretizedLogisticMixture  # noqa: E402
    from keras_vae.models import VLAE, build_vlae  # noqa: E402
    from keras_vae import video  # noqa: E402
    from keras_vae.models import SequenceVAE, build_sequence_vae  # noqa: E402
    from keras_vae import export  # noqa: E402  (after models: it imports them)
    from keras_vae import evaluation, feature_model, latent_centering, latent_whitening  # noqa: E402
    from keras_vae import calibration, callbacks  # noqa: E402  (after latent_centering and latent_whitening: it imports them)
    from keras_vae import disentanglement, sprites  # noqa: E402
    from keras_vae import experiment, plots, sweep  # noqa: E402  (the Python pipeline: after everything they import)

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "VLAE",
    "VQVAE",
    "ConditionalVAE",
    "GumbelSoftmaxVAE",
    "HierarchicalVAE",
    "SequenceVAE",
    "NarrowConv2DTranspose",
    "SpatialVAE",
    "Bernoulli",
    "Categorical256",
    "DiscretizedLogisticMixture",
    "DiagonalGaussian",
    "GaussianMixtureSampler",
    "IAFPosterior",
    "MixturePrior",
    "StandardNormal",
    "TwoStageSampler",
    "VampPrior",
    "Gaussian",
    "OptimalSigma",
    "SoftClip",
    "WhitenedGaussian",
    "annealing",
    "build_sequence_vae",
    "build_vae",
    "build_vlae",
    "calibration",
    "callbacks",
    "conv_transpose",
    "data",
    "disentanglement",
    "distribute",
    "evaluation",
    "experiment",
    "export",
    "feature_model",
    "flows",
    "latent_centering",
    "latent_whitening",
    "latents",
    "layers",
    "likelihoods",
    "networks",
    "noise",
    "objectives",
    "pixelcnn",
    "plots",
    "posteriors",
    "priors",
    "samplers",
    "sprites",
    "sweep",
    "video",
]
