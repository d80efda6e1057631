"""Videos as float32 frames in [0, 1]: Stochastic Moving MNIST, `.npz` and tfds videos, SVG's metrics, strips and GIFs.

A video batch is `(N, T, H, W, C)`. Sources (`load_videos`):

- `"moving_mnist"`: Stochastic Moving MNIST (SM-MNIST, Denton & Fergus
  2018), generated from the embedded MNIST digits (`moving_mnist`): the
  train split moves the 9,000 train digits, the test split the 1,000 test
  digits.
- `"path/to/file.npz"`: key `x` `(N, T, H, W, C)`, uint8 or float in
  [0, 1] (optionally `x_test`; otherwise the last `test_fraction` of the
  videos is the test split).
- `"tfds:NAME"`: a tensorflow-datasets video dataset (its `video` feature,
  `image_main` for `bair_robot_pushing_small`, `image_sequence` for
  `moving_mnist`, or the first feature of rank 4).

Metrics follow SVG's protocol: for each test video, N sampled futures and
the best SSIM (`tf.image.ssim`) and PSNR (`tf.image.psnr`) of each frame
over the N samples (`best_of_n_metrics`).

References:
    Denton, Fergus. Stochastic Video Generation with a Learned Prior.
    ICML 2018. arXiv:1802.07687.

Example:

>>> x = moving_mnist("test", num_sequences=2, num_frames=6, frame_size=32, seed=0)
>>> x.shape, x.dtype.name, bool(x.max() <= 1.0)
((2, 6, 32, 32, 1), 'float32', True)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vae import data as data_lib
from keras_vae import files
from keras_vae.checks import positive_int

MOVING_MNIST = "moving_mnist"


# ------------------------------------------------------------------ validation
def validate_videos(x, frame_shape=None, min_frames: int | None = None, name: str = "x") -> None:
    """Raises a `ValueError` naming the problem unless `x` is a batch of videos in [0, 1].

    Args:
        x: A numpy array `(N, T, H, W, C)`.
        frame_shape: The expected `(H, W, C)`, or None for any.
        min_frames: The fewest frames a video may have (context + 1), or None.
        name: What to call `x` in messages. Defaults to `"x"`.

    Example:

    >>> validate_videos(np.zeros((2, 3, 4, 4, 1), "float32"), (4, 4, 1), min_frames=3)
    >>> validate_videos(np.zeros((2, 3, 4, 4, 1), "float32"), min_frames=6)
    Traceback (most recent call last):
    ...
    ValueError: x has 3 frames per video, but the model needs at least 6 (context frames + 1).
    """
    x = np.asarray(x)
    if x.ndim != 5:
        raise ValueError(f"Expected {name} of rank 5 (videos, frames, height, width, channels). "
                         f"Received: {name}.shape={x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it holds no videos (shape {x.shape}).")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"Expected float frames in [0, 1]; {name} has dtype {x.dtype}. "
                         "Use keras_vae.data.to_float to convert 8-bit frames.")
    if frame_shape is not None and tuple(x.shape[2:]) != tuple(frame_shape):
        raise ValueError(f"Expected frames of shape {tuple(frame_shape)}. Received: {name}.shape={x.shape}")
    if min_frames is not None and x.shape[1] < min_frames:
        raise ValueError(f"{name} has {x.shape[1]} frames per video, but the model needs at least {min_frames} "
                         "(context frames + 1).")
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite.reshape(len(x), -1).all(axis=1)).ravel()
        raise ValueError(f"{name} has NaN or inf pixels in {len(bad)} video(s), the first at index {bad[0]}.")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"Expected pixel values in [0, 1]; {name} has values in [{low:g}, {high:g}]. "
                         "Divide 8-bit frames by 255 (keras_vae.data.to_float).")


# ------------------------------------------------------------- SM-MNIST
@functools.lru_cache(maxsize=4)
def _digits(split: str, digit_size: int) -> np.ndarray:
    """The split's MNIST digits resized to `digit_size` (area averaging), `(N, s, s)` float32."""
    digits = data_lib.load_arrays("mnist", split)
    if digit_size != digits.shape[1]:
        digits = tf.image.resize(digits, (digit_size, digit_size), method="area").numpy()
    return np.clip(digits[..., 0], 0.0, 1.0)


def moving_mnist(
    split: str = "train",
    num_sequences: int = 1000,
    num_frames: int = 15,
    frame_size: int = 32,
    num_digits: int = 2,
    seed: int = 0,
    return_trajectories: bool = False,
):
    """Stochastic Moving MNIST videos `(num_sequences, num_frames, frame_size, frame_size, 1)`.

    As in SVG: each digit (resized to `frame_size // 2`, 32 px in 64 px
    frames) starts at a random place with a random velocity of up to
    `frame_size // 16` pixels per frame on each axis and moves at constant
    velocity; when it would leave the frame it stops at the wall and draws a
    new random speed on both axes, pointing away from that wall (the random
    bounces make the future uncertain). Digits are added and clipped at 1.
    The same arguments give the same videos.

    Args:
        split: `"train"` (the 9,000 train digits of the embedded MNIST) or
            `"test"` (its 1,000 test digits). Defaults to `"train"`.
        num_sequences: Number of videos. Defaults to 1000.
        num_frames: Frames per video. Defaults to 15 (SVG's 5 + 10).
        frame_size: Height and width, at least 8. Defaults to 32 (SVG: 64).
        num_digits: Digits per video. Defaults to 2.
        seed: Seed of the digits, starts and bounces. Defaults to 0.
        return_trajectories: Also return a dict of the digits' top-left
            `positions` `(N, digits, T, 2)` (row, column), `velocities`
            `(N, digits, T, 2)` (the velocity of the step after each frame; the
            step stops at a wall) and
            `digit_index` `(N, digits)`. Defaults to False.

    Returns:
        float32 videos in [0, 1] (and the trajectories, if asked).
    """
    if split not in ("train", "test"):
        raise ValueError(f"Expected split 'train' or 'test' for moving_mnist. Received: split={split!r}")
    num_sequences, num_frames = positive_int("num_sequences", num_sequences), positive_int("num_frames", num_frames)
    num_digits = positive_int("num_digits", num_digits)
    if positive_int("frame_size", frame_size) < 8:
        raise ValueError(f"Expected frame_size >= 8. Received: frame_size={frame_size}")
    digit_size = frame_size // 2
    top = frame_size - digit_size  # the largest top-left coordinate that keeps a digit in the frame
    speed = max(1, frame_size // 16)
    digits = _digits(split, digit_size)
    rng = np.random.default_rng(seed)
    videos = np.zeros((num_sequences, num_frames, frame_size, frame_size), "float32")
    positions = np.zeros((num_sequences, num_digits, num_frames, 2), "int64")
    velocities = np.zeros_like(positions)
    index = rng.integers(len(digits), size=(num_sequences, num_digits))
    for n in range(num_sequences):
        for d in range(num_digits):
            position = rng.integers(0, top + 1, size=2)
            velocity = rng.integers(-speed, speed + 1, size=2)
            for t in range(num_frames):
                row, col = position
                videos[n, t, row : row + digit_size, col : col + digit_size] += digits[index[n, d]]
                positions[n, d, t] = position
                velocities[n, d, t] = velocity
                new = position + velocity
                hit = (new < 0) | (new > top)
                if hit.any():  # a wall: stop there, new random speeds, away from the wall(s) hit
                    velocity = rng.integers(-speed, speed + 1, size=2)
                    for axis in np.flatnonzero(hit):
                        velocity[axis] = (1 if new[axis] < 0 else -1) * rng.integers(1, speed + 1)
                    new = np.clip(new, 0, top)
                position = new
    videos = np.minimum(videos, 1.0)[..., None]
    if return_trajectories:
        return videos, {"positions": positions, "velocities": velocities, "digit_index": index}
    return videos


# ---------------------------------------------------------------- loading
def is_video_source(name: str) -> bool:
    """Whether `name` is a video source: `"moving_mnist"`, a `.npz` whose `x` has rank 5, or
    `"tfds:NAME"` of a dataset with a feature of rank 4 (frames, height, width, channels)."""
    if name == MOVING_MNIST:
        return True
    if name.startswith("tfds:"):
        import tensorflow_datasets as tfds

        try:
            shapes = tfds.builder(name[5:]).info.features.shape
        except Exception:  # an unknown name: not a video source here; the image loader will say why
            return False
        return any(isinstance(shape, tuple) and len(shape) == 4 for shape in _leaf_shapes(shapes))
    path = Path(os.path.expanduser(name))
    if path.suffix == ".npz" and path.is_file():
        with np.load(path) as archive:
            return "x" in archive and archive["x"].ndim == 5
    return False


def _leaf_shapes(shapes):
    """The shape tuples of a tfds `features.shape` (a shape, or a dict of them, nested)."""
    if isinstance(shapes, dict):
        for value in shapes.values():
            yield from _leaf_shapes(value)
    else:
        yield shapes


def _tfds_videos(name: str, split: str, test_fraction: float) -> np.ndarray:
    import tensorflow_datasets as tfds

    dataset = data_lib.tfds_split(name, split, test_fraction, feature=None)
    spec = dataset.element_spec
    ranked = [key for key, value in spec.items() if getattr(value, "shape", None) is not None
              and value.shape.rank == 4]
    preferred = ("video", "image_main", "image_sequence")
    feature = next((key for key in preferred if key in ranked), ranked[0] if ranked else None)
    if feature is None:
        raise ValueError(f"tfds dataset {name!r} has no video feature of rank 4 (features: {list(spec)}).")
    videos = [example[feature] for example in tfds.as_numpy(dataset)]
    if not videos:
        raise ValueError(f"tfds dataset {name!r} split {split!r} holds no videos.")
    return np.stack(videos)


def load_videos(
    name: str,
    split: str = "train",
    test_fraction: float = 0.1,
    num_sequences: int | None = None,
    num_frames: int = 15,
    frame_size: int = 32,
    num_digits: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Loads videos as float32 `(N, T, H, W, C)` in [0, 1], checked (`validate_videos`).

    Args:
        name: `"moving_mnist"`, a `.npz` file (key `x`, optionally `x_test`) or `"tfds:NAME"`.
        split: `"train"`, `"test"` (or `"all"` for files). Defaults to `"train"`.
        test_fraction: Test share of a file without `x_test` (its last videos). Defaults to 0.1.
        num_sequences: `moving_mnist` videos to make. Defaults to 9,000 (train) or 1,000 (test).
        num_frames, frame_size, num_digits: `moving_mnist`'s. Defaults to 15, 32, 2.
        seed: `moving_mnist`'s seed; the test split adds 1 so it never repeats the train draws.
            Defaults to 0.

    Example:

    >>> load_videos("moving_mnist", "test", num_sequences=3, num_frames=4).shape
    (3, 4, 32, 32, 1)
    """
    if split not in data_lib.SPLITS:
        raise ValueError(f"Unknown split {split!r}. Expected one of {data_lib.SPLITS}.")
    if name == MOVING_MNIST:
        if split == "all":
            raise ValueError("moving_mnist has a 'train' and a 'test' split (different digits); not 'all'.")
        count = num_sequences or (9000 if split == "train" else 1000)
        return moving_mnist(split, count, num_frames, frame_size, num_digits, seed + (split == "test"))
    if name.startswith("tfds:"):
        x = _tfds_videos(name[5:], split, test_fraction)
    else:
        path = Path(os.path.expanduser(name))
        if not path.is_file() or path.suffix != ".npz":
            raise FileNotFoundError(f"No video file at {path}: expected 'moving_mnist', 'tfds:NAME' or a .npz file.")
        with np.load(path) as archive:
            if "x" not in archive:
                raise ValueError(f"{path} has no array 'x' (found: {sorted(archive.files)}).")
            x = archive["x"]
            x_test = archive["x_test"] if "x_test" in archive else None
        if x.ndim != 5:
            raise ValueError(f"Expected {path}'s x of rank 5 (videos, frames, height, width, channels). "
                             f"Received: x.shape={x.shape}")
        if x_test is not None:
            x = {"train": x, "test": x_test}.get(split, np.concatenate([x, x_test]) if split == "all" else x)
        elif split != "all":
            cut = len(x) - max(1, int(round(len(x) * test_fraction)))
            x = x[:cut] if split == "train" else x[cut:]
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"{name}: expected 8-bit integer pixels in [0, 255]. Received values in "
                             f"[{x.min()}, {x.max()}].")
        x = x.astype("float32") / 255.0
    x = x.astype("float32") if np.issubdtype(x.dtype, np.floating) else x
    validate_videos(x, name=f"{name} ({split})")
    return x


def save_videos(path, x) -> Path:
    """Writes videos `(N, T, H, W, C)` as an `.npz` (key `x`, uint8), atomically; never over a file.

    Raises:
        FileExistsError: If `path` exists.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it.")
    validate_videos(x)
    frames = np.round(np.asarray(x) * 255.0).astype("uint8")
    with files.atomic_path(path) as temporary:  # keeps the .npz suffix, so numpy adds none
        np.savez_compressed(temporary, x=frames)
    return path


# ----------------------------------------------------------------- metrics
def best_of_n_metrics(truth, samples, batch_size: int = 256) -> dict:
    """SVG's protocol: the best SSIM and PSNR of each frame over N sampled futures.

    Args:
        truth: Ground-truth futures `(B, T, H, W, C)` in [0, 1].
        samples: Sampled futures `(B, N, T, H, W, C)`.
        batch_size: Frames per `tf.image.ssim` call. Defaults to 256.

    Returns:
        `{"ssim": (B, T), "psnr": (B, T)}` numpy arrays: for each video and
        step, the best value over the N samples (each sample's SSIM and
        PSNR are maximised separately, as in SVG's evaluation).

    Example:

    >>> truth = np.random.default_rng(0).uniform(size=(1, 2, 16, 16, 1)).astype("float32")
    >>> samples = np.stack([truth, np.zeros_like(truth)], axis=1)
    >>> round(float(best_of_n_metrics(truth, samples)["ssim"].min()), 4)
    1.0
    """
    truth, samples = np.asarray(truth, "float32"), np.asarray(samples, "float32")
    if samples.ndim != 6 or samples.shape[:1] + samples.shape[2:] != truth.shape:
        raise ValueError(f"Expected samples (B, N, T, H, W, C) for truth {truth.shape}. Received: {samples.shape}")
    count = samples.shape[1]
    pairs_a = np.repeat(truth[:, None], count, axis=1).reshape(-1, *truth.shape[2:])
    pairs_b = samples.reshape(-1, *truth.shape[2:])
    ssim, psnr = [], []
    for start in range(0, len(pairs_a), batch_size):
        a, b = pairs_a[start : start + batch_size], pairs_b[start : start + batch_size]
        ssim.append(tf.image.ssim(a, b, max_val=1.0).numpy())
        psnr.append(tf.image.psnr(a, b, max_val=1.0).numpy())
    shape = samples.shape[:3]
    ssim = np.concatenate(ssim).reshape(shape).max(axis=1)
    # Identical frames have infinite PSNR; cap at 100 dB so averages stay finite.
    psnr = np.minimum(np.concatenate(psnr).reshape(shape), 100.0).max(axis=1)
    return {"ssim": ssim, "psnr": psnr}


# ------------------------------------------------------------ pictures
def _to_uint8(frames) -> np.ndarray:
    frames = np.clip(np.asarray(frames, "float32"), 0.0, 1.0)
    frames = np.round(frames * 255.0).astype("uint8")
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def strip(context, truth, samples, gap: int = 2) -> np.ndarray:
    """One picture of a prediction: rows `context | ground truth`, then `context | sample k`.

    Args:
        context: `(c, H, W, C)` frames.
        truth: `(T, H, W, C)` true future frames.
        samples: `(N, T, H, W, C)` sampled futures.
        gap: White pixels between context and future. Defaults to 2.

    Returns:
        A uint8 RGB image `((N + 1) * H, (c + T) * W + gap, 3)`.
    """
    rows = []
    for future in [truth, *samples]:
        left = np.concatenate(list(_to_uint8(context)), axis=1)
        right = np.concatenate(list(_to_uint8(future)), axis=1)
        rows.append(np.concatenate([left, np.full((left.shape[0], gap, 3), 255, "uint8"), right], axis=1))
    return np.concatenate(rows, axis=0)


def write_strip(path, context, truth, samples) -> Path:
    """Writes `strip(context, truth, samples)` as a PNG (Pillow), atomically."""
    from PIL import Image

    picture = Image.fromarray(strip(context, truth, samples))
    with files.atomic_path(path) as temporary:
        picture.save(temporary, format="PNG")
    return Path(path)


def write_gif(path, videos, duration_ms: int = 150) -> Path:
    """Writes videos `(K, T, H, W, C)` side by side as one looping animated GIF (Pillow), atomically."""
    from PIL import Image

    videos = _to_uint8(videos)
    frames = [Image.fromarray(np.concatenate(list(videos[:, t]), axis=1)) for t in range(videos.shape[1])]
    with files.atomic_path(path) as temporary:
        frames[0].save(temporary, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return Path(path)
