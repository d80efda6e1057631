"""`python -m keras_vae sweep`: train one run per beta (and sigma mode), write the rate-distortion plot and table.

Example:

    python -m keras_vae sweep --betas=0.5,1,2 --sigma_modes=optimal --dataset=mnist --epochs=10 --out=runs/rd

trains `runs/rd/beta_0.5`, `beta_1`, `beta_2` (Gaussian decoder, sigma = 1)
and `optimal` (beta = 1), each as `train` would, and writes
`rate_distortion.png` (rate vs distortion, every point labelled),
`rate_distortion.md` and `rate_distortion.json` into `--out`. A rerun keeps
the points that finished, resumes an interrupted one and trains the rest.
"""

# The flags: the sweep's own (`keras_vae.run_config.SweepConfig`) and the `RunConfig` fields every point shares
# (all but those the sweep sets per point, `run_config.SWEPT_FIELDS`).

from __future__ import annotations

import sys

from absl import flags

from keras_vae import commands, run_config

commands.define_config_flags(run_config.SweepConfig, __name__)
commands.define_config_flags(run_config.RunConfig, __name__, exclude=run_config.SWEPT_FIELDS)

FLAGS = flags.FLAGS


def run_settings_from_flags() -> dict:
    """The `RunConfig` fields the points share that the command line sets (`dataset` aside; the rest: defaults)."""
    return {field: FLAGS[field].value for field in run_config.RunConfig.__dataclass_fields__
            if field not in (*run_config.SWEPT_FIELDS, "dataset") and FLAGS[field].present}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {' '.join(argv[1:])}")
    from keras_vae import sweep

    betas = sweep.parse_list(FLAGS.betas, "--betas", float)
    sigma_modes = sweep.parse_list(FLAGS.sigma_modes, "--sigma_modes")
    points = sweep.rate_distortion_sweep(
        FLAGS.dataset, betas=betas, sigma_modes=sigma_modes, out=FLAGS.out, overwrite=FLAGS.overwrite,
        verbose=1 if sys.stdout.isatty() else 2, echo=lambda line: print(line, flush=True),
        overwrite_flag="--overwrite", **run_settings_from_flags(),
    )
    print(f"{len(points)} points -> {FLAGS.out}/rate_distortion.png, rate_distortion.md, rate_distortion.json")
