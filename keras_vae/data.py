"""Datasets as float32 images in [0, 1]: the embedded MNIST, tfds, `.npz` files and image folders.

`load_arrays` returns numpy arrays `(N, H, W, C)`; `load` wraps them (or a
tfds split) in an unbatched `tf.data.Dataset`. Every source is checked
(rank, empty, NaN/inf, range) before anything trains on it.

Sources:

- `"mnist"`: the 10,000 real MNIST test images shipped inside the package.
  Split: the first 9,000 images in file order are `"train"`, the last 1,000
  `"test"`, so numbers compare across tools.
- `"tfds:NAME"`: a tensorflow-datasets dataset (its `image` feature).
- `"path/to/file.npz"`: key `x` (and optionally `x_test`, `y`, `y_test`).
- `"path/to/folder/"`: PNG/JPEG files of one size, in sorted name order.

Without an explicit test set, the last `test_fraction` of the images (in
order) is the test split.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

SPLITS = ("train", "test", "all")
MNIST_DIR = Path(__file__).parent / "data" / "mnist"
MNIST_TRAIN_SIZE = 9000
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def validate_images(x, image_shape=None, name: str = "x") -> None:
    """Raises a `ValueError` naming the problem unless `x` is a batch of images in [0, 1].

    Args:
        x: A numpy array `(N, H, W, C)`.
        image_shape: The expected `(H, W, C)`, or None for any.
        name: What to call `x` in messages. Defaults to `"x"`.

    Example:

    >>> validate_images(np.zeros((2, 4, 4, 1), "float32"), (4, 4, 1))
    >>> validate_images(np.full((2, 4, 4, 1), 2.0, "float32"))
    Traceback (most recent call last):
    ...
    ValueError: Expected pixel values in [0, 1]; x has values in [2, 2]. Divide 8-bit images ...
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"Expected {name} of rank 4 (batch, height, width, channels). Received: {name}.shape={x.shape}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it holds no images (shape {x.shape}).")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"Expected float images in [0, 1]; {name} has dtype {x.dtype}. "
            "Use keras_vae.data.to_float to convert 8-bit images."
        )
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        detail = " (channel mismatch)" if x.shape[1:3] == tuple(image_shape)[:2] else ""
        raise ValueError(
            f"Expected images of shape {tuple(image_shape)}{detail}. Received: {name}.shape={x.shape}"
        )
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite.reshape(len(x), -1).all(axis=1)).ravel()
        raise ValueError(f"{name} has NaN or inf pixels in {len(bad)} image(s), the first at index {bad[0]}.")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"Expected pixel values in [0, 1]; {name} has values in [{low:g}, {high:g}]. "
            "Divide 8-bit images by 255 (keras_vae.data.to_float)."
        )


def to_float(x) -> np.ndarray:
    """Converts images to float32 in [0, 1]: integers are divided by 255; rank 3 gains a channel axis.

    Example:

    >>> to_float(np.array([[[0, 255]]], "uint8")).tolist()
    [[[[0.0], [1.0]]]]
    """
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"Expected 8-bit integer pixels in [0, 255]. Received values in [{x.min()}, {x.max()}].")
        x = x.astype("float32") / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype("float32")
    else:
        raise ValueError(f"Expected numeric images. Received dtype {x.dtype}.")
    return x[..., None] if x.ndim == 3 else x


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _split(arrays, split: str, train_size: int):
    if split == "train":
        return tuple(a[:train_size] if a is not None else None for a in arrays)
    if split == "test":
        return tuple(a[train_size:] if a is not None else None for a in arrays)
    return arrays


def _check_split(split: str, test_fraction: float) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}. Expected one of {SPLITS}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"Expected 0 < test_fraction < 1. Received: test_fraction={test_fraction}")


def _load_mnist(split: str):
    x = _read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    y = _read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype("int64")
    return _split((x, y), split, MNIST_TRAIN_SIZE)


def _load_npz(path: Path, split: str, test_fraction: float):
    with np.load(path) as archive:
        if "x" not in archive:
            raise ValueError(f"{path} has no array 'x' (found: {sorted(archive.files)}).")
        x, y = archive["x"], archive["y"] if "y" in archive else None
        if "x_test" in archive:
            x_test = archive["x_test"]
            y_test = archive["y_test"] if "y_test" in archive else None
            if split == "train":
                return x, y
            if split == "test":
                return x_test, y_test
            both_labels = y is not None and y_test is not None
            return np.concatenate([x, x_test]), np.concatenate([y, y_test]) if both_labels else None
    return _split((x, y), split, _train_size(len(x), test_fraction))


def _load_folder(path: Path, split: str, test_fraction: float):
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path} holds no PNG or JPEG images.")
    images = []
    for file in files:
        image = tf.io.decode_image(tf.io.read_file(str(file)), expand_animations=False).numpy()
        if images and image.shape != images[0].shape:
            raise ValueError(
                f"{file} is {image.shape}, but {files[0]} is {images[0].shape}: all images must share one shape."
            )
        images.append(image)
    x = np.stack(images)
    return _split((x, None), split, _train_size(len(x), test_fraction))


def _train_size(total: int, test_fraction: float) -> int:
    return total - max(1, int(round(total * test_fraction)))


def _tfds_split(name: str, split: str, test_fraction: float):
    """A tfds split; datasets without a 'test' split are sliced by `test_fraction`."""
    import tensorflow_datasets as tfds

    known = list(tfds.builder(name).info.splits)  # empty under tfds.testing.mock_data
    key = split
    if known and "test" not in known and split != "all":
        cut = 100 - max(1, int(round(100 * test_fraction)))
        key = f"train[:{cut}%]" if split == "train" else f"train[{cut}%:]"
    try:
        dataset = tfds.load(name, split=key)
    except (ValueError, KeyError) as error:
        raise ValueError(f"tfds dataset {name!r} has no split {key!r} (splits: {known or 'unknown'}).") from error
    if "image" not in dataset.element_spec:
        raise ValueError(f"tfds dataset {name!r} has no 'image' feature (features: {list(dataset.element_spec)}).")
    return dataset


def load_arrays(name: str, split: str = "train", test_fraction: float = 0.1, with_labels: bool = False):
    """Loads a dataset as float32 numpy images `(N, H, W, C)` in [0, 1].

    Args:
        name: `"mnist"`, `"tfds:NAME"`, a `.npz` file or a folder of images.
        split: `"train"`, `"test"` or `"all"`. Defaults to `"train"`.
        test_fraction: Test share for sources without a test set (file order:
            the last images). Defaults to 0.1. MNIST always splits 9,000/1,000.
        with_labels: Also return labels (None where the source has none).
            Defaults to False.

    Returns:
        `x`, or `(x, y)` when `with_labels`.

    Example:

    >>> x = load_arrays("mnist", split="test")
    >>> x.shape, x.dtype.name
    ((1000, 28, 28, 1), 'float32')
    """
    _check_split(split, test_fraction)
    if name == "mnist":
        x, y = _load_mnist(split)
    elif name.startswith("tfds:"):
        import tensorflow_datasets as tfds

        examples = list(tfds.as_numpy(_tfds_split(name[5:], split, test_fraction)))
        x = np.stack([e["image"] for e in examples]) if examples else np.zeros((0, 1, 1, 1), "uint8")
        y = np.array([e["label"] for e in examples]) if examples and "label" in examples[0] else None
    else:
        path = Path(os.path.expanduser(name))
        if not path.exists():
            raise FileNotFoundError(f"No dataset at {path}: expected 'mnist', 'tfds:NAME', a .npz file or a folder.")
        if path.is_dir():
            x, y = _load_folder(path, split, test_fraction)
        elif path.suffix == ".npz":
            x, y = _load_npz(path, split, test_fraction)
        else:
            raise ValueError(f"{path} is neither a .npz file nor a folder of images.")
    x = to_float(x)
    validate_images(x, name=f"{name} ({split})")
    return (x, y) if with_labels else x


def load(name: str, split: str = "train", test_fraction: float = 0.1, with_labels: bool = False) -> tf.data.Dataset:
    """Loads a dataset as an unbatched `tf.data.Dataset` of float32 images in [0, 1].

    Takes the arguments of `load_arrays`; elements are images, or
    `(image, label)` pairs when `with_labels`.

    Example:

    >>> ds = load("mnist", split="test").batch(100)
    >>> next(iter(ds)).shape
    TensorShape([100, 28, 28, 1])
    """
    x, y = load_arrays(name, split, test_fraction, with_labels=True)
    if with_labels:
        if y is None:
            raise ValueError(f"Dataset {name!r} has no labels.")
        return tf.data.Dataset.from_tensor_slices((x, y))
    return tf.data.Dataset.from_tensor_slices(x)


def pipeline(x, batch_size: int, shuffle: bool = True, seed: int | None = None) -> tf.data.Dataset:
    """A training input pipeline over in-memory images: cache, shuffle, batch, prefetch."""
    dataset = tf.data.Dataset.from_tensor_slices(x).cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
