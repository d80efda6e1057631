"""The sprite renderer: every factor changes the image, seeds repeat, shapes are where the factors put them."""

import numpy as np
import pytest

from keras_vae import data, sprites

BASE = np.array([2, 3, 1, 10, 20])  # a heart, mid scale, rotated by 9 degrees, left of centre, low


@pytest.mark.parametrize("image_size", [64, 32, 16])
def test_every_factor_changes_the_image(image_size):
    base = sprites.render(BASE[None], image_size)[0]
    for column, (name, size) in enumerate(zip(sprites.FACTOR_NAMES, sprites.FACTOR_SIZES, strict=True)):
        for value in range(size):
            if value == BASE[column]:
                continue
            factors = BASE.copy()
            factors[column] = value
            changed = sprites.render(factors[None], image_size)[0]
            assert np.abs(changed - base).sum() > 0.05, f"{name}={value} draws the image of {name}={BASE[column]}"


def test_factors_put_the_shape_where_they_say():
    x = sprites.render(np.array([[0, 5, 0, 0, 0], [0, 5, 0, 31, 31], [0, 0, 0, 16, 16], [0, 5, 0, 16, 16]]), 64)
    assert x.dtype == np.float32 and x.shape == (4, 64, 64, 1) and x.min() == 0.0 and x.max() == 1.0
    rows, columns = np.indices((64, 64))
    for image, (row, column) in zip(x[:2, ..., 0], [(13.6, 13.6), (50.4, 50.4)], strict=True):
        mass = image.sum()
        # The centre of mass of an unrotated square is its centre: x along columns, y along rows.
        assert abs((image * columns).sum() / mass + 0.5 - column) < 0.6
        assert abs((image * rows).sum() / mass + 0.5 - row) < 0.6
    # A square of half-width 0.15 * scale of the side: area (2 * 0.15 * 64 * scale)**2 pixels.
    np.testing.assert_allclose(x[3].sum(), (0.3 * 64) ** 2, rtol=0.02)
    np.testing.assert_allclose(x[2].sum(), (0.3 * 64 * 0.5) ** 2, rtol=0.05)
    assert x[:, 0, :].max() == 0.0 and x[:, :, -1].max() == 0.0  # inside the image, white on black


def test_rotations_are_exact_symmetries_of_square_and_ellipse_only():
    def image(shape, orientation):
        return sprites.render(np.array([[shape, 5, orientation, 16, 16]]), 32)[0]

    # 10 steps of 2 pi / 40 is a quarter turn: the square looks the same, the heart does not.
    np.testing.assert_allclose(image(0, 10), image(0, 0), atol=0.13)
    np.testing.assert_allclose(image(1, 20), image(1, 0), atol=0.13)
    assert np.abs(image(2, 20) - image(2, 0)).max() > 0.9


def test_same_seed_same_images_and_subsets_without_repeats():
    x1, f1 = sprites.sprites(num_images=300, image_size=16, seed=3)
    x2, f2 = sprites.sprites(num_images=300, image_size=16, seed=3)
    x3, f3 = sprites.sprites(num_images=300, image_size=16, seed=4)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(f1, f2)
    assert not np.array_equal(f1, f3)
    assert len({tuple(row) for row in f1.tolist()}) == 300
    np.testing.assert_array_equal(x1, sprites.render(f1, 16))
    np.testing.assert_array_equal(sprites.subset_factors(300, seed=3), f1)


def test_every_combination_once():
    factors = sprites.all_factors()
    assert factors.shape == (737_280, 5)
    assert len(np.unique(factors @ np.array([245760, 40960, 1024, 32, 1]))) == 737_280
    np.testing.assert_array_equal(factors.max(axis=0) + 1, sprites.FACTOR_SIZES)


def test_renderer_as_ground_truth_data():
    data = sprites.Sprites(image_size=16)
    rng = np.random.default_rng(0)
    factors, images = data.sample_given(2, np.full(5, 7), rng)
    assert (factors[:, 2] == 7).all() and images.shape == (5, 16, 16, 1)
    np.testing.assert_array_equal(images, sprites.render(factors, 16))
    counts = np.bincount(data.sample_factors(3000, rng)[:, 0], minlength=3)
    assert counts.min() > 900  # uniform shapes


def test_bad_input():
    with pytest.raises(ValueError, match=r"Expected factors of shape \(N, 5\)"):
        sprites.render(np.zeros((2, 4), "int64"))
    with pytest.raises(ValueError, match=r"Expected orientation indices in \[0, 40\)"):
        sprites.render(np.array([[0, 0, 40, 0, 0]]))
    with pytest.raises(ValueError, match="Expected a positive integer. Received: image_size=0"):
        sprites.render(np.zeros((1, 5), "int64"), image_size=0)
    with pytest.raises(ValueError, match="num_images <= 737280"):
        sprites.subset_factors(10**6)


def test_sprites_source_splits_images_with_their_factors():
    x, y = data.load_arrays("sprites:16", "test", with_labels=True)
    labels, names = data.factors("sprites:16", "test")
    assert x.shape == (1000, 16, 16, 1) and labels.shape == (1000, 5) and names == list(sprites.FACTOR_NAMES)
    np.testing.assert_array_equal(x, sprites.render(labels, 16))
    np.testing.assert_array_equal(y, labels[:, 0])  # labels: the shape
    train, _ = data.factors("sprites", "train")
    assert len(train) == 9000 and not {tuple(r) for r in train.tolist()} & {tuple(r) for r in labels.tolist()}
    with pytest.raises(ValueError, match="sprites:SIZE with a positive integer SIZE"):
        data.load_arrays("sprites:big")
    assert data.factors("mnist", "test") is None


def test_npz_factors_follow_their_images_through_the_split(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(20, 2))
    x = (labels[:, :1, None, None] * np.ones((20, 1, 3, 3)) / 4).astype("float32")  # each image shows factor 0
    np.savez(tmp_path / "plain.npz", x=x, factors=labels, factor_names=np.array(["size", "hue"]))
    for split in ("train", "test", "all"):
        images = data.load_arrays(str(tmp_path / "plain.npz"), split, test_fraction=0.25)
        rows, names = data.factors(str(tmp_path / "plain.npz"), split, test_fraction=0.25)
        assert names == ["size", "hue"] and len(rows) == len(images)
        np.testing.assert_allclose(images[:, 0, 0, 0], rows[:, 0] / 4)
    np.savez(tmp_path / "split.npz", x=x, x_test=x[:5], factors=labels, factors_test=labels[:5])
    rows, names = data.factors(str(tmp_path / "split.npz"), "test")
    np.testing.assert_array_equal(rows, labels[:5])
    assert names == ["factor_0", "factor_1"] and len(data.factors(str(tmp_path / "split.npz"), "all")[0]) == 25
    np.savez(tmp_path / "bad.npz", x=x, factors=labels[:19])
    with pytest.raises(ValueError, match=r"one row of factors in .*bad.npz per image: 20 images, 19 rows"):
        data.factors(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "float.npz", x=x, factors=labels * 0.5)
    with pytest.raises(ValueError, match="Expected integer factor labels; factors in .*float.npz has dtype float64"):
        data.factors(str(tmp_path / "float.npz"))
    np.savez(tmp_path / "names.npz", x=x, factors=labels, factor_names=np.array(["size"]))
    with pytest.raises(ValueError, match="names.npz: factor_names has 1 names for 2 factors"):
        data.factors(str(tmp_path / "names.npz"))
