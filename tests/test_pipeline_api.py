"""The Python pipeline README documents: `kv.experiment`, `kv.plots`, `kv.sweep`, `kv.callbacks.KLAnnealing`,
and a `.keras` file that loads after `import keras_vae` (and not before)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import keras_vae as kv
from tests.conftest import make_images

ROOT = Path(__file__).parent.parent


def test_pipeline_modules_are_reachable_from_the_package():
    assert kv.experiment.train is __import__("keras_vae.experiment", fromlist=["train"]).train
    assert callable(kv.plots.rate_distortion_curve) and callable(kv.sweep.rate_distortion_sweep)
    assert kv.callbacks.KLAnnealing is kv.annealing.KLAnnealing
    assert kv.callbacks.TemperatureAnnealing is kv.annealing.TemperatureAnnealing
    assert {"experiment", "plots", "sweep", "callbacks"} <= set(kv.__all__)
    assert all(hasattr(kv, name) for name in kv.__all__)


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Python pipeline\n", 1)[1].split("\n## ", 1)[0]


def test_readme_pipeline_names_exist():
    names = set(re.findall(r"\bkv\.(\w+(?:\.\w+)*)", readme_section()))
    assert {"experiment.train", "experiment.RunConfig", "sweep.rate_distortion_sweep",
            "callbacks.KLAnnealing"} <= names
    for name in names:
        value = kv
        for part in name.split("."):
            assert hasattr(value, part), f"README's kv.{name} does not exist"
            value = getattr(value, part)


def test_readme_pipeline_example_trains_and_the_model_loads_only_after_import(tmp_path):
    path = tmp_path / "blobs.npz"
    np.savez(path, x=make_images(40, (8, 8, 1)))
    config = kv.experiment.RunConfig(dataset=str(path), likelihood="optimal", network="mlp", latent_dim=2,
                                     epochs=1, batch_size=16, test_fraction=0.2, out=str(tmp_path / "py"))
    model, metrics = kv.experiment.train(config, verbose=0)
    assert np.isfinite(metrics["test_elbo"]) and metrics["sigma"] > 0
    assert kv.plots.sample_grid(np.asarray(model.sample(4)), tmp_path / "py" / "more.png").stat().st_size > 100
    script = (
        "import keras, sys\n"
        "try:\n"
        f"    keras.models.load_model({str(tmp_path / 'py' / 'model.keras')!r})\n"
        "except Exception as error:\n"
        "    print('without:', type(error).__name__, str(error).splitlines()[0])\n"
        "import keras_vae\n"
        f"vae = keras.models.load_model({str(tmp_path / 'py' / 'model.keras')!r})\n"
        "print('with:', type(vae).__name__, vae.likelihood.sigma)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "without: " in result.stdout and "Could not locate class" in result.stdout, result.stdout
    assert "with: VAE optimal" in result.stdout
