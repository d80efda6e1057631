"""An export refused over an existing target names the switch of the caller: `overwrite=True` in Python,
`--overwrite` on the command line."""

import subprocess
import sys

import numpy as np
import pytest

from keras_vae import experiment, export
from tests.conftest import make_images, tiny_vae


def test_python_api_names_overwrite_true(tmp_path):
    (tmp_path / "vae" / "1").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"Use another version or pass overwrite=True\.$"):
        export.check_saved_model_target(tmp_path, "vae", 1)
    (tmp_path / "m.tflite").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"Pass overwrite=True\.$"):
        export.check_tflite_target(tiny_vae(), tmp_path / "m.tflite")
    assert export.check_saved_model_target(tmp_path, "vae", 1, overwrite=True) == tmp_path / "vae" / "1"


def test_command_line_names_the_flag(tmp_path):
    np.savez(tmp_path / "toy.npz", x=make_images(40, (8, 8, 1)))
    config = experiment.RunConfig(dataset=str(tmp_path / "toy.npz"), network="mlp", latent_dim=2, epochs=1,
                                  batch_size=16, out=str(tmp_path / "run"))
    experiment.train(config, verbose=0)
    serving = tmp_path / "serving"
    (serving / "vae" / "1").mkdir(parents=True)
    (serving / "vae_2.tflite").write_bytes(b"old")
    model = f"--model={tmp_path / 'run' / 'model.keras'}"
    for version, what in (("1", f"{serving / 'vae' / '1'} already exists"), ("2", "vae_2.tflite already exists")):
        result = subprocess.run([sys.executable, "-m", "keras_vae", "export", model, f"--out={serving}",
                                 f"--version={version}", "--tflite"], capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert what in result.stderr and "--overwrite" in result.stderr and "overwrite=True" not in result.stderr
    assert not (serving / "vae" / "2").exists() and (serving / "vae_2.tflite").read_bytes() == b"old"
