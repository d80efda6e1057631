"""Tests of keras_vae.sweep: a tiny beta / sigma-mode sweep writes its table and plot."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest

from keras_vae import sweep
from tests.conftest import make_images


def test_rate_distortion_sweep_writes_table_and_png(tmp_path):
    x = make_images(80, shape=(8, 8, 1), seed=5)
    np.savez(tmp_path / "toy.npz", x=x[:64], x_test=x[64:])
    out = tmp_path / "rd"
    kwargs = dict(dataset=str(tmp_path / "toy.npz"), betas=(0.01, 100.0), sigma_modes=("optimal",), out=out,
                  network="mlp", latent_dim=3, epochs=2, batch_size=16, seed=0)
    points = sweep.rate_distortion_sweep(**kwargs)
    assert [p["name"] for p in points] == ["beta=0.01", "beta=100", "optimal"]
    by_name = {p["name"]: p for p in points}
    # A heavy KL weight buys a lower rate with a higher distortion.
    assert by_name["beta=100"]["rate"] < by_name["beta=0.01"]["rate"]
    assert by_name["beta=100"]["distortion"] > by_name["beta=0.01"]["distortion"]
    saved = json.loads((out / "rate_distortion.json").read_text())
    assert saved["points"] == points
    table = (out / "rate_distortion.md").read_text()
    assert table.count("\n| ") == 1 + 3  # header and three runs
    assert matplotlib.image.imread(out / "rate_distortion.png").shape[:2] == (480, 640)
    assert (out / "beta_0.01" / "model.keras").exists()
    # A rerun keeps the finished points; other settings over them are refused, naming the setting.
    assert sweep.rate_distortion_sweep(**kwargs) == points
    with pytest.raises(FileExistsError, match=r"other settings \(epochs\).*overwrite=True"):
        sweep.rate_distortion_sweep(**{**kwargs, "epochs": 3})


def test_sweep_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="beta=0"):
        sweep.settings([0], [])
    with pytest.raises(ValueError, match="at least one"):
        sweep.settings([], [])
    with pytest.raises(ValueError, match="epoch"):
        sweep.rate_distortion_sweep(out=tmp_path, epoch=1)
