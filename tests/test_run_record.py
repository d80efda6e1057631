"""`train` records the run: TensorBoard scalars, images and KL per dimension, history.csv, and metrics.json's legend."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_vae as kv
from keras_vae import experiment, run_record
from tests.conftest import make_images

EPOCHS = 2


def events(folder) -> dict:
    """`{tag: {step: value}}` of every event file in `folder` (scalars as floats, images as (width, height))."""
    found = defaultdict(dict)
    for path in sorted(folder.glob("events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "images":
                    found[value.tag][event.step] = (int(array[0]), int(array[1]))  # width, height, then PNGs
                elif plugin == "histograms":
                    found[value.tag][event.step] = array
                else:
                    found[value.tag][event.step] = float(array)
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("record")
    x = make_images(64, (8, 8, 1), seed=1)
    np.savez(folder / "tiny.npz", x=x[:48], x_test=x[48:])
    config = experiment.RunConfig(dataset=str(folder / "tiny.npz"), network="mlp", latent_dim=3, epochs=EPOCHS,
                                  batch_size=16, out=str(folder / "run"))
    model, metrics = experiment.train(config, verbose=0)
    return folder / "run", model, metrics, x[48:]


def test_history_csv_has_train_and_validation_figures_per_epoch(run):
    out, _, _, _ = run
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(row["epoch"]) for row in rows] == list(range(1, EPOCHS + 1))
    for row in rows:
        for name in ("elbo", "rec", "kl", "val_elbo", "val_rec", "val_kl", "posterior_active_units"):
            assert np.isfinite(float(row[name])), name
        # The validation ELBO is the test split's: its own terms, not the training ones.
        np.testing.assert_allclose(float(row["val_elbo"]), -float(row["val_rec"]) - float(row["val_kl"]), rtol=1e-5)
        assert row["val_elbo"] != row["elbo"]


def test_tensorboard_holds_the_scalars_images_and_kl_per_dimension(run):
    out, model, _, _ = run
    rows = list(csv.DictReader((out / "history.csv").open()))
    train = events(out / "tensorboard" / "train")
    validation = events(out / "tensorboard" / "validation")
    for name in ("elbo", "loss", "kl", "rec", "sigma"):
        assert sorted(train[f"epoch_{name}"]) == list(range(EPOCHS))
        np.testing.assert_allclose([train[f"epoch_{name}"][e] for e in range(EPOCHS)],
                                   [float(row[name]) for row in rows], rtol=1e-6)
        np.testing.assert_allclose([validation[f"epoch_{name}"][e] for e in range(EPOCHS)],
                                   [float(row[f"val_{name}"]) for row in rows], rtol=1e-6)
    images = events(out / "tensorboard" / "images")
    assert sorted(images["samples"]) == sorted(images["reconstructions"]) == list(range(EPOCHS))
    assert images["samples"][0] == (8 * 9 - 1, 8 * 9 - 1)  # 64 prior samples, 8 x 8 tiles of 8x8 images
    assert images["reconstructions"][0] == (8 * 9 - 1, 4 * 9 - 1)  # 16 originals and 16 reconstructions
    posterior = events(out / "tensorboard" / "posterior")
    histogram = posterior["posterior_kl_per_dim"][EPOCHS - 1]  # (bins, 3): left, right, count
    assert histogram[:, 2].sum() == model.latent_dim
    assert sorted(posterior["posterior_active_units"]) == list(range(EPOCHS))


def test_metrics_json_has_units_directions_versions_and_only_applied_flags(run):
    out, _, metrics, _ = run
    saved = json.loads((out / "metrics.json").read_text())
    numbers = [name for name, value in saved.items() if isinstance(value, (int, float))]
    assert {"test_elbo", "test_rec", "test_kl", "sigma"} <= set(numbers)
    for name in numbers:
        entry = saved["legend"][name]
        assert entry["unit"] and entry["better"] and entry["meaning"], name
    assert saved["legend"]["test_elbo"]["better"] == "higher" and saved["legend"]["test_rec"]["better"] == "lower"
    assert saved["legend"]["test_elbo"]["unit"] == "nats per image"
    assert saved["versions"] == {"keras_vae": kv.__version__, "python": saved["versions"]["python"],
                                 "tensorflow": tf.__version__, "keras": keras.__version__,
                                 "tensorflow_probability": tfp.__version__, "numpy": np.__version__}
    flags = saved["flags"]
    assert flags["likelihood"] == "optimal" and flags["refit_sigma"] is True
    for skipped in ("sigma", "receptive_field", "data_dependent_start", "overwrite"):
        assert skipped not in flags, skipped
    assert saved == json.loads(json.dumps(metrics))


def test_applied_flags_follow_the_likelihood_and_network():
    config = experiment.RunConfig(likelihood="gaussian", sigma=0.5)
    fixed = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood=kv.Gaussian(sigma=0.5))
    flags = run_record.applied_flags(config, fixed, alignment_gain=1.0)
    assert flags["sigma"] == 0.5 and "refit_sigma" not in flags and "data_dependent_start" not in flags
    learned = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="learned")
    flags = run_record.applied_flags(experiment.RunConfig(likelihood="learned"), learned, alignment_gain=None)
    assert "data_dependent_start" in flags and "sigma" not in flags and "align_latents" not in flags


def test_a_conditional_run_logs_its_images_with_the_test_labels(tmp_path):
    x, y = make_images(8), np.arange(8) % 2
    model = kv.models.build_conditional_vae((8, 8, 1), num_classes=2, network="mlp", latent_dim=2)
    recorded = run_record.callbacks(tmp_path, tmp_path / "backup", x, y, model=model)
    loggers = [c for c in recorded if isinstance(c, kv.callbacks.ImageLogger)]
    assert len(loggers) == 1 and np.array_equal(loggers[0].conditions["y"], y)
    assert not any(isinstance(c, kv.callbacks.CollapseMonitor) for c in recorded)  # it takes no labels


def test_epoch_history_survives_a_resumed_run(tmp_path):
    record, csv_path, log_dir = tmp_path / "backup" / "history.json", tmp_path / "history.csv", tmp_path / "tb"
    first = run_record.EpochHistory(csv_path, log_dir, record)
    first.on_train_begin()
    first.on_epoch_end(0, {"loss": 3.0})
    first.on_epoch_end(1, {"loss": 2.0})  # killed here: no on_train_end
    second = run_record.EpochHistory(csv_path, log_dir, record)
    second.on_train_begin()
    second.on_epoch_end(1, {"loss": 1.5})  # epoch 2 again (its checkpoint was not saved): replaces the row
    second.on_epoch_end(2, {"loss": 1.0})
    second.on_train_end()
    rows = list(csv.DictReader(csv_path.open()))
    assert [(row["epoch"], float(row["loss"])) for row in rows] == [("1", 3.0), ("2", 1.5), ("3", 1.0)]
    assert events(log_dir / "train")["epoch_loss"] == {0: 3.0, 1: 1.5, 2: 1.0}


def test_a_fresh_run_clears_old_event_files_but_not_other_files(tmp_path):
    log_dir = tmp_path / "tensorboard"
    (log_dir / "train").mkdir(parents=True)
    (log_dir / "train" / "events.out.tfevents.1.old").write_bytes(b"")
    run_record.EpochHistory(tmp_path / "history.csv", log_dir).on_train_begin()
    assert not log_dir.exists()
    (log_dir / "train").mkdir(parents=True)
    (log_dir / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        run_record.EpochHistory(tmp_path / "history.csv", log_dir).on_train_begin()
    assert (log_dir / "notes.txt").read_text() == "mine"
