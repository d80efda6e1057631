"""VLAE benchmark: does a restricted PixelCNN view keep the latent code in use?

Three models on the embedded MNIST split (9,000 train / 1,000 test, already
on the 1/255 grid), all with a discretized logistic mixture likelihood (5
components), a conv encoder, latent 32, batch 64, Adam 1e-3, beta = 1, no
KL annealing or free bits:

  (a) conv VAE: the sigma-VAE conv decoder (pixels independent given z);
  (b) PixelCNN decoder with a large receptive field (27: 13 masked layers);
  (c) VLAE: the same PixelCNN with a small receptive field (5: 2 layers).

Reports the test negative ELBO (an upper bound on the exact NLL) in nats per
image and bits/dim, the KL in nats, active units (`kv.evaluation.active_units`:
Var_x E[z_d|x] > 0.01)
and training speed, into `benchmarks/results/vlae.md` and `.json`.

    nice -n 10 python benchmarks/vlae.py [--epochs=5] [--rows=a,b,c]
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from absl import app, flags

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_vae as kv  # noqa: E402
from keras_vae.likelihoods import DiscretizedLogisticMixture  # noqa: E402
from keras_vae.models.vlae import build_vlae  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROW_NAMES = {"a": "(a) conv VAE", "b": "(b) PixelCNN, large view", "c": "(c) VLAE, small view"}

flags.DEFINE_integer("epochs", 5, "Training epochs per row.")
flags.DEFINE_list("rows", ["a", "b", "c"], "Rows to run: a, b, c.")
flags.DEFINE_integer("filters", 32, "PixelCNN feature channels.")
flags.DEFINE_integer("large_view", 27, "Receptive field of (b).")
flags.DEFINE_integer("small_view", 5, "Receptive field of (c).")
flags.DEFINE_integer("latent_dim", 32, "Size of z.")
flags.DEFINE_integer("batch_size", 64, "Images per step.")
flags.DEFINE_integer("mixtures", 5, "Logistic mixture components.")
flags.DEFINE_enum("conditioning", "spatial", ["spatial", "broadcast"], "How z enters the PixelCNN.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_integer("train_images", 9000, "Use the first N training images (smoke runs).")
flags.DEFINE_string("results_name", "vlae", "Stem of the files written into benchmarks/results/.")
FLAGS = flags.FLAGS


def build(row: str) -> kv.VAE:
    likelihood = DiscretizedLogisticMixture(FLAGS.mixtures)
    if row == "a":
        return kv.build_vae((28, 28, 1), network="conv", latent_dim=FLAGS.latent_dim, likelihood=likelihood,
                            seed=FLAGS.seed)
    view = FLAGS.large_view if row == "b" else FLAGS.small_view
    return build_vlae((28, 28, 1), latent_dim=FLAGS.latent_dim, likelihood=likelihood, receptive_field=view,
                      filters=FLAGS.filters, conditioning=FLAGS.conditioning, seed=FLAGS.seed)


class _EpochLog(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.epochs, self.seconds = [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._start
        self.epochs.append({k: round(float(v), 3) for k, v in logs.items()})
        print(f"  epoch {epoch + 1}: {self.epochs[-1]}", flush=True)


def run_row(row: str, x_train: np.ndarray, x_test: np.ndarray) -> dict:
    keras.utils.set_random_seed(FLAGS.seed)
    model = build(row)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    log = _EpochLog()
    model.fit(kv.data.pipeline(x_train, FLAGS.batch_size, seed=FLAGS.seed), epochs=FLAGS.epochs, verbose=0,
              callbacks=[log])
    test = model.evaluate(x_test, batch_size=100, verbose=0, return_dict=True)
    stats = kv.evaluation.posterior_statistics(model, x_test, seed=FLAGS.seed)
    kl_per_dim = np.concatenate(
        [np.asarray(model.compute_terms(x_test[i : i + 100])["kl_per_dim"]) for i in range(0, len(x_test), 100)]
    ).mean(axis=0)
    dims = float(np.prod(x_test.shape[1:]))
    return {
        "row": ROW_NAMES[row],
        "receptive_field": getattr(model, "receptive_field", None),
        "test_neg_elbo_nats": -float(test["elbo"]),
        "test_bits_per_dim": float(-test["elbo"] / (dims * np.log(2.0))),
        "test_rec_nats": float(test["rec"]),
        "test_kl_nats": float(test["kl"]),
        "active_units": stats["active_units"],
        "mutual_information_nats": stats["mutual_information"],
        "marginal_kl_nats": stats["marginal_kl"],
        "kl_per_dim_nats": [round(float(v), 3) for v in kl_per_dim],
        "parameters": int(model.count_params()),
        "train_seconds": log.seconds,
        "images_per_second": len(x_train) * FLAGS.epochs / max(log.seconds, 1e-9),
        "history": log.epochs,
    }


def to_markdown(rows: list[dict], command: str, load: str) -> str:
    lines = [
        "# VLAE: posterior collapse vs. the PixelCNN decoder's view (MNIST 9k/1k, 8-bit)",
        "",
        f"Command: `{command}`; machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; "
        f"written {time.strftime('%Y-%m-%d %H:%M')}. Load average at the start: {load}"
        + (" (other jobs shared the 2 cores, so the speeds are rough)." if float(load.split(",")[0]) > 1.0 else "."),
        "",
        f"Settings: discretized logistic mixture ({FLAGS.mixtures} components) in every row; conv encoder; "
        f"latent {FLAGS.latent_dim}; batch {FLAGS.batch_size}; Adam 1e-3; beta 1, no annealing, no free bits; "
        f"{FLAGS.epochs} epochs; PixelCNN: {FLAGS.filters} filters, 3x3 masked kernels, "
        f"z conditioning: {FLAGS.conditioning}. "
        "NLL = test negative ELBO (one z sample), an upper bound on the exact NLL.",
        "",
        "| model | view | -ELBO (nats) | bits/dim | KL (nats) | dims with KL > 0.1 nats | active units "
        "| I(x;z) (nats) | params | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['receptive_field'] or 'whole image'} | {r['test_neg_elbo_nats']:.1f} | "
            f"{r['test_bits_per_dim']:.3f} | {r['test_kl_nats']:.2f} | "
            f"{sum(v > 0.1 for v in r['kl_per_dim_nats'])}/{FLAGS.latent_dim} | "
            f"{r['active_units']}/{FLAGS.latent_dim} | {r['mutual_information_nats']:.2f} | "
            f"{r['parameters']:,} | {r['images_per_second']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    x_train = kv.data.load_arrays("mnist", "train")[: FLAGS.train_images]
    x_test = kv.data.load_arrays("mnist", "test")
    for name, x in (("train", x_train), ("test", x_test)):
        off_grid = np.abs(x * 255 - np.round(x * 255)).max()
        assert off_grid < 1e-3, f"MNIST {name} is off the 1/255 grid by {off_grid}"
    command = (f"python benchmarks/vlae.py --epochs={FLAGS.epochs} --rows={','.join(FLAGS.rows)} "
               f"--train_images={len(x_train)} --filters={FLAGS.filters} --large_view={FLAGS.large_view} "
               f"--small_view={FLAGS.small_view} --conditioning={FLAGS.conditioning}")
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for row in FLAGS.rows:
        print(f"{ROW_NAMES[row]}:", flush=True)
        rows.append(run_row(row, x_train, x_test))
        print({k: v for k, v in rows[-1].items() if k not in ("history", "kl_per_dim_nats")}, flush=True)
        # written after every row, so a run cut short keeps what it measured
        summary = {"command": command, "load": load, "rows": rows}
        (RESULTS / f"{FLAGS.results_name}.json").write_text(json.dumps(summary, indent=2) + "\n")
        (RESULTS / f"{FLAGS.results_name}.md").write_text(to_markdown(rows, command, load))
    print(to_markdown(rows, command, load))


if __name__ == "__main__":
    app.run(main)
