"""Datasets as float32 images in [0, 1]: the embedded MNIST, tfds, `.npz` files and image folders.

`load_arrays` returns numpy arrays `(N, H, W, C)`; `load` wraps them (or a
tfds split) in an unbatched `tf.data.Dataset`. Every source is checked
(rank, empty, NaN/inf, range) before anything trains on it.

Sources:

- `"mnist"`: the 10,000 real MNIST test images shipped inside the package.
  Split: the first 9,000 images in file order are `"train"`, the last 1,000
  `"test"`, so numbers compare across tools.
- `"tfds:NAME"`: a tensorflow-datasets dataset (its `image` feature).
- `"sprites"` (or `"sprites:SIZE"`, e.g. `"sprites:32"`): 10,000 dSprites-style
  images, SIZE x SIZE (64 by default), a seeded subset of every combination
  of the five factors (`keras_vae.sprites`); labels are the shape (0-2).
- `"path/to/file.npz"`: key `x` (and optionally `x_test`, `y`, `y_test`, and
  integer factor labels `factors` (N, K), `factors_test`, `factor_names`).
- `"path/to/folder/"`: PNG/JPEG files of one size, in sorted name order.

Without an explicit test set, the last `test_fraction` of the images (in
order) is the test split; `factors(name, split)` gives the factor labels of
a split, row for row.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

SPLITS = ("train", "test", "all")
MNIST_DIR = Path(__file__).parent / "data" / "mnist"
MNIST_TRAIN_SIZE = 9000
SPRITES_IMAGES = 10_000  # the "sprites" source: a seeded subset (seed 0) of the 737,280 combinations
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


def validate_labels(y, num_images: int, name: str = "y") -> np.ndarray:
    """Returns class labels `y` as int64 after checking them against their `num_images` images.

    Args:
        y: One integer label per image.
        num_images: The number of images they label.
        name: What to call `y` in messages. Defaults to `"y"`.

    Raises:
        ValueError: If `y` is not one non-negative integer per image.

    Example:

    >>> validate_labels(np.array([0, 2], "uint8"), 2).dtype.name
    'int64'
    >>> validate_labels(np.array([0.5, 1.0]), 2)
    Traceback (most recent call last):
    ...
    ValueError: Expected integer class labels; y has dtype float64 ...
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != num_images:
        raise ValueError(f"Expected one label per image: {name} has shape {y.shape} for {num_images} images.")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise ValueError(f"Expected integer class labels; {name} has dtype {y.dtype} (e.g. {y[:3].tolist()}).")
    if len(y) and y.min() < 0:
        raise ValueError(f"Expected class labels >= 0; {name} has {int((y < 0).sum())} negative label(s), "
                         f"the first {int(y[y < 0][0])} at index {int(np.argmax(y < 0))}.")
    return y.astype("int64")


def check_splits(x_train, x_test, y_train=None, y_test=None, name: str = "the dataset",
                 min_frames: int | None = None) -> None:
    """Checks a train and a test split against each other before anything trains on them.

    Both are image batches (`validate_images`) of one image shape, or both
    video batches (`keras_vae.video.validate_videos`, rank 5) of one frame
    shape and at least `min_frames` frames; labels, where given, are one
    non-negative integer per image (`validate_labels`).

    Args:
        x_train: Train images `(N, H, W, C)`.
        x_test: Test images `(M, H, W, C)`.
        y_train: Train labels or None.
        y_test: Test labels or None.
        name: The dataset, for messages.
        min_frames: Videos: the fewest frames a video may have (context + 1). Defaults to None.

    Example:

    >>> check_splits(np.zeros((4, 8, 8, 1), "float32"), np.zeros((2, 8, 9, 1), "float32"), name="d.npz")
    Traceback (most recent call last):
    ...
    ValueError: d.npz: the test images have shape (8, 9, 1) but the train images (8, 8, 1); both splits ...
    """
    if np.ndim(x_train) == 5:  # videos (N, T, H, W, C); the test videos may have another length
        from keras_vae import video  # imports this module: imported here

        video.validate_videos(x_train, min_frames=min_frames, name=f"{name} (train)")
        video.validate_videos(x_test, x_train.shape[2:], min_frames, name=f"{name} (test)")
    else:
        validate_images(x_train, name=f"{name} (train)")
        validate_images(x_test, name=f"{name} (test)")
        if x_test.shape[1:] != x_train.shape[1:]:
            raise ValueError(f"{name}: the test images have shape {x_test.shape[1:]} but the train images "
                             f"{x_train.shape[1:]}; both splits need one image shape.")
    for labels, images, split in ((y_train, x_train, "train"), (y_test, x_test, "test")):
        if labels is not None:
            validate_labels(labels, len(images), name=f"the {split} labels of {name}")


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


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: no limit
        return 2**63


def _check_npz_headers(path: Path) -> None:
    """Refuses a `.npz` that is not a zip of numeric arrays whose declared sizes fit its data and this machine.

    Reads only the `.npy` headers, so a hostile declared shape (terabytes)
    fails here instead of as a `MemoryError` while loading.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .npz archive (not a zip file): save it with numpy.savez.")
    limit = _memory_bytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in ((1, 0), (2, 0)):
                    continue  # a rarer header version: np.load checks it
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(member)
                data_bytes = info.file_size - member.tell()
            if dtype.hasobject:
                raise ValueError(f"{path}: array {name!r} holds Python objects (dtype {dtype}), which are not "
                                 "loaded (pickles can run code); save numeric arrays.")
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared > data_bytes:
                raise ValueError(f"{path}: array {name!r} declares shape {shape} ({declared:,} bytes) but holds "
                                 f"{data_bytes:,} bytes of data: the file is corrupt or truncated.")
            if declared > limit:
                raise ValueError(f"{path}: array {name!r} of shape {shape} needs {declared / 2**30:,.1f} GiB, more "
                                 f"than this machine's {limit / 2**30:,.1f} GiB of memory.")


def _check_labels_length(path: Path, images: str, x, labels: str, y) -> None:
    if y is not None and (np.ndim(y) == 0 or len(y) != len(x)):
        raise ValueError(f"{path}: {labels!r} has shape {np.shape(y)} but {images!r} holds {len(x)} images: "
                         f"expected one label per image.")


def _load_npz(path: Path, split: str, test_fraction: float):
    _check_npz_headers(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive:
                raise ValueError(f"{path} has no array 'x' (found: {sorted(archive.files)}).")
            x, y = archive["x"], archive["y"] if "y" in archive else None
            x_test = archive["x_test"] if "x_test" in archive else None
            y_test = archive["y_test"] if "y_test" in archive else None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path} is not a readable .npz file ({type(error).__name__}: {error}).") from None
    _check_labels_length(path, "x", x, "y", y)
    if x_test is not None:
        _check_labels_length(path, "x_test", x_test, "y_test", y_test)
        if split == "train":
            return x, y
        if split == "test":
            return x_test, y_test
        both_labels = y is not None and y_test is not None
        return np.concatenate([x, x_test]), np.concatenate([y, y_test]) if both_labels else None
    return (x, y) if split == "all" else _split((x, y), split, _train_size(len(x), test_fraction, path))


def _load_folder(path: Path, split: str, test_fraction: float):
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path} holds no PNG or JPEG images.")
    images = []
    for file in files:
        try:
            image = tf.io.decode_image(tf.io.read_file(str(file)), expand_animations=False).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.OpError) as error:
            reason = (error.message or "").strip().splitlines()[0] if error.message else type(error).__name__
            raise ValueError(f"{file} is not a readable PNG or JPEG image ({reason}).") from None
        if images and image.shape != images[0].shape:
            raise ValueError(
                f"{file} is {image.shape}, but {files[0]} is {images[0].shape}: all images must share one shape."
            )
        images.append(image)
    x = np.stack(images)
    return (x, None) if split == "all" else _split((x, None), split, _train_size(len(x), test_fraction, path))


def _train_size(total: int, test_fraction: float, source="the dataset") -> int:
    """Images in the train split when the last `test_fraction` (at least one) is the test split."""
    test = max(1, int(round(total * test_fraction)))
    if 0 < total <= test:
        raise ValueError(
            f"{source} holds {total} image(s) and test_fraction={test_fraction} sends {test} to the test split, "
            "leaving none to train on: add images, lower --test_fraction, or give a test set (x_test in a .npz)."
        )
    return total - test


def _import_tfds(name: str):
    """`tensorflow_datasets`, or a one-line error when it (or a dependency of it) does not import."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        missing = f" (missing: {error.name})" if getattr(error, "name", None) else ""
        raise ValueError(
            f"--dataset=tfds:{name} needs the tensorflow_datasets package, which does not import here{missing}: "
            f"{error}. Install it with its dependencies (pip install tensorflow-datasets)."
        ) from None
    return tfds


def tfds_split(name: str, split: str, test_fraction: float, feature: str | None = "image"):
    """A tfds split; datasets without a 'test' split are sliced by `test_fraction`.

    Raises a one-line `ValueError` for a missing tensorflow_datasets, an
    unknown dataset or split, or (unless `feature` is None) a missing feature.
    """
    tfds = _import_tfds(name)
    try:
        known = list(tfds.builder(name).info.splits)  # empty under tfds.testing.mock_data
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"--dataset=tfds:{name}: tensorflow_datasets has no dataset {name!r} "
                         "(see tfds.list_builders()).") from None
    key = split
    if known and "test" not in known and split != "all":
        cut = 100 - max(1, int(round(100 * test_fraction)))
        key = f"train[:{cut}%]" if split == "train" else f"train[{cut}%:]"
    try:
        dataset = tfds.load(name, split=key)
    except (ValueError, KeyError) as error:
        raise ValueError(f"tfds dataset {name!r} has no split {key!r} (splits: {known or 'unknown'}).") from error
    if feature is not None and feature not in dataset.element_spec:
        raise ValueError(f"tfds dataset {name!r} has no {feature!r} feature (features: {list(dataset.element_spec)}).")
    return dataset


def sprites(num_images: int | None = None, image_size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """dSprites-style images and their factor indices: every combination, or a seeded subset.

    `keras_vae.sprites.sprites`: shape, scale, orientation, x and y
    (`keras_vae.sprites.FACTOR_NAMES`), white on black, float32 in [0, 1].

    Example:

    >>> x, factors = sprites(num_images=2, image_size=32)
    >>> x.shape, factors.shape
    ((2, 32, 32, 1), (2, 5))
    """
    from keras_vae import sprites as sprites_lib

    return sprites_lib.sprites(num_images, image_size, seed)


def _sprites_size(name: str) -> int | None:
    """The image size of a `"sprites"` / `"sprites:SIZE"` source name, None for other names."""
    if name != "sprites" and not name.startswith("sprites:"):
        return None
    size = name.partition(":")[2] or "64"
    if not size.isdigit() or int(size) < 1:
        raise ValueError(f"Expected --dataset=sprites or sprites:SIZE with a positive integer SIZE. Received {name!r}.")
    return int(size)


def _sprites_factors(split: str, test_fraction: float) -> np.ndarray:
    from keras_vae import sprites as sprites_lib

    factors = sprites_lib.subset_factors(SPRITES_IMAGES, seed=0)
    return _split((factors,), split, _train_size(len(factors), test_fraction, "sprites"))[0]


def _npz_factors(path: Path, split: str, test_fraction: float):
    """`(factors, names)` of a `.npz` split, None where it has none; checked against the images."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in ("x", "x_test", "factors", "factors_test", "factor_names")
                  if key in archive}
    if "factors" not in arrays:
        return None
    from keras_vae.disentanglement import check_factors

    factors = check_factors(arrays["factors"], len(arrays["x"]), name=f"factors in {path}")
    names = [str(n) for n in arrays.get("factor_names", [f"factor_{k}" for k in range(factors.shape[1])])]
    if len(names) != factors.shape[1]:
        raise ValueError(f"{path}: factor_names has {len(names)} names for {factors.shape[1]} factors.")
    if "x_test" not in arrays:
        return _split((factors,), split, _train_size(len(factors), test_fraction, path))[0], names
    if "factors_test" not in arrays:
        return (factors, names) if split == "train" else None
    test = check_factors(arrays["factors_test"], len(arrays["x_test"]), name=f"factors_test in {path}")
    if test.shape[1] != factors.shape[1]:
        raise ValueError(f"{path}: factors has {factors.shape[1]} factors but factors_test {test.shape[1]}.")
    return {"train": factors, "test": test, "all": np.concatenate([factors, test])}[split], names


def factors(name: str, split: str = "train", test_fraction: float = 0.1):
    """The integer factor labels of a dataset split, one row per image of `load_arrays(name, split)`.

    Args:
        name: A `load_arrays` source; `"sprites"` and `.npz` files with a
            `factors` array have factors.
        split: `"train"`, `"test"` or `"all"`. Defaults to `"train"`.
        test_fraction: As in `load_arrays`. Defaults to 0.1.

    Returns:
        `(factors, factor_names)`: `(N, K)` int64 and K names; None when the
        split has no factor labels.

    Example:

    >>> labels, names = factors("sprites", "test")
    >>> labels.shape, names
    ((1000, 5), ['shape', 'scale', 'orientation', 'x', 'y'])
    """
    _check_split(split, test_fraction)
    if _sprites_size(name) is not None:
        from keras_vae import sprites as sprites_lib

        return _sprites_factors(split, test_fraction), list(sprites_lib.FACTOR_NAMES)
    path = Path(os.path.expanduser(name))
    if path.suffix == ".npz" and path.is_file():
        _check_npz_headers(path)
        return _npz_factors(path, split, test_fraction)
    return None


def load_arrays(name: str, split: str = "train", test_fraction: float = 0.1, with_labels: bool = False,
                video_options: dict | None = None):
    """Loads a dataset as float32 numpy images `(N, H, W, C)` in [0, 1] (a video source, see
    `keras_vae.video.is_video_source`, gives videos `(N, T, H, W, C)`).

    Args:
        name: `"mnist"`, `"sprites[:SIZE]"`, `"tfds:NAME"`, a `.npz` file or a folder of images.
        split: `"train"`, `"test"` or `"all"`. Defaults to `"train"`.
        test_fraction: Test share for sources without a test set (file order:
            the last images). Defaults to 0.1. MNIST always splits 9,000/1,000.
        with_labels: Also return labels (None where the source has none).
            Defaults to False.
        video_options: Keyword arguments of `keras_vae.video.load_videos` for a
            video source (`num_sequences`, `num_frames`, `frame_size`,
            `num_digits`, `seed`); ignored by image sources. Defaults to its defaults.

    Returns:
        `x`, or `(x, y)` when `with_labels`.

    Example:

    >>> x = load_arrays("mnist", split="test")
    >>> x.shape, x.dtype.name
    ((1000, 28, 28, 1), 'float32')
    """
    _check_split(split, test_fraction)
    from keras_vae import video  # imports this module: imported here

    if name.startswith("tfds:"):
        _import_tfds(name[5:])  # a missing dependency is one line, before any source looks at tfds
    elif name.endswith(".npz") and Path(os.path.expanduser(name)).is_file():
        _check_npz_headers(Path(os.path.expanduser(name)))  # a hostile file fails here, before any source reads it
    if video.is_video_source(name):  # videos (N, T, H, W, C): `keras_vae.video.load_videos` (its defaults)
        x = video.load_videos(name, split, test_fraction, **(video_options or {}))
        return (x, None) if with_labels else x
    if name == "mnist":
        x, y = _load_mnist(split)
    elif _sprites_size(name) is not None:
        from keras_vae import sprites as sprites_lib

        labels = _sprites_factors(split, test_fraction)
        x, y = sprites_lib.render(labels, _sprites_size(name)), labels[:, 0]
    elif name.startswith("tfds:"):
        tfds = _import_tfds(name[5:])
        examples = list(tfds.as_numpy(tfds_split(name[5:], split, test_fraction)))
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
