"""`python -m keras_vae train`: train a VAE and write model.keras, metrics.json and PNGs into --out.

Example:

    python -m keras_vae train --dataset=mnist --likelihood=optimal --epochs=10 --out=runs/demo
"""

# The flags are the fields of `keras_vae.run_config.RunConfig`: add a flag there (one `setting(...)` line)
# and read it as `config.NAME` in `keras_vae.experiment.train`.

from __future__ import annotations

import sys

from absl import flags

from keras_vae import commands, run_config

commands.define_config_flags(run_config.RunConfig, __name__)

FLAGS = flags.FLAGS


def model_default_beta(model: str) -> float:
    """The `beta` default of the model's builder: 1e-6 for `"spatial"`, 1.0 for the others.

    Example:

    >>> model_default_beta("spatial"), model_default_beta("vae")
    (1e-06, 1.0)
    """
    from keras_vae import models

    return models.default_beta(model)


def config_from_flags() -> run_config.RunConfig:
    """The `RunConfig` of the parsed flags (an unset `--beta` is the model's own default)."""
    values = {field: FLAGS[field].value for field in run_config.RunConfig.__dataclass_fields__}
    if not FLAGS["beta"].present:  # --beta not given: the model's default, not the VAE's 1.0
        values["beta"] = model_default_beta(values["model"])
    return run_config.RunConfig(**values)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {' '.join(argv[1:])}")
    from keras_vae import experiment

    config = config_from_flags()
    _, metrics = experiment.train(config, verbose=1 if sys.stdout.isatty() else 2)  # 2: one plain line per epoch
    print(
        f"test ELBO {metrics['test_elbo']:.1f} nats/image, test MSE {metrics['test_mse']:.4f}, "
        f"sigma {metrics['sigma']:.4f}, {metrics['images_per_second']:.0f} images/s -> {config.out}"
    )
