"""FID of prior samples as training goes on: sigma=1 against the calibrated decoders.

`paper_table.py` compares decoders after one training length. This script
trains the conv net (latent 20, batch 128, Adam 1e-3, seed 0, the 9,000
embedded MNIST train images) for each row and, at each checkpoint epoch,
scores prior samples with the cached MNIST classifier's features
(`keras_vae.feature_model`) in two ways:

- FID of 1,000 prior samples against the 1,000 test images, for three
  sample seeds (the spread is the sampling noise of the number
  `paper_table.py` reports);
- FID of 9,000 prior samples against the 9,000 train images (less biased).

It also records the test ELBO (nats per image), the FID of reconstructions,
the KL, the marginal KL(m(z) || p(z)) and the active units. With `--centred`
it also scores a centred copy of each checkpoint (`keras_vae.latent_centering`,
centred on the train images): both prior-sample FIDs and the ELBO gain
|m|^2 / 2; training then goes on from the uncentred weights, so the
trajectory is the same as without the flag. `--whitened` does the same with a
whitened copy (`keras_vae.latent_whitening`, a reloaded copy of the
checkpoint), whose ELBO gain is KL(N(m, C) || N(0, I)).

    python benchmarks/fid_epochs.py [--rows=learned,sigma1,optimal] [--checkpoints=10,20,30] [--centred]
        [--whitened] [--results_name=fid_epochs]

Writes `benchmarks/results/RESULTS_NAME.json` and `.md` after every checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
from absl import app, flags

import keras_vae as kv
from keras_vae import data, evaluation, feature_model, latent_centering, latent_whitening

ROWS = {
    "sigma1": dict(likelihood="gaussian", sigma=1.0),
    "learned": dict(likelihood="learned"),
    "optimal": dict(likelihood="optimal"),
    "beta0.1": dict(likelihood="gaussian", sigma=1.0, beta=0.1),  # the sweep's best prior-sample FID, centred
    "beta0.01": dict(likelihood="gaussian", sigma=1.0, beta=0.01),  # ... and whitened (paper_table, 10 epochs)
}
RESULTS = Path(__file__).parent / "results"
SAMPLE_SEEDS = (0, 1, 2)

flags.DEFINE_list("rows", ["learned", "sigma1", "optimal"], f"Rows to train, of {list(ROWS)}.")
flags.DEFINE_list("checkpoints", ["10", "20", "30"], "Epochs at which to evaluate (increasing).")
flags.DEFINE_bool("centred", False, "Also score a centred copy of each checkpoint (keras_vae.latent_centering).")
flags.DEFINE_bool("whitened", False, "Also score a whitened copy of each checkpoint (keras_vae.latent_whitening).")
flags.DEFINE_string("results_name", "fid_epochs", "Base name of the .json/.md files in benchmarks/results.")
FLAGS = flags.FLAGS


def prior_fids(vae, x_train, x_test, features) -> dict:
    return {
        "fid_1k": [evaluation.fid(x_test, evaluation.prior_samples(vae, len(x_test), seed=s), features)
                   for s in SAMPLE_SEEDS],
        "fid_9k_train": evaluation.fid(x_train, evaluation.prior_samples(vae, len(x_train), seed=0), features),
    }


def centred_scores(vae, x_train, x_test, features) -> dict:
    """Prior FIDs and ELBO of the checkpoint centred on the train images; the weights are put back after."""
    weights = vae.get_weights()
    shift = latent_centering.center_latents(vae, x_train)
    fids = prior_fids(vae, x_train, x_test, features)
    scores = {"centring_gain": float(shift @ shift / 2), "test_elbo_centred": evaluation.elbo(vae, x_test, seed=0),
              **{f"{k}_centred": v for k, v in fids.items()}}
    vae.set_weights(weights)
    return scores


def whitened_scores(vae, x_train, x_test, features) -> dict:
    """Prior FIDs and ELBO of a copy of the checkpoint whitened on the train images (whitening swaps the head)."""
    with tempfile.TemporaryDirectory() as folder:
        vae.save(Path(folder) / "checkpoint.keras")
        copy = keras.models.load_model(Path(folder) / "checkpoint.keras", safe_mode=True)
    gain = latent_whitening.whiten_latents(copy, x_train)
    fids = prior_fids(copy, x_train, x_test, features)
    return {"whitening_gain": gain, "test_elbo_whitened": evaluation.elbo(copy, x_test, seed=0),
            **{f"{k}_whitened": v for k, v in fids.items()}}


def evaluate(vae, x_train, x_test, features) -> dict:
    stats = evaluation.posterior_statistics(vae, x_test, seed=0)
    return {
        **prior_fids(vae, x_train, x_test, features),
        "fid_reconstruction": evaluation.fid(x_test, evaluation.reconstructions(vae, x_test), features),
        "test_elbo": evaluation.elbo(vae, x_test, seed=0),
        **{k: stats[k] for k in ("kl", "marginal_kl", "active_units")},
    }


def to_markdown(result: dict) -> str:
    lines = [
        "# FID of prior samples vs training epochs (conv net, latent 20, MNIST 9k/1k)",
        "",
        f"Command: `{result['command']}`; written {result['written']}; `uptime` at the start: {result['uptime']}.",
        f"Feature model: {result['feature_model']}. FID 1k: 1,000 prior samples vs the 1,000 test images, "
        f"sample seeds {', '.join(map(str, SAMPLE_SEEDS))}; FID 9k: 9,000 prior samples vs the 9,000 train images. "
        "ELBO in nats per image (higher is better; optimal sigma scored with its running sigma).",
        "",
    ]
    centred = all("centring_gain" in row for row in result["rows"])
    whitened = all("whitening_gain" in row for row in result["rows"])
    if whitened:
        lines += [
            "Whitened: a copy of the checkpoint whose latent space is mapped so that the Gaussian fit N(m, C) of the "
            "codes of the train images is N(0, I) (`keras_vae.latent_whitening`, exact: the ELBO rises by the gain "
            "KL(N(m, C) || N(0, I)) on the train images, reconstructions are unchanged); training went on from the "
            "checkpoint itself.",
            "",
        ]
    if centred:
        lines += [
            "Centred: the same checkpoint shifted so its posterior means average to 0 on the train images "
            "(`keras_vae.latent_centering`, exact: the ELBO rises by the gain |m|^2/2 on the train images, "
            "reconstructions are unchanged); training went on from the uncentred weights.",
            "",
        ]
    header = ("| decoder | epochs | test ELBO | FID 1k (3 seeds) | FID 9k | FID recon | KL | marginal KL "
              "| active units |")
    if centred:
        header += " FID 1k centred (3 seeds) | FID 9k centred | test ELBO centred | centring gain |"
    if whitened:
        header += " FID 1k whitened (3 seeds) | FID 9k whitened | test ELBO whitened | whitening gain |"
    lines += [header, "|---|---:|---:|---|---:|---:|---:|---:|---:|" + ("---|---:|---:|---:|" if centred else "")
              + ("---|---:|---:|---:|" if whitened else "")]
    for row in result["rows"]:
        line = (
            f"| {row['row']} | {row['epoch']} | {row['test_elbo']:+.1f} | "
            f"{', '.join(f'{v:.1f}' for v in row['fid_1k'])} | {row['fid_9k_train']:.1f} | "
            f"{row['fid_reconstruction']:.2f} | {row['kl']:.1f} | {row['marginal_kl']:.1f} | {row['active_units']} |"
        )
        if centred:
            line += (
                f" {', '.join(f'{v:.1f}' for v in row['fid_1k_centred'])} | {row['fid_9k_train_centred']:.1f} | "
                f"{row['test_elbo_centred']:+.1f} | {row['centring_gain']:.2f} |"
            )
        if whitened:
            line += (
                f" {', '.join(f'{v:.1f}' for v in row['fid_1k_whitened'])} | {row['fid_9k_train_whitened']:.1f} | "
                f"{row['test_elbo_whitened']:+.1f} | {row['whitening_gain']:.2f} |"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    unknown = [r for r in FLAGS.rows if r not in ROWS]
    if unknown:
        sys.exit(f"Unknown rows {unknown}; expected some of {list(ROWS)}")
    checkpoints = [int(c) for c in FLAGS.checkpoints]
    if checkpoints != sorted(set(checkpoints)) or checkpoints[0] < 1:
        sys.exit(f"--checkpoints must be increasing positive epochs. Received: {FLAGS.checkpoints}")
    x_train, x_test = data.load_arrays("mnist", "train"), data.load_arrays("mnist", "test")
    features = feature_model.get("mnist")
    result = {
        "command": " ".join(["python benchmarks/fid_epochs.py", *sys.argv[1:]]),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "feature_model": features.name,
        "rows": [],
    }
    RESULTS.mkdir(exist_ok=True)
    for name in FLAGS.rows:
        keras.utils.set_random_seed(0)
        vae = kv.build_vae((28, 28, 1), network="conv", latent_dim=20, **ROWS[name])
        vae.compile(optimizer=keras.optimizers.Adam(1e-3))
        dataset = data.pipeline(x_train, 128, seed=0)
        done = 0
        for epochs in checkpoints:
            vae.fit(dataset, epochs=epochs, initial_epoch=done, verbose=0)
            done = epochs
            row = {"row": name, "epoch": epochs, **evaluate(vae, x_train, x_test, features)}
            if FLAGS.centred:
                row.update(centred_scores(vae, x_train, x_test, features))
            if FLAGS.whitened:
                row.update(whitened_scores(vae, x_train, x_test, features))
            result["rows"].append(row)
            print(json.dumps(result["rows"][-1]), flush=True)
            result["written"] = time.strftime("%Y-%m-%d %H:%M")
            (RESULTS / f"{FLAGS.results_name}.json").write_text(json.dumps(result, indent=2) + "\n")
            (RESULTS / f"{FLAGS.results_name}.md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    app.run(main)
