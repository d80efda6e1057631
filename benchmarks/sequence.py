"""Issue 16: SVG-LP with a calibrated decoder on Stochastic Moving MNIST (the sigma-VAE paper's video experiment).

Every row trains the same `SequenceVAE` (same networks, data, seed, optimizer and number of steps) on
SM-MNIST made from the embedded MNIST train digits, conditioning on `--context` frames and predicting
`--future`; only the likelihood differs:

- (a) Gaussian, sigma = 1;
- (b) fixed sigma at SVG's tuned KL weight beta = 1e-4 on a per-pixel MSE (2 sigma**2 = beta * pixels
  per frame) and at the other `--betas`;
- (c) a learned shared sigma; (d) the optimal sigma (the MSE of the batch's predicted frames).

All rows train at beta = 1 (the fixed sigmas carry (b)'s weights). Columns, on `--test_sequences` SM-MNIST
videos of the 1,000 test digits: the test ELBO in nats per predicted frame (one posterior draw; the served
model, so optimal sigma uses its running sigma), SVG's best-of-N SSIM and PSNR (`keras_vae.video.best_of_n_metrics`:
for each video, N futures from the learned prior, the best value per frame) averaged over the predicted
frames, the KL per predicted frame, and training speed (videos/s and frames/s, after the first 10 steps).

    nice -n 10 .venv/bin/python benchmarks/sequence.py                    # the defaults below
    nice -n 10 .venv/bin/python benchmarks/sequence.py --rows=b,c,d --betas=1e-5 --seeds=0,1,2 --steps=500
    nice -n 10 .venv/bin/python benchmarks/sequence.py --frame_size=64 --steps=20000 --samples=100

Writes `benchmarks/results/sequence.md` and `.json` (`--out` to change the name).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_vae as kv  # noqa: E402
from keras_vae import video  # noqa: E402
from keras_vae.noise import SeededNoise  # noqa: E402

RESULTS = Path(__file__).parent / "results"
flags.DEFINE_list("rows", ["a", "b", "c", "d"], "Rows: a (sigma 1), b (fixed sigmas of --betas), c (learned), "
                  "d (optimal).")
flags.DEFINE_list("betas", ["1e-5", "1e-4", "1e-3"], "Row (b)'s KL weights on a per-pixel MSE (SVG: 1e-4).")
flags.DEFINE_integer("frame_size", 32, "Frame height and width (SVG: 64).")
flags.DEFINE_integer("num_digits", 2, "Digits per video.")
flags.DEFINE_integer("context", 5, "Context frames.")
flags.DEFINE_integer("future", 10, "Predicted frames.")
flags.DEFINE_integer("train_sequences", 3000, "Training videos.")
flags.DEFINE_integer("test_sequences", 100, "Test videos.")
flags.DEFINE_integer("samples", 20, "N, sampled futures per test video (SVG: 100).")
flags.DEFINE_integer("steps", 400, "Training steps per row.")
flags.DEFINE_integer("batch_size", 32, "Videos per step.")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate (SVG: 2e-3).")
flags.DEFINE_integer("latent_dim", 10, "z_t size (SVG's SM-MNIST: 10).")
flags.DEFINE_integer("filters", 32, "Frame network filters.")
flags.DEFINE_integer("feature_dim", 128, "Frame features h (SVG: 128).")
flags.DEFINE_integer("hidden_units", 128, "LSTM units (SVG: 256).")
flags.DEFINE_list("seeds", ["0"], "Seeds of data, weights and noise; every row runs once per seed, and with more "
                  "than one the tables give the mean and standard deviation over seeds.")
flags.DEFINE_string("reference", "(b) fixed sigma 0.0716 (beta 1e-05 on MSE)",
                    "Row that every other row is compared with, video by video, on best-of-N SSIM.")
flags.DEFINE_string("out", "sequence", "Results name: benchmarks/results/NAME.md and .json.")
flags.DEFINE_bool("append", False, "Add the runs of --seeds to the rows already in NAME.json (the other settings "
                  "must be the same); with --seeds= (none), rewrite NAME.md from NAME.json.")
FLAGS = flags.FLAGS


def likelihoods(pixels: int) -> dict:
    """Row name -> likelihood arguments."""
    rows = {}
    for row in FLAGS.rows:
        if row == "a":
            rows["(a) sigma = 1"] = dict(likelihood="gaussian", sigma=1.0)
        elif row == "b":
            for beta in FLAGS.betas:
                sigma = math.sqrt(float(beta) * pixels / 2.0)
                rows[f"(b) fixed sigma {sigma:.4f} (beta {float(beta):g} on MSE)"] = dict(likelihood="gaussian",
                                                                                         sigma=sigma)
        elif row == "c":
            rows["(c) learned sigma"] = dict(likelihood="learned")
        elif row == "d":
            rows["(d) optimal sigma"] = dict(likelihood="optimal")
        else:
            raise ValueError(f"Unknown row {row!r}. Expected a, b, c or d.")
    return rows


class Timer(keras.callbacks.Callback):
    def __init__(self, skip: int = 10):
        super().__init__()
        self.skip, self.start, self.count = skip, None, 0

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1
        if self.count == self.skip:
            self.start = time.perf_counter()

    def seconds_per_step(self) -> float:
        return (time.perf_counter() - self.start) / max(self.count - self.skip, 1)


def score(model, test: np.ndarray, seed: int) -> dict:
    inputs = model.split(test)
    elbo, kl = [], []
    for index, start in enumerate(range(0, len(test), 50)):
        batch = {name: value[start : start + 50] for name, value in inputs.items()}
        terms = model.compute_terms(batch, SeededNoise([seed, index]), fit_sigma=False)
        elbo.append(np.asarray(terms["elbo_per_image"]))
        kl.append(np.asarray(terms["kl_per_dim"]).sum(axis=(1, 2)))
    ssim, psnr = [], []
    for start in range(0, len(test), 10):
        context = inputs["context"][start : start + 10]
        futures = model.predict(context, FLAGS.future, FLAGS.samples, noise=SeededNoise([seed + 1, start]))
        metrics = video.best_of_n_metrics(np.asarray(inputs["x"][start : start + 10]), np.asarray(futures))
        ssim.append(metrics["ssim"])
        psnr.append(metrics["psnr"])
    ssim, psnr = np.concatenate(ssim), np.concatenate(psnr)
    return {
        "test_elbo_per_frame": float(np.concatenate(elbo).mean() / FLAGS.future),
        "kl_per_frame": float(np.concatenate(kl).mean() / FLAGS.future),
        "ssim": float(ssim.mean()),
        "psnr": float(psnr.mean()),
        "ssim_per_step": ssim.mean(axis=0).round(4).tolist(),
        "ssim_per_video": ssim.mean(axis=1).round(5).tolist(),
        "psnr_per_step": psnr.mean(axis=0).round(3).tolist(),
    }


def run_row(arguments: dict, train: np.ndarray, test: np.ndarray, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    shape = (FLAGS.frame_size, FLAGS.frame_size, 1)
    model = kv.build_sequence_vae(
        shape, latent_dim=FLAGS.latent_dim, filters=FLAGS.filters, feature_dim=FLAGS.feature_dim,
        hidden_units=FLAGS.hidden_units, context_frames=FLAGS.context, future_frames=FLAGS.future,
        seed=seed, **arguments)
    model.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate))
    dataset = kv.data.pipeline(train, FLAGS.batch_size, seed=seed).repeat()
    timer = Timer()
    started = time.perf_counter()
    history = model.fit(dataset, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0, callbacks=[timer]).history
    train_seconds = time.perf_counter() - started
    step = timer.seconds_per_step()
    result = {
        "seed": seed,
        **score(model, test, seed),
        "train_elbo_per_frame_last_epoch": float(history["elbo"][-1] / FLAGS.future),
        "served_sigma": float(np.mean(np.asarray(model.decode(np.zeros((1, 1, FLAGS.latent_dim), "float32"),
                                                              test[:1, : FLAGS.context])[1]))),
        "videos_per_second": FLAGS.batch_size / step,
        "frames_per_second": FLAGS.batch_size * (FLAGS.context + FLAGS.future) / step,
        "train_seconds": train_seconds,
    }
    print(json.dumps({key: value for key, value in result.items() if not isinstance(value, list)}), flush=True)
    return result


COLUMNS = (("test_elbo_per_frame", 1), ("ssim", 4), ("psnr", 2), ("kl_per_frame", 3), ("served_sigma", 4),
           ("videos_per_second", 1), ("frames_per_second", 0))


def cell(runs: list[dict], key: str, digits: int) -> str:
    """The value over seeds: the one value, or mean +- standard deviation."""
    values = np.array([run[key] for run in runs])
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} +- {values.std(ddof=1):.{digits}f}"


def paired_ssim(runs: list[dict], reference: list[dict]) -> tuple[float, float, list[float]] | None:
    """Best-of-N SSIM minus the reference row's on the same test videos, over the seeds both rows ran: the
    mean over those seeds, its standard error over test videos (each seed's error combined), and each seed's
    mean difference; None if they share no seed."""
    by_seed = {run["seed"]: run for run in reference}
    differences = [np.subtract(run["ssim_per_video"], by_seed[run["seed"]]["ssim_per_video"])
                   for run in runs if run["seed"] in by_seed]
    if not differences:
        return None
    means = np.array([d.mean() for d in differences])
    variances = np.array([d.var(ddof=1) / len(d) for d in differences])
    return float(means.mean()), float(np.sqrt(variances.sum()) / len(means)), means.tolist()


def write(results: dict, settings: dict) -> None:
    seeds = max(len(runs) for runs in results.values())
    over = " (mean +- standard deviation over its seeds)" if seeds > 1 else ""
    lines = [
        "# Sequence VAE (SVG-LP) on Stochastic Moving MNIST: calibrated decoders (issue 16)",
        "",
        "Written by `benchmarks/sequence.py`; settings (the command's flags):",
        "",
        "```",
        json.dumps(settings, indent=1),
        "```",
        "",
        f"Frames {settings['frame_size']}x{settings['frame_size']}, {settings['num_digits']} digits, "
        f"{settings['context']} context + {settings['future']} predicted frames, {settings['steps']} steps of "
        f"{settings['batch_size']} videos per row, N = {settings['samples']} sampled futures per test video, "
        f"{settings['test_sequences']} test videos. The test ELBO uses one posterior draw and the served model "
        "(optimal sigma: its running sigma). Each seed draws its own training and test videos, weights and noise.",
        "",
        f"| row{over} | test ELBO (nats/frame) | best-of-N SSIM | best-of-N PSNR (dB) | KL (nats/frame) "
        "| served sigma | train videos/s | train frames/s | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        lines.append(f"| {name} | " + " | ".join(cell(runs, key, digits) for key, digits in COLUMNS)
                     + f" | {', '.join(str(run['seed']) for run in runs)} |")
    reference = results.get(settings["reference"])
    if reference is not None:
        lines += ["", f"Best-of-N SSIM against {settings['reference']}, on the same test videos of each seed: the "
                  "mean difference over the seeds both rows ran, its standard error over the test videos (each "
                  "seed's combined), and each seed's difference (its spread is the training's variance):", "",
                  "| row | SSIM difference | standard error over videos | per seed |", "|---|---|---|---|"]
        for name, runs in results.items():
            paired = None if name == settings["reference"] else paired_ssim(runs, reference)
            if paired is not None:
                mean, error, per_seed = paired
                lines.append(f"| {name} | {mean:+.4f} | {error:.4f} | "
                             + ", ".join(f"{value:+.4f}" for value in per_seed) + " |")
    for title, key, digits in (("Best-of-N SSIM", "ssim_per_step", 3), ("Best-of-N PSNR (dB)", "psnr_per_step", 2)):
        lines += ["", f"{title} per predicted step" + (" (mean over the row's seeds)" if seeds > 1 else "") + ":", "",
                  "| row | " + " | ".join(f"t+{k + 1}" for k in range(settings["future"])) + " |",
                  "|---|" + "---|" * settings["future"]]
        for name, runs in results.items():
            steps = np.mean([run[key] for run in runs], axis=0)
            lines.append(f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in steps) + " |")
    RESULTS.mkdir(exist_ok=True)
    for suffix, text in ((".md", "\n".join(lines) + "\n"),
                         (".json", json.dumps({"settings": settings, "rows": results}, indent=1))):
        path = RESULTS / f"{FLAGS.out}{suffix}"
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text(text)
        os.replace(temporary, path)


def previous_results(results: dict, settings: dict) -> tuple[dict, dict]:
    """The rows and settings of `--out`'s JSON with room for this run's seeds; refuses other settings."""
    path = RESULTS / f"{FLAGS.out}.json"
    if not path.exists():
        raise SystemExit(f"--append: {path} does not exist.")
    previous = json.loads(path.read_text())
    ignored = {"rows", "seeds"}
    differ = sorted(key for key in settings if key not in ignored and previous["settings"].get(key) != settings[key])
    if differ:
        raise SystemExit(f"--append: {path} was written with other settings ({', '.join(differ)}).")
    done = {run["seed"] for runs in previous["rows"].values() for run in runs}
    new = {int(seed) for seed in FLAGS.seeds}
    if done & new:
        raise SystemExit(f"--append: {path} already has seeds {sorted(done & new)}.")
    merged = dict(previous["rows"])
    for name in results:
        merged.setdefault(name, [])
    return merged, {**settings, "rows": sorted(set(previous["settings"]["rows"]) | set(settings["rows"])),
                    "seeds": [str(seed) for seed in sorted(done | new)]}


def main(argv):
    del argv
    settings = {name: FLAGS[name].value for name in (
        "rows", "betas", "frame_size", "num_digits", "context", "future", "train_sequences", "test_sequences",
        "samples", "steps", "batch_size", "learning_rate", "latent_dim", "filters", "feature_dim", "hidden_units",
        "seeds", "reference")}
    if not FLAGS.seeds and not FLAGS.append:
        raise SystemExit("--seeds is empty: nothing to run (with --append, it rewrites NAME.md from NAME.json).")
    frames = FLAGS.context + FLAGS.future
    rows = likelihoods(FLAGS.frame_size**2)
    results = {name: [] for name in rows}
    if FLAGS.append:
        results, settings = previous_results(results, settings)
    for seed in (int(seed) for seed in FLAGS.seeds):
        train = video.moving_mnist("train", FLAGS.train_sequences, frames, FLAGS.frame_size, FLAGS.num_digits, seed)
        test = video.moving_mnist("test", FLAGS.test_sequences, frames, FLAGS.frame_size, FLAGS.num_digits, seed + 1)
        for name, arguments in rows.items():
            print(name, "seed", seed, flush=True)
            results[name].append(run_row(arguments, train, test, seed))
            write({name: runs for name, runs in results.items() if runs}, settings)  # a stopped run keeps its rows
    if not FLAGS.seeds:  # --append --seeds=: the markdown again, from the JSON
        write({name: runs for name, runs in results.items() if runs}, settings)


if __name__ == "__main__":
    app.run(main)
