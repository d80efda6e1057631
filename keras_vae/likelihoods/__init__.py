"""Decoder likelihoods p(x|z): Keras layers that turn decoder outputs into `tfd` distributions.

One module a concept, no import cycle: `base` (`Likelihood`), `bernoulli`,
`gaussian` (every sigma mode), `discrete` (8-bit `Categorical256` and
`DiscretizedLogisticMixture`); this package resolves names with `get`.

The model does not know which likelihood it holds: it calls
`distribution(params, x, training)`, `mean(params)` and `stddev(params)`.
"""

from __future__ import annotations

import keras

from keras_vae.likelihoods.base import IMAGE_AXES, Likelihood
from keras_vae.likelihoods.bernoulli import Bernoulli
from keras_vae.likelihoods.discrete import Categorical256, DiscretizedLogisticMixture, PixelGrid, check_on_grid
from keras_vae.likelihoods.gaussian import GAUSSIAN_SIGMA_MODES, Gaussian

_NAMED = {
    "bernoulli": lambda: Bernoulli(),
    "gaussian": lambda: Gaussian(sigma=1.0),
    **{mode: (lambda mode=mode: Gaussian(sigma=mode)) for mode in GAUSSIAN_SIGMA_MODES},
    "categorical": lambda: Categorical256(),
    "logistic_mixture": lambda: DiscretizedLogisticMixture(),
}
NAMES = tuple(_NAMED)


def get(identifier: str | Likelihood, sigma: float | None = None, data_dependent_start: bool = True) -> Likelihood:
    """Resolves a likelihood from a name or passes a layer through.

    Args:
        identifier: A `Likelihood` layer or one of `NAMES`: `"bernoulli"`,
            `"gaussian"` (fixed sigma, from `sigma`), `"learned"`,
            `"optimal"`, `"optimal_per_image"`, `"optimal_per_channel"`,
            `"per_pixel"`.
        sigma: The fixed sigma of `"gaussian"`. Defaults to 1.0.
        data_dependent_start: For a named Gaussian, its `data_dependent_start`.
            Defaults to True.

    Returns:
        A `Likelihood` layer.

    Example:

    >>> get("optimal_per_image").sigma
    'optimal_per_image'
    """
    if isinstance(identifier, Likelihood):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if identifier not in _NAMED:
        raise ValueError(f"Unknown likelihood {identifier!r}. Expected one of {NAMES}.")
    likelihood = Gaussian(sigma=sigma) if identifier == "gaussian" and sigma is not None else _NAMED[identifier]()
    if isinstance(likelihood, Gaussian):
        likelihood.data_dependent_start = bool(data_dependent_start)
    return likelihood


__all__ = [
    "GAUSSIAN_SIGMA_MODES",
    "IMAGE_AXES",
    "NAMES",
    "Bernoulli",
    "Categorical256",
    "DiscretizedLogisticMixture",
    "Gaussian",
    "Likelihood",
    "PixelGrid",
    "check_on_grid",
    "get",
]
