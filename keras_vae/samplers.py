"""Post-hoc samplers: a distribution of the codes of the training images, fitted after training.

A calibrated decoder makes the effective KL weight small, so the codes of
real images fill a region far from N(0, I) and prior draws decode to
non-digits. A sampler is fitted on the codes, one posterior draw
z ~ q(z|x) per training image (`codes`), and then `VAE.sample`, the exported
`sample` signature and evaluation's prior samples draw z from it
(`VAE.sampling_distribution`); the ELBO, IWAE and everything else still use
the model's prior.

- `GaussianMixtureSampler(latent_dim, num_components)`: a full-covariance
  Gaussian mixture fitted by scikit-learn's `GaussianMixture` (EM), served as
  a `tfd.MixtureSameFamily` of `tfd.MultivariateNormalTriL`s.
- `TwoStageSampler(latent_dim)`: a second small VAE on the codes, z -> u -> z
  with a learned decoder scale gamma (Dai & Wipf 2019, arXiv:1903.05789);
  samples are its decoder means at u ~ N(0, I).
- The single Gaussian (today's whitening) is kept as the exact fold it is,
  `keras_vae.latent_whitening.whiten_latents`, not a sampler: the fold
  changes the model's prior to the Gaussian of the codes, so it samples the
  same Gaussian and also raises the ELBO by exactly the KL it removes, and
  every consumer (ELBO, IWAE, export, TFLite) stays unchanged. Where the fold
  does not apply (a flow posterior, a learned prior), `GaussianMixtureSampler`
  with one component is the same Gaussian fit, of the draws, as a sampler.

Fit one with `fit(model, sampler, x_train)`; it is saved with the model.

Example:

>>> import numpy as np, keras_vae as kv
>>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2)
>>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
>>> sampler = fit(vae, GaussianMixtureSampler(latent_dim=2, num_components=2), x)
>>> vae.sampler is sampler, vae.sample(3).shape
(True, TensorShape([3, 8, 8, 1]))
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from keras_vae import latents
from keras_vae.checks import positive_int
from keras_vae.models.vae import takes_argument
from keras_vae.noise import Noise, SeededNoise

tfd = tfp.distributions

NAMES = ("none", "gaussian", "gmm", "two_stage")


class _Sampler(keras.layers.Layer):
    """Shared parts: the latent size, the `fitted` flag (a weight, so it is saved) and the checks."""

    def __init__(self, latent_dim: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        positive_int("latent_dim", latent_dim)
        self.latent_dim = latent_dim
        self.seed = seed
        self.fitted = self.add_weight(shape=(), initializer="zeros", trainable=False, name="fitted")

    def num_parameters(self) -> int:
        """The free parameters a fit estimates from the codes."""
        raise NotImplementedError

    def check(self, latent_shape, image_shape) -> None:
        """Raises a ValueError unless the sampler draws latents of the model's shape."""
        if tuple(latent_shape) != (self.latent_dim,):
            raise ValueError(f"The sampler has latent_dim={self.latent_dim}, but the model's latent is "
                             f"{tuple(latent_shape)}.")

    def check_fitted(self) -> None:
        """Raises a ValueError if the sampler was never fitted."""
        if float(self.fitted.numpy()) != 1.0:
            raise ValueError(f"The {type(self).__name__} was never fitted: call keras_vae.samplers.fit(model, "
                             "sampler, x_train) first.")

    def _checked_codes(self, codes) -> np.ndarray:
        codes = np.asarray(codes, "float64")
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim:
            raise ValueError(f"Expected codes of shape (num_codes, {self.latent_dim}). Received: {codes.shape}")
        if not np.all(np.isfinite(codes)):
            raise ValueError("The codes hold NaN or inf values.")
        needed = self.num_parameters()
        if len(codes) <= needed:
            raise ValueError(f"The {type(self).__name__} estimates {needed} parameters, so it needs more codes than "
                             f"that. Received {len(codes)} codes: fit it on more images, or use fewer components.")
        return codes

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_vae")
class GaussianMixtureSampler(_Sampler):
    """A full-covariance Gaussian mixture of the codes, fitted by scikit-learn and drawn with TFP.

    Before `fit` it is N(0, I) (equal weights, zero means, identity scales).

    Args:
        latent_dim: Size of z.
        num_components: K (>= 1). Defaults to 10.
        seed: Seed of scikit-learn's initialisation. Defaults to 0.

    Example:

    >>> import numpy as np
    >>> codes = np.random.default_rng(0).normal(size=(500, 2)) * [1.0, 3.0] + [5.0, 0.0]
    >>> sampler = GaussianMixtureSampler(latent_dim=2, num_components=1).fit(codes)
    >>> bool(np.allclose(sampler.distribution().mean(), codes.mean(axis=0), atol=1e-4))
    True
    """

    def __init__(self, latent_dim: int, num_components: int = 10, seed: int = 0, **kwargs):
        super().__init__(latent_dim, seed, **kwargs)
        positive_int("num_components", num_components)
        self.num_components = num_components
        k, d = num_components, latent_dim
        self.logits = self.add_weight(shape=(k,), initializer="zeros", trainable=False, name="logits")
        self.means = self.add_weight(shape=(k, d), initializer="zeros", trainable=False, name="means")
        self.scale_tril = self.add_weight(shape=(k, d, d), trainable=False, name="scale_tril",
                                          initializer=lambda shape, dtype: ops.broadcast_to(ops.eye(d), shape))
        self.built = True

    def num_parameters(self) -> int:
        d, k = self.latent_dim, self.num_components
        return k - 1 + k * d + k * d * (d + 1) // 2

    def fit(self, codes) -> GaussianMixtureSampler:
        """Fits the mixture to `codes` `(N, latent_dim)` by EM (`sklearn.mixture.GaussianMixture`); returns self.

        Raises:
            ValueError: For codes of the wrong shape, non-finite codes, or no
                more codes than the mixture has parameters.
        """
        from sklearn.mixture import GaussianMixture  # imported when used: scikit-learn is slow to import

        codes = self._checked_codes(codes)
        mixture = GaussianMixture(self.num_components, covariance_type="full", random_state=self.seed).fit(codes)
        self.logits.assign(np.log(mixture.weights_).astype("float32"))
        self.means.assign(mixture.means_.astype("float32"))
        self.scale_tril.assign(np.linalg.cholesky(mixture.covariances_).astype("float32"))
        self.fitted.assign(1.0)
        return self

    def distribution(self) -> tfd.MixtureSameFamily:
        """The mixture, a `tfd.MixtureSameFamily` of `tfd.MultivariateNormalTriL`s."""
        return tfd.MixtureSameFamily(tfd.Categorical(logits=self.logits),
                                     tfd.MultivariateNormalTriL(loc=self.means, scale_tril=self.scale_tril))

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components}


class _SecondStageDraws:
    """The two-stage sampler's distribution of z: z = g(u) + gamma * e, u, e ~ N(0, I) (noise passed in)."""

    def __init__(self, sampler: TwoStageSampler):
        self.sampler = sampler

    def draw(self, noise: Noise, num_samples=None):
        shape = tf.stack([1 if num_samples is None else num_samples, self.sampler.latent_dim])
        return self.sampler.decode(noise.normal(shape), noise.normal(shape))


@keras.saving.register_keras_serializable(package="keras_vae")
class TwoStageSampler(_Sampler):
    """A second small VAE on the codes: q(u|z) = N(mu(z), diag(s(z)**2)), p(z|u) = N(g(u), gamma**2 I).

    Both networks are MLPs; gamma is learned (a scalar, floored at 1e-3),
    as in Dai & Wipf 2019 (arXiv:1903.05789), which lets the second stage
    match the aggregate posterior of the first. `fit` trains it with Adam on
    the codes (standardised inside, so one learning rate fits any scale);
    samples are its own draws, `g(u) + gamma * e` with u, e ~ N(0, I) (the
    paper's `g(u)` once gamma is near 0; the noise keeps the codes' variance
    while it is not).

    Args:
        latent_dim: Size of z (and of u).
        hidden_units: Width of the MLP layers. Defaults to 512.
        num_layers: Hidden layers of each MLP. Defaults to 2.
        epochs: Passes over the codes in `fit`. Defaults to 100.
        batch_size: Codes per step. Defaults to 128.
        learning_rate: Adam's. Defaults to 1e-3.
        seed: Seed of the weights, the shuffling and the draws. Defaults to 0.
    """

    def __init__(self, latent_dim: int, hidden_units: int = 512, num_layers: int = 2, epochs: int = 100,
                 batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0, **kwargs):
        super().__init__(latent_dim, seed, **kwargs)
        for name, value in (("hidden_units", hidden_units), ("num_layers", num_layers), ("epochs", epochs),
                            ("batch_size", batch_size)):
            positive_int(name, value)
        self.hidden_units, self.num_layers = hidden_units, num_layers
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, float(learning_rate)
        d = latent_dim

        def mlp(name, outputs):
            layers = [keras.layers.Dense(hidden_units, activation="relu", name=f"{name}_{i}",
                                         kernel_initializer=keras.initializers.GlorotUniform(seed + i))
                      for i in range(num_layers)]
            return keras.Sequential([keras.Input((d,)), *layers, keras.layers.Dense(outputs, name=f"{name}_out")],
                                    name=name)

        self.encoder, self.generator = mlp("encoder", 2 * d), mlp("decoder", d)
        self.log_gamma = self.add_weight(shape=(), initializer="zeros", name="log_gamma")
        self.shift = self.add_weight(shape=(d,), initializer="zeros", trainable=False, name="shift")
        self.scale = self.add_weight(shape=(d,), initializer="ones", trainable=False, name="scale")
        self._set_trainable(self.trainable)  # a fitted one loads with trainable=False
        self.built = True

    def _set_trainable(self, trainable: bool) -> None:
        # Each part by hand: `self.trainable = ...` does not reach the networks of a layer made with trainable=False.
        self._trainable = trainable
        self.encoder.trainable = self.generator.trainable = self.log_gamma.trainable = trainable

    def num_parameters(self) -> int:
        # The network is overparameterised by design; it must at least fit the codes' mean and covariance.
        d = self.latent_dim
        return d * (d + 3) // 2

    def decode(self, u, e=None):
        """z = g(u) + gamma * e (`e` None: 0), in the codes' units: `(batch, latent_dim)`."""
        z = self.generator(u)
        if e is not None:
            z = z + (ops.exp(self.log_gamma) + 1e-3) * e
        return z * self.scale + self.shift

    def loss(self, z, noise: Noise):
        """The second stage's negative ELBO per code (z standardised), `(batch,)` nats."""
        loc, raw = ops.split(self.encoder(z), 2, axis=-1)
        q = tfd.MultivariateNormalDiag(loc, ops.softplus(raw) + 1e-4)
        u = latents.draw(q, noise)
        gamma = ops.exp(self.log_gamma) + 1e-3
        p = tfd.MultivariateNormalDiag(self.generator(u), gamma * ops.ones_like(z))
        return tfd.kl_divergence(q, latents.standard_normal((self.latent_dim,))) - p.log_prob(z)

    def fit(self, codes) -> TwoStageSampler:
        """Trains the second stage on `codes` `(N, latent_dim)`; returns self.

        Raises:
            ValueError: For codes of the wrong shape, non-finite codes, or no
                more codes than a Gaussian of the codes has parameters.
        """
        codes = self._checked_codes(codes)
        self._set_trainable(True)  # only while it fits (see the end)
        shift, scale = codes.mean(axis=0), codes.std(axis=0) + 1e-6
        self.shift.assign(shift.astype("float32"))
        self.scale.assign(scale.astype("float32"))
        data = tf.data.Dataset.from_tensor_slices(((codes - shift) / scale).astype("float32"))
        data = data.shuffle(len(codes), seed=self.seed).batch(self.batch_size)
        optimizer = keras.optimizers.Adam(self.learning_rate)
        weights = [*self.encoder.trainable_weights, *self.generator.trainable_weights, self.log_gamma]
        optimizer.build(weights)

        @tf.function
        def step(z, seed):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(self.loss(z, SeededNoise(seed)))
            optimizer.apply(tape.gradient(loss, weights), weights)
            return loss

        for epoch in range(self.epochs):
            for index, batch in enumerate(data):
                step(batch, tf.constant([self.seed, epoch * 100_000 + index], tf.int64))
        # Fitted, its weights are frozen (and saved so): the model's `fit` must not see them, and its optimizer,
        # built before the sampler was attached, must find as many variables when the saved model is loaded.
        self._set_trainable(False)
        self.fitted.assign(1.0)
        return self

    def distribution(self) -> _SecondStageDraws:
        """The sampler's z, drawn by `keras_vae.latents.draw` (an object with `draw(noise, num_samples)`)."""
        return _SecondStageDraws(self)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "num_layers": self.num_layers,
                "epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate}


def codes(model, data, batch_size: int = 500, seed: int = 0) -> np.ndarray:
    """One posterior draw z ~ q(z|x) per image (batch `i` from `SeededNoise([seed, i])`): `(N, D)`.

    Args:
        model: A `VAE` whose latent is a vector.
        data: Images `(N, H, W, C)` in [0, 1].
        batch_size: Images per encoder call. Defaults to 500.
        seed: Seed of the draws. Defaults to 0.
    """
    from keras_vae import evaluation  # evaluation imports the models; keep this module light

    inputs = evaluation.as_inputs(model, data)
    draws = []
    for index, batch in enumerate(evaluation.input_batches(inputs, batch_size)):
        draws.append(np.asarray(latents.draw(model.posterior_distribution(batch), SeededNoise([seed, index]))))
    return np.concatenate(draws).reshape(len(inputs["x"]), -1)


def fit(model, sampler: _Sampler, data, batch_size: int = 500, seed: int = 0) -> _Sampler:
    """Fits `sampler` on the codes of `data` (`codes`) and makes it the model's sampler, in place.

    Args:
        model: A `keras_vae.VAE` that takes a `sampler` (its latent a vector).
        sampler: A `GaussianMixtureSampler` or `TwoStageSampler` (fitted or not).
        data: The images to fit on, usually the training set.
        batch_size: Images per encoder call. Defaults to 500.
        seed: Seed of the posterior draws. Defaults to 0.

    Returns:
        The fitted `sampler`.

    Raises:
        TypeError: If the model's family takes no sampler.
        ValueError: If the sampler does not fit the model's latent, or for
            too few codes (see each sampler's `fit`).
    """
    if not takes_argument(type(model), "sampler"):
        raise TypeError(f"A {type(model).__name__} takes no post-hoc sampler (its constructor has no `sampler`): "
                        "samplers serve models whose latent is one vector, such as keras_vae.VAE.")
    sampler.check(model.latent_shape, model.image_shape)
    sampler.fit(codes(model, data, batch_size, seed))
    model.replace_sublayer("sampler", sampler)
    return sampler


def detach(model) -> None:
    """Removes the model's sampler, in place: `sample` draws from the prior again."""
    model.replace_sublayer("sampler", None)


def get(name: str, latent_dim: int, size: int | None = None) -> _Sampler | None:
    """A sampler from its CLI name: `"gmm"` (`size` components) or `"two_stage"` (`size` hidden units);
    None for `"none"` and `"gaussian"` (the whitening fold, `keras_vae.latent_whitening`).

    Example:

    >>> type(get("gmm", 4, size=3)).__name__, get("gaussian", 4)
    ('GaussianMixtureSampler', None)
    """
    if name not in NAMES:
        raise ValueError(f"Expected a sampler in {NAMES}. Received: sampler={name!r}")
    if name == "gmm":
        return GaussianMixtureSampler(latent_dim, **({} if size is None else {"num_components": size}))
    if name == "two_stage":
        return TwoStageSampler(latent_dim, **({} if size is None else {"hidden_units": size}))
    return None
