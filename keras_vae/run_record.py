"""What `train` records about a run: TensorBoard logs, `history.csv` and the legend of `metrics.json`.

`callbacks(...)` gives the Keras callbacks `keras_vae.experiment.train` adds
to `fit`: per-epoch validation on the test split (`val_elbo`, `val_rec`,
`val_kl`, ...), `kv.callbacks.CollapseMonitor` (KL per dimension, active
units, mutual information), `kv.callbacks.ImageLogger` (prior samples and
reconstructions) and `EpochHistory` (every epoch's logs as TensorBoard
scalars and in `history.csv`, kept across a resumed run), all writing under
`OUT/tensorboard` from the end of the first epoch on:

    tensorboard --logdir runs/demo/tensorboard

`describe(metrics, config, model)` adds to `metrics.json` the unit and the
direction of every figure (`legend`), the library versions and the flags
that applied to the run.

Example:

>>> legend_entry("test_elbo")["better"]
'higher'
>>> legend_entry("test_kl_z1")["unit"]
'nats per image'
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import platform
import shutil
from pathlib import Path

import keras
import numpy as np

from keras_vae import callbacks as kv_callbacks
from keras_vae import files

TENSORBOARD = "tensorboard"
HISTORY = "history.csv"
BACKUP_HISTORY = "history.json"  # in the checkpoint folder: the epochs of a run that may be resumed

NATS = "nats per image"
# name: (unit, which way is better, what it is)
LEGEND = {
    "test_elbo": (NATS, "higher", "ELBO on the test split; an optimal sigma is fitted to each batch, as in training"),
    "test_elbo_running_sigma": (NATS, "higher", "ELBO on the test split at the sigma the model serves"),
    "test_rec": (NATS, "lower", "reconstruction term -E_q[log p(x|z)]; a density, so negative for a close fit"),
    "test_kl": (NATS, "lower at an equal test_rec", "rate: KL(q(z|x) || p(z)); test_elbo = -test_rec - test_kl"),
    "test_mse": ("squared pixel units (pixels in [0, 1]), per pixel", "lower", "MSE of the reconstructions"),
    "test_rmse": ("pixel units (pixels in [0, 1])", "lower", "root of test_mse"),
    "sigma": ("pixel units (pixels in [0, 1])", "closer to test_rmse",
              "decoder sigma the model serves, mean over the test split (the fitted one for optimal modes)"),
    "sigma_over_test_rmse": ("ratio", "closer to 1", "calibration: served sigma over the test RMSE"),
    "epochs": ("epochs", "none (a setting)", "epochs trained"),
    "train_seconds": ("seconds", "lower", "wall time of the training epochs (no validation or evaluation)"),
    "images_per_second": ("train images per second", "higher", "training throughput"),
    "latent_alignment_nats": (NATS, "higher", "ELBO gain of --align_latents (null: the model skips it)"),
    "train_images": ("images", "none (a count)", "images in the train split"),
    "test_images": ("images", "none (a count)", "images in the test split"),
    "test_perplexity": ("codes", "higher (more codes in use)", "perplexity of the codebook usage"),
    # Models of videos: the per-image figures above are per predicted frame (a frame is an image).
    "test_elbo_per_video": ("nats per video", "higher", "test ELBO summed over a video's predicted frames"),
    "predicted_frames": ("frames", "none (a setting)", "frames predicted per video (after the context frames)"),
}


def legend_entry(name: str) -> dict:
    """The `{"unit", "better", "meaning"}` of a `metrics.json` figure (a model's extra `test_*` metric too)."""
    if name in LEGEND:
        unit, better, meaning = LEGEND[name]
    elif name.startswith("test_kl"):
        unit, better, meaning = NATS, "lower at an equal test_rec", f"KL term {name[5:]} on the test split"
    else:
        unit, better, meaning = "as the model's metric", "see the model's docstring", f"the model's {name[5:]} metric"
    return {"unit": unit, "better": better, "meaning": meaning}


def versions() -> dict:
    """The versions of Python, keras_vae and the libraries it runs on."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    import keras_vae

    return {"keras_vae": keras_vae.__version__, "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "tensorflow_probability": tfp.__version__, "numpy": np.__version__}


def applied_flags(config, model, alignment_gain) -> dict:
    """The run's settings without those that did not apply to it (and without `overwrite`).

    `sigma` applies to a fixed-sigma Gaussian only, `receptive_field` to the
    PixelCNN decoder, `data_dependent_start` to a learned or per-pixel sigma,
    `refit_sigma` and `refit_split` to a shared sigma (optimal or learned), `align_latents` to models that take it,
    `context_frames` to models of videos, `num_frames`, `frame_size`,
    `num_digits` and `num_sequences` to `--dataset=moving_mnist`, `image_size` to `--dataset=sprites`;
    the sizes of `--prior`, `--posterior` and `--sampler` to the choice they size.
    """
    settings = dataclasses.asdict(config)
    sigma_mode = getattr(model.likelihood, "sigma", None)
    skipped = {"overwrite"}
    if not isinstance(sigma_mode, float):
        skipped.add("sigma")
    if config.network != "pixelcnn":
        skipped.add("receptive_field")
    if sigma_mode not in ("learned", "per_pixel"):
        skipped.add("data_dependent_start")
    if model.likelihood.refit_reduction is None:
        skipped |= {"refit_sigma", "refit_split"}
    if alignment_gain is None and config.align_latents != "none":
        skipped.add("align_latents")
    if not hasattr(model, "context_frames"):  # a model of images
        skipped.add("context_frames")
    if config.dataset != "moving_mnist":
        skipped |= {"num_frames", "frame_size", "num_digits", "num_sequences"}
    if config.dataset != "sprites":
        skipped.add("image_size")
    skipped |= {name for name, choice in (("prior_components", "mixture"), ("pseudo_inputs", "vamp"))
                if getattr(config, "prior", None) != choice}
    if getattr(config, "posterior", None) != "iaf":
        skipped |= {"num_flows", "flow_hidden_units"}
    if getattr(config, "sampler", None) != "gmm":
        skipped.add("sampler_components")
    if getattr(config, "sampler", None) != "two_stage":
        skipped |= {"two_stage_units", "two_stage_epochs"}
    return {name: value for name, value in settings.items() if name not in skipped}


def describe(metrics: dict, config, model, alignment_gain) -> dict:
    """The entries `train` adds to `metrics.json`: `flags` (those that applied), `legend` and `versions`."""
    numbers = [name for name, value in metrics.items() if isinstance(value, (int, float)) or value is None]
    return {
        "flags": applied_flags(config, model, alignment_gain),
        "legend": {name: legend_entry(name) for name in numbers},
        "versions": versions(),
    }


class Validation(keras.callbacks.Callback):
    """Evaluates the model on held-out data after every epoch and adds the results as `val_NAME` to the logs.

    It runs after the epoch's own callbacks that time the training (put it
    after them), so their time excludes it.

    Args:
        x: Held-out images.
        y: Their labels, for models that take them. Defaults to None.
        batch_size: Images per batch. Defaults to 128.
    """

    def __init__(self, x, y=None, batch_size: int = 128):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def on_epoch_end(self, epoch, logs=None):
        labels = () if self.y is None else (self.y,)
        results = self.model.evaluate(self.x, *labels, batch_size=self.batch_size, verbose=0, return_dict=True)
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in results.items()})


class EpochHistory(keras.callbacks.Callback):
    """Writes every epoch's logs as TensorBoard scalars and, when training ends, as a CSV file.

    Scalars go to `log_dir/train` and (`val_NAME`) `log_dir/validation` as
    `epoch_NAME`, the layout of `keras.callbacks.TensorBoard`. The rows are
    also kept in `record` (in the run's checkpoint folder), so a run resumed
    after a kill keeps the epochs it trained before; a run that starts
    afresh clears the event files an earlier run left in `log_dir`.

    Args:
        path: The CSV file (`OUT/history.csv`).
        log_dir: The TensorBoard folder, or None.
        record: A JSON file holding the rows between processes, or None.
    """

    def __init__(self, path, log_dir=None, record=None):
        super().__init__()
        self.path = Path(path)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.record = None if record is None else Path(record)
        self.rows: list[dict] = []
        self._writers: dict = {}

    def on_train_begin(self, logs=None):
        if self.record is not None and self.record.is_file():
            self.rows = json.loads(self.record.read_text())
        elif self.log_dir is not None:
            clear_event_files(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        values = {name: float(np.mean(value)) for name, value in (logs or {}).items()}
        row = {"epoch": epoch + 1, **values}
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]  # a repeated epoch replaces its row
        if self.record is not None:
            files.write_json(self.record, self.rows)
        if self.log_dir is not None:
            self._write_scalars(epoch, values)

    def _write_scalars(self, epoch: int, values: dict) -> None:
        import tensorflow as tf

        for name, value in values.items():
            split, tag = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            if split not in self._writers:
                self._writers[split] = tf.summary.create_file_writer(str(self.log_dir / split))
            with self._writers[split].as_default():
                tf.summary.scalar(f"epoch_{tag}", value, step=epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        names = list(dict.fromkeys(name for row in self.rows for name in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(self.rows, key=lambda row: row["epoch"]))
        files.write_text(self.path, text.getvalue())
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def clear_event_files(log_dir) -> None:
    """Removes a TensorBoard folder of an earlier run; refuses one holding anything but event files.

    Raises:
        FileExistsError: If `log_dir` holds other files (not ours to delete).
    """
    log_dir = Path(log_dir)
    if not log_dir.exists():
        return
    others = [str(p) for p in log_dir.rglob("*") if p.is_file() and not p.name.startswith("events.out.tfevents")]
    if others or not log_dir.is_dir():
        raise FileExistsError(f"{log_dir} holds files that are not TensorBoard event files ({', '.join(others[:3])}"
                              "); refusing to delete them. Move them away or choose another --out.")
    shutil.rmtree(log_dir)


def callbacks(out, backup, x_test, y_test=None, model=None, batch_size: int = 128, seed: int = 0) -> list:
    """The callbacks that record a `train` run into `out` (see the module docstring), in the order they run.

    Args:
        out: The run's folder.
        backup: Its checkpoint folder (`EpochHistory` keeps its rows there).
        x_test: The test images (validation, collapse statistics, reconstructions).
        y_test: Their labels, for models that take them. Defaults to None.
        model: The model: one with conditions gets its images logged with
            `y_test` and no collapse log (`CollapseMonitor` takes no labels).
            Defaults to None.
        batch_size: Validation batch size. Defaults to 128.
        seed: Seed of the fixed prior draws in TensorBoard. Defaults to 0.
    """
    log_dir = Path(out) / TENSORBOARD
    recorded = [Validation(x_test, y_test, batch_size)]
    names = list(model.condition_specs()) if model is not None else []
    if not names:
        recorded.append(kv_callbacks.CollapseMonitor(x_test[:500], log_dir=log_dir / "posterior"))
    if not names or y_test is not None:
        conditions = {names[0]: y_test[:16]} if names else None
        recorded.append(kv_callbacks.ImageLogger(log_dir / "images", x_test[:16], num_samples=64, seed=seed,
                                                 conditions=conditions))
    return [*recorded, EpochHistory(Path(out) / HISTORY, log_dir, Path(backup) / BACKUP_HISTORY)]
