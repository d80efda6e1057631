"""Tests of keras_vae.plots: grids and charts are non-empty PNGs of the expected size."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from keras_vae import plots
from tests.conftest import make_images, tiny_vae


def read_png(path) -> np.ndarray:
    image = matplotlib.image.imread(path)
    assert image.size > 0 and image.std() > 0, f"{path} is blank"
    return image


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(latent_dim=3)


def holds_grid(png: np.ndarray, rows: int, columns: int) -> bool:
    """Whether a PNG is large enough for the tiled 8x8 images at 4 screen pixels each, plus its legends."""
    return png.shape[0] > 4 * (rows * 9 - 1) and png.shape[1] > 4 * (columns * 9 - 1)


def test_sample_and_reconstruction_grids_have_tiled_sizes(tmp_path, vae):
    images = make_images(8)
    path = plots.sample_grid(images, tmp_path / "samples.png", num_columns=4)
    assert holds_grid(read_png(path), 2, 4)
    path = plots.reconstruction_grid(images, np.asarray(vae.reconstruct(images)), tmp_path / "rec.png")
    assert holds_grid(read_png(path), 2, 8)


def test_interpolate_linear_and_spherical():
    z1, z2 = np.array([3.0, 0.0, 0.0]), np.array([0.0, 0.0, 3.0])
    linear = plots.interpolate(z1, z2, 5, "linear")
    np.testing.assert_allclose(linear[[0, -1]], [z1, z2])
    np.testing.assert_allclose(linear[2], [1.5, 0.0, 1.5])
    spherical = plots.interpolate(z1, z2, 5, "spherical")
    np.testing.assert_allclose(spherical[[0, -1]], [z1, z2], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(spherical, axis=1), 3.0)  # equal norms stay on the sphere
    np.testing.assert_allclose(spherical[2], [3 / np.sqrt(2), 0.0, 3 / np.sqrt(2)])
    with pytest.raises(ValueError, match="method='cubic'"):
        plots.interpolate(z1, z2, 5, "cubic")


def test_interpolation_grid_and_traversal_sizes(tmp_path, vae):
    images = make_images(2)
    path = plots.interpolation_grid(vae, images[0], images[1], tmp_path / "interp.png", steps=6)
    assert holds_grid(read_png(path), 2, 8)  # 2 rows of 6 + 2 ends
    path = plots.latent_traversal(vae, tmp_path / "trav.png", dims=[0, 2], steps=5)
    assert holds_grid(read_png(path), 2, 5)
    with pytest.raises(ValueError, match="dims"):
        plots.latent_traversal(vae, tmp_path / "bad.png", dims=[3])


def test_charts_have_figure_sizes(tmp_path):
    path = plots.kl_bars([0.0, 2.5, 0.05, 4.0], tmp_path / "kl.png", figsize=(4, 2), dpi=50)
    assert read_png(path).shape[:2] == (100, 200)
    points = [
        {"rate": 10.0, "distortion": 0.05, "label": "beta=10", "group": "beta-VAE"},
        {"rate": 30.0, "distortion": 0.01, "label": "beta=1", "group": "beta-VAE"},
        {"rate": 25.0, "distortion": 0.012, "label": "optimal", "group": "calibrated"},
    ]
    path = plots.rate_distortion_curve(points, tmp_path / "rd.png", figsize=(5, 4), dpi=40)
    assert read_png(path).shape[:2] == (160, 200)
    with pytest.raises(ValueError, match="at least one"):
        plots.rate_distortion_curve([], tmp_path / "empty.png")
