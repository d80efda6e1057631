"""`train`, `evaluate` and `export` of a model of videos (`--model=sequence`), and their refusals of bad videos."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vae import experiment, video

STEPS = dict(epochs=1, batch_size=8, latent_dim=3)  # one epoch of two steps on 9 videos


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "keras_vae", *args], capture_output=True, text=True, timeout=300)


def test_train_evaluate_export_moving_mnist(tmp_path):
    out = tmp_path / "run"
    train = run_cli("train", "--model=sequence", "--dataset=moving_mnist", "--num_frames=4", "--frame_size=16",
                    "--num_digits=1", "--context_frames=2", "--num_sequences=9", "--batch_size=8", "--epochs=1",
                    "--latent_dim=3", f"--out={out}")
    assert train.returncode == 0, train.stderr[-3000:]
    assert "test ELBO" in train.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["predicted_frames"] == 2 and metrics["train_images"] == 9 and metrics["test_images"] == 1
    np.testing.assert_allclose(metrics["test_elbo"], -metrics["test_rec"] - metrics["test_kl"], rtol=1e-4)
    np.testing.assert_allclose(metrics["test_elbo_per_video"], 2 * metrics["test_elbo"], rtol=1e-5)
    assert metrics["flags"]["context_frames"] == 2 and metrics["flags"]["frame_size"] == 16
    assert "align_latents" not in metrics["flags"]
    # The strip: rows context|truth and context|sample (3), columns 2 context + 2 future frames and a gap of 2.
    with Image.open(out / "prediction_0.png") as strip:
        assert strip.size == (4 * 16 + 2, 4 * 16)
    with Image.open(out / "predictions.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (2 * 16, 16)  # the true video beside a sampled one

    evaluate = run_cli("evaluate", f"--model={out / 'model.keras'}", "--dataset=moving_mnist", "--num_digits=1",
                       "--num_sequences=3", "--num_futures=2")
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert report["best_of_n"] == 2 and report["videos"] == 3 and report["predicted_frames"] == 2
    assert len(report["ssim_per_step"]) == len(report["psnr_per_step"]) == len(report["kl_per_step"]) == 2
    assert -1.0 <= report["ssim"] <= 1.0 and report["psnr"] > 0
    np.testing.assert_allclose(sum(report["kl_per_step"]) / 2, report["kl"], rtol=1e-3, atol=1e-6)
    table = (out / "eval" / "best_of_n.csv").read_text().splitlines()
    assert table[0].startswith("step,frame,ssim_mean") and [row.split(",")[1] for row in table[1:]] == ["2", "3"]
    assert (out / "eval" / "best_of_n.png").stat().st_size > 1000

    export = run_cli("export", f"--model={out / 'model.keras'}", f"--out={tmp_path / 'serving'}")
    assert export.returncode == 0, export.stderr[-3000:]
    served = tf.saved_model.load(str(tmp_path / "serving" / "vae" / "1"))
    assert "predict" in served.signatures
    context = video.moving_mnist("test", 2, 2, 16, 1, seed=5)
    first = served.signatures["predict"](context=tf.constant(context), num_future=tf.constant([3]))["frames"]
    second = served.signatures["predict"](context=tf.constant(context), num_future=tf.constant([3]))["frames"]
    assert first.shape == (2, 3, 16, 16, 1)
    assert not np.allclose(first, second)  # fresh noise on every call


def test_bad_video_input_is_one_line_before_training(tmp_path):
    result = run_cli("train", "--model=sequence", "--dataset=moving_mnist", "--num_frames=5", "--frame_size=16",
                     "--context_frames=5", "--num_sequences=9", f"--out={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "needs at least 6 (context frames + 1)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def config(tmp_path, dataset, **overrides):
    settings = dict(model="sequence", dataset=dataset, context_frames=2, out=str(tmp_path / "run"), **STEPS)
    return experiment.RunConfig(**{**settings, **overrides})


def test_train_on_a_npz_of_8_bit_videos(tmp_path):
    videos = np.round(video.moving_mnist("train", 10, 4, 8, 1) * 255).astype("uint8")
    np.savez(tmp_path / "videos.npz", x=videos)
    model, metrics = experiment.train(config(tmp_path, str(tmp_path / "videos.npz")), verbose=0)
    assert model.context_frames == 2 and model.future_frames == 2 and model.image_shape == (8, 8, 1)
    assert metrics["train_images"] == 9 and metrics["test_images"] == 1 and np.isfinite(metrics["test_elbo"])
    assert "frame_size" not in metrics["flags"]  # moving_mnist's flags do not apply to a file
    assert sorted(p.name for p in (tmp_path / "run").glob("prediction*")) == ["prediction_0.png", "predictions.gif"]


def test_train_on_tfds_videos_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        model, metrics = experiment.train(config(tmp_path, "tfds:bair_robot_pushing_small", context_frames=28,
                                                 batch_size=3), verbose=0)
    assert model.image_shape == (64, 64, 3) and model.future_frames == 2
    assert metrics["test_images"] == 3 and np.isfinite(metrics["test_elbo"])


def _with_nan_at(index):
    x = np.zeros((10, 4, 8, 8, 1), "float32")
    x[index, 1, 2, 2, 0] = np.nan
    return x


def _write(tmp_path, x, name="bad.npz"):
    np.savez(tmp_path / name, x=x)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    "x, overrides, message",
    [
        (np.zeros((10, 8, 8, 1), "float32"), {}, r"--model=sequence takes videos \(N, T, H, W, C\)"),
        (np.zeros((10, 2, 8, 8, 1), "float32"), {}, "has 2 frames per video, but --context_frames=2 needs at least 3"),
        (_with_nan_at(3), {}, r"\(train\) has NaN or inf pixels in 1 video\(s\), the first at index 3"),
        (np.full((10, 4, 8, 8, 1), 2.0, "float32"), {}, r"values in \[2, 2\]"),
        (np.zeros((10, 4, 8, 8, 1), "float32"), dict(model="vae"), "holds videos .* takes images"),
        (np.zeros((10, 4, 12, 12, 1), "float32"), {}, "divisible by 8"),
    ],
)
def test_bad_videos_fail_before_any_file_is_written(tmp_path, x, overrides, message):
    with pytest.raises(ValueError, match=message):
        experiment.train(config(tmp_path, _write(tmp_path, x), **overrides), verbose=0)
    assert not (tmp_path / "run").exists()
