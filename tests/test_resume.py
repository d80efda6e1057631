"""Kill-and-resume: SIGKILL `python -m keras_vae train` mid-epoch, rerun the same command, it finishes.

The CLI keeps a `BackupAndRestore` checkpoint in `OUT/backup` (weights,
optimizer state, beta, optimal-sigma running averages, epoch); the rerun
continues from the last completed epoch and runs exactly the planned number of
optimizer steps. Files the user had in `OUT` survive both runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import make_images

EPOCHS = 3
IMAGES, TEST_IMAGES, BATCH = 2000, 100, 8
STEPS_PER_EPOCH = IMAGES // BATCH
TIMEOUT_S = 120


def _command(dataset: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "keras_vae", "train", f"--dataset={dataset}", "--network=mlp", "--latent_dim=2",
        "--likelihood=optimal", f"--epochs={EPOCHS}", f"--batch_size={BATCH}", "--kl_warmup_steps=600",
        f"--out={out}",
    ]


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def test_sigkill_mid_epoch_then_rerun_finishes_the_planned_epochs(tmp_path):
    dataset = tmp_path / "blobs.npz"
    images = make_images(IMAGES + TEST_IMAGES, shape=(8, 8, 1), seed=3)
    np.savez(dataset, x=images[:IMAGES], x_test=images[IMAGES:])
    out = tmp_path / "run"
    out.mkdir()
    user_file = out / "notes.txt"
    user_file.write_text("my notes\n")
    metadata = out / "backup" / "training_metadata.json"

    # 1. Start training; SIGKILL it once epoch 1 is checkpointed, i.e. inside epoch 2.
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(_command(dataset, out), env=_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not (metadata.exists() and metadata.read_text().strip()):
            assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    log.close()
    assert process.returncode == -signal.SIGKILL
    checkpoint = json.loads(metadata.read_text())
    assert checkpoint["epoch"] == 1  # killed before epoch 2 ended: mid-epoch
    assert not (out / "model.keras").exists() and not (out / "metrics.json").exists()
    assert user_file.read_text() == "my notes\n"

    # 2. The same command again: it resumes at epoch 2 and finishes.
    rerun = subprocess.run(_command(dataset, out), env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"Epoch 2/{EPOCHS}" in rerun.stdout and f"Epoch 1/{EPOCHS}" not in rerun.stdout
    model = keras.models.load_model(out / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * STEPS_PER_EPOCH  # the planned steps, no more
    assert float(model.beta.numpy()) == 1.0  # the KL warm-up continued from the restored step
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS and np.isfinite(metrics["test_elbo"])
    assert user_file.read_text() == "my notes\n"
    assert not (out / "backup").exists()  # the finished run removes its checkpoint

    # 3. No worse than the same command run without interruption.
    uninterrupted = tmp_path / "uninterrupted"
    straight = subprocess.run(_command(dataset, uninterrupted), env=_env(), capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]
    reference = json.loads((uninterrupted / "metrics.json").read_text())
    # Same steps and schedule; the resumed epochs see the images in another order, which moves this
    # small model's test ELBO by a few percent either way. A resume that lost the weights or the
    # optimizer state would end far lower.
    assert metrics["test_elbo"] >= reference["test_elbo"] - 0.1 * abs(reference["test_elbo"]), (
        metrics["test_elbo"], reference["test_elbo"])


def test_a_checkpoint_of_other_settings_is_refused_unless_overwrite(tmp_path):
    from keras_vae.experiment import BACKUP_SETTINGS, RunConfig, prepare_backup

    backup = tmp_path / "run" / "backup"
    config = RunConfig(out=str(tmp_path / "run"), epochs=3)
    prepare_backup(backup, config)
    (backup / "latest.weights.h5").write_text("checkpoint")  # what BackupAndRestore writes
    prepare_backup(backup, RunConfig(out=str(tmp_path / "run"), epochs=3, overwrite=True))  # same settings: resume
    assert (backup / "latest.weights.h5").read_text() == "checkpoint"
    other = RunConfig(out=str(tmp_path / "run"), epochs=5, likelihood="learned")
    with pytest.raises(FileExistsError, match=r"other settings \(epochs, likelihood\).*--overwrite"):
        prepare_backup(backup, other)
    assert (backup / "latest.weights.h5").exists()  # refused: nothing touched
    prepare_backup(backup, RunConfig(out=str(tmp_path / "run"), epochs=5, likelihood="learned", overwrite=True))
    assert not (backup / "latest.weights.h5").exists()  # discarded, started afresh
    assert json.loads((backup / BACKUP_SETTINGS).read_text())["epochs"] == 5



def test_stop_on_nan_names_the_step_and_the_sigma_mode(capsys):
    import tensorflow as tf

    from keras_vae.experiment import StopOnNaN
    from tests.conftest import tiny_vae

    images = make_images(32, (8, 8, 1))
    vae = tiny_vae((8, 8, 1), likelihood="optimal")

    class PoisonAfterTwoSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:  # NaN weights: the loss of a step or two later is NaN
                weight = self.model.decoder.trainable_weights[0]
                weight.assign(np.full(weight.shape, np.nan, "float32"))

    stop = StopOnNaN("'optimal'")
    history = vae.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=3, verbose=0,
                      callbacks=[PoisonAfterTwoSteps(), stop])
    assert len(history.history["loss"]) == 1  # stopped in the first epoch, not after 3
    steps = int(vae.optimizer.iterations.numpy())
    assert steps in (3, 4)  # (Keras may already have dispatched the next step when the weights change)
    assert f"at step {steps} (epoch 1, batch {steps}) with likelihood 'optimal'" in stop.message
    assert stop.message in capsys.readouterr().out
