"""Tests for keras_vae.video: SM-MNIST, video checks and files, SVG's best-of-N metrics, strips and GIFs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vae import data, video


def test_moving_mnist_digits_stay_in_the_frame_and_bounce():
    x, paths = video.moving_mnist("train", num_sequences=20, num_frames=40, frame_size=32, num_digits=2, seed=3,
                                  return_trajectories=True)
    assert x.shape == (20, 40, 32, 32, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    positions, steps = paths["positions"], paths["velocities"]
    top = 32 - 16
    assert positions.min() >= 0 and positions.max() <= top
    # Each frame's position is the previous one plus the velocity, stopped at the walls.
    np.testing.assert_array_equal(positions[:, :, 1:], np.clip(positions[:, :, :-1] + steps[:, :, :-1], 0, top))
    # The velocity changes exactly when a step hits a wall, and then points away from it.
    raw = positions[:, :, :-1] + steps[:, :, :-1]
    hit_low, hit_high = raw < 0, raw > top
    hit = np.any(hit_low | hit_high, axis=-1)
    changed = np.any(steps[:, :, 1:] != steps[:, :, :-1], axis=-1)
    assert hit.sum() > 20 and hit_low.any() and hit_high.any()  # bounces happen
    assert not np.any(changed & ~hit)
    assert np.all(steps[:, :, 1:][hit_low] > 0) and np.all(steps[:, :, 1:][hit_high] < 0)
    # The pixels are the digits at those positions: the first frame's mass is inside the boxes.
    n, d = 0, 0
    row, col = positions[n, d, 0]
    digit = video._digits("train", 16)[paths["digit_index"][n, d]]
    assert np.all(x[n, 0, row : row + 16, col : col + 16, 0] >= np.minimum(digit, 1.0) - 1e-6)


def test_moving_mnist_is_deterministic_and_splits_use_their_digits():
    a = video.moving_mnist("test", 4, 6, 32, 2, seed=1)
    b = video.moving_mnist("test", 4, 6, 32, 2, seed=1)
    c = video.moving_mnist("test", 4, 6, 32, 2, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    _, test_paths = video.moving_mnist("test", 50, 2, 32, 1, seed=0, return_trajectories=True)
    _, train_paths = video.moving_mnist("train", 50, 2, 32, 1, seed=0, return_trajectories=True)
    assert test_paths["digit_index"].max() < 1000 and train_paths["digit_index"].max() >= 1000
    # One digit, frame 0: the video holds exactly that split's resized digit.
    x, paths = video.moving_mnist("test", 1, 1, 32, 1, seed=5, return_trajectories=True)
    row, col = paths["positions"][0, 0, 0]
    expected = tf.image.resize(data.load_arrays("mnist", "test")[paths["digit_index"][0, 0]], (16, 16), "area")
    np.testing.assert_allclose(x[0, 0, row : row + 16, col : col + 16], np.clip(expected.numpy(), 0, 1), atol=1e-6)
    assert x[0, 0].sum() == pytest.approx(x[0, 0, row : row + 16, col : col + 16].sum())


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 4, 4, 1), "float32"), "rank 5"),
    (np.zeros((2, 3, 4, 4, 1), "uint8"), "dtype uint8"),
    (np.zeros((2, 3, 5, 4, 1), "float32"), "frames of shape"),
    (np.zeros((2, 2, 4, 4, 1), "float32"), "at least 3"),
    (np.full((2, 3, 4, 4, 1), np.nan, "float32"), "NaN"),
    (np.full((2, 3, 4, 4, 1), 2.0, "float32"), "[0, 1]"),
])
def test_validate_videos_names_the_problem(bad, message):
    with pytest.raises(ValueError, match=None) as error:
        video.validate_videos(bad, (4, 4, 1), min_frames=3)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_npz_videos_round_trip_and_split(tmp_path):
    x = video.moving_mnist("test", 10, 4, 16, 1, seed=0)
    path = video.save_videos(tmp_path / "videos.npz", x)
    with pytest.raises(FileExistsError):
        video.save_videos(path, x)
    assert video.is_video_source(str(path)) and not video.is_video_source("mnist")
    train, test = video.load_videos(str(path), "train"), video.load_videos(str(path), "test")
    assert train.shape == (9, 4, 16, 16, 1) and test.shape == (1, 4, 16, 16, 1)
    np.testing.assert_allclose(np.concatenate([train, test]), np.round(x * 255) / 255, atol=1e-6)
    np.savez(tmp_path / "images.npz", x=np.zeros((3, 4, 4, 1), "float32"))
    with pytest.raises(ValueError, match="rank 5"):
        video.load_videos(str(tmp_path / "images.npz"))


def test_tfds_videos_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        x = video.load_videos("tfds:bair_robot_pushing_small", "train")
    assert x.ndim == 5 and x.shape[0] == 3 and x.shape[2:] == (64, 64, 3)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0


def test_best_of_n_metrics_against_tf_image():
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=(2, 3, 16, 16, 1)).astype("float32")
    samples = np.clip(truth[:, None] + rng.normal(0, [0.3, 0.05, 0.2], (2, 3))[..., None, None, None, None], 0, 1)
    samples = samples.astype("float32").transpose(0, 2, 1, 3, 4, 5)  # (B, N=3, T, ...); sample 1 is the closest
    metrics = video.best_of_n_metrics(truth, samples, batch_size=5)
    for b in range(2):
        for t in range(3):
            ssims = [float(tf.image.ssim(truth[b, t], samples[b, k, t], 1.0)) for k in range(3)]
            mse = [np.mean((truth[b, t] - samples[b, k, t]) ** 2) for k in range(3)]
            assert metrics["ssim"][b, t] == pytest.approx(max(ssims), rel=1e-5)
            assert metrics["psnr"][b, t] == pytest.approx(10 * np.log10(1 / min(mse)), rel=1e-4)
    with pytest.raises(ValueError, match="Expected samples"):
        video.best_of_n_metrics(truth, samples[:, 0])


def test_strip_and_gif(tmp_path):
    context = np.zeros((2, 8, 8, 1), "float32")
    truth = np.ones((3, 8, 8, 1), "float32")
    samples = np.full((4, 3, 8, 8, 1), 0.5, "float32")
    path = video.write_strip(tmp_path / "strip.png", context, truth, samples)
    picture = np.asarray(Image.open(path))
    assert picture.shape == (5 * 8, 5 * 8 + 2, 3)
    assert picture[0, 0, 0] == 0 and picture[0, -1, 0] == 255 and picture[-1, -1, 0] == 128
    moving = np.linspace(0.0, 1.0, 3, dtype="float32")[:, None, None, None] * truth  # three different frames
    gif = video.write_gif(tmp_path / "a.gif", np.stack([moving, truth]))
    with Image.open(gif) as image:
        assert image.n_frames == 3 and image.size == (16, 8)
