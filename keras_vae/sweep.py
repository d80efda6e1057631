"""Rate-distortion sweeps: train over beta (and over the sigma modes), then tabulate and plot.

A beta-VAE with a fixed sigma=1 Gaussian traces a rate-distortion curve as
beta varies (rate = KL(q(z|x) || p(z)) in nats, distortion = reconstruction
MSE); calibrated decoders (learned or optimal sigma, beta = 1) pick their own
point on it without tuning. `rate_distortion_sweep` (and
`python -m keras_vae sweep`) trains one model per setting with
`keras_vae.experiment.train` and writes:

- `OUT/LABEL/` for each run (`OUT/beta_0.1`, `OUT/optimal`: model.keras,
  metrics.json, history.csv, PNGs, as `train` writes them);
- `OUT/rate_distortion.json` and `OUT/rate_distortion.md` (the table);
- `OUT/rate_distortion.png` (distortion vs rate, the beta sweep as a line,
  calibrated models as markers, every point labelled).

It resumes like `train`: a rerun keeps every finished point trained with the
same settings (reading its `metrics.json`), resumes an interrupted one from
its checkpoint, and trains the rest.

Example:

    from keras_vae import sweep
    sweep.rate_distortion_sweep("mnist", betas=(0.01, 0.1, 1, 10), out="runs/rd", epochs=10)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from keras_vae import experiment, files, likelihoods, plots
from keras_vae.run_config import SWEPT_FIELDS

TABLE_FILES = ("rate_distortion.json", "rate_distortion.md", "rate_distortion.png")
DEFAULT_SIGMA_MODES = ("learned", "optimal", "optimal_per_image")
DISTORTION_LABEL = "distortion: test MSE per pixel"


def settings(betas, sigma_modes) -> list[dict]:
    """The runs of a sweep: `{"name", "folder", "group", "likelihood", "beta"}` for each.

    Example:

    >>> [(s["name"], s["folder"]) for s in settings([0.1, 1], ["optimal"])]
    [('beta=0.1', 'beta_0.1'), ('beta=1', 'beta_1'), ('optimal', 'optimal')]
    """
    runs = []
    for beta in betas:
        if not beta > 0:
            raise ValueError(f"Expected positive betas. Received: beta={beta!r}")
        runs.append({"name": f"beta={beta:g}", "group": "beta-VAE (sigma=1)", "likelihood": "gaussian",
                     "beta": float(beta)})
    for mode in sigma_modes:
        if mode not in likelihoods.NAMES:
            raise ValueError(f"Unknown sigma mode {mode!r}; expected likelihood names from {likelihoods.NAMES}.")
        runs.append({"name": mode, "group": "calibrated (beta=1)", "likelihood": mode, "beta": 1.0})
    if not runs:
        raise ValueError("Expected at least one beta or sigma mode.")
    names = [run["name"] for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"Each point of a sweep is trained once; repeated: {', '.join(repeated)}.")
    for run in runs:
        run["folder"] = run["name"].replace("=", "_")
    return runs


def parse_list(text: str, flag: str, kind=str) -> tuple:
    """A comma-separated flag value as a tuple of `kind` (`''` is empty); one line naming `flag` if malformed.

    Example:

    >>> parse_list("0.5, 1,2", "--betas", float)
    (0.5, 1.0, 2.0)
    >>> parse_list("", "--sigma_modes")
    ()
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return tuple(kind(item) for item in items)
    except ValueError:
        raise ValueError(f"Expected {flag} as comma-separated {kind.__name__} values. "
                         f"Received: {flag}={text}") from None


def finished_metrics(folder: Path, config: experiment.RunConfig, overwrite_flag: str = "overwrite=True") -> dict | None:
    """The `metrics.json` of a finished run of `config` in `folder`, or None when there is none to keep.

    A finished run is kept when every setting it recorded (its `flags`, those
    that applied) equals `config`'s, `out` aside (the folder may have moved).

    Raises:
        FileExistsError: If `folder` holds a finished run with other settings
            and not `config.overwrite`; the message names them and `overwrite_flag`.
    """
    metrics_path, model_path = folder / "metrics.json", folder / "model.keras"
    if not (metrics_path.is_file() and model_path.is_file()):
        return None
    try:
        metrics = json.loads(metrics_path.read_text())
        recorded = metrics["flags"]
    except (ValueError, KeyError, TypeError):
        metrics, recorded = None, None
    wanted = dataclasses.asdict(config)
    changed = (["unrecorded"] if not isinstance(recorded, dict) else
               sorted(k for k, v in recorded.items() if k != "out" and wanted.get(k, v) != v))
    if not changed:
        return metrics
    if config.overwrite:
        return None
    out_flag = "--out" if overwrite_flag.startswith("--") else "out"
    raise FileExistsError(
        f"{folder} holds a finished run with other settings ({', '.join(changed)}); refusing to overwrite it. "
        f"Choose another {out_flag} or pass {overwrite_flag} to retrain it."
    )


def rate_distortion_sweep(
    dataset: str = "mnist",
    betas=(0.01, 0.1, 1.0, 10.0),
    sigma_modes=DEFAULT_SIGMA_MODES,
    out="runs/rate_distortion",
    overwrite: bool = False,
    verbose: int | str = 0,
    echo: Callable[[str], None] | None = None,
    overwrite_flag: str = "overwrite=True",
    **run_settings,
) -> list[dict]:
    """Trains one model per beta and per sigma mode and writes the rate-distortion table and plot.

    Every setting and every point's folder is checked before the first run
    trains. A point whose finished run in `out` has the same settings is kept
    (not retrained); an interrupted one resumes from its checkpoint.

    Args:
        dataset: A dataset name for `keras_vae.data`. Defaults to `"mnist"`.
        betas: KL weights of the fixed-sigma (sigma=1) beta-VAE sweep.
        sigma_modes: Calibrated likelihoods trained at beta = 1 (names from
            `keras_vae.likelihoods.NAMES`). Defaults to learned, optimal and
            optimal_per_image.
        out: The sweep folder. Defaults to `"runs/rate_distortion"`.
        overwrite: Retrain points whose run in `out` (finished or
            interrupted) has other settings. Defaults to False.
        verbose: Keras progress output per run. Defaults to 0.
        echo: Called with one line per point (kept, resumed, trained, and its
            numbers). Defaults to None (silent).
        overwrite_flag: How refusals name `overwrite` (`"--overwrite"` for
            the command line). Defaults to `"overwrite=True"`.
        **run_settings: Other `experiment.RunConfig` fields (network,
            latent_dim, epochs, batch_size, learning_rate, seed, ...).

    Returns:
        One dict per run: `name`, `group`, `label`, `folder`, `likelihood`,
        `beta`, `rate` (test KL, nats per image), `distortion` (test MSE per
        pixel), `reconstruction_nats` (test -E log p(x|z), nats per image),
        `elbo` (nats per image), `sigma`.

    Raises:
        FileExistsError: If a point's folder holds a run with other settings
            and not `overwrite`.
        ValueError: For bad settings, before any training.
    """
    out = Path(out)
    fields = {f.name for f in dataclasses.fields(experiment.RunConfig)}
    unknown = set(run_settings) - fields
    if unknown:
        raise ValueError(f"Unknown run settings {sorted(unknown)}; expected fields of experiment.RunConfig.")
    swept = sorted(set(run_settings) & {*SWEPT_FIELDS, "dataset"})
    if swept:
        raise ValueError(f"The sweep sets {', '.join(swept)} itself; pass betas, sigma_modes, out, overwrite and "
                         "dataset as the sweep's own arguments.")
    runs = settings(betas, sigma_modes)
    out_flag = "--out" if overwrite_flag.startswith("--") else "out"  # the command line's or Python's name
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out_flag}={out} is a file, not a folder.")
    files.check_writable(out, out_flag)
    plan = []
    for run in runs:  # every point is checked before the first one trains
        config = experiment.RunConfig(**{**run_settings, "dataset": dataset, "likelihood": run["likelihood"],
                                         "beta": run["beta"], "out": str(out / run["folder"]),
                                         "overwrite": overwrite})
        experiment.check_config(config)
        likelihoods.get(config.likelihood, sigma=config.sigma)
        folder = Path(config.out)
        metrics = finished_metrics(folder, config, overwrite_flag)
        if metrics is None:
            experiment.prepare_output(folder, overwrite, create=False)
            experiment.check_backup(folder / "backup", config)
        plan.append((run, config, metrics))
    points = []
    for run, config, metrics in plan:
        if metrics is not None:
            state = "kept: finished earlier with the same settings"
        else:
            resumed = experiment.has_checkpoint(Path(config.out) / "backup")
            _, metrics = experiment.train(config, verbose=verbose)
            state = "resumed and trained" if resumed else "trained"
        point = {
            "name": run["name"], "group": run["group"], "label": run["name"], "folder": run["folder"],
            "likelihood": run["likelihood"], "beta": run["beta"],
            "rate": metrics["test_kl"], "distortion": metrics["test_mse"],
            "reconstruction_nats": metrics["test_rec"], "elbo": metrics["test_elbo"], "sigma": metrics["sigma"],
        }
        points.append(point)
        if echo is not None:
            echo(f"{run['name']}: rate {point['rate']:.2f} nats, distortion {point['distortion']:.5f} MSE, "
                 f"ELBO {point['elbo']:.1f} nats ({state}) -> {config.out}")
    write_tables(points, out, dataset, run_settings)
    return points


def write_tables(points: list[dict], out, dataset: str, run_settings: dict) -> list[Path]:
    """Writes `rate_distortion.json`, `.md` and `.png` into `out` (each atomically) and returns their paths."""
    out = Path(out)
    files.write_json(out / "rate_distortion.json", {
        "dataset": dataset, **run_settings,
        "units": {"rate": "nats per image (test KL(q(z|x) || p(z)))", "distortion": "MSE per pixel (test)",
                  "reconstruction_nats": "nats per image (test -E log p(x|z))", "elbo": "nats per image (test)"},
        "points": points,
    })
    files.write_text(out / "rate_distortion.md", to_markdown(points, dataset, run_settings))
    plots.rate_distortion_curve(points, out / "rate_distortion.png", distortion_label=DISTORTION_LABEL)
    return [out / name for name in TABLE_FILES]


def to_markdown(points: list[dict], dataset: str, run_settings: dict) -> str:
    """The sweep as a markdown table (one row per run)."""
    described = ", ".join(f"{k}={v}" for k, v in sorted(run_settings.items())) or "defaults"
    lines = [
        f"# Rate-distortion sweep on {dataset} ({described})",
        "",
        "Rate: test KL(q(z|x) || p(z)) in nats per image. Distortion: test MSE per pixel at the posterior mean. "
        "Reconstruction: test -E log p(x|z) in nats per image under the run's own decoder.",
        "",
        "| run | group | rate (nats) | distortion (MSE) | reconstruction (nats) | test ELBO (nats) | sigma | folder |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in points:
        lines.append(f"| {p['name']} | {p['group']} | {p['rate']:.2f} | {p['distortion']:.5f} | "
                     f"{p['reconstruction_nats']:.1f} | {p['elbo']:.1f} | {p['sigma']:.4f} | {p['folder']} |")
    return "\n".join(lines) + "\n"
