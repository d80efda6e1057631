"""Quiet TensorFlow start-up for the command line: its C++ and absl logs at warnings or worse.

TensorFlow prints INFO lines from C++ while it is imported and while it looks
for devices (oneDNN, cudart_stub, cpu_feature_guard, each twice, and on a
machine without a GPU driver `failed call to cuInit`). `TF_CPP_MIN_LOG_LEVEL`
does not hide the ones written before absl's logging is initialised, so
`quiet_start` catches the process's stderr (file descriptor 2) while
TensorFlow starts and writes back the lines that are not INFO. This module
imports no TensorFlow: call it before the first import.

Example:

>>> keep_line("I0000 00:00:1796197910.417996    6875 port.cc:153] oneDNN custom operations are on.")
False
>>> keep_line("W0000 00:00:1796197910.4 gpu_device.cc:2] Cannot dlopen some GPU libraries.")
True
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

# An absl/TF C++ INFO line ("I0000 00:00:..." or "2026-01-01 12:00:00.0: I tensorflow/..."), absl's notice
# that logs go to stderr before InitializeLog, and cuInit failing where no driver was found (CPU-only).
_INFO = re.compile(r"^(I\d{4} |\S+ \S+: I |WARNING: All log messages before absl::InitializeLog)")
_NO_DRIVER = "Could not find cuda drivers"
_CUINIT = "failed call to cuInit"


def keep_line(line: str, no_driver: bool = False) -> bool:
    """Whether a line TensorFlow wrote while starting is shown: not INFO (nor cuInit without a driver)."""
    return not (_INFO.match(line) or (no_driver and _CUINIT in line))


def set_levels(verbose: bool = False) -> None:
    """Sets TensorFlow's C++ log level (before its import) and absl's Python one: warnings or worse.

    With `verbose`, INFO logs are shown (an explicit `TF_CPP_MIN_LOG_LEVEL` is kept).
    """
    from absl import logging as absl_logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "1")
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.INFO if verbose else logging.WARNING)


@contextlib.contextmanager
def quiet_start(verbose: bool = False):
    """Within the block (TensorFlow's import and device search) stderr's INFO lines are dropped.

    Everything else written to stderr meanwhile, e.g. a traceback, is
    written back when the block ends. With `verbose` nothing is caught.
    """
    set_levels(verbose)
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode("utf-8", "replace").splitlines(keepends=True)
            no_driver = any(_NO_DRIVER in line for line in lines)
            sys.stderr.write("".join(line for line in lines if keep_line(line, no_driver)))
            sys.stderr.flush()



def progress_verbose() -> int:
    """Keras' `verbose` for progress output: 1 (a live bar) on a terminal, else 2 (plain lines, no ANSI codes).

    Keras' own bar thinks every POSIX process has a live display, so into a
    log file or a pipe it writes bar redraws and ANSI colour codes.
    """
    return 1 if sys.stdout.isatty() else 2


def progress_bar(total: int, label: str, unit: str = "image"):
    """Prints `label` (what the step computes) and returns a Keras `Progbar` over `total` units.

    On a terminal the bar redraws live; otherwise it writes one plain line
    (count, seconds, time per unit) when the step ends (`progress_verbose`).
    Call `bar.add(n)` after each batch.
    """
    import keras

    print(f"{label} ({total} {unit}s)", flush=True)
    return keras.utils.Progbar(total, unit_name=unit, verbose=progress_verbose())
