"""Disentanglement on sprites: beta-VAEs (Bernoulli, Gaussian sigma=1), BS-VAE and the sigma-VAE.

Each row trains a VAE (`--network`: disentanglement_lib's network by
default, or the sigma-VAE paper's conv net; latent 10, batch 64, Adam 1e-3, no latent
alignment, so the metrics see the encoder's own axes) on the `sprites:SIZE`
source (9,000 train / 1,000 test images of the 10,000 seeded subset; with
`--train_images=N`, N other combinations rendered here and saved with their
factors to a `.npz` beside the 1,000 test images) and scores its posterior
means on freshly rendered sprites (`keras_vae.sprites.Sprites`)
with every metric of `keras_vae.disentanglement`, plus the test rate (KL),
distortion (MSE per pixel), active units and the FID of 1,000 prior samples
against the test images (features: a small classifier trained here on the
train split to tell the 18 shape x scale classes). Writes
`benchmarks/results/disentanglement.md` and `.json`; the hand-written
`## Reading` section of the `.md` is kept when the tables are rewritten.

    nice -n 10 python benchmarks/disentanglement.py [--epochs=3] [--image_size=32] [--rows=...]
        [--train_images=200000] [--network=conv]
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

from keras_vae import data, disentanglement, evaluation, experiment, feature_model, files, sprites

ROWS = {
    **{f"bernoulli beta={b}": dict(likelihood="bernoulli", beta=float(b)) for b in (1, 4, 16)},
    **{f"gaussian sigma=1 beta={b}": dict(likelihood="gaussian", sigma=1.0, beta=float(b)) for b in (1, 4, 16)},
    **{f"bs-vae optimal_per_image beta={b}": dict(likelihood="optimal_per_image", beta=float(b)) for b in (1, 4, 16)},
    "sigma-vae optimal beta=1": dict(likelihood="optimal", beta=1.0),
}
# Extra rows (not run by default) to compare at a matched rate: sigma=1 is a beta-VAE of beta 2 sigma**2 = 2
# in the units of an optimal sigma, so small betas reach the rates of the calibrated models.
EXTRA_ROWS = {f"gaussian sigma=1 beta={b}": dict(likelihood="gaussian", sigma=1.0, beta=b) for b in (0.01, 0.1)}
GROUPS = {"bernoulli": "Bernoulli beta-VAE", "gaussian sigma=1": "Gaussian sigma=1 beta-VAE",
          "bs-vae": "BS-VAE (optimal per-image sigma)", "sigma-vae": "sigma-VAE (optimal sigma)"}
METRICS = ("beta_vae_score", "factor_vae_score", "mig", "sap", "dci_disentanglement", "dci_completeness",
           "dci_informativeness")
RESULTS = Path(__file__).parent / "results"
OLD_DEFAULTS = {"train_images": 0, "network": "conv", "kl_warmup_steps": 0}

flags.DEFINE_integer("epochs", 3, "Training epochs per row (9,000 images each).")
flags.DEFINE_integer("image_size", 32, "Side of the sprites.")
flags.DEFINE_enum("network", "beta_vae_conv", ["conv", "beta_vae_conv"], "Encoder/decoder: disentanglement_lib's "
                  "(the default), or the sigma-VAE paper's conv net (keras_vae.networks).")
flags.DEFINE_list("rows", list(ROWS), "Rows to run (names of ROWS or EXTRA_ROWS).")
flags.DEFINE_integer("train_images", 0, "Train on this many combinations outside the test split, rendered here "
                     "(seeded by --seed), instead of the 9,000 train images of sprites:SIZE; 0 keeps those.",
                     lower_bound=0)
flags.DEFINE_integer("kl_warmup_steps", 0, "Linear KL warm-up from 0 to each row's beta over this many steps "
                     "(0: none).", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of every run and of the metrics' draws.")
flags.DEFINE_integer("num_train", 1000, "Draws the MIG, SAP and DCI estimators train on.")
flags.DEFINE_integer("num_test", 500, "Draws SAP and DCI are tested on.")
flags.DEFINE_integer("num_points", 200, "Training points of the BetaVAE and FactorVAE scores (half as many to score).")
flags.DEFINE_bool("append", False, "Keep the rows already in the .json (same settings, else refused) and add these.")
flags.DEFINE_string("out", str(RESULTS / "disentanglement"), "Results path without suffix (.md and .json).")
FLAGS = flags.FLAGS


def fid_features(x_train, factors_train):
    """A shape x scale classifier (18 classes) on the train sprites: FID features and a name for them."""
    labels = factors_train[:, 0] * sprites.FACTOR_SIZES[1] + factors_train[:, 1]
    classifier = feature_model.train_classifier(x_train, labels, num_classes=18, epochs=3, seed=0)
    return feature_model.extractor(classifier), "sprites shape x scale classifier (3 epochs), 128-d features"


def write_train_images(path: Path, x_test: np.ndarray, factors_test: np.ndarray) -> None:
    """Renders `--train_images` combinations not in the test split into a `.npz` with the test split beside them.

    The file holds uint8 pixels (`x`, `x_test`) and `factors`, `factors_test`, `factor_names`, the layout
    `keras_vae.data` reads, so the rows train on it through the same `dataset` setting.
    """
    # `sprites.all_factors()` lists the combinations in C order, so combination i has flat index i.
    test_indices = np.ravel_multi_index(factors_test.T, sprites.FACTOR_SIZES)
    outside_test = np.setdiff1d(np.arange(sprites.NUM_COMBINATIONS), test_indices)
    chosen = np.random.default_rng(FLAGS.seed).choice(outside_test, FLAGS.train_images, replace=False)
    factors_train = np.stack(np.unravel_index(chosen, sprites.FACTOR_SIZES), axis=1).astype("int64")
    with files.atomic_path(path) as temporary:  # keeps the .npz suffix, so numpy adds none
        np.savez(temporary, x=_to_uint8(sprites.render(factors_train, FLAGS.image_size)), x_test=_to_uint8(x_test),
                 factors=factors_train, factors_test=factors_test, factor_names=np.array(sprites.FACTOR_NAMES))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(x * 255).astype("uint8")


def run_row(name: str, workdir: Path, features, x_test, dataset: str) -> dict:
    config = experiment.RunConfig(
        **{**ROWS, **EXTRA_ROWS}[name], dataset=dataset, network=FLAGS.network, latent_dim=10, batch_size=64,
        learning_rate=1e-3, epochs=FLAGS.epochs, kl_warmup_steps=FLAGS.kl_warmup_steps, seed=FLAGS.seed,
        align_latents="none",
        out=str(workdir / name.replace(" ", "_").replace("=", "")),
    )
    model, metrics = experiment.train(config, verbose=0)
    start = time.perf_counter()
    scores = disentanglement.scores(
        disentanglement.posterior_means(model), sprites.Sprites(FLAGS.image_size), seed=FLAGS.seed,
        num_train=FLAGS.num_train, num_test=FLAGS.num_test, num_points=FLAGS.num_points,
    )
    stats = evaluation.posterior_statistics(model, x_test, seed=FLAGS.seed)
    samples = evaluation.prior_samples(model, 1000, seed=FLAGS.seed)
    return {
        "row": name,
        **{key: scores[key] for key in METRICS},
        "rate": stats["kl"],
        "distortion_mse": metrics["test_mse"],
        "test_rec": metrics["test_rec"],
        "test_elbo": metrics["test_elbo"],
        "active_units": stats["active_units"],
        "fid_prior": evaluation.fid(x_test, samples, features),
        "most_informative_factor": disentanglement.most_informative_factors(scores["mutual_information"],
                                                                            scores["factor_names"]),
        "mutual_information": scores["mutual_information"],
        "samples": scores["samples"],
        "train_seconds": metrics["train_seconds"],
        "metric_seconds": time.perf_counter() - start,
    }


def _group(name: str) -> str:
    return next(key for key in GROUPS if name.startswith(key))


def monotone_in_beta(rows: list[dict], group: str) -> dict[str, str]:
    """For each metric, whether it rises, falls or neither as beta grows within a group of rows."""
    members = sorted((r for r in rows if _group(r["row"]) == group), key=lambda r: float(r["row"].split("=")[-1]))
    result = {}
    for key in (*METRICS, "rate"):
        steps = np.diff([r[key] for r in members])
        result[key] = "rises" if (steps > 0).all() else "falls" if (steps < 0).all() else "not monotone"
    return result if len(members) > 2 else {}


def to_markdown(rows: list[dict], header: dict) -> str:
    lines = [
        "# Disentanglement on sprites: beta-VAE, BS-VAE and sigma-VAE",
        "",
        f"Command: `{header['command']}`. Machine: {header['machine']}; {header['date']}.",
        "",
        f"Data: `sprites:{header['image_size']}` ({header['image_size']}x{header['image_size']} dSprites-style "
        f"sprites, {_train_data(header)} / 1,000 test of a seeded 10,000-image subset); "
        f"`{header.get('network', 'conv')}` VAE, latent 10, batch 64, "
        f"Adam 1e-3, KL warm-up {header.get('kl_warmup_steps', 0)} steps, **{header['epochs']} epochs "
        f"({header['steps']} steps), seed {header['seed']}, one run per row**, "
        "no latent alignment. Metrics on freshly rendered sprites, seed "
        f"{header['seed']}: MIG/SAP/DCI on {header['num_train']} train + {header['num_test']} test draws, "
        f"BetaVAE/FactorVAE scores on {header['num_points']} training and {header['num_points'] // 2} evaluation "
        "points of 64 images (disentanglement_lib: 10,000 and 5,000). Rate: mean KL(q(z|x) || p(z)) on the test "
        "images (nats); distortion: test MSE per pixel; active units: Cov_x(E[z|x]) > 0.01; FID: 1,000 prior "
        f"samples vs the test images, features: {header['fid_features']}.",
        "",
        "| row | BetaVAE | FactorVAE | MIG | SAP | DCI D | DCI C | DCI I | rate (nats) | MSE | active | FID prior "
        "| most informative factor per latent |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | " + " | ".join(f"{r[key]:.3f}" for key in METRICS)
            + f" | {r['rate']:.1f} | {r['distortion_mse']:.4f} | {r['active_units']} | {r['fid_prior']:.1f} | "
            + ", ".join(name[:3] for name in r["most_informative_factor"]) + " |"
        )
    lines += ["", "Monotone in beta (1 -> 4 -> 16):", ""]
    for group, title in GROUPS.items():
        trend = monotone_in_beta(rows, group)
        if trend:
            lines.append(f"- {title}: " + "; ".join(f"{key} {value}" for key, value in trend.items()) + ".")
    lines += ["", "Per row: train seconds / metric seconds: " + ", ".join(
        f"{r['row']} {r['train_seconds']:.0f}/{r['metric_seconds']:.0f}" for r in rows) + "."]
    return "\n".join(lines) + "\n"


def _train_data(header: dict) -> str:
    count = header.get("train_images", 0)
    if not count:
        return "9,000 train"
    return f"{count:,} train combinations outside the test split (seed {header['seed']}, rendered for this run)"


def main(argv):
    del argv
    unknown = [name for name in FLAGS.rows if name not in {**ROWS, **EXTRA_ROWS}]
    if unknown:
        raise SystemExit(f"Unknown rows {unknown}. Expected names from {list(ROWS) + list(EXTRA_ROWS)}.")
    out = Path(FLAGS.out)
    size = FLAGS.image_size
    factors_test = data.factors(f"sprites:{size}", "test")[0]
    if FLAGS.train_images > sprites.NUM_COMBINATIONS - len(factors_test):
        raise SystemExit(f"--train_images={FLAGS.train_images}: only {sprites.NUM_COMBINATIONS - len(factors_test)} "
                         "combinations lie outside the test split.")
    results = out.with_suffix(".json")
    previous = json.loads(results.read_text()) if FLAGS.append and results.exists() else None
    settings = {"image_size": size, "network": FLAGS.network, "kl_warmup_steps": FLAGS.kl_warmup_steps,
                "epochs": FLAGS.epochs, "train_images": FLAGS.train_images, "seed": FLAGS.seed,
                "num_train": FLAGS.num_train, "num_test": FLAGS.num_test, "num_points": FLAGS.num_points}
    if previous:
        earlier = {**OLD_DEFAULTS, **previous["header"]}  # results older than a setting ran with its default
        other = {key: earlier[key] for key in settings if earlier[key] != settings[key]}
        if other:
            raise SystemExit(f"--append: {results} was run with other settings {other}; use another --out.")
    x_train = data.load_arrays(f"sprites:{size}", "train")
    x_test = data.load_arrays(f"sprites:{size}", "test")
    features, features_name = fid_features(x_train, data.factors(f"sprites:{size}", "train")[0])
    train_size = FLAGS.train_images or len(x_train)
    niceness = os.nice(0)  # an increment of 0 only reads it
    header = {
        "command": (f"nice -n {niceness} " if niceness else "") + "python " + " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **settings, "steps": FLAGS.epochs * int(np.ceil(train_size / 64)),
        "fid_features": features_name,
    }
    rows = []
    if previous:
        rows = [row for row in previous["rows"] if row["row"] not in FLAGS.rows]
        header = {**previous["header"], "command": previous["header"]["command"] + " and " + header["command"]}
    with tempfile.TemporaryDirectory() as workdir:
        dataset = f"sprites:{size}"
        if FLAGS.train_images:
            dataset = str(Path(workdir) / "sprites_train.npz")
            write_train_images(Path(dataset), x_test, factors_test)
        for name in FLAGS.rows:
            rows.append(run_row(name, Path(workdir), features, x_test, dataset))
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()
                   if k not in ("mutual_information", "samples")}, flush=True)
            _write(out, rows, header)
    print(out.with_suffix(".md").read_text())


def _write(out: Path, rows: list[dict], header: dict) -> None:
    """Writes the .json and the .md tables (via temporary files), keeping the .md's `## Reading` section."""
    markdown = out.with_suffix(".md")
    previous = markdown.read_text() if markdown.exists() else ""
    reading = "\n## Reading" + previous.split("\n## Reading", 1)[1] if "\n## Reading" in previous else ""
    files.write_json(out.with_suffix(".json"), {"header": header, "rows": rows})
    files.write_text(markdown, to_markdown(rows, header) + reading)


if __name__ == "__main__":
    app.run(main)
