"""`VAE`: the variational autoencoder with a pluggable (calibrated) likelihood.

x -> encoder -> q(z|x) -> z -> decoder -> p(x|z); the loss is
`-E_q[log p(x|z)] + beta * KL(q(z|x) || p(z))`, summed over pixels and
latent dimensions and averaged over the batch (nats per image).
"""

from __future__ import annotations

import contextlib
import inspect

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_vae import calibration, latents, networks
from keras_vae import likelihoods as likelihoods_lib
from keras_vae.checks import positive_int
from keras_vae.data import validate_images
from keras_vae.graph_checks import checked_pixels
from keras_vae.layers import cross_replica_sum
from keras_vae.noise import Noise, SeededNoise
from keras_vae.objectives import elbo_terms
from keras_vae.posteriors import DiagonalGaussian

METRIC_NAMES = ("loss", "elbo", "rec", "kl", "sigma", "beta")


def _shape_without_batch(tensor_shape) -> tuple:
    return tuple(tensor_shape[1:])


def _keep_float32(layer: keras.layers.Layer) -> None:
    """Makes a head (and its sublayers) compute in float32 under a mixed policy.

    With `keras.mixed_precision` the networks compute in float16/bfloat16,
    but the posterior, the likelihood, the KL and the sigma statistics must
    stay float32 (a bfloat16 sum of 784 squared errors keeps 3 digits).
    """
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        if sublayer.dtype_policy.compute_dtype != "float32":
            sublayer.dtype_policy = "float32"


def _num_replicas() -> int:
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def _multi_worker() -> bool:
    strategy = tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def global_batch_means(log_likelihood, kl_per_dim, auxiliary):
    """Per-image terms -> the global batch's means, as a batch of one.

    On one device this returns its arguments (`elbo_terms` averages them).
    Under a `tf.distribute` strategy each replica holds a slice of the batch;
    the sums and the image count are all-reduced (differentiably), so every
    replica sees the single-device ELBO of the global batch, free bits
    included (their floor applies to the global per-dimension KL).

    Args:
        log_likelihood: `(batch,)`.
        kl_per_dim: `(batch, ...)` (returned flattened under a strategy).
        auxiliary: Per-image auxiliary losses `(batch, k)` (k may be 0).
    """
    if _num_replicas() == 1:
        return log_likelihood, kl_per_dim, auxiliary
    count = ops.cast(ops.shape(log_likelihood)[0], log_likelihood.dtype)
    kl_flat = tf.reshape(kl_per_dim, tf.stack([tf.shape(kl_per_dim)[0], -1]))
    kl_size = tf.shape(kl_flat)[1]
    packed = ops.concatenate([
        ops.sum(log_likelihood, keepdims=True),
        ops.sum(kl_flat, axis=0),
        ops.sum(auxiliary, axis=0),
        ops.reshape(count, (1,)),
    ])
    totals = cross_replica_sum(packed)
    means = totals[:-1] / totals[-1]
    return means[:1], tf.reshape(means[1 : 1 + kl_size], (1, -1)), tf.reshape(means[1 + kl_size :], (1, -1))


def _sum_per_image(values):
    """Sums `(batch, ...)` over all but the batch axis."""
    return ops.sum(ops.reshape(values, (ops.shape(values)[0], -1)), axis=-1)


def _repeat_rows(value, times):
    """`(batch, ...)` -> `(times * batch, ...)`, the batch repeated `times` times (draw-major)."""
    value = ops.convert_to_tensor(value)
    tiled = ops.repeat(value[None], times, axis=0)
    return ops.reshape(tiled, (-1, *value.shape[1:]))


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """A VAE whose decoder likelihood (and so its calibration) is a layer, and the base of every family.

    **The model contract.** A family is this class plus its distributions,
    each a `tfd.Distribution` built from an `inputs` dict (`{"x": images}`,
    plus conditions such as `{"y": labels}`):

    - `posterior_distribution(inputs)`: q(z | x[, y]);
    - `prior_distribution(inputs)`: p(z);
    - `likelihood_distribution(z, inputs)`: p(x | z[, y]);
    - `condition_specs()` and `latent_shape`: the `tf.TensorSpec`s of the
      extra inputs and of the latent the decoder reads (they drive export).

    Smaller hooks have defaults that serve most families:
    `reparameterize(q, noise, training)` (`keras_vae.latents.draw`),
    `decoder_latent(z)` (the part of a draw the decoder reads),
    `decoder_params(z, inputs)`, `auxiliary_terms(...)` (extra losses and
    metrics), `decoded(z, inputs, noise, greedy)` and `extra_signatures`.
    Everything else is written once here: `train_step` / `test_step` (with
    replica-exact loss scaling and noise), `compute_terms`, `elbo`,
    `elbo_with_running_sigma`, `log_importance_weights`, `encode`, `decode`,
    `sample`, `reconstruct`, and, in `keras_vae.export` and
    `keras_vae.evaluation`, the served signatures and the evaluation. Every
    random draw comes from a `keras_vae.noise.Noise` passed in, so one draw
    serves a training step, a test and an exported graph.

    The model is built on construction from the encoder's input shape, so it
    saves and loads its weights even if it only ever ran in `train_step`.

    - sigma-VAE: `likelihood=Gaussian(sigma="optimal")` (or `"learned"`).
    - BS-VAE: `likelihood=Gaussian(sigma="optimal_per_image")` and `beta`.
    - beta-VAE: any likelihood and `beta != 1`.

    Args:
        encoder: A functional `keras.Model` from images `(H, W, C)` to features.
        decoder: A functional `keras.Model` from `(latent_dim,)` to decoder
            parameters `(H, W, C * likelihood.params_per_channel)`.
        latent_dim: Size of z.
        likelihood: A `Likelihood` layer or a name for `likelihoods.get`.
            Defaults to `"optimal"`.
        beta: KL weight in the loss, held in a non-trainable variable
            (`model.beta`) so callbacks can anneal it. Defaults to 1.0.
        free_bits: Per-dimension KL floor in nats (in the loss only).
            Defaults to 0.0.
        posterior: The encoder head. Defaults to `DiagonalGaussian(latent_dim)`
            (`keras_vae.flows.IAFPosterior` for a flow posterior).
        seed: Seed for the sampling noise. Defaults to None.
        prior: A prior layer of `keras_vae.priors` (`MixturePrior`,
            `VampPrior`). Defaults to None: N(0, I).
        sampler: A post-hoc sampler of `keras_vae.samplers`, which `sample`
            (and the exported `sample`) draws z from instead of the prior
            once fitted (`keras_vae.samplers.fit`). Defaults to None.

    Example:

    >>> import keras, numpy as np, keras_vae as kv
    >>> vae = kv.VAE(kv.networks.mlp_encoder((8, 8, 1)),
    ...              kv.networks.mlp_decoder((8, 8, 1), latent_dim=2), latent_dim=2,
    ...              likelihood=kv.likelihoods.Gaussian(sigma="optimal"), seed=0)
    >>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
    >>> history = vae.fit(x, batch_size=16, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['beta', 'elbo', 'kl', 'loss', 'rec', 'sigma']
    >>> vae.sample(3).shape
    TensorShape([3, 8, 8, 1])
    """

    # Metrics beyond METRIC_NAMES that a family reports (from `auxiliary_terms` or `_metric_value`).
    extra_metric_names: tuple[str, ...] = ()
    # The parts of `keras_vae.latent_choices` (`--prior`, `--posterior`, `--sampler`) the family takes:
    # a learned prior, a flow posterior and a post-hoc sampler, all of one latent vector.
    latent_choices: tuple[str, ...] = ("prior", "posterior", "sampler")
    latent_is_discrete: bool = False  # a code of categories: no flow or density on it

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        latent_dim: int,
        likelihood="optimal",
        beta: float = 1.0,
        free_bits: float = 0.0,
        posterior: keras.layers.Layer | None = None,
        seed: int | None = None,
        prior: keras.layers.Layer | None = None,
        sampler: keras.layers.Layer | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        positive_int("latent_dim", latent_dim)
        if beta < 0:
            raise ValueError(f"Expected beta >= 0. Received: beta={beta}")
        if free_bits < 0:
            raise ValueError(f"Expected free_bits >= 0 (nats per dimension). Received: free_bits={free_bits}")
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.likelihood = likelihoods_lib.get(likelihood)
        self.posterior = posterior if posterior is not None else DiagonalGaussian(latent_dim)
        _keep_float32(self.posterior)
        _keep_float32(self.likelihood)
        self.initial_beta = float(beta)
        self.free_bits = float(free_bits)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.beta = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_beta),
            trainable=False,
            name="beta",
        )
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES + self.extra_metric_names}
        self.image_shape = self._check_networks()
        self.prior, self.sampler = prior, sampler
        for part in (prior, sampler):
            if part is not None:
                part.check(self.latent_shape, self.image_shape)
        self.build((None, *self.image_shape))

    # ----------------------------------------------------------------- build
    def _check_networks(self) -> tuple[int, int, int]:
        """Checks that encoder, decoder and likelihood fit together; returns (H, W, C)."""
        try:
            image_shape = _shape_without_batch(self.encoder.input_shape)
            decoder_out = _shape_without_batch(self.decoder.output_shape)
            decoder_in = self.decoder.input_shape
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"{type(self).__name__} needs a built encoder and decoder with known input shapes, such as the "
                "functional models of keras_vae.networks."
            ) from error
        if len(image_shape) != 3 or None in image_shape:
            raise ValueError(f"Expected the encoder input to be (height, width, channels). Received: {image_shape}")
        self._check_decoder_input(decoder_in, image_shape)
        per_channel = self.likelihood.params_per_channel
        expected_out = (*image_shape[:2], image_shape[2] * per_channel)
        if decoder_out != expected_out:
            raise ValueError(
                f"The decoder outputs {decoder_out}, but images are {image_shape} and "
                f"{self.likelihood.__class__.__name__} needs {per_channel} decoder output(s) per "
                f"channel: expected {expected_out}. Build the decoder with "
                f"params_per_channel={per_channel} and output_shape={image_shape}."
            )
        return image_shape

    def _check_decoder_input(self, decoder_input_shape, image_shape) -> None:
        """Raises a ValueError unless the decoder reads the latent the family draws."""
        if _shape_without_batch(decoder_input_shape) != tuple(self.latent_shape):
            raise ValueError(
                f"The decoder takes inputs of shape {_shape_without_batch(decoder_input_shape)}, but "
                f"latent_dim={self.latent_dim}."
            )

    def build(self, input_shape):
        # Layers restored by `load_model` arrive built; build only the others.
        if not self.posterior.built:
            self.posterior.build(self.encoder.output_shape)
        if not self.likelihood.built:
            self.likelihood.build(self.decoder.output_shape)
        self.built = True

    def get_build_config(self):
        return {"input_shape": (None, *self.image_shape)}

    def build_from_config(self, config):
        self.build(config["input_shape"])

    # ---------------------------------------------------------------- metrics
    @property
    def metrics(self):
        return list(self.trackers.values())

    # ------------------------------------------------------ the contract: specs
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one latent the decoder reads (no batch): `(latent_dim,)` here."""
        return (self.latent_dim,)

    def condition_specs(self) -> dict[str, tf.TensorSpec]:
        """The inputs besides the images, by name (e.g. labels `y`): none here."""
        return {}

    def input_specs(self) -> dict[str, tf.TensorSpec]:
        """`{"x": images, **condition_specs()}`, each a `tf.TensorSpec` with a `None` batch."""
        return {"x": tf.TensorSpec((None, *self.image_shape), tf.float32, name="x"), **self.condition_specs()}

    def latent_spec(self) -> tf.TensorSpec:
        """The decoder's latent input, `(None, *latent_shape)` float32."""
        return tf.TensorSpec((None, *self.latent_shape), tf.float32, name="z")

    # ------------------------------------------------ the contract: distributions
    def posterior_distribution(self, inputs, training: bool = False):
        """q(z|x): the encoder head's distribution (`tfd.MultivariateNormalDiag`, or a correlated
        `tfd.MultivariateNormalTriL` after whitening).

        Args:
            inputs: `{"x": images}` (an image batch is accepted too).
            training: Whether layers run in training mode. Defaults to False.
        """
        inputs = self.as_inputs(inputs)
        return self.posterior.distribution(self.encoder(inputs["x"], training=training))

    def prior_distribution(self, inputs=None, training: bool = False):
        """p(z) over `latent_shape` (no batch): the `prior` layer's distribution, N(0, I) without one."""
        if self.prior is None:
            return latents.standard_normal(self.latent_shape)
        return self.prior.distribution(lambda images: self.posterior_distribution(images, training=training))

    def sampling_distribution(self, inputs=None):
        """What `sample`, the exported `sample` and evaluation's prior samples draw z from: the fitted
        `sampler`'s distribution, else `prior_distribution(inputs)`."""
        if self.sampler is None:
            return self.prior_distribution(inputs)
        return self.sampler.distribution()

    def likelihood_distribution(self, z, inputs, training: bool = False, fit_sigma: bool = False):
        """p(x|z): the likelihood layer's distribution of the decoder's parameters at `z`.

        Args:
            z: Decoder latents `(batch, *latent_shape)`.
            inputs: The inputs dict (conditions; the images for `fit_sigma`).
            training: Whether layers run in training mode (and optimal sigma
                updates its running average). Defaults to False.
            fit_sigma: Fit optimal sigmas to `inputs["x"]` (as in training)
                instead of using the running sigma. Defaults to False.
        """
        x = inputs.get("x") if fit_sigma else None
        return self.scoring_likelihood.distribution(self.decoder_params(z, inputs, training), x, training=training)

    # ------------------------------------------------------ the contract: hooks
    def reparameterize(self, q, noise: Noise, training: bool = False):
        """A reparameterised draw of q from `noise` (`keras_vae.latents.draw`)."""
        return latents.draw(q, noise)

    def decoder_latent(self, z):
        """The part of a posterior or prior draw that the decoder reads: all of it here."""
        return z

    def decoder_params(self, z, inputs, training: bool = False):
        """The decoder network's output at latents `z` (conditions in `inputs`)."""
        return self.decoder_network(z, training=training)

    def auxiliary_terms(self, q, z, kl_per_dim, training: bool = False) -> tuple[dict, dict]:
        """Family extras of a step: `(losses, metrics)`.

        `losses` maps names to per-image tensors `(batch,)` added to the loss
        (averaged over the global batch, like the ELBO terms); `metrics`
        maps names to scalars. None here.
        """
        return {}, {}

    def decoded(self, z, inputs, noise: Noise | None = None, greedy: bool = False):
        """`(mean, stddev)` of p(x|z) at decoder latents `z`, each `(batch, H, W, C)`.

        `stddev` is the decoder standard deviation the model uses at
        inference: the running optimal sigma, the learned or fixed one, the
        per-pixel prediction, or for a Bernoulli `sqrt(p * (1 - p))`.
        (`noise` and `greedy` are for autoregressive decoders.)
        """
        params = self.decoder_params(z, inputs)
        return self.likelihood.mean(params), self.likelihood.stddev(params)

    def extra_signatures(self, decoded_outputs, checked) -> dict:
        """More exported functions, `{name: (fn, [specs])}`, beside the five of `keras_vae.export`."""
        return {}

    @property
    def decoder_network(self) -> keras.Model:
        """The decoder the hooks call: `decoder`, or a stand-in while `substituted` runs."""
        return self.__dict__.get("_substitutes", {}).get("decoder") or self.decoder

    @property
    def scoring_likelihood(self):
        """The likelihood `likelihood_distribution` uses: `likelihood`, or a stand-in while `substituted` runs."""
        return self.__dict__.get("_substitutes", {}).get("likelihood") or self.likelihood

    @contextlib.contextmanager
    def substituted(self, decoder: keras.Model | None = None, likelihood=None):
        """Within this context the hooks decode with `decoder` (e.g. the export's serving decoder)
        and score with `likelihood` (e.g. a fixed sigma); None keeps the model's own.

        (Plain attributes, not Keras-tracked layers: the model's saved state is unchanged.)
        """
        previous = self.__dict__.get("_substitutes")
        self.__dict__["_substitutes"] = {"decoder": decoder, "likelihood": likelihood}
        try:
            yield self
        finally:
            self.__dict__["_substitutes"] = previous or {}

    def replace_sublayer(self, attribute: str, layer: keras.layers.Layer | None) -> None:
        """Sets the sublayer `self.<attribute>` (e.g. `posterior`, `sampler`) to `layer` (or None), in place.

        A built Keras model locks its state: it is unlocked for the swap, the
        way `Sequential.pop` edits its layers, and compiled step functions,
        which traced the old layer, are traced again (also mid-`fit`, which
        reads `train_function` at every step).
        """
        previous = getattr(self, attribute)
        if previous is layer:
            return
        self._tracker.unlock()
        setattr(self, attribute, layer)
        if previous is not None:
            self._layers.remove(previous)
        self._tracker.lock()
        for kind in ("train", "test", "predict"):
            if getattr(self, f"{kind}_function", None) is not None:
                getattr(self, f"make_{kind}_function")(force=True)

    # ------------------------------------------------------------ inputs
    def as_inputs(self, inputs, *conditions) -> dict:
        """An inputs dict from a dict, a batch of images plus conditions, or an `(x, y)` tuple."""
        if isinstance(inputs, dict):
            return inputs
        if isinstance(inputs, (tuple, list)) and not conditions:
            inputs, *conditions = inputs
        return {"x": inputs, **self._conditions(conditions)}

    def _conditions(self, conditions) -> dict:
        """`{name: value}` of the model's conditions, given positionally."""
        names = list(self.condition_specs())
        if len(conditions) != len(names):
            needed = ", ".join(names) or "no conditions"
            raise ValueError(f"{type(self).__name__} takes {needed} besides the images or latents; received "
                             f"{len(conditions)} condition(s).")
        return dict(zip(names, conditions, strict=True))

    def noise(self, seed=None) -> Noise:
        """The model's noise source: seeded by `seed` (a `(2,)` seed) or the model's seed generator."""
        return SeededNoise(self.seed_generator.next() if seed is None else seed)

    # ------------------------------------------------------------- the ELBO
    def compute_terms(self, inputs, noise: Noise | None = None, training: bool = False,
                      fit_sigma: bool = True) -> dict:
        """One-sample ELBO terms of a batch, averaged over it (nats per image): the one ELBO.

        Args:
            inputs: The inputs dict (or an image batch).
            noise: The noise of the draw. Defaults to `self.noise()`.
            training: Whether layers run in training mode (and optimal sigma
                updates its running average). Defaults to False.
            fit_sigma: Fit optimal sigmas to the batch (as in training).
                Defaults to True.

        Returns:
            A dict of scalars `loss`, `elbo`, `rec`, `kl`, `sigma` and the
            family's metrics, and the per-image `log_likelihood`,
            `kl_per_dim` and `elbo_per_image`.
        """
        inputs = self.as_inputs(inputs)
        noise = noise or self.noise()
        x = ops.convert_to_tensor(inputs["x"], "float32")
        inputs = {**inputs, "x": x}
        q = self.posterior_distribution(inputs, training=training)
        z = self.reparameterize(q, noise, training=training)
        p_x = self.likelihood_distribution(self.decoder_latent(z), inputs, training=training, fit_sigma=fit_sigma)
        log_likelihood = p_x.log_prob(x)
        kl_per_dim = latents.kl_per_dimension(q, self.prior_distribution(inputs, training=training), z)
        auxiliary, metrics = self.auxiliary_terms(q, z, kl_per_dim, training=training)
        per_image = (ops.stack(list(auxiliary.values()), axis=-1) if auxiliary
                     else ops.zeros((ops.shape(log_likelihood)[0], 0)))
        mean_ll, mean_kl, mean_aux = global_batch_means(log_likelihood, kl_per_dim, per_image)
        terms = elbo_terms(mean_ll, ops.reshape(mean_kl, (ops.shape(mean_kl)[0], -1)), self.beta, self.free_bits)
        aux_means = ops.mean(mean_aux, axis=0)
        for index, name in enumerate(auxiliary):
            terms[name] = aux_means[index]
            terms["loss"] = terms["loss"] + aux_means[index]
        terms.update(metrics)
        terms["sigma"] = ops.mean(p_x.stddev())
        terms["log_likelihood"] = log_likelihood
        terms["kl_per_dim"] = kl_per_dim
        terms["elbo_per_image"] = log_likelihood - _sum_per_image(kl_per_dim)
        return terms

    def log_importance_weights(self, inputs, num_samples: int, noise: Noise | None = None):
        """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x): `(num_samples, batch)`.

        The inputs are repeated `num_samples` times (draw-major), so every
        family's posterior, prior and likelihood serve unchanged. The
        likelihood uses the running sigma: the weights are those of one
        fixed model, not of a sigma refitted to the images.
        """
        inputs = self.as_inputs(inputs)
        noise = noise or self.noise()
        repeated = {name: _repeat_rows(value, num_samples) for name, value in inputs.items()}
        q = self.posterior_distribution(repeated)
        z = self.reparameterize(q, noise)
        p_x = self.likelihood_distribution(self.decoder_latent(z), repeated)
        log_prior = latents.log_prob(self.prior_distribution(repeated), z)
        log_w = p_x.log_prob(repeated["x"]) + log_prior - latents.log_prob(q, z)
        return ops.reshape(log_w, (num_samples, -1))

    # -------------------------------------------------------- Keras steps
    def _step_inputs(self, data) -> dict:
        """The inputs dict of a batch from `fit`/`evaluate`: `{"x": x}` plus the labels as conditions."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        names = list(self.condition_specs())
        if not names:
            return {"x": checked_pixels(x)}
        if y is None:
            raise ValueError(f"{type(self).__name__} trains on (images, {names[0]}) pairs: call fit(x, y) or pass "
                             "(x, y) batches.")
        return {"x": checked_pixels(x), names[0]: y}

    def _metric_value(self, name: str, terms: dict):
        """The value a tracker records: a term of the step, or model state such as beta."""
        return self.beta if name == "beta" else terms[name]

    def _update_metrics(self, terms: dict, x) -> dict:
        # Each replica weighs its terms (global-batch or its own means) by its
        # own share of the batch; the metrics' sum-on-read variables then give
        # global means.
        batch = ops.cast(ops.shape(x)[0], "float32")
        for name, tracker in self.trackers.items():
            tracker.update_state(self._metric_value(name, terms), sample_weight=batch)
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        if _multi_worker():
            # Keras reduces multi-worker step outputs with `strategy.reduce(MEAN, axis=0)`,
            # which needs a batch axis: give the scalars one (the reduction removes it).
            results = {name: ops.reshape(value, (1,)) for name, value in results.items()}
        return results

    def train_step(self, data):
        inputs = self._step_inputs(data)
        with tf.GradientTape() as tape:
            terms = self.compute_terms(inputs, training=True)
            # `terms["loss"]` is the global batch's loss on every replica and
            # the optimizer sums the replicas' gradients: divide by their
            # number so the update equals the single-device one.
            loss = self.optimizer.scale_loss(terms["loss"] / _num_replicas())
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_metrics(terms, inputs["x"])

    def test_step(self, data):
        inputs = self._step_inputs(data)
        return self._update_metrics(self.compute_terms(inputs, training=False), inputs["x"])

    # -------------------------------------------------------- user-facing API
    def call(self, inputs, training: bool = False):
        """The deterministic reconstruction: the decoder mean at the posterior's mode."""
        inputs = self.as_inputs(inputs)
        z = self.decoder_latent(latents.mode(self.posterior_distribution(inputs, training=training)))
        return self.decoded(z, inputs, greedy=True)[0]

    def _checked(self, x):
        if isinstance(x, np.ndarray):
            validate_images(x, self.image_shape)
        elif tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"Expected images of shape (batch, {', '.join(map(str, self.image_shape))}). "
                             f"Received: x.shape={tuple(x.shape)}")
        return ops.convert_to_tensor(x, "float32")

    def _checked_inputs(self, x, conditions) -> dict:
        return self.as_inputs(self._checked(x), *conditions)

    def _checked_latent(self, z):
        z = ops.convert_to_tensor(z, "float32")
        if tuple(z.shape[1:]) != tuple(self.latent_shape):
            raise ValueError(f"Expected z of shape (batch, {', '.join(map(str, self.latent_shape))}). "
                             f"Received: z.shape={tuple(z.shape)}")
        return z

    def encode(self, x, *conditions):
        """Returns `(mean, stddev)` of q(z|x[, y]), each `(batch, *latent_shape)`."""
        summary = latents.summary(self.posterior_distribution(self._checked_inputs(x, conditions)))
        return summary["mean"], summary["stddev"]

    def decode(self, z, *conditions, greedy: bool = False):
        """Returns `(mean, sigma)` of p(x|z[, y]), each `(batch, H, W, C)` (see `decoded`)."""
        z = self._checked_latent(z)
        return self.decoded(z, self._conditions(conditions), greedy=greedy)  # noise only if it draws

    def sample(self, num_samples: int, *conditions):
        """Decoder means at `num_samples` draws z ~ p(z[| y]): `(num_samples, H, W, C)`."""
        positive_int("num_samples", num_samples)
        inputs = self._conditions(conditions)
        noise = self.noise()
        z = latents.draw(self.sampling_distribution(inputs), noise, num_samples)
        return self.decoded(self.decoder_latent(z), inputs, noise)[0]

    def reconstruct(self, x, *conditions):
        """The decoder mean at the posterior's mode: `(batch, H, W, C)`."""
        return self(self._checked_inputs(x, conditions), training=False)

    def elbo(self, x, *conditions, seed=None):
        """The one-sample ELBO of each image, `(batch,)` nats, at beta = 1.

        Optimal-sigma likelihoods fit sigma to `x` (as in training); to score
        images one at a time with the model's calibrated running sigma, use
        `elbo_with_running_sigma`.

        Args:
            x: Images `(batch, H, W, C)` (then the model's conditions).
            seed: A `(2,)` seed of the draw. Defaults to the model's seed generator.
        """
        return self.compute_terms(self._checked_inputs(x, conditions), self.noise(seed))["elbo_per_image"]

    def elbo_with_running_sigma(self, x, *conditions, seed=None):
        """Like `elbo`, but optimal modes use the running sigma, not one fitted to `x`."""
        inputs = self._checked_inputs(x, conditions)
        return self.compute_terms(inputs, self.noise(seed), fit_sigma=False)["elbo_per_image"]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Under a strategy, builds the optimizer without Keras' symbolic trace of the model.

        Keras (3.15, TF backend) first reduces a data batch across replicas
        to trace `model(x)`; a VAE is built on construction, so that trace
        is not needed, and the reduce fails under MultiWorkerMirroredStrategy
        for `(images, labels)` batches (the ConditionalVAE's). Any other
        case (unbuilt layers, compiled losses or metrics) goes to Keras.
        """
        needs_keras = (
            getattr(self, "_distribute_strategy", None) is None
            or getattr(self, "_compile_loss", None) is not None
            or getattr(self, "_compile_metrics", None) is not None
            or not all(layer.built for layer in self._flatten_layers())
        )
        if needs_keras:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------ fit / evaluate checks
    def _check_data(self, x, name: str):
        if isinstance(x, np.ndarray):
            validate_images(x, self.image_shape, name=name)
            self.likelihood.validate(x)
        elif isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            spec = spec[0] if isinstance(spec, tuple) else spec
            expected = f"(batch, {', '.join(map(str, self.image_shape))})"
            if not isinstance(spec, tf.TensorSpec):
                raise ValueError(
                    f"Expected a dataset of image batches {expected} (or (images, labels) pairs). Received "
                    f"elements {spec} in {name}; map dict elements to their image tensor first, e.g. "
                    "dataset.map(lambda example: example['image'])."
                )
            shape = tuple(spec.shape[1:]) if spec.shape.rank == 4 else None
            if shape is None or (None not in shape and shape != self.image_shape):
                unbatched = " (unbatched? call .batch(...))" if spec.shape.rank == 3 else ""
                raise ValueError(
                    f"Expected a dataset of image batches {expected}. Received element shape {spec.shape}"
                    f"{unbatched} in {name}."
                )
            if not spec.dtype.is_floating:
                raise ValueError(
                    f"Expected float images in [0, 1]; {name} has dtype {spec.dtype.name}. "
                    "Use keras_vae.data.to_float to convert uint8 images."
                )

    def _check_labels(self, x, y, method: str) -> None:
        if self.condition_specs() and isinstance(x, np.ndarray) and y is None:
            raise ValueError(f"{type(self).__name__}.{method} needs labels: {method}(x, y).")

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras' `fit`, after the checks of the data and the likelihood's data-dependent start
        (`keras_vae.calibration.start` on the first batch; once per model)."""
        self._check_labels(x, y, "fit")
        self._check_data(x, "x")
        validation = kwargs.get("validation_data")
        if validation is not None:
            self._check_data(validation[0] if isinstance(validation, tuple) else validation, "validation_data")
        if self.likelihood.has_data_dependent_start:
            calibration.start(self, self._step_inputs(self._first_batch(x, y, kwargs.get("batch_size"))))
        return super().fit(x, y, *args, **kwargs)

    @staticmethod
    def _first_batch(x, y, batch_size):
        if isinstance(x, tf.data.Dataset):
            return next(iter(x))
        rows = slice(0, batch_size or 32)  # Keras' default batch size
        return x[rows] if y is None else (x[rows], y[rows])

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_labels(x, y, "evaluate")
        self._check_data(x, "x")
        return super().evaluate(x, y, *args, **kwargs)

    @classmethod
    def networks_for(cls, input_shape, network: str, params_per_channel: int, latent_dim: int = 20,
                     **arguments) -> dict:
        """The constructor arguments `build` makes: the networks of `network` for z of `latent_dim`
        numbers and `params_per_channel` decoder outputs per channel, plus `arguments`."""
        return {**networks.encoder_and_decoder(network, input_shape, latent_dim, params_per_channel),
                "latent_dim": latent_dim, **arguments}

    # ------------------------------------------------------------ config
    # Constructor arguments whose value lives in an attribute of another name (see `config_value`).
    config_attributes = {"beta": "initial_beta"}

    def config_value(self, name: str):
        """The value of the constructor argument `name`: the attribute of that name (or of
        `config_attributes[name]`). A family whose arguments live elsewhere overrides this."""
        return getattr(self, self.config_attributes.get(name, name))

    def get_config(self):
        """Every constructor argument of the family (one flat dict; layers serialized)."""
        config = keras.Model.get_config(self)
        for name in inspect.signature(type(self).__init__).parameters:
            if name not in ("self", "kwargs"):
                value = self.config_value(name)
                is_layer = isinstance(value, keras.layers.Layer)
                config[name] = keras.saving.serialize_keras_object(value) if is_layer else value
        return config

    @classmethod
    def from_config(cls, config):
        # Every family: the networks, heads and likelihood in the config are serialized Keras objects.
        config = {key: keras.saving.deserialize_keras_object(value)
                  if isinstance(value, dict) and "class_name" in value else value for key, value in config.items()}
        return cls(**config)


def build(family: type[VAE], input_shape, network: str = "conv", likelihood="optimal", sigma: float | None = None,
          **arguments) -> VAE:
    """Builds a model of `family` from a network name, sizing the decoder for the likelihood.

    Args:
        family: `VAE` or a subclass (its `networks_for` makes the networks).
        input_shape: Image shape `(height, width, channels)`.
        network: A `keras_vae.networks` name (`keras_vae.networks.NAMES`). Defaults to `"conv"`.
        likelihood: A `Likelihood` or a name for `likelihoods.get`. Defaults to `"optimal"`.
        sigma: The fixed sigma when `likelihood="gaussian"`. Defaults to 1.0.
        **arguments: `latent_dim` (the family's latent size, see its `networks_for`), the
            family's network options, and its constructor's arguments (`beta`,
            `free_bits`, `seed`, ...), whose defaults are the constructor's.

    Returns:
        A built model, ready to `compile`.
    """
    likelihood = likelihoods_lib.get(likelihood, sigma=sigma)
    return family(likelihood=likelihood,
                  **family.networks_for(input_shape, network, likelihood.params_per_channel, **arguments))


def takes_argument(family: type[VAE], name: str) -> bool:
    """Whether the constructor of `family` takes an argument called `name` (e.g. `prior`, `sampler`).

    Example:

    >>> takes_argument(VAE, "sampler")
    True
    """
    return name in inspect.signature(family.__init__).parameters


def default_argument(family: type[VAE], name: str):
    """The default of constructor argument `name` of `family` (e.g. a spatial model's `beta`), or None.

    Example:

    >>> default_argument(VAE, "beta")
    1.0
    """
    parameter = inspect.signature(family.__init__).parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def build_vae(input_shape, **arguments) -> VAE:
    """Builds a `VAE` (see `build`): `latent_dim` (default 20), `beta`, `free_bits`, `seed`.

    Example:

    >>> vae = build_vae((27, 27, 1), network="conv", likelihood="per_pixel", latent_dim=4)
    >>> vae.decoder.output_shape
    (None, 27, 27, 2)
    """
    return build(VAE, input_shape, **arguments)
