"""The examples take their settings as flags: one per argument of their `main`, with `main`'s defaults."""

import inspect
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_examples import CORE_EXAMPLES, EXAMPLES


@pytest.mark.parametrize("name", CORE_EXAMPLES)
def test_every_argument_of_main_is_a_flag(name):
    namespace = runpy.run_path(str(EXAMPLES / name))
    main, parse_args = namespace["main"], namespace["parse_args"]
    defaults = {key: p.default for key, p in inspect.signature(main).parameters.items()}
    assert parse_args([]) == defaults
    assert defaults["epochs"] == 10 and defaults["overwrite"] is False
    parsed = parse_args(["--epochs=2", "--num_images=64", "--out=x.keras", "--overwrite"])
    assert parsed == {**defaults, "epochs": 2, "num_images": 64, "out": "x.keras", "overwrite": True}
    with pytest.raises(SystemExit):
        parse_args(["--epochs=two"])


def test_example_runs_from_the_command_line_with_its_flags(tmp_path):
    out = tmp_path / "bs.keras"
    script = str(Path(EXAMPLES) / "bs_vae.py")
    args = [sys.executable, script, "--epochs=1", "--num_images=128", "--beta=3", f"--out={out}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rate (KL)" in result.stdout and out.exists()
    # A rerun without --overwrite refuses before any training.
    refused = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "refusing to overwrite" in refused.stderr
