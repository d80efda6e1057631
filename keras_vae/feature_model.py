"""A small classifier whose penultimate layer gives FID features when InceptionV3 is out of reach.

FID is usually computed on InceptionV3 features, whose weights must be
downloaded. This module trains a small conv classifier on a labelled
dataset (once), caches it on disk, and returns the feature extractor (its
128-unit penultimate layer). A FID is only comparable with FIDs computed
with the same feature model: report `FeatureModel.name` beside the number.

Cache: `$KERAS_VAE_CACHE` or `~/.cache/keras_vae`, file
`feature_models/{dataset}_classifier_v2.keras`, with a `.json` describing
it (test accuracy, training images). An existing file is loaded, never
overwritten; a file there that is not a loadable model is an error.

Example:

>>> import numpy as np
>>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
>>> y = np.arange(64) % 10
>>> classifier = train_classifier(x, y, num_classes=10, epochs=1)
>>> extractor(classifier)(x[:2]).shape
TensorShape([2, 128])
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path

import keras
import numpy as np

from keras_vae import data as data_lib
from keras_vae import files, logs

VERSION = "v2"  # v2: trained 10 epochs (v1: 3 epochs, test accuracy 0.949 on MNIST)
FEATURE_LAYER = "features"
FEATURE_UNITS = 128


@dataclasses.dataclass
class FeatureModel:
    """A feature extractor and what it is, to report beside a FID.

    Attributes:
        model: A Keras model from images to features `(batch, 128)`.
        name: E.g. `"mnist_classifier_v2 (128-d penultimate layer, test accuracy 0.978)"`.
        path: The cached `.keras` file.
    """

    model: keras.Model
    name: str
    path: Path

    def __call__(self, images, training: bool = False):
        return self.model(images, training=training)


def cache_dir() -> Path:
    """`$KERAS_VAE_CACHE`, or `~/.cache/keras_vae`."""
    return Path(os.environ.get("KERAS_VAE_CACHE") or Path.home() / ".cache" / "keras_vae")


def build_classifier(input_shape, num_classes: int) -> keras.Model:
    """Conv(32,k3,s2)-Conv(64,k3,s2)-Flatten-Dense(128, name="features")-Dense(num_classes).

    Example:

    >>> build_classifier((28, 28, 1), 10).get_layer("features").output.shape
    (None, 128)
    """
    x_in = keras.Input(tuple(input_shape), name="x")
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x_in)
    h = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(FEATURE_UNITS, activation="relu", name=FEATURE_LAYER)(h)
    logits = keras.layers.Dense(num_classes, name="logits")(h)
    return keras.Model(x_in, logits, name="feature_classifier")


def train_classifier(x, y, num_classes: int | None = None, epochs: int = 3, seed: int = 0,
                     verbose: int = 0) -> keras.Model:
    """Trains `build_classifier` on images `x` and integer labels `y` (Adam 1e-3, batch 128; Keras `verbose`)."""
    data_lib.validate_images(x)
    y = np.asarray(y)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Expected integer labels of shape ({len(x)},). Received: y.shape={y.shape}, dtype {y.dtype}")
    num_classes = num_classes or int(y.max()) + 1
    keras.utils.set_random_seed(seed)
    model = build_classifier(x.shape[1:], num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=verbose)
    return model


def extractor(classifier: keras.Model) -> keras.Model:
    """The classifier cut at its penultimate (`"features"`) layer."""
    return keras.Model(classifier.input, classifier.get_layer(FEATURE_LAYER).output, name="fid_features")


def _slug(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", dataset).strip("_") or "dataset"


def get(dataset: str = "mnist", epochs: int = 10, directory=None, verbose: bool = True) -> FeatureModel:
    """The FID feature model of `dataset`: loaded from the cache, or trained once and cached.

    Args:
        dataset: A labelled dataset name for `keras_vae.data.load_arrays`
            (`"mnist"`, `"tfds:NAME"`, an `.npz` with `y`).
        epochs: Training epochs when it is not cached. Defaults to 10.
        directory: Cache folder. Defaults to `cache_dir() / "feature_models"`.
        verbose: Say when training, with a progress bar per epoch. Defaults to True.

    Returns:
        A `FeatureModel`.

    Raises:
        ValueError: If the dataset has no labels, or the cached file cannot be
            loaded (it is left alone; delete it to retrain).
    """
    directory = Path(directory) if directory is not None else cache_dir() / "feature_models"
    stem = f"{_slug(dataset)}_classifier_{VERSION}"
    path, info_path = directory / f"{stem}.keras", directory / f"{stem}.json"
    if path.exists():
        try:
            classifier = keras.models.load_model(path, safe_mode=True)
            classifier.get_layer(FEATURE_LAYER)
        except Exception as error:  # any failure means: not a classifier we can use
            raise ValueError(
                f"{path} exists but is not a loadable feature classifier ({error}). It was left alone; "
                "delete it or pass another directory to retrain."
            ) from error
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
    else:
        x, y = data_lib.load_arrays(dataset, "train", with_labels=True)
        if y is None:
            raise ValueError(f"Dataset {dataset!r} has no labels, so no feature classifier can be trained on it.")
        x_test, y_test = data_lib.load_arrays(dataset, "test", with_labels=True)
        if verbose:
            print(f"Training the FID feature classifier on {dataset} ({len(x)} images, {epochs} epochs)...", flush=True)
        classifier = train_classifier(x, np.asarray(y).astype("int64"), epochs=epochs,
                                      verbose=logs.progress_verbose() if verbose else 0)
        accuracy = float(np.mean(np.argmax(classifier.predict(x_test, verbose=0), -1) == np.asarray(y_test)))
        info = {"dataset": dataset, "train_images": len(x), "epochs": epochs, "test_accuracy": accuracy}
        directory.mkdir(parents=True, exist_ok=True)
        _save_new(classifier, path, info, info_path)
    accuracy = info.get("test_accuracy")
    detail = f", test accuracy {accuracy:.3f}" if accuracy is not None else ""
    name = f"{stem} ({FEATURE_UNITS}-d penultimate layer{detail})"
    return FeatureModel(extractor(classifier), name, path)


def _save_new(classifier: keras.Model, path: Path, info: dict, info_path: Path) -> None:
    """Writes to a temporary file and links it into place, so an existing file is never replaced."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp_model = Path(tmp) / path.name
        classifier.save(tmp_model)
        try:
            os.link(tmp_model, path)  # fails if another process (or the user) put a file there
        except FileExistsError:
            return
    if not info_path.exists():
        files.write_json(info_path, info)
