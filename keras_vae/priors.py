"""Priors p(z): Keras layers that give a `tfd` distribution over one latent vector.

- `StandardNormal()`: N(0, I), what a `VAE` uses when given no prior.
- `MixturePrior(latent_dim, num_components)`: a learned mixture of diagonal
  Gaussians, `tfd.MixtureSameFamily`.
- `VampPrior(image_shape, num_pseudo_inputs)`: the mixture of the model's own
  posteriors at learned pseudo-inputs, p(z) = (1/K) sum_k q(z | u_k)
  (Tomczak & Welling 2018, arXiv:1705.07120).

A prior's `distribution(posterior)` takes the model's posterior as a function
of images (only the VampPrior uses it). The KL of a Gaussian posterior to a
mixture has no closed form: `keras_vae.latents.kl_per_dimension` then takes
the one-sample Monte Carlo estimate `log q(z|x) - log p(z)` at the draw the
step decodes (unbiased; `kl_estimator` reports `monte_carlo`), and
`keras_vae.latents.draw` draws a mixture with the noise passed in
(a Gumbel-max component, then that component's draw).

Example:

>>> prior = MixturePrior(latent_dim=2, num_components=3)
>>> p = prior.distribution()
>>> type(p).__name__, p.event_shape.as_list()
('MixtureSameFamily', [2])
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow_probability as tfp
from keras import ops

from keras_vae import latents
from keras_vae.checks import positive_int

tfd = tfp.distributions

NAMES = ("standard", "mixture", "vamp")


@keras.saving.register_keras_serializable(package="keras_vae")
class StandardNormal(keras.layers.Layer):
    """p(z) = N(0, I) over `latent_dim` dimensions (no weights).

    Args:
        latent_dim: Size of z.
    """

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        positive_int("latent_dim", latent_dim)
        self.latent_dim = latent_dim
        self.built = True

    def check(self, latent_shape, image_shape) -> None:
        """Raises a ValueError unless the prior fits a model of these shapes."""
        if tuple(latent_shape) != (self.latent_dim,):
            raise ValueError(f"The prior has latent_dim={self.latent_dim}, but the model's latent is {latent_shape}.")

    def distribution(self, posterior: Callable | None = None) -> tfd.Distribution:
        """N(0, I), a `tfd.MultivariateNormalDiag`."""
        return latents.standard_normal((self.latent_dim,))

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="keras_vae")
class MixturePrior(StandardNormal):
    """A learned mixture of K diagonal Gaussians: p(z) = sum_k pi_k N(z; m_k, diag(s_k**2)).

    The weights pi = softmax(logits) start equal, the means m_k at N(0, I)
    draws (seeded) and the scales at 1; all are trained with the model.

    Args:
        latent_dim: Size of z.
        num_components: K (>= 1). Defaults to 10.
        min_scale: Floor of the components' scales. Defaults to 1e-3.
        seed: Seed of the initial means. Defaults to 0.

    Example:

    >>> import numpy as np
    >>> prior = MixturePrior(latent_dim=2, num_components=4)
    >>> prior.distribution().log_prob(np.zeros((5, 2), "float32")).shape
    TensorShape([5])
    """

    def __init__(self, latent_dim: int, num_components: int = 10, min_scale: float = 1e-3, seed: int = 0, **kwargs):
        super().__init__(latent_dim, **kwargs)
        positive_int("num_components", num_components)
        if not min_scale > 0:
            raise ValueError(f"Expected min_scale > 0. Received: min_scale={min_scale}")
        self.num_components = num_components
        self.min_scale = float(min_scale)
        self.seed = seed
        shape = (num_components, latent_dim)
        self.logits = self.add_weight(shape=(num_components,), initializer="zeros", name="logits")
        self.locs = self.add_weight(shape=shape, initializer=keras.initializers.RandomNormal(seed=seed), name="locs")
        raw_one = float(np.log(np.expm1(1.0 - self.min_scale)))  # softplus(raw) + min_scale = 1
        self.raw_scales = self.add_weight(shape=shape, initializer=keras.initializers.Constant(raw_one),
                                          name="raw_scales")

    def distribution(self, posterior: Callable | None = None) -> tfd.MixtureSameFamily:
        """The mixture, a `tfd.MixtureSameFamily` of `tfd.MultivariateNormalDiag`s."""
        scales = ops.softplus(self.raw_scales) + self.min_scale
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=self.logits), tfd.MultivariateNormalDiag(loc=self.locs, scale_diag=scales))

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components, "min_scale": self.min_scale,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_vae")
class VampPrior(keras.layers.Layer):
    """The VampPrior: p(z) = (1/K) sum_k q(z | u_k), the model's posterior at K learned pseudo-inputs.

    The pseudo-inputs are `u = sigmoid(w)` (images in [0, 1]) of a trainable
    `w`; they start at `pseudo_inputs` (e.g. K training images) or at 0.5
    plus a little seeded noise. Each step encodes the K pseudo-inputs once.

    Args:
        image_shape: `(H, W, C)` of the model's images.
        num_pseudo_inputs: K (>= 1). Defaults to 500 (the paper's).
        pseudo_inputs: Starting pseudo-inputs `(K, H, W, C)` in [0, 1]. Only
            the start: the trained ones are weights, saved with the model
            (and not in the config). Defaults to None.
        seed: Seed of the default start. Defaults to 0.

    Raises:
        ValueError: For K < 1 or `pseudo_inputs` of another shape than
            `(num_pseudo_inputs, *image_shape)` (or outside [0, 1]).

    Example:

    >>> import numpy as np, keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, prior=VampPrior((8, 8, 1), 3))
    >>> vae.prior_distribution().log_prob(np.zeros((4, 2), "float32")).shape
    TensorShape([4])
    """

    def __init__(self, image_shape, num_pseudo_inputs: int = 500, pseudo_inputs=None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        positive_int("num_pseudo_inputs", num_pseudo_inputs)
        image_shape = tuple(int(d) for d in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"Expected image_shape (height, width, channels). Received: image_shape={image_shape}")
        self.image_shape = image_shape
        self.num_pseudo_inputs = num_pseudo_inputs
        self.seed = seed
        shape = (num_pseudo_inputs, *image_shape)
        if pseudo_inputs is None:
            start = 0.5 + 0.01 * np.random.default_rng(seed).standard_normal(shape)
        else:
            start = np.asarray(pseudo_inputs, "float64")
            if start.shape != shape:
                raise ValueError(f"Expected pseudo_inputs of shape {shape} (num_pseudo_inputs, *image_shape). "
                                 f"Received: pseudo_inputs.shape={start.shape}")
            if not np.all(np.isfinite(start)) or start.min() < 0 or start.max() > 1:
                raise ValueError("Expected pseudo_inputs in [0, 1] (images).")
        start = np.clip(start, 1e-3, 1 - 1e-3)
        self.raw_pseudo_inputs = self.add_weight(
            shape=shape, initializer=keras.initializers.Constant(np.log(start / (1 - start)).astype("float32")),
            name="raw_pseudo_inputs")
        self.built = True

    def check(self, latent_shape, image_shape) -> None:
        """Raises a ValueError unless the pseudo-inputs are images of the model's shape."""
        if tuple(image_shape) != self.image_shape:
            raise ValueError(f"The VampPrior's pseudo-inputs have shape {self.image_shape}, but the model's images "
                             f"are {tuple(image_shape)}.")

    @property
    def pseudo_inputs(self):
        """The pseudo-inputs u, `(K, H, W, C)` in [0, 1]."""
        return ops.sigmoid(self.raw_pseudo_inputs)

    def distribution(self, posterior: Callable | None = None) -> tfd.MixtureSameFamily:
        """(1/K) sum_k q(z | u_k), a `tfd.MixtureSameFamily` of the posteriors `posterior(u)` (batch K)."""
        if posterior is None:
            raise ValueError("A VampPrior is the model's posterior at its pseudo-inputs: pass posterior=.")
        components = posterior(self.pseudo_inputs)
        return tfd.MixtureSameFamily(tfd.Categorical(logits=ops.zeros((self.num_pseudo_inputs,))), components)

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape,
                "num_pseudo_inputs": self.num_pseudo_inputs, "seed": self.seed}


def get(name: str, latent_dim: int, image_shape, size: int | None = None) -> keras.layers.Layer | None:
    """A prior from its CLI name: `"standard"` (None: the model's N(0, I)), `"mixture"` or `"vamp"`.

    Args:
        name: One of `NAMES`.
        latent_dim: Size of z.
        image_shape: `(H, W, C)` (for the VampPrior).
        size: Components or pseudo-inputs. Defaults to each class's default.

    Example:

    >>> type(get("mixture", 4, (8, 8, 1), size=3)).__name__
    'MixturePrior'
    """
    if name not in NAMES:
        raise ValueError(f"Expected a prior in {NAMES}. Received: prior={name!r}")
    sizes = {} if size is None else {"mixture": {"num_components": size}, "vamp": {"num_pseudo_inputs": size}}
    if name == "mixture":
        return MixturePrior(latent_dim, **sizes.get("mixture", {}))
    if name == "vamp":
        return VampPrior(image_shape, **sizes.get("vamp", {}))
    return None
