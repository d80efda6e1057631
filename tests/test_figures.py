"""Figures explain themselves: titles, row and column legends, traversal dimensions and range, decoder sigma."""

from __future__ import annotations

import matplotlib.image
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import plots
from tests.conftest import make_images, tiny_vae


def texts(figure) -> list[str]:
    """Every text of a figure: titles, tick labels, axis labels, legends, annotations."""
    return [t.get_text() for t in figure.findobj(matplotlib.text.Text) if t.get_text()]


def row_labels(figure) -> list[str]:
    return [label.get_text() for label in figure.axes[0].get_yticklabels()]


def column_labels(figure) -> list[str]:
    return [label.get_text() for label in figure.axes[0].get_xticklabels()]


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(latent_dim=3)


def test_decoder_caption_names_the_likelihood_and_its_sigma():
    fixed = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood=kv.Gaussian(sigma=0.25))
    assert plots.decoder_caption(fixed) == "decoder: Gaussian, fixed sigma = 0.25 (pixels in [0, 1])"
    learned = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="learned")
    assert plots.decoder_caption(learned, 0.123456) == "decoder: Gaussian, learned sigma = 0.123 (pixels in [0, 1])"
    bernoulli = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="bernoulli")
    assert plots.decoder_caption(bernoulli) == "decoder: Bernoulli (no sigma)"
    assert plots.decoder_sigma(bernoulli, {"x": make_images(2)}) is None


def test_decoder_sigma_is_the_served_one(vae):
    x = make_images(4)
    _, sigma = vae.decode(vae.encode(x)[0])  # the posterior mean is the mode of a Gaussian posterior
    np.testing.assert_allclose(plots.decoder_sigma(vae, {"x": x}), float(np.mean(sigma)), rtol=1e-5)


def test_sample_and_reconstruction_figures_have_titles_and_row_legends(vae):
    images = make_images(12)
    figure = plots.sample_figure(images, num_columns=4, decoder="decoder: Gaussian, optimal sigma = 0.1")
    title = figure.axes[0].get_title()
    assert title == "Prior samples: decoder means at z ~ p(z)\ndecoder: Gaussian, optimal sigma = 0.1"
    plt.close(figure)
    figure = plots.reconstruction_figure(images, np.asarray(vae.reconstruct(images)), decoder="decoder: X")
    assert row_labels(figure) == ["original", "reconstruction"] * 2  # 12 images: rows of 8, then 4 (padded)
    title = figure.axes[0].get_title()
    assert "original above its reconstruction" in title and title.endswith("decoder: X")
    plt.close(figure)
    with pytest.raises(ValueError, match="Shapes differ"):
        plots.reconstruction_figure(images, images[:3])


def test_interpolation_figure_labels_rows_by_method_and_columns_by_t(vae):
    images = make_images(2)
    figure = plots.interpolation_figure(vae, images[0], images[1], steps=5)
    assert row_labels(figure) == ["linear", "spherical"]
    assert column_labels(figure) == ["image 1", "t=0", "t=0.25", "t=0.5", "t=0.75", "t=1", "image 2"]
    assert "fraction of the way from image 1 to image 2" in figure.axes[0].get_xlabel()
    plt.close(figure)


def test_traversal_figure_names_its_dimensions_range_and_kl(vae):
    figure = plots.traversal_figure(vae, dims=[0, 2], span=2.0, steps=5, kl_per_dim=[0.5, 0.0, 1.25])
    assert row_labels(figure) == ["z[0] KL 0.50", "z[2] KL 1.25"]
    assert column_labels(figure) == ["-2", "-1", "0", "1", "2"]
    title = " ".join(figure.axes[0].get_title().split())
    assert "dimensions 0, 2 of 3" in title and "[-2, 2]" in title and "the others at 0 (the prior mean)" in title
    plt.close(figure)


def test_model_figures_write_every_png_with_the_decoder_sigma(tmp_path, vae, monkeypatch):
    titles = {}
    save = plots._save_figure

    def keep_title(figure, path):
        titles[path.name] = " ".join(texts(figure))
        return save(figure, path)

    monkeypatch.setattr(plots, "_save_figure", keep_title)
    x = make_images(8)
    sigma = plots.decoder_sigma(vae, {"x": x})
    paths = plots.model_figures(vae, x, tmp_path, kl_per_dim=[0.3, 0.01, 2.0])
    assert sorted(p.name for p in paths) == sorted(titles) == sorted(
        ["samples.png", "reconstructions.png", "interpolation.png", "traversal.png", "kl_per_dim.png"])
    for name, text in titles.items():
        assert f"optimal sigma = {sigma:.3g}" in text, name
        assert matplotlib.image.imread(tmp_path / name).std() > 0, name
    assert "collapse threshold" in titles["kl_per_dim.png"] and "KL (nats per image)" in titles["kl_per_dim.png"]


def test_rate_distortion_curve_labels_axes_points_and_title(tmp_path, monkeypatch):
    found = []
    save = plots._save_figure
    monkeypatch.setattr(plots, "_save_figure", lambda figure, path: found.extend(texts(figure))
                        or save(figure, path))
    points = [{"rate": 10.0, "distortion": 200.0, "label": "beta=10", "group": "beta-VAE"},
              {"rate": 30.0, "distortion": -50.0, "label": "optimal", "group": "calibrated"}]
    plots.rate_distortion_curve(points, tmp_path / "rd.png", distortion_label="distortion: -log p(x|z) (nats)",
                                log_scale=False)
    assert {"beta=10", "optimal", "distortion: -log p(x|z) (nats)", "rate: KL(q(z|x) || p(z)) (nats)"} <= set(found)
    assert any(text.startswith("Rate-distortion") for text in found)
