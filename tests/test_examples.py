"""Every example runs on a tiny setting, so they never rot."""

import runpy
from pathlib import Path

import numpy as np
import pytest

import keras_vae as kv

EXAMPLES = Path(__file__).parent.parent / "examples"
CORE_EXAMPLES = ["sigma_vae.py", "bs_vae.py", "kl_annealed_bernoulli.py"]


@pytest.mark.parametrize("name", CORE_EXAMPLES)
def test_example_trains_saves_and_refuses_to_overwrite(name, tmp_path):
    main = runpy.run_path(str(EXAMPLES / name))["main"]
    out = tmp_path / "new_folder" / "model.keras"  # the example makes the folder
    kwargs = {"warmup_steps": 1} if "annealed" in name else {}
    vae = main(epochs=1, num_images=256, out=str(out), **kwargs)
    assert isinstance(vae, kv.VAE) and out.exists()
    assert np.isfinite(np.asarray(vae.sample(2))).all()
    if "annealed" in name:
        assert float(vae.beta) == 1.0
    saved = out.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        main(epochs=1, num_images=256, out=str(out), **kwargs)
    assert out.read_bytes() == saved
