"""`python -m keras_vae COMMAND --flags`: train, evaluate, export or sweep VAEs.

Each command lives in `keras_vae/commands/COMMAND.py` and defines its own absl
flags; only the chosen command's module is imported. `--help` (for the
program or a command) answers before TensorFlow is imported; TensorFlow's
C++ and INFO logs are hidden unless `--verbose`.

Example:

    python -m keras_vae train --dataset=mnist --likelihood=optimal --epochs=10 --out=runs/demo
"""

from __future__ import annotations

import importlib
import sys

from keras_vae import commands

# Errors that describe bad input (a file, a flag value, a shape), shown as one line.
USER_ERRORS = (ValueError, OSError, FloatingPointError)  # OSError: FileExistsError, PermissionError, ...
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")


def available_commands() -> list[str]:
    """The names of the modules in `keras_vae.commands`."""
    return commands.names()


def _wants_help(args: list[str]) -> bool:
    """Whether a help flag comes before any `--` (the end of the flags)."""
    flags_part = args[: args.index("--")] if "--" in args else args
    return any(arg in HELP_FLAGS for arg in flags_part)


def _load_library(verbose: bool) -> None:
    """Imports TensorFlow quietly (unless `verbose`), then the whole library (which registers its classes)."""
    import keras_vae
    from keras_vae import logs

    with logs.quiet_start(verbose):
        importlib.reload(keras_vae)  # the imports __init__ skipped for the command line

        import tensorflow as tf

        tf.config.list_physical_devices()  # finds the devices now, while their INFO lines are caught


def run(argv: list[str] | None = None) -> None:
    """Answers `--help`, or parses the command's flags, imports the library and runs its `main`."""
    argv = list(sys.argv if argv is None else argv)
    names = available_commands()
    if len(argv) < 2 or argv[1] in HELP_FLAGS:
        sys.stdout.write(commands.program_help())
        sys.exit(0 if len(argv) >= 2 else 2)
    if argv[1] not in names:
        sys.exit(f"error: unknown command {argv[1]!r}; expected one of {', '.join(names)}.\n"
                 "python -m keras_vae --help lists them.")
    from absl import flags

    module = importlib.import_module(f"keras_vae.commands.{argv[1]}")
    if _wants_help(argv[2:]):
        sys.stdout.write(commands.help_text(argv[1], module))
        sys.exit(0)
    try:
        args = flags.FLAGS([f"keras_vae {argv[1]}", *argv[2:]])
    except flags.Error as error:
        sys.exit(f"error: {error}\npython -m keras_vae {argv[1]} --help lists its flags.")
    _load_library(flags.FLAGS.verbose)
    try:
        module.main(args)
    except USER_ERRORS as error:  # bad input: say what is wrong, no traceback
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    run()
