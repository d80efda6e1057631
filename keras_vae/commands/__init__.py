"""Command-line commands: one module each, `keras_vae/commands/NAME.py`, run as `python -m keras_vae NAME`.

A command module defines its absl flags (one `flags.DEFINE_*` line each) and
`main(argv)`, and imports neither TensorFlow nor Keras at import time:
`python -m keras_vae NAME --help` only imports that module, and `main`
imports the library once the flags are parsed. The flags of `train` are the
fields of `keras_vae.run_config.RunConfig` (`define_config_flags`). The first
line of a module's docstring is its summary in `python -m keras_vae --help`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import pkgutil
import textwrap
import typing

from absl import flags

COMMON_FLAGS_MODULE = __name__  # `--verbose`, accepted by every command

flags.DEFINE_bool("verbose", False, "Show TensorFlow's C++ and INFO logs (hidden by default).",
                  module_name=COMMON_FLAGS_MODULE)

_DEFINERS = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


def names() -> list[str]:
    """The commands: the modules in `keras_vae.commands`.

    Example:

    >>> names()[-1]
    'train'
    """
    return sorted(info.name for info in pkgutil.iter_modules(__path__))


def summary(name: str) -> str:
    """The first line of command `name`'s docstring, read without importing it (and its flags)."""
    source = importlib.util.find_spec(f"{__name__}.{name}").loader.get_source(f"{__name__}.{name}")
    return _description(name, ast.get_docstring(ast.parse(source)) or "").splitlines()[0]


def _description(name: str, docstring: str) -> str:
    """A command's docstring without its "`python -m keras_vae NAME`: " prefix, capitalised."""
    text = docstring.strip().removeprefix(f"`python -m keras_vae {name}`: ")
    return text[:1].upper() + text[1:]


def define_config_flags(config_class, module_name: str, exclude: tuple[str, ...] = ()) -> None:
    """Defines one absl flag per field of the dataclass `config_class` (see `keras_vae.run_config.setting`).

    A field's type picks the flag (`bool`, `int`, `float`, `str`; `choices`
    make an enum); its default, help and `lower_bound` come from the field.

    Args:
        config_class: A dataclass such as `RunConfig`.
        module_name: The command module the flags belong to (their `--help`).
        exclude: Fields that get no flag. Defaults to none.
    """
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.name in exclude:
            continue
        meta = field.metadata
        kind = next(t for t in typing.get_args(hints[field.name]) or (hints[field.name],) if t is not type(None))
        if meta.get("choices"):
            flags.DEFINE_enum(field.name, field.default, list(meta["choices"]), meta["help"], module_name=module_name)
            continue
        bounds = {"lower_bound": meta["lower_bound"]} if meta.get("lower_bound") is not None else {}
        _DEFINERS[kind](field.name, field.default, meta["help"], module_name=module_name, **bounds)


def _default(flag) -> str:
    """A flag's default as typed on the command line: `true`, `0.001`, `decode,encode`, `unset`."""
    if flag.default is None:
        return "required" if flag.validators else "default: unset"
    if isinstance(flag.default, bool):
        return f"default: {str(flag.default).lower()}"
    if isinstance(flag.default, list):
        return f"default: {','.join(map(str, flag.default))}"
    return f"default: {flag.default}"


def _describe(flag) -> str:
    """One flag as `--name=<values>` (or `--[no]name`), then its help and default, indented."""
    help_text = flag.help
    if flag.flag_type() == "bool":
        head = f"--[no]{flag.name}"
    elif hasattr(flag.parser, "enum_values"):
        head = f"--{flag.name}={{{','.join(flag.parser.enum_values)}}}"
        help_text = help_text.removeprefix(f"<{'|'.join(flag.parser.enum_values)}>: ")
    else:
        head = f"--{flag.name}=<{flag.flag_type()}>"
    lower = getattr(flag.parser, "lower_bound", None)
    bound = f" (>= {lower:g})" if lower is not None else ""
    text = textwrap.fill(help_text + bound, width=100, initial_indent="      ", subsequent_indent="      ")
    return f"  {head}\n{text}\n      ({_default(flag)})"


def help_text(name: str, module) -> str:
    """The `--help` of command `name` (module already imported): usage, summary and its flags only."""
    own = flags.FLAGS.get_flags_for_module(module.__name__)
    common = flags.FLAGS.get_flags_for_module(COMMON_FLAGS_MODULE)
    lines = [
        f"usage: python -m keras_vae {name} [--flag=value ...]",
        "",
        _description(name, module.__doc__ or ""),
        "",
        "flags:",
        *(_describe(flag) for flag in own),
        "",
        "common flags:",
        *(_describe(flag) for flag in common),
    ]
    return "\n".join(lines) + "\n"


def program_help() -> str:
    """The `python -m keras_vae --help` text: the commands and their summaries."""
    lines = ["usage: python -m keras_vae COMMAND [--flag=value ...]", "", "commands:"]
    lines += [f"  {name:<10} {summary(name)}" for name in names()]
    lines += ["", "python -m keras_vae COMMAND --help lists a command's flags."]
    return "\n".join(lines) + "\n"
