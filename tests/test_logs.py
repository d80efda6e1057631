"""Quiet start-up: no TensorFlow log lines on stderr by default, all of them with --verbose."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from keras_vae import logs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A TensorFlow/absl C++ log line ("I0000 00:00:17.. 123 port.cc:153] ...", "W...", "E...") or absl's notice.
TF_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl)", re.MULTILINE)


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the command's own default
    return subprocess.run([sys.executable, "-m", "keras_vae", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_quiet_start_drops_info_lines_and_keeps_the_rest(capfd):
    with logs.quiet_start():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796197910.417996    6875 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"I0000 00:00:1796197910.418300    6875 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"E0000 00:00:1796197914.449931    6875 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
        os.write(2, b"W0000 00:00:1796197914.5    6875 gpu.cc:1] Cannot dlopen some GPU libraries.\n")
        os.write(2, b"Traceback (most recent call last):\n")
    assert capfd.readouterr().err == (
        "W0000 00:00:1796197914.5    6875 gpu.cc:1] Cannot dlopen some GPU libraries.\n"
        "Traceback (most recent call last):\n"
    )
    with logs.quiet_start():  # with a driver, a failing cuInit is a real error and is shown
        os.write(2, b"E0000 00:00:1796197914.449931    6875 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
    assert "failed call to cuInit" in capfd.readouterr().err


def test_commands_write_no_tensorflow_logs_unless_verbose(tmp_path):
    missing = tmp_path / "missing.keras"
    quiet = run_cli("export", f"--model={missing}")  # imports TensorFlow, finds devices, then fails on the file
    assert quiet.returncode == 1
    assert quiet.stderr == f"error: No model file at --model={missing}\n"
    loud = run_cli("export", f"--model={missing}", "--verbose")
    assert loud.returncode == 1 and TF_LOG_LINE.search(loud.stderr), loud.stderr
