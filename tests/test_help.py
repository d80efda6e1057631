"""`python -m keras_vae [COMMAND] --help`: fast (no TensorFlow), exit 0, the command's own flags only."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keras_vae import commands, distribute, export, likelihoods, models, networks, run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = commands.names()


def run_without_tensorflow(tmp_path, *args):
    """Runs `python -m keras_vae ARGS` where importing TensorFlow or Keras fails loudly."""
    for name in ("tensorflow", "keras"):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('{name} was imported')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])}
    return subprocess.run([sys.executable, "-m", "keras_vae", *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=ROOT)


def listed_flags(help_text: str) -> set[str]:
    return set(re.findall(r"^  --(?:\[no\])?(\w+)", help_text, flags=re.MULTILINE))


def test_program_help_lists_the_commands(tmp_path):
    result = run_without_tensorflow(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for name in COMMANDS:
        assert re.search(rf"^  {name} +\S", result.stdout, flags=re.MULTILINE), name
    assert set(COMMANDS) >= {"train", "evaluate", "export"}


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_is_fast_and_lists_its_flags_with_defaults(tmp_path, name):
    start = time.perf_counter()
    result = run_without_tensorflow(tmp_path, name, "--help")
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert seconds < 10, seconds  # no TensorFlow import: well under a second on an idle machine
    assert result.stdout.startswith(f"usage: python -m keras_vae {name} ")
    assert "helpfull" not in result.stdout and "absl" not in result.stdout  # nothing but its own flags
    own = listed_flags(result.stdout.split("common flags:")[0])
    assert listed_flags(result.stdout) == own | {"verbose"}
    entries = re.split(r"\n(?=  --)", result.stdout.split("\nflags:\n")[1].split("\n\ncommon flags:")[0])
    assert len(entries) == len(own)
    assert all(re.search(r"\n      \((default: .+|required)\)$", entry) for entry in entries)
    if name == "train":
        assert own == {field.name for field in dataclasses.fields(run_config.RunConfig)}
        assert "--likelihood={bernoulli,gaussian," in result.stdout
        assert "      Passes over the train split. (>= 1)\n      (default: 10)\n" in result.stdout


def test_help_after_other_flags_and_bad_flags(tmp_path):
    assert run_without_tensorflow(tmp_path, "train", "--epochs=3", "-h").returncode == 0
    result = run_without_tensorflow(tmp_path, "train", "--epochs=0")
    assert result.returncode != 0 and "--epochs=0" in result.stderr and "Traceback" not in result.stderr
    result = run_without_tensorflow(tmp_path, "trian")
    assert result.returncode != 0 and "unknown command 'trian'" in result.stderr


def test_flag_choices_are_the_library_names():
    # A new model, likelihood or network name also goes into keras_vae/run_config.py (TF-free, for --help).
    assert run_config.MODEL_NAMES == models.NAMES, "update run_config.MODEL_NAMES"
    assert run_config.LIKELIHOOD_NAMES == likelihoods.NAMES, "update run_config.LIKELIHOOD_NAMES"
    assert run_config.NETWORK_NAMES == (*networks.NAMES, "pixelcnn"), "update run_config.NETWORK_NAMES"
    assert run_config.STRATEGIES == distribute.STRATEGIES
    assert run_config.PRECISIONS == distribute.PRECISIONS
    # Read as text: importing a second command module here would define its flags twice in absl.
    source = (Path(ROOT) / "keras_vae" / "commands" / "export.py").read_text()
    assert ast.literal_eval(re.search(r"^SIGNATURES = (\(.*?\))", source, flags=re.MULTILINE)[1]) == export.SIGNATURES


def test_run_config_is_the_same_class_in_experiment():
    from keras_vae import experiment

    assert experiment.RunConfig is run_config.RunConfig
    assert experiment.LATENT_ALIGNMENTS == run_config.LATENT_ALIGNMENTS
