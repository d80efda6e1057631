"""Issue 21: is every Gaussian mode calibrated from the first steps to the served model?

For each dataset and sigma mode, one training run (conv net, latent 20, batch 128, Adam 1e-3) is
scored at 100 steps, 1, 3 and 10 epochs: the test ELBO (optimal modes fit sigma to each test batch,
as in training; "running" uses the served sigma), the served sigma over the RMSE of the test
reconstructions, and for shared sigmas (optimal and learned) the same after
`keras_vae.calibration.refit_sigma` on the train split and, with `--refit_split`, on images held out
of training (scored on a copy of the likelihood's weights, so training goes on unchanged). Learned and
per-pixel sigma run twice: with the data-dependent start (the default) and with the paper's start.

Datasets: the embedded MNIST (9,000 / 1,000) and `hopper`, 32x32x3 patches (stride 8) of the colour
photograph `grace_hopper.jpg` that matplotlib ships (a real colour image, offline; a seeded random
10% of the patches is the test split).

    .venv/bin/python benchmarks/calibration.py                  # both datasets (about 30 minutes)
    .venv/bin/python benchmarks/calibration.py --datasets=hopper --epochs=3
    .venv/bin/python benchmarks/calibration.py --refit_split=0.1 --rows=learned,optimal --out=calibration_refit_split

Writes `benchmarks/results/calibration.md` and `.json`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import matplotlib.cbook  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

import keras_vae as kv  # noqa: E402
from keras_vae import calibration, evaluation  # noqa: E402
from keras_vae.noise import SeededNoise  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROWS = {
    "learned": dict(sigma="learned"),
    "learned (paper start)": dict(sigma="learned", data_dependent_start=False),
    "per_pixel": dict(sigma="per_pixel"),
    "per_pixel (paper start)": dict(sigma="per_pixel", data_dependent_start=False),
    "optimal": dict(sigma="optimal"),
    "optimal_per_image": dict(sigma="optimal_per_image"),
}
flags.DEFINE_list("datasets", ["mnist", "hopper"], "Datasets: mnist, hopper.")
flags.DEFINE_list("rows", list(ROWS), "Rows (sigma modes) to run.")
flags.DEFINE_float("refit_split", 0.0, "Fraction of the train split (seeded) held out of training; the served "
                   "sigma is then also refitted on it (0: refit on the train split only).")
flags.DEFINE_string("out", "calibration", "Results name: benchmarks/results/NAME.md and .json.")
flags.DEFINE_integer("epochs", 10, "The last checkpoint, in epochs (checkpoints: 100 steps, 1, 3, 10 epochs).")
FLAGS = flags.FLAGS


def hopper_patches(size: int = 32, stride: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """32x32 colour patches of matplotlib's `grace_hopper.jpg`: (train, test), pixels in [0, 1]."""
    image = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    patches = np.stack([image[i : i + size, j : j + size]
                        for i in range(0, image.shape[0] - size + 1, stride)
                        for j in range(0, image.shape[1] - size + 1, stride)]).astype("float32") / 255.0
    patches = patches[np.random.default_rng(0).permutation(len(patches))]  # a raster-order split shifts content
    split = int(len(patches) * 0.9)
    return patches[:split], patches[split:]


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "hopper":
        return hopper_patches()
    return kv.data.load_arrays("mnist", "train"), kv.data.load_arrays("mnist", "test")


def score(model, refit_sets: dict, x_test) -> dict:
    """Test ELBO (fitted and served sigma), served sigma / test RMSE, and the same after each refit."""
    fitted, running = [], []
    for index, start in enumerate(range(0, len(x_test), 128)):
        batch = x_test[start : start + 128]
        fitted.append(float(model.compute_terms(batch, SeededNoise([0, index]), fit_sigma=True)["elbo"]) * len(batch))
        running.append(float(np.sum(model.compute_terms(batch, SeededNoise([0, index]), fit_sigma=False)
                                    ["elbo_per_image"])))
    reconstructions = evaluation.reconstructions(model, x_test)
    rmse = float(np.sqrt(np.mean((reconstructions - x_test) ** 2)))

    def served() -> dict:
        """What the model serves for the first 500 test images, in one decoder pass."""
        mean, sigma = (np.asarray(t) for t in model.decode(np.asarray(model.encode(x_test[:500])[0])))
        # A per-pixel sigma varies over pixels: its RMS against the RMSE (served variance vs MSE), and the RMS
        # of the standardised errors (x - mean) / sigma, 1 for a calibrated heteroscedastic decoder.
        return {"served_over_rmse": float(np.mean(sigma)) / rmse,
                "served_rms_over_rmse": float(np.sqrt(np.mean(sigma**2))) / rmse,
                "standardised_error_rms": float(np.sqrt(np.mean(((x_test[:500] - mean) / sigma) ** 2)))}

    row = {"test_elbo": sum(fitted) / len(x_test), "test_elbo_running_sigma": sum(running) / len(x_test),
           "test_rmse": rmse, **served()}
    if model.likelihood.refit_reduction is not None:
        kept = [weight.numpy() for weight in model.likelihood.weights]
        for name, data in refit_sets.items():
            calibration.refit_sigma(model, data)
            refitted = served()
            row[f"served_over_rmse_refit_{name}"] = refitted["served_over_rmse"]
            row[f"standardised_error_rms_refit_{name}"] = refitted["standardised_error_rms"]
            for weight, value in zip(model.likelihood.weights, kept):
                weight.assign(value)  # training goes on with its own sigma
    return row


class Checkpoints(keras.callbacks.Callback):
    """Scores the model at 100 steps and at the end of epochs 1, 3 and the last."""

    def __init__(self, refit_sets: dict, x_test, epochs: int):
        super().__init__()
        self.data, self.epochs, self.rows, self.seconds, self.step = (refit_sets, x_test), epochs, {}, 0.0, 0
        self.steps = {}  # the training step of each checkpoint, to order them

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds += time.perf_counter() - self.start
        self.step += 1
        if self.step == 100:
            self.rows["100 steps"] = score(self.model, *self.data)
            self.steps["100 steps"] = self.step

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in {1, 3, self.epochs}:
            self.rows[f"{epoch + 1} epochs"] = score(self.model, *self.data)
            self.steps[f"{epoch + 1} epochs"] = self.step


def run(dataset: str, row: str, x_train, x_test, x_held_out=None) -> dict:
    keras.utils.set_random_seed(0)
    likelihood = kv.Gaussian(**ROWS[row])
    model = kv.build_vae(x_train.shape[1:], network="conv", latent_dim=20, likelihood=likelihood, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    refit_sets = {"train": x_train, **({} if x_held_out is None else {"held_out": x_held_out})}
    checkpoints = Checkpoints(refit_sets, x_test, FLAGS.epochs)
    model.fit(x_train, batch_size=128, epochs=FLAGS.epochs, shuffle=True, verbose=0, callbacks=[checkpoints])
    order = sorted(checkpoints.rows, key=checkpoints.steps.get)
    return {"dataset": dataset, "row": row, "checkpoints": {name: checkpoints.rows[name] for name in order},
            "images_per_second": checkpoints.step * 128 / max(checkpoints.seconds, 1e-9),
            "log_sigma_scale": likelihood.log_sigma_scale, "written": time.strftime("%Y-%m-%d %H:%M")}


def to_markdown(results: list[dict]) -> str:
    lines = [
        "# Calibration from the first steps (issue 21)",
        "",
        f"Command: `python benchmarks/calibration.py --epochs={FLAGS.epochs}"
        + (f" --refit_split={FLAGS.refit_split} --out={FLAGS.out}" if FLAGS.refit_split else "")
        + "`; conv net, latent 20, batch 128, "
        f"Adam 1e-3, seed 0; written {time.strftime('%Y-%m-%d %H:%M')}. Test ELBO in nats per image (higher is "
        "better; optimal modes fit sigma to each test batch); served / RMSE is the mean decoder sigma the model "
        "serves over the RMSE of its test reconstructions (1 is calibrated); for a sigma that varies over pixels "
        "also the RMS sigma over the RMSE and the RMS of the standardised errors (x - mean) / sigma (z-RMS, 1 is "
        "calibrated).",
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        rows = [r for r in results if r["dataset"] == dataset]
        checkpoints = list(rows[0]["checkpoints"])
        lines += [f"## {dataset}", "", "| row | " + " | ".join(f"ELBO {c}" for c in checkpoints)
                  + " | " + " | ".join(f"served/RMSE {c}" for c in checkpoints) + " | images/s |",
                  "|---|" + "---:|" * (2 * len(checkpoints) + 1)]
        for r in rows:
            cells = [f"{r['checkpoints'][c]['test_elbo']:.1f}" for c in checkpoints]
            for c in checkpoints:
                point = r["checkpoints"][c]
                rms = point.get("served_rms_over_rmse", point["served_over_rmse"])
                varies = abs(rms / point["served_over_rmse"] - 1) > 1e-3  # a sigma that varies over pixels
                text = f"{point['served_over_rmse']:.3f}"
                if varies:
                    text += f" (RMS sigma {rms:.3f}, z-RMS {point['standardised_error_rms']:.3f})"
                refits = []
                for key, value in point.items():
                    if key.startswith("served_over_rmse_refit_"):
                        name = key.removeprefix("served_over_rmse_refit_")
                        z = point.get(f"standardised_error_rms_refit_{name}")
                        refits.append(f"{name.replace('_', '-')} {value:.3f}"
                                      + (f", z-RMS {z:.3f}" if varies and z is not None else ""))
                if "served_over_rmse_refit" in point:  # rows of earlier runs: refit on the train split
                    refits.append(f"train {point['served_over_rmse_refit']:.3f}")
                if refits:
                    text += f" (refit {'; '.join(refits)})"
                cells.append(text)
            lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {r['images_per_second']:.0f} |")
        optimal = next((r for r in rows if r["row"] == "optimal"), None)
        learned = next((r for r in rows if r["row"] == "learned"), None)
        if optimal and learned:
            gaps = {c: abs(learned["checkpoints"][c]["test_elbo"] - optimal["checkpoints"][c]["test_elbo"])
                    / abs(optimal["checkpoints"][c]["test_elbo"]) for c in checkpoints}
            lines += ["", "Learned vs optimal sigma, |ELBO difference| / |optimal ELBO|: "
                      + ", ".join(f"{c} {100 * g:.1f}%" for c, g in gaps.items()) + "."]
        lines.append("")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text)
    os.replace(staging, path)


def main(argv):
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{FLAGS.out}.json"
    # Keep the saved rows this run does not redo, in their place.
    results = json.loads(json_path.read_text()) if json_path.exists() else []
    for dataset in FLAGS.datasets:
        x_train, x_test = load(dataset)
        x_held_out = None
        if FLAGS.refit_split:  # the rule of `train --refit_split`: a seeded random subset
            order = np.random.default_rng(0).permutation(len(x_train))
            count = int(round(FLAGS.refit_split * len(x_train)))
            x_train, x_held_out = x_train[np.sort(order[count:])], x_train[np.sort(order[:count])]
        for row in FLAGS.rows:
            redone = run(dataset, row, x_train, x_test, x_held_out)
            kept = [r for r in results if (r["dataset"], r["row"]) != (dataset, row)]
            results = kept + [redone] if len(kept) == len(results) else [
                redone if (r["dataset"], r["row"]) == (dataset, row) else r for r in results]
            print(json.dumps(redone), flush=True)
            _write(json_path, json.dumps(results, indent=2) + "\n")
            _write(RESULTS / f"{FLAGS.out}.md", to_markdown(results))
    print((RESULTS / f"{FLAGS.out}.md").read_text())


if __name__ == "__main__":
    app.run(main)
