"""Tests of keras_vae.callbacks: collapse statistics in the logs, warnings, TensorBoard images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf

from keras_vae import callbacks, evaluation, models
from tests.conftest import make_images, tiny_vae


def test_collapse_monitor_logs_statistics_each_epoch(tmp_path):
    x = make_images(48)
    vae = tiny_vae(latent_dim=3)
    monitor = callbacks.CollapseMonitor(x[:32], max_collapsed_fraction=1.0, log_dir=tmp_path)
    history = vae.fit(x, batch_size=16, epochs=2, verbose=0, callbacks=[monitor])
    assert len(monitor.history) == 2 and len(history.history["posterior_active_units"]) == 2
    expected = evaluation.posterior_statistics(vae, x[:32])
    last = monitor.history[-1]
    assert last["active_units"] == expected["active_units"]
    np.testing.assert_allclose(last["kl_per_dim"], expected["kl_per_dim"], rtol=1e-6)
    assert history.history["posterior_mutual_information"][-1] == pytest.approx(expected["mutual_information"])
    tags = {value.tag for event in _events(tmp_path) for value in event.summary.value}
    assert {"posterior_active_units", "posterior_kl_per_dim"} <= tags


def test_collapse_monitor_warns_when_dimensions_collapse():
    x = make_images(32)
    vae = tiny_vae(latent_dim=4)
    stats = evaluation.posterior_statistics(vae, x, collapse_nats=1e6)
    assert stats["collapsed_units"] == 4
    monitor = callbacks.CollapseMonitor(x, collapse_nats=1e6)  # everything counts as collapsed
    monitor.set_model(vae)
    with pytest.warns(callbacks.PosteriorCollapseWarning, match="4 of 4"):
        monitor.on_epoch_end(0, {})
    quiet = callbacks.CollapseMonitor(x, collapse_nats=0.0)
    quiet.set_model(vae)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.on_epoch_end(0, {})
    with pytest.raises(ValueError, match="every=0"):
        callbacks.CollapseMonitor(x, every=0)


def test_image_logger_writes_sample_and_reconstruction_images(tmp_path):
    x = make_images(16)
    vae = tiny_vae(latent_dim=2)
    logger = callbacks.ImageLogger(tmp_path, x[:4], num_samples=9)
    vae.fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[logger])
    images = {}
    for event in _events(tmp_path):
        for value in event.summary.value:
            images[value.tag] = tf.io.decode_png(value.tensor.string_val[2]).numpy()
    assert set(images) == {"samples", "reconstructions"}
    assert images["samples"].shape[:2] == (3 * 9 - 1, 3 * 9 - 1)
    assert images["reconstructions"].shape[:2] == (2 * 9 - 1, 4 * 9 - 1)
    expected = logger.grids()["reconstructions"]
    np.testing.assert_allclose(images["reconstructions"][..., 0] / 255.0, expected[..., 0], atol=1 / 255 + 1e-6)


def test_image_logger_of_a_conditional_model_uses_the_labels(tmp_path):
    x, y = make_images(16), np.arange(16) % 2
    vae = models.build_conditional_vae((8, 8, 1), num_classes=2, network="mlp", latent_dim=2, seed=0)
    vae.compile(optimizer="adam")
    logger = callbacks.ImageLogger(tmp_path, x[:4], num_samples=4, conditions={"y": y[:4]})
    vae.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[logger])
    assert {value.tag for event in _events(tmp_path) for value in event.summary.value} == {"samples", "reconstructions"}
    grids = logger.grids()
    other = callbacks.ImageLogger(tmp_path / "other", x[:4], num_samples=4, conditions={"y": 1 - y[:4]})
    other.set_model(vae)
    # The labels reach the decoder: other labels, other reconstructions and samples at the same z.
    for name in ("samples", "reconstructions"):
        assert np.abs(other.grids()[name] - grids[name]).max() > 1e-3, name


def _events(log_dir):
    for path in sorted(tf.io.gfile.glob(str(log_dir / "events.out.tfevents.*"))):
        yield from tf.compat.v1.train.summary_iterator(path)
