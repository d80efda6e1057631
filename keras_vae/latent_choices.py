"""The prior, posterior and post-hoc sampler of a `train` run: `--prior`, `--posterior`, `--sampler` (issue 17).

`keras_vae.experiment.train` calls, in order:

1. `check_config(config)` before any data is read: the choices apply to
   `--model=vae` only (one latent vector; with `--network=pixelcnn`, the
   VLAE), a flow needs a continuous latent, and the sizes are positive.
2. `model_parts(config, x_train)`: the `prior=` and `posterior=` arguments of
   the builder (a `keras_vae.priors` / `keras_vae.flows` layer, or none).
3. `make_sampler(config, model, x_train)` once the model is built, still
   before training: the sampler to fit after training, or None, after
   checking that the train split has more codes than it has parameters.
4. `fit_sampler(model, sampler, x_train, config)` after `fit`, the sigma
   refit and `--align_latents`, before the model is evaluated and saved:
   the sampler is saved with the model, so `sample`, `evaluate`'s prior
   samples and the exported `sample` signature draw z from it.
5. `describe(config, model, x_test)`: what `metrics.json` records.

`--sampler=gaussian` is today's whitening where it applies (a plain VAE
with the N(0, I) prior and a diagonal posterior): the exact fold of
`keras_vae.latent_whitening`, which samples the Gaussian of the codes and
also raises the ELBO by the KL it removes. Nothing else is fitted then, so
`--sampler=gaussian` is `--sampler=none` with `--align_latents=whiten` (the
default) there, and refuses another `--align_latents`. Where the fold does
not apply (a learned prior, the IAF posterior, the VLAE) it is a
one-component `GaussianMixtureSampler`, the same Gaussian fit of the codes
as a sampler. `--sampler=gmm` and `two_stage` are fitted on the codes of the
model after `--align_latents` (an exact change of the prior, which keeps its
ELBO gain; a full-covariance mixture fits the same draws whitened or not).

Example:

>>> from keras_vae.run_config import RunConfig
>>> check_config(RunConfig(prior="mixture", prior_components=3))
>>> check_config(RunConfig(model="gumbel", posterior="iaf"))
Traceback (most recent call last):
...
ValueError: --posterior=iaf is a flow on a continuous latent, but --model=gumbel's latent is discrete. Use --model=vae.
"""

from __future__ import annotations

import numpy as np

from keras_vae import flows, latent_whitening, latents, models, priors, samplers
from keras_vae.checks import positive_int
from keras_vae.models.vae import takes_argument

SIZES = ("prior_components", "pseudo_inputs", "num_flows", "flow_hidden_units", "sampler_components",
         "two_stage_units", "two_stage_epochs")


DEFAULTS = {"prior": "standard", "posterior": "diagonal", "sampler": "none"}


def chosen(config) -> list[str]:
    """The flags of `config` that are not their defaults, as `--name=value` (e.g. `['--prior=vamp']`)."""
    return [f"--{name}={getattr(config, name)}" for name, default in DEFAULTS.items()
            if getattr(config, name) != default]


def check_config(config) -> None:
    """Refuses choices that do not apply to the run, before any data is read.

    The family says what it takes (`VAE.latent_choices`, `VAE.latent_is_discrete`).

    Raises:
        ValueError: For a size below 1, an unknown name, a flow on a discrete
            latent, or a choice the `--model` family does not take.
    """
    for name in SIZES:
        positive_int(name, getattr(config, name))
    if config.prior not in priors.NAMES:
        raise ValueError(f"Expected --prior in {priors.NAMES}. Received: prior={config.prior!r}")
    if config.posterior not in ("diagonal", "iaf"):
        raise ValueError(f"Expected --posterior in ('diagonal', 'iaf'). Received: posterior={config.posterior!r}")
    if config.sampler not in samplers.NAMES:
        raise ValueError(f"Expected --sampler in {samplers.NAMES}. Received: sampler={config.sampler!r}")
    family = models.FAMILIES.get(config.model)
    if family is None:
        return  # `models.get` names the unknown model
    takers = [name for name, other in models.FAMILIES.items() if other.latent_choices]
    if config.posterior == "iaf" and family.latent_is_discrete:
        raise ValueError(f"--posterior=iaf is a flow on a continuous latent, but --model={config.model}'s latent is "
                         f"discrete. Use --model={' or '.join(takers)}.")
    used = [f"--{name}={getattr(config, name)}" for name, default in DEFAULTS.items()
            if getattr(config, name) != default and name not in family.latent_choices]
    if used:
        raise ValueError(f"{' '.join(used)} applies to --model={' or '.join(takers)} (one latent vector) only; "
                         f"--model={config.model} has its own latent and prior. Drop it or use "
                         f"--model={' or '.join(takers)}.")


def model_parts(config, x_train: np.ndarray) -> dict:
    """The builder's `prior=` and `posterior=` arguments of the run (none for the defaults).

    A VampPrior starts its pseudo-inputs at `--pseudo_inputs` train images
    drawn without replacement (seeded).

    Raises:
        ValueError: If a VampPrior asks for more pseudo-inputs than train images.
    """
    parts = {}
    latent_dim, image_shape = config.latent_dim, tuple(x_train.shape[1:])
    if config.prior == "mixture":
        parts["prior"] = priors.MixturePrior(latent_dim, config.prior_components, seed=config.seed)
    elif config.prior == "vamp":
        if config.pseudo_inputs > len(x_train):
            raise ValueError(f"--prior=vamp starts its {config.pseudo_inputs} pseudo-inputs at train images, but "
                             f"--dataset={config.dataset} has {len(x_train)}. Lower --pseudo_inputs.")
        start = x_train[np.random.default_rng(config.seed).choice(len(x_train), config.pseudo_inputs, replace=False)]
        parts["prior"] = priors.VampPrior(image_shape, config.pseudo_inputs, pseudo_inputs=start, seed=config.seed)
    if config.posterior == "iaf":
        parts["posterior"] = flows.IAFPosterior(latent_dim, config.num_flows, config.flow_hidden_units)
    return parts


def whitening_is_the_sampler(config, model) -> bool:
    """Whether `--sampler=gaussian` is the whitening fold for `model` (else a one-component mixture)."""
    return config.sampler == "gaussian" and latent_whitening.supports(model)


def make_sampler(config, model, x_train: np.ndarray):
    """The sampler `fit_sampler` fits after training, or None (`none`, or `gaussian` as the whitening fold).

    Raises:
        ValueError: If `--sampler=gaussian` is the whitening fold but
            `--align_latents` is not `whiten`, or the train split has no more
            images (one code each) than the sampler has parameters.
    """
    if config.sampler == "none":
        return None
    if whitening_is_the_sampler(config, model):
        if config.align_latents != "whiten":
            raise ValueError(f"--sampler=gaussian is the whitening fold for this model (--align_latents=whiten), "
                             f"but --align_latents={config.align_latents}. Drop one of the two flags.")
        return None
    if config.sampler == "two_stage":
        sampler = samplers.TwoStageSampler(config.latent_dim, hidden_units=config.two_stage_units,
                                           epochs=config.two_stage_epochs, seed=config.seed)
    else:
        components = 1 if config.sampler == "gaussian" else config.sampler_components
        sampler = samplers.GaussianMixtureSampler(config.latent_dim, components, seed=config.seed)
    sampler.check(model.latent_shape, model.image_shape)
    needed = sampler.num_parameters()
    if len(x_train) <= needed:
        raise ValueError(f"--sampler={config.sampler} fits {needed} parameters to one code per train image, so it "
                         f"needs more than {needed} train images; --dataset={config.dataset} has {len(x_train)}. "
                         "Use fewer --sampler_components, a smaller --latent_dim or more images.")
    return sampler


def fit_sampler(model, sampler, x_train: np.ndarray, config) -> None:
    """Fits `sampler` (if any) on one posterior draw per train image and makes it the model's, in place."""
    if sampler is not None:
        samplers.fit(model, sampler, x_train, seed=config.seed)


def describe(config, model, x_test: np.ndarray, labels=()) -> dict:
    """What `metrics.json` records: `prior` (the prior layer's class, `StandardNormal`, or for a family
    with its own prior the class of its distribution), `posterior`, `sampler` (the fitted class,
    `whitening` or `none`) and `kl_estimator` (`analytic` or `monte_carlo`, at two test images)."""
    inputs = model.as_inputs(x_test[:2], *(y[:2] for y in labels))
    p = model.prior_distribution(inputs)
    estimator = latents.kl_estimator(model.posterior_distribution(inputs), p)
    if getattr(model, "sampler", None) is not None:
        sampler = type(model.sampler).__name__
    elif config.sampler == "gaussian":  # the whitening fold (a fallback mixture is the model's sampler)
        sampler = "whitening"
    else:
        sampler = "none"
    if takes_argument(type(model), "prior"):  # a prior layer, or N(0, I) without one
        prior = "StandardNormal" if model.prior is None else type(model.prior).__name__
    else:  # a family with its own prior: the distribution it builds
        prior = type(p).__name__
    return {
        "prior": prior,
        "posterior": type(model.posterior).__name__ if hasattr(model, "posterior") else type(model).__name__,
        "sampler": sampler,
        "kl_estimator": estimator,
    }
