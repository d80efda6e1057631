"""`python -m keras_vae train` and experiment.train: files written, metrics, and refusals before any work."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vae import experiment
from tests.conftest import make_images


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "blobs.npz"
    np.savez(path, x=make_images(48, (8, 8, 1)))
    return str(path)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "keras_vae", *args], capture_output=True, text=True, timeout=300)


def test_train_command_writes_model_metrics_and_pictures(tmp_path, npz):
    out = tmp_path / "run"
    args = ["train", f"--dataset={npz}", "--likelihood=optimal_per_image", "--beta=2", "--network=mlp",
            "--latent_dim=2", "--epochs=2", "--batch_size=16", "--test_fraction=0.25", f"--out={out}"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test ELBO" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    keys = ("test_elbo", "test_rec", "test_kl", "test_mse", "sigma", "epochs", "train_seconds", "images_per_second")
    for key in keys:
        assert np.isfinite(metrics[key]), key
    assert metrics["flags"]["likelihood"] == "optimal_per_image" and metrics["flags"]["beta"] == 2.0
    assert metrics["train_images"] == 36 and metrics["test_images"] == 12
    np.testing.assert_allclose(metrics["test_elbo"], -metrics["test_rec"] - metrics["test_kl"], rtol=1e-4)
    for name in ("samples.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 100
    model = keras.models.load_model(out / "model.keras")
    assert model.likelihood.sigma == "optimal_per_image" and float(model.beta) == 2.0
    assert not (out / "backup").exists()  # BackupAndRestore cleans up after a finished run

    # A second run into the same folder is refused, and the model is untouched.
    before = (out / "model.keras").read_bytes()
    refused = run_cli(*args)
    assert refused.returncode != 0 and "refusing to overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (out / "model.keras").read_bytes() == before


def config(tmp_path, npz, **overrides):
    settings = dict(dataset=npz, network="mlp", latent_dim=2, epochs=1, batch_size=16, out=str(tmp_path / "run"))
    return experiment.RunConfig(**{**settings, **overrides})


def test_overwrite_replaces_a_previous_run(tmp_path, npz):
    experiment.train(config(tmp_path, npz, likelihood="bernoulli"), verbose=0)
    _, metrics = experiment.train(config(tmp_path, npz, likelihood="learned", overwrite=True), verbose=0)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["flags"]["likelihood"] == "learned"
    assert metrics["sigma"] > 0


def test_overwrite_removes_the_old_runs_pictures_it_does_not_replace(tmp_path, npz):
    run = tmp_path / "run"
    experiment.train(config(tmp_path, npz), verbose=0)
    old = json.loads((run / "metrics.json").read_text())
    assert old["figures"] == ["reconstructions.png", "samples.png"]
    # As if the old run had been a video model with more test videos (strips prediction_0..3).
    (run / "prediction_3.png").write_bytes(b"old strip")
    (run / "notes.txt").write_text("mine")
    listed = [*old["figures"], "prediction_3.png", "notes.txt", "../outside.png"]  # the last two: not ours
    (tmp_path / "outside.png").write_bytes(b"mine")
    (run / "metrics.json").write_text(json.dumps({**old, "figures": listed}))
    experiment.train(config(tmp_path, npz, overwrite=True), verbose=0)
    assert not (run / "prediction_3.png").exists()
    assert (run / "notes.txt").read_text() == "mine"  # not a picture of ours: kept
    assert (tmp_path / "outside.png").read_bytes() == b"mine"  # outside the run folder: kept
    assert (run / "samples.png").stat().st_size > 0


def test_a_run_that_did_not_list_its_pictures_has_them_found_by_name(tmp_path):
    for name in ("model.keras", "samples.png", "prediction_3.png", "predictions.gif", "notes.txt"):
        (tmp_path / name).write_bytes(b"old")
    (tmp_path / "metrics.json").write_text(json.dumps({"test_elbo": 1.0}))  # before runs listed `figures`
    stale = experiment.stale_outputs(tmp_path)
    assert sorted(path.name for path in stale) == ["prediction_3.png", "predictions.gif", "samples.png"]


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(likelihood="gausian"), ValueError, "Unknown likelihood"),
        (dict(network="vgg"), ValueError, "Unknown network"),
        (dict(dataset="/missing/data.npz"), FileNotFoundError, "No dataset at"),
    ],
)
def test_bad_settings_fail_before_any_file_is_written(tmp_path, npz, overrides, error, message):
    with pytest.raises(error, match=message):
        experiment.train(config(tmp_path, npz, **overrides), verbose=0)
    assert not (tmp_path / "run").exists()


def test_nan_dataset_fails_before_training(tmp_path):
    x = make_images(8)
    x[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    with pytest.raises(ValueError, match="NaN or inf pixels in 1 image"):
        experiment.train(config(tmp_path, str(tmp_path / "nan.npz")), verbose=0)
    assert not (tmp_path / "run").exists()


def test_out_must_be_a_folder(tmp_path, npz):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(NotADirectoryError):
        experiment.train(config(tmp_path, npz, out=str(tmp_path / "file")), verbose=0)
    assert (tmp_path / "file").read_text() == "mine"
