"""Rate-distortion sweeps: train over beta (and over the sigma modes), then tabulate and plot.

A beta-VAE with a fixed sigma=1 Gaussian traces a rate-distortion curve as
beta varies (rate = KL(q(z|x) || p(z)), distortion = reconstruction MSE);
calibrated decoders (learned or optimal sigma, beta = 1) pick their own point
on it without tuning. `rate_distortion_sweep` trains one model per setting
with `keras_vae.experiment.train` and writes:

- `OUT/NAME/` for each run (model.keras, metrics.json, PNGs);
- `OUT/rate_distortion.json` and `OUT/rate_distortion.md` (the table);
- `OUT/rate_distortion.png` (distortion vs rate, sweep as a line,
  calibrated models as labelled points).

Example:

    from keras_vae import sweep
    sweep.rate_distortion_sweep("mnist", betas=(0.01, 0.1, 1, 10), out="runs/rd", epochs=10)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from keras_vae import experiment, plots

TABLE_FILES = ("rate_distortion.json", "rate_distortion.md", "rate_distortion.png")
DEFAULT_SIGMA_MODES = ("learned", "optimal", "optimal_per_image")


def settings(betas, sigma_modes) -> list[dict]:
    """The runs of a sweep: `{"name", "group", "likelihood", "beta"}` for each.

    Example:

    >>> [s["name"] for s in settings([0.1, 1], ["optimal"])]
    ['beta=0.1', 'beta=1', 'optimal']
    """
    runs = []
    for beta in betas:
        if not beta > 0:
            raise ValueError(f"Expected positive betas. Received: beta={beta!r}")
        runs.append({"name": f"beta={beta:g}", "group": "beta-VAE (sigma=1)", "likelihood": "gaussian",
                     "beta": float(beta)})
    for mode in sigma_modes:
        runs.append({"name": mode, "group": "calibrated (beta=1)", "likelihood": mode, "beta": 1.0})
    if not runs:
        raise ValueError("Expected at least one beta or sigma mode.")
    return runs


def rate_distortion_sweep(
    dataset: str = "mnist",
    betas=(0.01, 0.1, 1.0, 10.0),
    sigma_modes=DEFAULT_SIGMA_MODES,
    out="runs/rate_distortion",
    overwrite: bool = False,
    verbose: int = 0,
    **run_settings,
) -> list[dict]:
    """Trains one model per beta and per sigma mode and writes the rate-distortion table and plot.

    Args:
        dataset: A dataset name for `keras_vae.data`. Defaults to `"mnist"`.
        betas: KL weights of the fixed-sigma (sigma=1) beta-VAE sweep.
        sigma_modes: Calibrated likelihoods trained at beta = 1 (names from
            `keras_vae.likelihoods.NAMES`). Defaults to learned, optimal and
            optimal_per_image.
        out: The sweep folder. Defaults to `"runs/rate_distortion"`.
        overwrite: Replace earlier runs and tables in `out`. Defaults to False.
        verbose: Keras progress output per run. Defaults to 0.
        **run_settings: Other `experiment.RunConfig` fields (network,
            latent_dim, epochs, batch_size, learning_rate, seed, ...).

    Returns:
        One dict per run: `name`, `group`, `rate` (test KL, nats),
        `distortion` (test MSE per pixel), `elbo`, `sigma`.

    Raises:
        FileExistsError: If `out` already holds a sweep table and not `overwrite`.
    """
    out = Path(out)
    existing = [name for name in TABLE_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; refusing to overwrite it. "
                              "Choose another out or pass overwrite=True.")
    unknown = set(run_settings) - {f.name for f in dataclasses.fields(experiment.RunConfig)}
    if unknown:
        raise ValueError(f"Unknown run settings {sorted(unknown)}; expected fields of experiment.RunConfig.")
    points = []
    for run in settings(betas, sigma_modes):
        config = experiment.RunConfig(
            **{**run_settings, "dataset": dataset, "likelihood": run["likelihood"], "beta": run["beta"],
               "out": str(out / run["name"].replace("=", "_")), "overwrite": overwrite},
        )
        _, metrics = experiment.train(config, verbose=verbose)
        points.append({
            "name": run["name"], "group": run["group"], "label": run["name"],
            "rate": metrics["test_kl"], "distortion": metrics["test_mse"],
            "elbo": metrics["test_elbo"], "sigma": metrics["sigma"],
        })
    out.mkdir(parents=True, exist_ok=True)
    (out / "rate_distortion.json").write_text(json.dumps({"dataset": dataset, **run_settings, "points": points},
                                                         indent=2) + "\n")
    (out / "rate_distortion.md").write_text(to_markdown(points, dataset, run_settings))
    plots.rate_distortion_curve(points, out / "rate_distortion.png")
    return points


def to_markdown(points: list[dict], dataset: str, run_settings: dict) -> str:
    """The sweep as a markdown table (one row per run)."""
    described = ", ".join(f"{k}={v}" for k, v in sorted(run_settings.items())) or "defaults"
    lines = [
        f"# Rate-distortion sweep on {dataset} ({described})",
        "",
        "Rate: test KL(q(z|x) || p(z)) in nats per image. Distortion: test MSE per pixel at the posterior mean.",
        "",
        "| run | group | rate (nats) | distortion (MSE) | test ELBO (nats) | sigma |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(f"| {p['name']} | {p['group']} | {p['rate']:.2f} | {p['distortion']:.5f} | "
                     f"{p['elbo']:.1f} | {p['sigma']:.4f} |")
    return "\n".join(lines) + "\n"
