"""The settings of a training run, `RunConfig`: each field is a flag of `python -m keras_vae train`.

This module imports neither TensorFlow nor Keras, so `train --help` is fast.
To add a `train` flag, add one field here with `setting(default, help)` and
read it as `config.NAME` in `keras_vae.experiment.train`.

Example:

>>> config = RunConfig(likelihood="learned", epochs=2)
>>> config.epochs, config.network
(2, 'conv')
>>> field_help("epochs")
'Passes over the train split.'
"""

from __future__ import annotations

import dataclasses
from typing import Any

# The names the flags accept. tests/test_run_config.py checks each against the library's own list
# (`keras_vae.models.NAMES`, `likelihoods.NAMES`, `networks.NAMES`, `distribute.STRATEGIES`, `.PRECISIONS`),
# which need TensorFlow to import.
MODEL_NAMES = ("vae", "hierarchical", "vqvae", "gumbel", "conditional", "spatial", "sequence")
LIKELIHOOD_NAMES = ("bernoulli", "gaussian", "learned", "optimal", "optimal_per_image", "optimal_per_channel",
                    "per_pixel", "categorical", "logistic_mixture")
NETWORK_NAMES = ("conv", "beta_vae_conv", "mlp", "resnet", "pixelcnn")
STRATEGIES = ("none", "mirrored", "multiworker")
PRECISIONS = ("none", "mixed_float16", "mixed_bfloat16")
LATENT_ALIGNMENTS = ("whiten", "center", "none")
PRIOR_NAMES = ("standard", "mixture", "vamp")  # keras_vae.priors.NAMES
POSTERIOR_NAMES = ("diagonal", "iaf")
SAMPLER_NAMES = ("none", "gaussian", "gmm", "two_stage")  # keras_vae.samplers.NAMES


def setting(default: Any, help: str, *, choices: tuple[str, ...] | None = None,  # noqa: A002 - absl's name
            lower_bound: float | None = None) -> Any:
    """A `RunConfig` field that is also a `train` flag.

    Args:
        default: The field's and the flag's default.
        help: One sentence for `--help`.
        choices: The values an enum flag accepts. Defaults to None (any).
        lower_bound: The smallest value a number accepts. Defaults to None.

    Returns:
        A `dataclasses.field` whose metadata holds the flag's help and checks.

    Example:

    >>> setting(1, "Size of z.", lower_bound=1).metadata["help"]
    'Size of z.'
    """
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "lower_bound": lower_bound})


@dataclasses.dataclass
class RunConfig:
    """Everything that defines a training run: one field per `train` flag (the help is in each field).

    `keras_vae.experiment.train(config)` runs it. A field's help is
    `field_help(name)` and `python -m keras_vae train --help`.
    """

    dataset: str = setting("mnist", "'mnist' (embedded), 'sprites' (dSprites-style, with factors; --image_size), "
                           "'tfds:NAME', a .npz file or an image folder.")
    model: str = setting("vae", "Model family (conditional uses the labels).", choices=MODEL_NAMES)
    likelihood: str = setting("optimal", "Decoder likelihood.", choices=LIKELIHOOD_NAMES)
    sigma: float = setting(1.0, "Fixed sigma for --likelihood=gaussian.")
    network: str = setting("conv", "Encoder/decoder network ('beta_vae_conv': disentanglement_lib's); 'pixelcnn' "
                           "trains a VLAE (conv encoder, PixelCNN decoder).", choices=NETWORK_NAMES)
    latent_dim: int = setting(20, "Size of z.", lower_bound=1)
    beta: float = setting(1.0, "KL weight (BS-VAE: optimal_per_image with beta). Unset on the command line: the "
                          "model's own default (1e-6 for --model=spatial, 1.0 for the others).", lower_bound=0.0)
    free_bits: float = setting(0.0, "Per-dimension KL floor in nats.", lower_bound=0.0)
    kl_warmup_steps: int = setting(0, "Linear KL warm-up steps from 0 to --beta (0: none).", lower_bound=0)
    batch_size: int = setting(128, "Images per step.", lower_bound=1)
    epochs: int = setting(10, "Passes over the train split.", lower_bound=1)
    learning_rate: float = setting(1e-3, "Adam learning rate.", lower_bound=0.0)
    seed: int = setting(0, "Seed for weights, shuffling and sampling.")
    test_fraction: float = setting(0.1, "Test share for datasets without a test split.")
    out: str = setting("runs/demo", "Output folder.")
    overwrite: bool = setting(False, "Replace a model already saved in --out (and discard an interrupted run's "
                              "checkpoint made with other flags).")
    distribute: str = setting("none", "tf.distribute strategy; 'multiworker' reads TF_CONFIG (run the same command "
                              "on every worker).", choices=STRATEGIES)
    mixed_precision: str = setting("none", "Networks compute in this precision; likelihood, KL and sigma stay "
                                   "float32.", choices=PRECISIONS)
    jit_compile: bool | None = setting(None, "XLA-compile the train step (--nojit_compile: off; unset: Keras "
                                       "'auto', off on CPU).")
    receptive_field: int = setting(5, "--network=pixelcnn: side of the decoder's view (odd, 3..image size).",
                                   lower_bound=3)
    align_latents: str = setting("whiten", "After training, fit the prior to the codes of the train split by an "
                                 "exact map of z: 'whiten' (mean and covariance), 'center' (mean only) or 'none'. "
                                 "Plain VAEs only.", choices=LATENT_ALIGNMENTS)
    data_dependent_start: bool = setting(True, "Start a learned or per-pixel sigma at the RMSE of the first batch's "
                                         "untrained reconstruction (--nodata_dependent_start: the paper's start, "
                                         "sigma = 1).")
    refit_sigma: bool = setting(True, "After training, refit a shared sigma (optimal or learned) to the RMSE of the "
                                "reconstructions at the final weights: of the train split, or of --refit_split.")
    refit_split: float = setting(0.0, "Fraction of the train split (a seeded random subset) held out of training "
                                 "and used only to refit the served sigma, so that it also sees the error of "
                                 "unseen images (0: refit on the train split).", lower_bound=0.0)
    context_frames: int = setting(5, "Video datasets: frames the model conditions on; it predicts the rest of each "
                                  "video (SVG: 5 + 10).", lower_bound=1)
    num_frames: int = setting(15, "--dataset=moving_mnist: frames per video.", lower_bound=2)
    frame_size: int = setting(32, "--dataset=moving_mnist: frame height and width (a multiple of 8; SVG: 64).",
                              lower_bound=8)
    num_digits: int = setting(2, "--dataset=moving_mnist: digits per video.", lower_bound=1)
    image_size: int = setting(64, "--dataset=sprites: image height and width of the rendered sprites (dSprites: 64).",
                              lower_bound=8)
    num_sequences: int = setting(0, "--dataset=moving_mnist: train videos to generate (the test split gets a ninth, "
                                 "at least 1); 0: 9,000 and 1,000.", lower_bound=0)
    prior: str = setting("standard", "p(z) of --model=vae: N(0, I), a learned Gaussian mixture or a VampPrior (the "
                         "mixture of the posteriors of learned pseudo-inputs, started at train images).",
                         choices=PRIOR_NAMES)
    prior_components: int = setting(10, "--prior=mixture: components.", lower_bound=1)
    pseudo_inputs: int = setting(500, "--prior=vamp: pseudo-inputs (at most the train images).", lower_bound=1)
    posterior: str = setting("diagonal", "q(z|x) of --model=vae: a diagonal Gaussian, or an inverse autoregressive "
                             "flow on one.", choices=POSTERIOR_NAMES)
    num_flows: int = setting(2, "--posterior=iaf: autoregressive flows.", lower_bound=1)
    flow_hidden_units: int = setting(320, "--posterior=iaf: width of each flow's network and of its context.",
                                     lower_bound=1)
    sampler: str = setting("none", "After training, what --model=vae samples z from: the prior ('none'), the Gaussian "
                           "of the train codes ('gaussian': the --align_latents=whiten fold where it applies, else a "
                           "one-component 'gmm'), a Gaussian mixture of them ('gmm') or a second VAE on them "
                           "('two_stage').", choices=SAMPLER_NAMES)
    sampler_components: int = setting(10, "--sampler=gmm: mixture components.", lower_bound=1)
    two_stage_units: int = setting(512, "--sampler=two_stage: width of the second VAE's layers.", lower_bound=1)
    two_stage_epochs: int = setting(100, "--sampler=two_stage: passes of the second VAE over the train codes.",
                                    lower_bound=1)


def field_help(name: str) -> str:
    """The help of the `RunConfig` field (and `train` flag) `name`."""
    return RunConfig.__dataclass_fields__[name].metadata["help"]


# The `RunConfig` fields a sweep sets for each point itself (not flags of `python -m keras_vae sweep`).
SWEPT_FIELDS = ("likelihood", "beta", "sigma", "out", "overwrite")


@dataclasses.dataclass
class SweepConfig:
    """The flags of `python -m keras_vae sweep` besides the `RunConfig` fields every point shares.

    Example:

    >>> SweepConfig().betas
    '0.01,0.1,1,10'
    """

    betas: str = setting("0.01,0.1,1,10", "Comma-separated KL weights, one beta-VAE point each (Gaussian decoder, "
                         "sigma = 1); '' for none.")
    sigma_modes: str = setting("learned,optimal,optimal_per_image", "Comma-separated calibrated likelihoods, one "
                               "point each at beta = 1; '' for none.")
    out: str = setting("runs/sweep", "Sweep folder: each point trains in OUT/<label>/ (e.g. OUT/beta_0.1); the table "
                       "(rate_distortion.md, .json) and plot (rate_distortion.png) go in OUT.")
    overwrite: bool = setting(False, "Retrain points whose run in --out (finished or interrupted) has other settings. "
                              "A finished point with the same settings is always kept; an interrupted one resumes.")
