"""Data sources: embedded MNIST split, tfds (mocked), .npz, image folders, conversion and bad input."""

import gzip

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vae import data


def test_embedded_mnist_is_the_real_test_set_split_in_file_order():
    x, y = data.load_arrays("mnist", "all", with_labels=True)
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.float32
    raw = np.frombuffer(gzip.open(data.MNIST_DIR / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    np.testing.assert_array_equal(x.reshape(-1), raw / np.float32(255))
    train, test = data.load_arrays("mnist", "train"), data.load_arrays("mnist", "test")
    assert len(train) == 9000 and len(test) == 1000
    np.testing.assert_array_equal(np.concatenate([train, test]), x)
    assert set(np.unique(y)) == set(range(10)) and y[0] == 7  # the first MNIST test digit is a 7
    batch = next(iter(data.load("mnist", "test").batch(10)))
    assert batch.shape == (10, 28, 28, 1)


def test_npz_with_and_without_test_split(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(20, 6, 5), dtype=np.uint8)
    np.savez(tmp_path / "plain.npz", x=x, y=np.arange(20))
    train, y = data.load_arrays(str(tmp_path / "plain.npz"), "train", test_fraction=0.25, with_labels=True)
    test = data.load_arrays(str(tmp_path / "plain.npz"), "test", test_fraction=0.25)
    assert train.shape == (15, 6, 5, 1) and test.shape == (5, 6, 5, 1)
    np.testing.assert_allclose(test[..., 0], x[15:] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, np.arange(15))
    np.savez(tmp_path / "split.npz", x=np.zeros((4, 3, 3, 3), "float32"), x_test=np.ones((2, 3, 3, 3), "float32"))
    assert data.load_arrays(str(tmp_path / "split.npz"), "test").shape == (2, 3, 3, 3)
    assert data.load_arrays(str(tmp_path / "split.npz"), "all").shape == (6, 3, 3, 3)


def test_folder_of_images(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 7, 9, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        (tmp_path / f"img{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    (tmp_path / "notes.txt").write_text("ignored")
    x = data.load_arrays(str(tmp_path), "all")
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)
    assert len(data.load_arrays(str(tmp_path), "test", test_fraction=0.2)) == 1
    (tmp_path / "odd.png").write_bytes(tf.io.encode_png(images[0, :5]).numpy())
    with pytest.raises(ValueError, match="all images must share one shape"):
        data.load_arrays(str(tmp_path), "all")


def test_tfds_through_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        x, y = data.load_arrays("tfds:mnist", "train", with_labels=True)
        assert x.shape == (6, 28, 28, 1) and x.dtype == np.float32 and y.shape == (6,)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert data.load_arrays("tfds:mnist", "test").shape == (6, 28, 28, 1)


def test_to_float_and_pipeline():
    converted = data.to_float(np.array([[[0, 51, 255]]], np.uint8))
    np.testing.assert_allclose(converted, [[[[0.0], [0.2], [1.0]]]], rtol=1e-6)
    with pytest.raises(ValueError, match="8-bit"):
        data.to_float(np.array([[[0, 300]]]))
    batches = list(data.pipeline(np.zeros((10, 2, 2, 1), "float32"), batch_size=4, seed=0))
    assert [len(b) for b in batches] == [4, 4, 2]


@pytest.mark.parametrize(
    "name, message, error",
    [
        ("/no/such/file.npz", "No dataset at", FileNotFoundError),
        ("mnist", "Unknown split", ValueError),
    ],
)
def test_missing_file_and_unknown_split(name, message, error):
    with pytest.raises(error, match=message):
        data.load_arrays(name, "validation" if name == "mnist" else "train")


@pytest.mark.parametrize(
    "x, message",
    [
        (np.full((3, 4, 4, 1), np.nan, "float32"), "NaN or inf"),
        (np.full((3, 4, 4, 1), 1.5, "float32"), r"values in \[1.5, 1.5\]"),
        (np.zeros((0, 4, 4, 1), "float32"), "empty"),
    ],
)
def test_bad_arrays_in_files(tmp_path, x, message):
    np.savez(tmp_path / "bad.npz", x=x)
    with pytest.raises(ValueError, match=message):
        data.load_arrays(str(tmp_path / "bad.npz"), "all")


def test_npz_without_x(tmp_path):
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 2, 2, 1)))
    with pytest.raises(ValueError, match="no array 'x'"):
        data.load_arrays(str(tmp_path / "nox.npz"))
