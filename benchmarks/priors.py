"""Learned priors, a flow posterior and post-hoc samplers against whitening (issue 17) on the embedded MNIST.

Conv net of the sigma-VAE paper, latent 20, optimal sigma, batch 128, Adam
1e-3, seed 0, trained on the 9,000 embedded train images and scored on the
1,000 test images. One row per prior / posterior / sampler:

- `standard`: N(0, I) prior, diagonal posterior, as trained;
- `standard + whitening`: the same model whitened (`keras_vae.latent_whitening`,
  what `train` does by default): the baseline;
- `standard + gmm`, `standard + two_stage`: post-hoc samplers fitted on the
  train codes of the as-trained model (`keras_vae.samplers`);
- `mixture`, `vamp`: learned priors (`keras_vae.priors`);
- `iaf`, `iaf + gmm`: the IAF posterior (`keras_vae.flows`), as trained and
  with a Gaussian-mixture sampler.

Columns: test ELBO and IWAE (nats per image, the running sigma), the gap,
the prior-sample FID of `--fid_samples` samples against the 1,000 test images
(features of `keras_vae.feature_model`) for `--fid_seeds` sampling seeds
(mean and spread), the reconstruction FID, active units and training images/s.

    python benchmarks/priors.py [--epochs=10] [--iwae_samples=1000] [--fid_samples=9000] [--fid_seeds=3]
                                [--rows=standard,mixture,vamp,iaf]

The defaults are the issue's full settings; the flags shrink them. Rows go to
`benchmarks/results/priors.json` as each finishes and the table to `priors.md`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
from absl import app, flags

import keras_vae as kv
from keras_vae import calibration, data, evaluation, feature_model, latent_whitening, latents, samplers

RESULTS = Path(__file__).parent / "results"
TRAININGS = ("standard", "mixture", "vamp", "iaf")

flags.DEFINE_integer("epochs", 10, "Training epochs per model.")
flags.DEFINE_integer("iwae_samples", 1000, "Importance samples K of the IWAE bound.")
flags.DEFINE_integer("fid_samples", 9000, "Prior samples per FID.")
flags.DEFINE_integer("fid_seeds", 3, "Sampling seeds per prior-sample FID.")
flags.DEFINE_list("rows", list(TRAININGS), "Models to train (each gives its rows).")
flags.DEFINE_integer("mixture_components", 10, "Components of the mixture prior.")
flags.DEFINE_integer("pseudo_inputs", 500, "Pseudo-inputs of the VampPrior.")
flags.DEFINE_integer("num_flows", 2, "Flows of the IAF posterior.")
flags.DEFINE_integer("flow_units", 320, "Hidden units of each flow.")
flags.DEFINE_integer("gmm_components", 10, "Components of the Gaussian-mixture sampler.")
flags.DEFINE_integer("two_stage_epochs", 100, "Epochs of the two-stage sampler's second VAE.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
FLAGS = flags.FLAGS


def build(name: str, x_train: np.ndarray) -> kv.VAE:
    parts = {
        "standard": {},
        "mixture": {"prior": kv.MixturePrior(20, FLAGS.mixture_components, seed=FLAGS.seed)},
        "vamp": {"prior": kv.VampPrior((28, 28, 1), FLAGS.pseudo_inputs, seed=FLAGS.seed,
                                       pseudo_inputs=x_train[: FLAGS.pseudo_inputs])},
        "iaf": {"posterior": kv.IAFPosterior(20, FLAGS.num_flows, FLAGS.flow_units)},
    }[name]
    return kv.build_vae((28, 28, 1), network="conv", latent_dim=20, likelihood="optimal", seed=FLAGS.seed, **parts)


def train(name: str, x_train: np.ndarray) -> tuple[kv.VAE, float]:
    keras.utils.set_random_seed(FLAGS.seed)
    model = build(name, x_train)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    model.fit(data.pipeline(x_train, 128, seed=FLAGS.seed), epochs=FLAGS.epochs, verbose=0)
    seconds = time.perf_counter() - start
    calibration.refit_sigma(model, x_train)  # as `train` does
    return model, len(x_train) * FLAGS.epochs / seconds


def prior_fids(model, x_test, features) -> list[float]:
    return [evaluation.fid(x_test, evaluation.prior_samples(model, FLAGS.fid_samples, seed=FLAGS.seed + s), features)
            for s in range(FLAGS.fid_seeds)]


def score(model, x_test, features, images_per_second: float, bounds: dict | None = None) -> dict:
    """The row's numbers; `bounds` reuses ELBO / IWAE / reconstruction FID of a row with the same model."""
    if bounds is None:
        elbo = evaluation.elbo(model, x_test, seed=FLAGS.seed)
        iwae = evaluation.iwae_bound(model, x_test, num_samples=FLAGS.iwae_samples, seed=FLAGS.seed)
        means, _ = evaluation.posterior_moments(model, x_test)
        q = model.posterior_distribution(x_test[:2])
        bounds = {
            "test_elbo": elbo, "iwae": iwae, "gap": iwae - elbo,
            "fid_reconstruction": evaluation.fid(x_test, evaluation.reconstructions(model, x_test), features),
            "active_units": evaluation.active_units(means),
            "kl_estimator": latents.kl_estimator(q, model.prior_distribution()),
            "images_per_second": images_per_second,
        }
    fids = prior_fids(model, x_test, features)
    return {**bounds, "fid_prior": fids, "fid_prior_mean": float(np.mean(fids)), "fid_prior_std": float(np.std(fids))}


def rows_of(name: str, x_train, x_test, features) -> dict:
    model, speed = train(name, x_train)
    rows = {name: score(model, x_test, features, speed)}
    bounds = {k: v for k, v in rows[name].items() if not k.startswith("fid_prior")}
    if name in ("standard", "iaf"):
        samplers.fit(model, samplers.GaussianMixtureSampler(20, FLAGS.gmm_components, seed=FLAGS.seed), x_train,
                     seed=FLAGS.seed)
        rows[f"{name} + gmm"] = score(model, x_test, features, speed, bounds)
    if name == "standard":
        samplers.fit(model, samplers.TwoStageSampler(20, epochs=FLAGS.two_stage_epochs, seed=FLAGS.seed), x_train,
                     seed=FLAGS.seed)
        rows["standard + two_stage"] = score(model, x_test, features, speed, bounds)
        samplers.detach(model)  # back to the prior, then whiten
        latent_whitening.whiten_latents(model, x_train)
        rows["standard + whitening"] = score(model, x_test, features, speed)
    return rows


# The flags that define the rows (runs with the same values share one table).
SETTINGS = ("epochs", "iwae_samples", "fid_samples", "fid_seeds", "mixture_components", "pseudo_inputs", "num_flows",
            "flow_units", "gmm_components", "two_stage_epochs", "seed")
ORDER = ("standard", "standard + whitening", "standard + gmm", "standard + two_stage", "mixture", "vamp", "iaf",
         "iaf + gmm")


def to_markdown(rows: dict, info: dict) -> str:
    lines = [
        f"# Priors, posteriors and samplers (conv net, latent 20, optimal sigma, {info['epochs']} epochs, "
        "MNIST 9k/1k)",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in info["commands"]) + f". Written {info['written']}; `uptime` "
        f"when the last started: {info['uptime']}.",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in info["settings"].items()) + ".",
        f"IWAE: K={info['iwae_samples']} on the 1,000 test images. Prior-sample FID: {info['fid_samples']} samples "
        f"against the 1,000 test images, {info['fid_seeds']} sampling seeds (mean +- std), features of "
        f"{info['feature_model']}; reconstruction FID: the 1,000 test reconstructions. ELBO and IWAE in nats per "
        "image with the running sigma (higher is better); gap = IWAE - ELBO. Sampler rows share their model's "
        "ELBO, IWAE and reconstructions (a sampler changes only what `sample` draws).",
        "",
        "| row | KL | test ELBO | IWAE | gap | FID prior | FID recon | active units | train images/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ORDER:
        if name not in rows:
            continue
        r = rows[name]
        lines.append(
            f"| {name} | {r['kl_estimator']} | {r['test_elbo']:.1f} | {r['iwae']:.1f} | {r['gap']:.1f} | "
            f"{r['fid_prior_mean']:.2f} +- {r['fid_prior_std']:.2f} | {r['fid_reconstruction']:.2f} | "
            f"{r['active_units']} | {r['images_per_second']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    unknown = [r for r in FLAGS.rows if r not in TRAININGS]
    if unknown:
        sys.exit(f"Unknown rows {unknown}; expected some of {list(TRAININGS)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    features = feature_model.get("mnist")
    info = {
        "epochs": FLAGS.epochs, "iwae_samples": FLAGS.iwae_samples, "fid_samples": FLAGS.fid_samples,
        "fid_seeds": FLAGS.fid_seeds, "feature_model": features.name,
        "command": "python benchmarks/priors.py " + " ".join(sys.argv[1:]),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    x_train, x_test = data.load_arrays("mnist", "train"), data.load_arrays("mnist", "test")
    settings = {name: FLAGS[name].value for name in SETTINGS}
    json_path = RESULTS / "priors.json"
    previous = json.loads(json_path.read_text()) if json_path.exists() else {}
    # Rows of an earlier run with the same settings are kept, so the rows can be run one command at a time.
    rows = previous.get("rows", {}) if previous.get("settings") == settings else {}
    info["settings"] = settings
    info["commands"] = [*previous.get("commands", []), info["command"]] if rows else [info["command"]]
    for name in FLAGS.rows:
        start = time.perf_counter()
        rows.update(rows_of(name, x_train, x_test, features))
        print(f"{name}: {time.perf_counter() - start:.0f} s", {k: rows[k]["fid_prior_mean"] for k in rows}, flush=True)
        info["written"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        _write(json_path, json.dumps({**info, "rows": rows}, indent=2) + "\n")
        _write(RESULTS / "priors.md", to_markdown(rows, info))
    print(to_markdown(rows, info))


def _write(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text)
    staging.replace(path)


if __name__ == "__main__":
    app.run(main)
