"""`python -m keras_vae sweep`: one run per point in OUT/<label>/, the table and plot, and resuming on rerun."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import matplotlib.image
import numpy as np
import pytest

from keras_vae import experiment, sweep
from tests.conftest import make_images


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "blobs.npz"
    x = make_images(48, (8, 8, 1), seed=3)
    np.savez(path, x=x[:32], x_test=x[32:])
    return str(path)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "keras_vae", *args], capture_output=True, text=True, timeout=300)


def test_sweep_command_writes_runs_table_and_plot_and_keeps_finished_points(tmp_path, npz):
    out = tmp_path / "rd"
    args = ["sweep", f"--dataset={npz}", "--betas=0.5", "--sigma_modes=optimal", "--network=mlp", "--latent_dim=2",
            "--epochs=1", "--batch_size=16", f"--out={out}"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "beta=0.5: rate" in result.stdout and "optimal: rate" in result.stdout
    for name in sweep.TABLE_FILES:
        assert (out / name).stat().st_size > 100, name
    assert matplotlib.image.imread(out / "rate_distortion.png").shape[:2] == (480, 640)
    table = json.loads((out / "rate_distortion.json").read_text())
    assert [p["folder"] for p in table["points"]] == ["beta_0.5", "optimal"]
    assert table["epochs"] == 1 and table["network"] == "mlp" and "likelihood" not in table
    assert "frame_size" not in table  # only the settings given on the command line (the runs record them all)
    for point in table["points"]:  # the table holds each run's own test numbers
        metrics = json.loads((out / point["folder"] / "metrics.json").read_text())
        assert point["rate"] == metrics["test_kl"] and point["distortion"] == metrics["test_mse"]
        assert point["reconstruction_nats"] == metrics["test_rec"] and point["elbo"] == metrics["test_elbo"]
        assert metrics["flags"]["likelihood"] == point["likelihood"] and metrics["flags"]["beta"] == point["beta"]
        assert metrics["flags"]["epochs"] == 1 and point["rate"] >= 0 and point["distortion"] > 0
        assert abs(point["elbo"] - (-point["reconstruction_nats"] - point["rate"])) < 1e-3 * abs(point["elbo"]) + 1e-3
    assert json.loads((out / "beta_0.5" / "metrics.json").read_text())["flags"]["sigma"] == 1.0
    markdown = (out / "rate_distortion.md").read_text()
    rate = table["points"][0]["rate"]
    assert f"| beta=0.5 | beta-VAE (sigma=1) | {rate:.2f} |" in markdown and markdown.count("\n| ") == 1 + 2

    # A rerun trains nothing: both models stay byte for byte, and the table is the same.
    models = {p["folder"]: (out / p["folder"] / "model.keras").read_bytes() for p in table["points"]}
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("(kept: finished earlier with the same settings)") == 2
    assert all((out / folder / "model.keras").read_bytes() == data for folder, data in models.items())
    assert json.loads((out / "rate_distortion.json").read_text())["points"] == table["points"]

    # Other settings over finished points are refused before any training, naming the setting and the flag.
    refused = run_cli(*[a for a in args if not a.startswith("--epochs")], "--epochs=2")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "other settings (epochs)" in refused.stderr and "--overwrite" in refused.stderr
    assert all((out / folder / "model.keras").read_bytes() == data for folder, data in models.items())


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


def test_sweep_resumes_an_interrupted_point(tmp_path, npz):
    out = tmp_path / "rd"
    shared = dict(network="mlp", latent_dim=2, epochs=2, batch_size=16, seed=0)
    config = experiment.RunConfig(dataset=npz, likelihood="gaussian", beta=2.0, out=str(out / "beta_2"), **shared)
    with pytest.raises(KeyboardInterrupt):
        experiment.train(config, verbose=0, callbacks=[_Interrupt()])
    assert experiment.has_checkpoint(out / "beta_2" / "backup") and not (out / "beta_2" / "model.keras").exists()
    lines = []
    points = sweep.rate_distortion_sweep(npz, betas=(2,), sigma_modes=(), out=out, echo=lines.append, **shared)
    assert len(lines) == 1 and "(resumed and trained)" in lines[0]
    metrics = json.loads((out / "beta_2" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and points[0]["rate"] == metrics["test_kl"]
    history = (out / "beta_2" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 2  # the epoch trained before the interruption and the resumed one
    assert not (out / "beta_2" / "backup").exists()


def test_sweep_flags_are_checked_before_any_work(tmp_path, npz):
    with pytest.raises(ValueError, match="--betas=0.5,x"):
        sweep.parse_list("0.5,x", "--betas", float)
    with pytest.raises(ValueError, match="Unknown sigma mode 'optimall'"):
        sweep.rate_distortion_sweep(npz, betas=(), sigma_modes=("optimall",), out=tmp_path / "rd")
    with pytest.raises(ValueError, match="sets likelihood itself"):
        sweep.rate_distortion_sweep(npz, out=tmp_path / "rd", likelihood="optimal")
    with pytest.raises(ValueError, match="repeated: beta=1"):
        sweep.settings([1, 1.0], [])
    assert not (tmp_path / "rd").exists()
