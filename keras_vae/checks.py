"""Checks of arguments shared across the library, each a one-line `ValueError` naming the argument."""

from __future__ import annotations

import numpy as np


def positive_int(name: str, value) -> int:
    """Returns `value` as an `int` if it is a positive integer, else raises `ValueError`.

    A bool is not an integer here; a NumPy integer is.

    Args:
        name: The argument's name, for the error.
        value: The value to check.

    Returns:
        `int(value)`.

    Example:

    >>> positive_int("num_samples", 3)
    3
    >>> positive_int("latent_dim", 0)
    Traceback (most recent call last):
    ...
    ValueError: Expected a positive integer. Received: latent_dim=0
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"Expected a positive integer. Received: {name}={value!r}")
    return int(value)
