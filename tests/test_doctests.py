"""Docstring examples are part of the documentation: every module's doctests run here."""

import doctest
import importlib
import pkgutil

import pytest

import keras_vae

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(keras_vae.__path__, prefix="keras_vae.")
    if not info.name.startswith("keras_vae.commands.") and info.name != "keras_vae.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
