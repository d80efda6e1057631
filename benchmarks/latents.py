"""Latent families on the embedded MNIST split (9,000 train / 1,000 test): one row per model.

Every row trains with `keras_vae.experiment.train` (Adam 1e-3, batch 128, the
same optimal-sigma Gaussian likelihood) and reports the test ELBO (nats per
image; for the VQ-VAE with its learned PixelCNN prior), the test MSE per
pixel, codebook perplexity (VQ-VAE) and training images/s. Writes
`benchmarks/results/latents.md` and `.json`.

    nice -n 10 python benchmarks/latents.py [--epochs=10] [--conv_epochs=2] [--rows=vae,hierarchical]

Targets: the two-level hierarchical VAE beats the one-level VAE's test ELBO
(same network and likelihood); the VQ-VAE uses more than half of its codebook
(perplexity > K / 2).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from keras_vae import data, evaluation, experiment, feature_model
from keras_vae.models import ConditionalVAE

NUM_CODES = 64  # build_vqvae's default codebook size
ROWS = {
    "vae": dict(model="vae", network="mlp", latent_dim=20),
    "hierarchical": dict(model="hierarchical", network="mlp", latent_dim=20),
    "gumbel": dict(model="gumbel", network="mlp", latent_dim=20),
    "conditional": dict(model="conditional", network="mlp", latent_dim=20),
    "vqvae": dict(model="vqvae", network="conv", latent_dim=16),
    "spatial": dict(model="spatial", network="conv", latent_dim=4, beta=1e-6),
}
RESULTS = Path(__file__).parent / "results"

flags.DEFINE_integer("epochs", 10, "Training epochs of the MLP rows.")
flags.DEFINE_integer("conv_epochs", 2, "Training epochs of the convolutional rows (vqvae, spatial): CPU is scarce.")
flags.DEFINE_list("rows", list(ROWS), "Rows to run (names of ROWS).")
flags.DEFINE_string("likelihood", "optimal", "The likelihood of every row.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_integer("fid_samples", 1000, "Prior samples for the FID (0: skip).")
FLAGS = flags.FLAGS

SETTINGS = {
    "vae": "mlp 512-256, z 20",
    "hierarchical": "mlp 512-256, z1 20 / z2 10, top-down Dense 256",
    "gumbel": "mlp 512-256, 20 x 10-way, tau exp(-1e-3 t) -> 0.5",
    "conditional": "mlp 512-256, z 20, 10 labels",
    "vqvae": f"conv+GroupNorm /4 -> 7x7x16, K={NUM_CODES}, PixelCNN prior 4x64",
    "spatial": "conv+GroupNorm /8 -> 4x4x4, beta 1e-6",
}


def prior_fid(model, features) -> float:
    """FID of `--fid_samples` prior samples against the 1,000 test images (the conditional VAE: labels 0..9)."""
    x_test = data.load_arrays("mnist", "test")
    if isinstance(model, ConditionalVAE):  # sample(n) cycles through the labels
        samples = np.concatenate([np.asarray(model.sample(min(500, FLAGS.fid_samples - start)))
                                  for start in range(0, FLAGS.fid_samples, 500)])
    else:
        samples = evaluation.prior_samples(model, FLAGS.fid_samples, seed=FLAGS.seed)
    return evaluation.fid(x_test, samples, features)


def run_row(name: str, workdir: Path, features=None) -> dict:
    config = experiment.RunConfig(
        **{"likelihood": FLAGS.likelihood, **ROWS[name]}, batch_size=128, learning_rate=1e-3,
        epochs=FLAGS.conv_epochs if ROWS[name]["network"] == "conv" else FLAGS.epochs,
        seed=FLAGS.seed, out=str(workdir / name),
    )
    model, metrics = experiment.train(config, verbose=0)
    keys = ("test_elbo", "test_elbo_running_sigma", "test_kl", "test_mse", "sigma", "images_per_second",
            "train_seconds", "test_perplexity", "test_kl_z1", "test_kl_z2")
    row = {"row": name, "settings": SETTINGS[name], "epochs": config.epochs,
           **{k: metrics[k] for k in keys if k in metrics}}
    if features is not None:
        row["fid_prior"] = prior_fid(model, features)
        row["fid_feature_model"] = features.name
    return row


def to_markdown(rows: list[dict], epochs: int, load: str) -> str:
    lines = [
        f"# Latent families (Adam 1e-3, batch 128, {FLAGS.likelihood} likelihood, MNIST 9k/1k)",
        "",
        f"Command: `python benchmarks/latents.py --epochs={epochs} --conv_epochs={FLAGS.conv_epochs} "
        f"--likelihood={FLAGS.likelihood}`; "
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; "
        f"written {time.strftime('%Y-%m-%d %H:%M')}; load average at the start {load}.",
        f"FID: {FLAGS.fid_samples} prior samples (each model's own prior) against the 1,000 test images, "
        "features of the cached MNIST classifier (`keras_vae.feature_model`), comparable within this table only.",
        "",
        "| model | settings | epochs | test -ELBO (nats/image) | -ELBO, running sigma | test KL | test MSE | sigma "
        "| perplexity | FID prior samples | train images/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        perplexity = f"{r['test_perplexity']:.1f} / {NUM_CODES}" if "test_perplexity" in r else ""
        fid = f"{r['fid_prior']:.2f}" if "fid_prior" in r else ""
        kl = f"{r['test_kl']:.1f}"
        if "test_kl_z1" in r:
            kl += f" ({r['test_kl_z1']:.1f} + {r['test_kl_z2']:.1f})"
        lines.append(
            f"| {r['row']} | {r['settings']} | {r['epochs']} | {-r['test_elbo']:.1f} | "
            f"{-r['test_elbo_running_sigma']:.1f} | {kl} | "
            f"{r['test_mse']:.4f} | {r['sigma']:.4f} | {perplexity} | {fid} | {r['images_per_second']:.0f} |"
        )
    lines += [
        "",
        "Lower -ELBO is better; it fits the optimal sigma to each test batch of 128, the running-sigma",
        "column uses the sigma the model carries. Hierarchical KL is shown as total (z1 + z2). The VQ-VAE's",
        "KL is the PixelCNN prior's NLL of the code map (a point-mass posterior), so its ELBO uses the",
        "learned prior. The spatial VAE's ELBO is at beta = 1 although it trains at beta = 1e-6, so its KL",
        "is large; it is an autoencoder for a second-stage prior. MSE is per pixel at the posterior mean",
        "(VQ: at the quantised code). Images/s is timed over whole training epochs on a shared 2-core CPU.",
        "The convolutional rows (vqvae, spatial) train for `--conv_epochs` epochs, the others for `--epochs`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv):
    unknown = [row for row in FLAGS.rows if row not in ROWS]
    if unknown:
        raise SystemExit(f"Unknown rows {unknown}; expected some of {list(ROWS)}.")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    features = feature_model.get("mnist") if FLAGS.fid_samples else None
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in FLAGS.rows:
            rows.append(run_row(name, Path(workdir), features))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if set(FLAGS.rows) != set(ROWS) and (RESULTS / "latents.json").exists():
        # A partial run replaces its rows in the saved table and keeps the others.
        fresh = {r["row"]: r for r in rows}
        saved = json.loads((RESULTS / "latents.json").read_text())["rows"]
        rows = [fresh.pop(r["row"], r) for r in saved] + list(fresh.values())
    (RESULTS / "latents.json").write_text(json.dumps({"load_average": load, "rows": rows}, indent=2) + "\n")
    markdown = to_markdown(rows, FLAGS.epochs, load)
    if set(FLAGS.rows) != set(ROWS):
        command = " ".join(["python benchmarks/latents.py", *sys.argv[1:]])
        markdown += (f"\nRows {', '.join(FLAGS.rows)} were re-run alone (`{command}`, "
                     f"{time.strftime('%Y-%m-%d %H:%M')}, load average {load}); the others are from earlier runs.\n")
    (RESULTS / "latents.md").write_text(markdown)
    print((RESULTS / "latents.md").read_text())


if __name__ == "__main__":
    app.run(main)
