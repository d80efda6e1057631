"""`VAE`: the variational autoencoder with a pluggable (calibrated) likelihood.

x -> encoder -> q(z|x) -> z -> decoder -> p(x|z); the loss is
`-E_q[log p(x|z)] + beta * KL(q(z|x) || p(z))`, summed over pixels and
latent dimensions and averaged over the batch (nats per image).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_vae import likelihoods as likelihoods_lib
from keras_vae import networks
from keras_vae.data import validate_images
from keras_vae.layers import cross_replica_sum
from keras_vae.objectives import elbo_terms
from keras_vae.posteriors import DiagonalGaussian, kl_per_dimension

METRIC_NAMES = ("loss", "elbo", "rec", "kl", "sigma", "beta")


def checked_pixels(x):
    """`x` as float32, with an in-graph check that every pixel is finite and in [0, 1].

    numpy inputs are checked before training (`data.validate_images`); this
    catches a `tf.data` pipeline that yields NaN, inf or unscaled 8-bit values,
    with a message that says so instead of a NaN loss. (XLA-compiled steps
    drop the check.)
    """
    x = ops.convert_to_tensor(x, "float32")
    valid = tf.reduce_all(tf.logical_and(x >= 0.0, x <= 1.0))  # False for NaN too
    finite = tf.math.is_finite(x)
    check = tf.debugging.Assert(valid, [
        "Expected pixel values in [0, 1] with no NaN or inf. This batch has non-finite pixels:",
        tf.reduce_sum(tf.cast(tf.logical_not(finite), "int32")), "and finite values from",
        tf.reduce_min(tf.where(finite, x, np.inf)), "to", tf.reduce_max(tf.where(finite, x, -np.inf)),
        "(divide 8-bit images by 255; drop or fix non-finite pixels).",
    ])
    with tf.control_dependencies([check]):
        return tf.identity(x)


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


def _global_batch_means(log_likelihood, kl_per_dim):
    """Per-image terms -> the global batch's means, as a batch of one.

    On one device this returns its arguments (`elbo_terms` averages them).
    Under a `tf.distribute` strategy each replica holds a slice of the batch;
    the sums and the image count are all-reduced (differentiably), so every
    replica sees the single-device ELBO of the global batch, free bits
    included (their floor applies to the global per-dimension KL).
    """
    if _num_replicas() == 1:
        return log_likelihood, kl_per_dim
    count = ops.cast(ops.shape(log_likelihood)[0], log_likelihood.dtype)
    latent_shape = tuple(kl_per_dim.shape[1:])  # (D,), or (h, w, c) for a latent map
    packed = ops.concatenate([
        ops.sum(log_likelihood, keepdims=True),
        ops.reshape(ops.sum(kl_per_dim, axis=0), (-1,)),
        ops.reshape(count, (1,)),
    ])
    totals = cross_replica_sum(packed)
    means = totals[:-1] / totals[-1]
    return means[:1], ops.reshape(means[1:], (1, *latent_shape))


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """A VAE whose decoder likelihood (and so its calibration) is a layer.

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
        posterior: The encoder head. Defaults to `DiagonalGaussian(latent_dim)`.
        seed: Seed for the sampling noise. Defaults to None.

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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1:
            raise ValueError(f"Expected a positive integer. Received: latent_dim={latent_dim!r}")
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
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        self.image_shape = self._check_networks()
        self.build((None, *self.image_shape))

    # ----------------------------------------------------------------- build
    def _check_networks(self) -> tuple[int, int, int]:
        """Checks that encoder, decoder and likelihood fit together; returns (H, W, C)."""
        try:
            image_shape = _shape_without_batch(self.encoder.input_shape)
            decoder_in = _shape_without_batch(self.decoder.input_shape)
            decoder_out = _shape_without_batch(self.decoder.output_shape)
        except (AttributeError, ValueError) as error:
            raise ValueError(
                "VAE needs a built encoder and decoder with known input shapes, such as the "
                "functional models of keras_vae.networks."
            ) from error
        if len(image_shape) != 3 or None in image_shape:
            raise ValueError(f"Expected the encoder input to be (height, width, channels). Received: {image_shape}")
        if decoder_in != (self.latent_dim,):
            raise ValueError(
                f"The decoder takes inputs of shape {decoder_in}, but latent_dim={self.latent_dim}."
            )
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

    # ------------------------------------------------------------- the ELBO
    def compute_terms(self, x, training: bool = False) -> dict:
        """One-sample ELBO terms for a batch, averaged over it (nats per image).

        Args:
            x: Images `(batch, H, W, C)` in [0, 1].
            training: Whether layers run in training mode (and optimal sigma
                updates its running average). Defaults to False.

        Returns:
            A dict of scalars `loss`, `elbo`, `rec`, `kl`, `sigma`, and the
            per-image `log_likelihood` and `kl_per_dim`.
        """
        x = ops.convert_to_tensor(x, "float32")
        q = self.posterior.distribution(self.encoder(x, training=training))
        noise = self._replica_noise(ops.shape(q.loc))
        z = q.loc + q.stddev() * noise  # the reparameterised sample of q
        p = self.likelihood.distribution(self.decoder(z, training=training), x, training=training)
        log_likelihood = p.log_prob(x)
        kl_per_dim = kl_per_dimension(q)
        terms = elbo_terms(*_global_batch_means(log_likelihood, kl_per_dim), self.beta, self.free_bits)
        terms["sigma"] = ops.mean(p.stddev())
        terms["log_likelihood"] = log_likelihood
        terms["kl_per_dim"] = kl_per_dim
        return terms

    def _replica_noise(self, shape, draw=None):
        """Noise of `shape` (N(0, I) unless `draw` says otherwise): this replica's rows of the global batch's draw.

        Under a strategy every replica draws the noise of the whole global
        batch (the seed state is mirrored, so the draws agree) and keeps its
        own rows, so a distributed step uses exactly the single-device noise.

        Args:
            shape: `(batch, ...)`, this replica's batch first.
            draw: `draw(shape, seed_generator) -> tensor`. Defaults to
                `keras.random.normal`.
        """
        draw = draw or (lambda full_shape, seed: keras.random.normal(full_shape, seed=seed))
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return draw(shape, self.seed_generator)
        replica = tf.cast(context.replica_id_in_sync_group, "int32")
        local = tf.cast(shape[0], "float32")
        counts = cross_replica_sum(tf.one_hot(replica, context.num_replicas_in_sync) * local)
        counts = tf.cast(tf.round(counts), "int32")
        offset = tf.reduce_sum(counts[:replica])
        noise = draw((tf.reduce_sum(counts), *shape[1:]), self.seed_generator)
        return noise[offset : offset + shape[0]]

    def _step_inputs(self, data) -> tuple:
        """The arguments of `compute_terms` in a batch from `fit`/`evaluate`: `(x,)`."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return (checked_pixels(x),)

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
            terms = self.compute_terms(*inputs, training=True)
            # `terms["loss"]` is the global batch's loss on every replica and
            # the optimizer sums the replicas' gradients: divide by their
            # number so the update equals the single-device one.
            loss = self.optimizer.scale_loss(terms["loss"] / _num_replicas())
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_metrics(terms, inputs[0])

    def test_step(self, data):
        inputs = self._step_inputs(data)
        return self._update_metrics(self.compute_terms(*inputs, training=False), inputs[0])

    # -------------------------------------------------------- user-facing API
    def call(self, x, training: bool = False):
        """The deterministic reconstruction: decoder mean at the posterior mean."""
        loc, _ = self.posterior(self.encoder(x, training=training))
        return self.likelihood.mean(self.decoder(loc, training=training))

    def _checked(self, x):
        if isinstance(x, np.ndarray):
            validate_images(x, self.image_shape)
        elif tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"Expected images of shape (batch, {', '.join(map(str, self.image_shape))}). "
                             f"Received: x.shape={tuple(x.shape)}")
        return ops.convert_to_tensor(x, "float32")

    def posterior_distribution(self, x):
        """q(z|x) as a `tfd.MultivariateNormalDiag`."""
        return self.posterior.distribution(self.encoder(self._checked(x), training=False))

    def encode(self, x):
        """Returns `(mean, stddev)` of q(z|x), each `(batch, latent_dim)`."""
        return self.posterior(self.encoder(self._checked(x), training=False))

    def decode(self, z):
        """Returns `(mean, sigma)` of p(x|z), each `(batch, H, W, C)`.

        `sigma` is the decoder standard deviation the model uses at inference:
        the running optimal sigma, the learned or fixed one, the per-pixel
        prediction, or for a Bernoulli `sqrt(p * (1 - p))`.
        """
        z = ops.convert_to_tensor(z, "float32")
        if len(z.shape) != 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"Expected z of shape (batch, {self.latent_dim}). Received: z.shape={tuple(z.shape)}")
        params = self.decoder(z, training=False)
        return self.likelihood.mean(params), self.likelihood.stddev(params)

    def sample(self, num_samples: int):
        """Decoder means at `num_samples` draws z ~ N(0, I): `(num_samples, H, W, C)`."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"Expected a positive integer. Received: num_samples={num_samples!r}")
        z = keras.random.normal((num_samples, self.latent_dim), seed=self.seed_generator)
        return self.decode(z)[0]

    def reconstruct(self, x):
        """Decoder mean at the posterior mean: `(batch, H, W, C)`."""
        return self(self._checked(x), training=False)

    def elbo(self, x):
        """The one-sample ELBO of each image, `(batch,)` nats, at beta = 1.

        Optimal-sigma likelihoods fit sigma to `x` (as in training); to score
        images one at a time with the model's calibrated running sigma, use
        `elbo_with_running_sigma`.
        """
        terms = self.compute_terms(self._checked(x), training=False)
        return terms["log_likelihood"] - ops.sum(terms["kl_per_dim"], axis=-1)

    def elbo_with_running_sigma(self, x):
        """Like `elbo`, but optimal modes use the running sigma, not one fitted to `x`."""
        x = self._checked(x)
        q = self.posterior.distribution(self.encoder(x, training=False))
        z = q.loc + q.stddev() * keras.random.normal(ops.shape(q.loc), seed=self.seed_generator)
        log_likelihood = self.likelihood.distribution(self.decoder(z, training=False)).log_prob(x)
        return log_likelihood - ops.sum(kl_per_dimension(q), axis=-1)

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

    def fit(self, x=None, *args, **kwargs):
        self._check_data(x, "x")
        validation = kwargs.get("validation_data")
        if validation is not None:
            self._check_data(validation[0] if isinstance(validation, tuple) else validation, "validation_data")
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._check_data(x, "x")
        return super().evaluate(x, *args, **kwargs)

    # ------------------------------------------------------------ config
    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "encoder": serialize(self.encoder),
            "decoder": serialize(self.decoder),
            "latent_dim": self.latent_dim,
            "likelihood": serialize(self.likelihood),
            "beta": self.initial_beta,
            "free_bits": self.free_bits,
            "posterior": serialize(self.posterior),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "likelihood", "posterior"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_vae(
    input_shape,
    network: str = "conv",
    latent_dim: int = 20,
    likelihood="optimal",
    sigma: float | None = None,
    beta: float = 1.0,
    free_bits: float = 0.0,
    seed: int | None = None,
) -> VAE:
    """Builds a `VAE` from a network name, sizing the decoder for the likelihood.

    Args:
        input_shape: Image shape `(height, width, channels)`.
        network: `"conv"`, `"mlp"` or `"resnet"`. Defaults to `"conv"`.
        latent_dim: Size of z. Defaults to 20.
        likelihood: A `Likelihood` or a name for `likelihoods.get`.
            Defaults to `"optimal"`.
        sigma: The fixed sigma when `likelihood="gaussian"`. Defaults to 1.0.
        beta: KL weight. Defaults to 1.0.
        free_bits: Per-dimension KL floor in nats. Defaults to 0.0.
        seed: Sampling seed. Defaults to None.

    Returns:
        A built `VAE`, ready to `compile`.

    Example:

    >>> vae = build_vae((27, 27, 1), network="conv", likelihood="per_pixel", latent_dim=4)
    >>> vae.decoder.output_shape
    (None, 27, 27, 2)
    """
    likelihood = likelihoods_lib.get(likelihood, sigma=sigma)
    encoder_fn, decoder_fn = networks.get(network)
    return VAE(
        encoder=encoder_fn(input_shape),
        decoder=decoder_fn(input_shape, latent_dim=latent_dim, params_per_channel=likelihood.params_per_channel),
        latent_dim=latent_dim,
        likelihood=likelihood,
        beta=beta,
        free_bits=free_bits,
        seed=seed,
    )
