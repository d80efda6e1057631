"""`python -m keras_vae COMMAND --flags`: train, evaluate or export a VAE.

Each command lives in `keras_vae/commands/COMMAND.py` and defines its own absl
flags; only the chosen command's module is imported.

Example:

    python -m keras_vae train --dataset=mnist --likelihood=optimal --epochs=10 --out=runs/demo
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from keras_vae import commands

# Errors that describe bad input (a file, a flag value, a shape), shown as one line.
USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, FloatingPointError)


def available_commands() -> list[str]:
    """The names of the modules in `keras_vae.commands`."""
    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__))


def run(argv: list[str] | None = None) -> None:
    """Dispatches `argv[1]` to its command module's absl `main`."""
    argv = list(sys.argv if argv is None else argv)
    names = available_commands()
    if len(argv) < 2 or argv[1] not in names:
        given = argv[1] if len(argv) > 1 else "nothing"
        sys.exit(f"usage: python -m keras_vae {{{','.join(names)}}} [--flags]   (received: {given})")
    from absl import app

    module = importlib.import_module(f"keras_vae.commands.{argv[1]}")

    def main(args: list[str]) -> None:
        try:
            module.main(args)
        except USER_ERRORS as error:  # bad input: say what is wrong, no traceback
            sys.exit(f"error: {error}")

    app.run(main, argv=[f"keras_vae {argv[1]}", *argv[2:]])


if __name__ == "__main__":
    run()
