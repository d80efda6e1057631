"""Export a trained `VAE` for serving: SavedModel (TF Serving layout) and TFLite (LiteRT).

`saved_model` writes `base_dir/name/version/saved_model.pb` through
`keras.export.ExportArchive` with these signatures (`None` is the batch):

- `decode(z: (None, latent_dim)) -> {mean, sigma}`: the decoder mean and the
  calibrated decoder sigma of the trained model, broadcast to
  `(None, H, W, C)`; a Bernoulli decoder returns `{mean, probs}` instead.
  `serving_default` is `decode`.
- `encode(x: (None, H, W, C)) -> {mean, stddev}`: q(z|x), `(None, latent_dim)` each.
- `sample(num_samples: (1,) int32) -> {images}`: decoder means at
  `num_samples[0]` fresh draws z ~ N(0, I) (`tf.random.normal`, new every call).
- `reconstruct(x) -> {mean}`: the decoder mean at the posterior mean.
- `elbo(x) -> {elbo}`: a one-sample ELBO estimate of each image in nats, with
  the model's running (calibrated) sigma, so scores do not depend on the
  batch (`VAE.elbo_with_running_sigma`).

The latent families export the same names with their own latents and
inputs (`signature_functions` picks the builder registered for the model's
exact class; `VLAE` and user subclasses are refused with a TypeError):

- `HierarchicalVAE`: `decode(z1: (None, latent_dims[0]))`; `encode(x)` adds
  `{mean_z2, stddev_z2}` of q(z2|x) to q(z1|x, z2 = E[z2|x])'s
  `{mean, stddev}`; `sample` draws z2 ~ N(0, I), then z1 ~ p(z1|z2); `elbo`
  has one KL per level.
- `GumbelSoftmaxVAE`: z is one-hot codes flattened to
  `(None, num_variables * num_classes)`; `encode -> {mean, stddev}` are q's
  class probabilities; `sample` decodes uniformly drawn codes; `reconstruct`
  the most probable code; `elbo` an exact (Gumbel-max) categorical draw.
- `ConditionalVAE`: every signature also takes `y`, int32 labels `(None,)`
  (or float vectors `(None, condition_dim)` when not categorical): one row
  per input, or one row for the whole batch (`sample(num_samples, y)`).
- `SpatialVAE`: z is a map `(None, *latent_shape)` in `decode`, `encode`
  and `sample`.
- `VQVAE`: `decode(z: (None, h, w, D))`, plus `decode_indices(indices:
  (None, h, w) int32)`; `encode -> {mean (z_q), stddev (zeros), indices}`;
  `sample` draws an index map from the PixelCNN prior position by position
  (a `tf.while_loop` of `Multinomial` draws); `elbo` is deterministic,
  log p(x|z_q) + log prior(indices).

Random draws use the ops of `tf.random.normal`, `tf.random.uniform` and
`tf.random.categorical` with seeds (0, 0): fresh on every call.

`tflite` converts chosen signatures to one `.tflite` file with TFLite builtin
ops only (what the Python LiteRT runtime runs), optionally float16 or
dynamic-range quantized; `litert_runner` runs one with input checks. Both
exports use `serving_decoder`: the decoder with its transposed convolutions
rewritten as convolution + `depth_to_space`, the same function but ~5x
faster in LiteRT (`benchmarks/results/serving.md`). Every signature of
every family above converts (the VQ-VAE's sampling loop as a TFLite
`WHILE`); a signature that needs TensorFlow-only ops fails with a
ValueError that names it and the ops.

Example:

>>> import tempfile, numpy as np, keras_vae as kv
>>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="bernoulli")
>>> folder = kv.export.saved_model(vae, tempfile.mkdtemp(), version=3, allow_untrained=True)  # weights as built
>>> folder.name, sorted(p.name for p in folder.iterdir())
('3', ['assets', 'fingerprint.pb', 'saved_model.pb', 'variables'])
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_vae.likelihoods import Bernoulli
from keras_vae.models.conditional import ConditionalVAE
from keras_vae.models.gumbel import GumbelSoftmaxVAE, kl_to_uniform
from keras_vae.models.hierarchical import HierarchicalVAE
from keras_vae.models.spatial import SpatialVAE
from keras_vae.models.vae import VAE
from keras_vae.models.vqvae import VQVAE
from keras_vae.posteriors import kl_per_dimension

# The plain VAE's signatures; every model family exports these names
# (`VQVAE` adds `decode_indices`).
SIGNATURES = ("decode", "encode", "sample", "reconstruct", "elbo")
QUANTIZATIONS = (None, "float16", "dynamic")

# {model class: builder(model, decoder) -> {name: (fn, input_signature)}},
# filled by `_signatures_for` below. Keyed by the exact class: a subclass
# may change the latents or the inputs, so it needs its own entry.
_FAMILIES: dict[type, Callable] = {}


# ------------------------------------------------------------------ checks
def check_exportable(model, allow_untrained: bool = False) -> VAE:
    """Returns `model` if it is a built, trained `VAE` whose decoder sigma is calibrated.

    A model whose optimizer never took a step (never fitted, or loaded
    without its optimizer) is refused unless `allow_untrained`: for weights
    set another way (`load_weights`, `set_weights`). An optimal-sigma model
    that never trained is refused even then: its running MSE is zero, so its
    served sigma would be the soft-clip floor (exp(-6)), not a calibrated one.

    Args:
        model: The model to export.
        allow_untrained: Export a model without optimizer steps. Defaults to False.

    Raises:
        TypeError: If `model` is not a `keras_vae.VAE`, or is a class without
            export signatures (`VLAE`, whose decoder samples pixel by pixel,
            or a user subclass: its posterior, latents or inputs may differ).
        ValueError: If it is not built, is an untrained optimal-sigma model,
            or never trained and not `allow_untrained`.
    """
    if not isinstance(model, VAE):
        raise TypeError(f"Expected a keras_vae.VAE. Received: model of type {type(model).__name__}")
    if type(model) not in _FAMILIES:
        # Subclasses change the posterior, the latent shape or the inputs
        # (labels, codebooks): another family's signatures would silently be wrong.
        supported = ", ".join(sorted(cls.__name__ for cls in _FAMILIES))
        raise TypeError(
            f"keras_vae.export has no signatures for {type(model).__name__}; it exports {supported}."
        )
    if not model.built or not model.likelihood.built or not model.posterior.built:
        raise ValueError("The VAE is not built: build it (or call it on a batch of images) before exporting.")
    optimal = getattr(model.likelihood, "optimal_sigma", None)
    if optimal is not None and float(optimal.num_updates.numpy()) == 0.0:
        raise ValueError(
            f"The VAE's likelihood has sigma={model.likelihood.sigma!r} but has never been trained, so it "
            "has no calibrated (running-average) sigma to export. Train it with model.fit first."
        )
    optimizer = getattr(model, "optimizer", None)
    if not allow_untrained and (optimizer is None or int(optimizer.iterations.numpy()) == 0):
        raise ValueError(
            f"The {type(model).__name__} has never been trained (its optimizer took no steps), so the export "
            "would serve random weights. Train it with model.fit, load a trained .keras file with its optimizer "
            "(keras.models.load_model), or pass allow_untrained=True if its weights were set another way."
        )
    return model


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"Expected version to be a positive integer (TF Serving folder name). Received: version={version!r}"
        )
    return version


def _check_name(name) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"Expected name to be a plain folder name like 'vae'. Received: name={name!r}")
    return name


# -------------------------------------------------------------- signatures
def _fresh_normal(shape):
    """`tf.random.normal`'s op with seed=0, seed2=0: fresh noise in every loaded process.

    `tf.random.normal` would bake in op seeds derived from a global seed
    (`keras.utils.set_random_seed`), so every restarted server would replay
    the same draws; seeds (0, 0) ask TensorFlow and LiteRT for random seeds.
    """
    return tf.raw_ops.RandomStandardNormal(shape=shape, dtype=tf.float32, seed=0, seed2=0)


def _checked(tensor, spec: tf.TensorSpec):
    """Adds an in-graph check that `tensor` has the shape of `spec` (any batch).

    Python callers of a loaded signature get it from TensorFlow already; TF
    Serving feeds tensors straight into the graph, so this check is what
    turns a wrong shape into a clear error there instead of garbage. (The
    TFLite converter drops it; use `litert_runner` for checked LiteRT calls.)
    """
    expected = [-1 if dim is None else dim for dim in spec.shape.as_list()]
    shape = tf.shape(tensor, out_type=tf.int32)
    same_rank = tf.equal(tf.size(shape), len(expected))
    padded = tf.concat([shape, tf.fill([len(expected)], -2)], axis=0)[: len(expected)]
    same_dims = tf.reduce_all(tf.logical_or(tf.equal(padded, expected), tf.equal(expected, -1)))
    shown = "(" + ", ".join("batch" if dim == -1 else str(dim) for dim in expected) + ")"
    check = tf.debugging.Assert(
        tf.logical_and(same_rank, same_dims),
        [f"Expected {spec.name} of shape {shown}. Received shape:", shape],
    )
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def _kernel_as_conv(kernel: np.ndarray, stride: int) -> np.ndarray:
    """A `Conv2DTranspose` kernel `(k, k, out, in)` -> the equivalent `Conv2D` kernel.

    With m = k / stride odd and "same" padding, output pixel
    `(stride*i + a, stride*j + b)` of the transposed convolution is a stride-1
    m x m convolution of the input around `(i, j)` using the taps
    `kernel[stride*(m-1) - stride*u + a, stride*(m-1) - stride*v + b]`; stacking
    the `stride**2` phases as channels `(a*stride + b)*out + c` makes
    `depth_to_space(stride)` put them back in place.
    """
    size, _, filters, channels = kernel.shape
    m = size // stride
    out = np.empty((m, m, channels, stride * stride * filters), kernel.dtype)
    for u in range(m):
        for v in range(m):
            for a in range(stride):
                for b in range(stride):
                    phase = (a * stride + b) * filters
                    tap = kernel[stride * (m - 1 - u) + a, stride * (m - 1 - v) + b]  # (filters, channels)
                    out[u, v, :, phase : phase + filters] = tap.T
    return out


class _TransposedAsConv(keras.layers.Layer):
    """A snapshot of a `Conv2DTranspose` as `Conv2D` + `depth_to_space`: same outputs, faster.

    TFLite runs a transposed convolution whose output shape depends on the
    batch (a `None` batch) outside the XNNPACK delegate; a plain convolution
    and `depth_to_space` run inside it (0.6 ms instead of 1.8 ms for the conv
    decoder at batch 1 on our 2-core machine). Export-only: not serialisable.
    """

    def __init__(self, source: keras.layers.Conv2DTranspose):
        super().__init__(name=f"{source.name}_as_conv", dtype=source.dtype_policy)
        self.source = source
        self.stride = source.strides[0]
        self.conv = keras.layers.Conv2D(
            self.stride**2 * source.filters, source.kernel_size[0] // self.stride,
            padding="same", use_bias=source.use_bias, dtype=source.dtype_policy,
        )

    def build(self, input_shape):
        self.conv.build(input_shape)
        weights = [_kernel_as_conv(keras.ops.convert_to_numpy(self.source.kernel), self.stride)]
        if self.source.use_bias:
            weights.append(np.tile(keras.ops.convert_to_numpy(self.source.bias), self.stride**2))
        self.conv.set_weights(weights)

    def call(self, inputs):
        outputs = self.conv(inputs)
        if self.stride > 1:
            outputs = tf.nn.depth_to_space(outputs, self.stride)
        return self.source.activation(outputs)

    def compute_output_shape(self, input_shape):
        return self.source.compute_output_shape(input_shape)


def _rewritable(layer) -> bool:
    if not isinstance(layer, keras.layers.Conv2DTranspose):
        return False
    (height, width), (stride_h, stride_w) = layer.kernel_size, layer.strides
    return (
        height == width and stride_h == stride_w and height % stride_h == 0 and (height // stride_h) % 2 == 1
        and layer.padding == "same" and tuple(layer.dilation_rate) == (1, 1)
        and layer.data_format == "channels_last" and layer.output_padding is None
    )


def serving_decoder(decoder: keras.Model) -> keras.Model:
    """The decoder to export: same function, transposed convolutions as convolutions.

    Every "same"-padded `Conv2DTranspose` with square kernel k and stride s
    where k / s is an odd integer (the conv network's k6/s2 and k5/s1) becomes
    a `Conv2D` with kernel k / s and s**2 times the filters followed by
    `depth_to_space(s)`, which is exactly the same linear map (outputs agree
    to float rounding, ~1e-7). Other layers are shared, not copied; other
    decoders (not functional, or with nothing to rewrite) come back as they are.

    Returns:
        A functional `keras.Model` with the decoder's inputs and outputs.
    """
    if not isinstance(decoder, keras.Model) or not any(_rewritable(layer) for layer in decoder.layers):
        return decoder
    try:
        return keras.models.clone_model(
            decoder, clone_function=lambda layer: _TransposedAsConv(layer) if _rewritable(layer) else layer
        )
    except (ValueError, TypeError, NotImplementedError):  # a subclassed decoder: export it as it is
        return decoder


def _signatures_for(model_class: type):
    """Registers `builder(model, decoder) -> {name: (fn, input_signature)}` for `model_class`."""

    def register(builder):
        _FAMILIES[model_class] = builder
        return builder

    return register


def signature_functions(model: VAE, decoder: keras.Model | None = None) -> dict[str, tuple]:
    """The exported functions: `{name: (fn, input_signature)}`, `decode` first.

    Each model family has its own builder (registered with `_signatures_for`,
    listed in the module docstring); all export `decode`, `encode`,
    `sample`, `reconstruct` and `elbo`.

    The decoder is `serving_decoder(model.decoder)`: the same function with
    its transposed convolutions rewritten as convolutions (faster, above all
    in TFLite).

    Each function checks its input shape in-graph and returns a dict of
    named tensors. Random draws use `RandomStandardNormal` (the op of
    `tf.random.normal`, a TFLite builtin), `RandomUniform` or `Multinomial`
    with seeds (0, 0), never `keras.random`.

    The `elbo` signature is a one-sample estimate, like `VAE.elbo`: z is
    drawn from q(z|x) with fresh `tf.random.normal` noise on every call (so
    repeated calls differ by the Monte-Carlo noise; average several calls, or
    send the image several times in one batch, for a steadier score), and
    p(x|z) uses the running (calibrated) sigma, so an image's score does not
    depend on the other images in the batch.
    """
    if type(model) not in _FAMILIES:
        check_exportable(model)  # raises the TypeError that names the supported classes
    decoder = serving_decoder(model.decoder) if decoder is None else decoder
    return _FAMILIES[type(model)](model, decoder)


def signature_names(model: VAE) -> tuple[str, ...]:
    """The signatures `saved_model` writes for `model`, `decode` (= `serving_default`) first.

    Example:

    >>> import keras_vae as kv
    >>> signature_names(kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="bernoulli"))
    ('decode', 'encode', 'sample', 'reconstruct', 'elbo')
    """
    return tuple(signature_functions(model))


@_signatures_for(VAE)
def _vae_signatures(model: VAE, decoder: keras.Model) -> dict[str, tuple]:
    height, width, channels = model.image_shape
    images = tf.TensorSpec((None, height, width, channels), tf.float32, name="x")
    latents = tf.TensorSpec((None, model.latent_dim), tf.float32, name="z")
    count = tf.TensorSpec((1,), tf.int32, name="num_samples")

    def decode(z):
        return _decoded(model, decoder(_checked(z, latents), training=False))

    def encode(x):
        mean, stddev = model.posterior(model.encoder(_checked(x, images), training=False))
        return {"mean": mean, "stddev": stddev}

    def sample(num_samples):
        num_samples = _checked(num_samples, count)
        positive = tf.debugging.Assert(
            num_samples[0] > 0, ["Expected num_samples to be [n] with n >= 1. Received:", num_samples]
        )
        with tf.control_dependencies([positive]):
            z = _fresh_normal(tf.stack([num_samples[0], model.latent_dim]))
        return {"images": model.likelihood.mean(decoder(z, training=False))}

    def reconstruct(x):
        mean, _ = model.posterior(model.encoder(_checked(x, images), training=False))
        return {"mean": model.likelihood.mean(decoder(mean, training=False))}

    def elbo(x):
        x = _checked(x, images)
        q = model.posterior.distribution(model.encoder(x, training=False))
        z = q.loc + q.scale.matvec(_fresh_normal(tf.shape(q.loc)))  # diagonal or lower-triangular scale
        log_likelihood = model.likelihood.distribution(decoder(z, training=False)).log_prob(x)
        return {"elbo": log_likelihood - tf.reduce_sum(kl_per_dimension(q), axis=-1)}

    return {
        "decode": (decode, [latents]),
        "encode": (encode, [images]),
        "sample": (sample, [count]),
        "reconstruct": (reconstruct, [images]),
        "elbo": (elbo, [images]),
    }


# ------------------------------------------------- latent families' signatures
_COUNT = tf.TensorSpec((1,), tf.int32, name="num_samples")


def _image_spec(model: VAE) -> tf.TensorSpec:
    return tf.TensorSpec((None, *model.image_shape), tf.float32, name="x")


def _fresh_uniform(shape):
    """U(0, 1) noise with `tf.random.uniform`'s op, seeds (0, 0): fresh in every process (see `_fresh_normal`)."""
    return tf.raw_ops.RandomUniform(shape=shape, dtype=tf.float32, seed=0, seed2=0)


def _num_samples(num_samples):
    """The `n` of a `num_samples = [n]` input, checked in-graph (shape `(1,)`, n >= 1)."""
    num_samples = _checked(num_samples, _COUNT)
    positive = tf.debugging.Assert(
        num_samples[0] > 0, ["Expected num_samples to be [n] with n >= 1. Received:", num_samples]
    )
    with tf.control_dependencies([positive]):
        return tf.identity(num_samples[0])


def _decoded(model: VAE, params) -> dict:
    """`decode`'s outputs: `{mean, sigma}`, or `{mean, probs}` for a Bernoulli decoder."""
    mean = model.likelihood.mean(params)
    if isinstance(model.likelihood, Bernoulli):
        return {"mean": mean, "probs": mean}
    return {"mean": mean, "sigma": model.likelihood.stddev(params)}


def _kl_normal(loc_q, scale_q, loc_p=0.0, scale_p=1.0):
    """KL(N(loc_q, scale_q**2) || N(loc_p, scale_p**2)) per dimension, in closed form."""
    return (
        tf.math.log(scale_p / scale_q)
        + (tf.square(scale_q) + tf.square(loc_q - loc_p)) / (2.0 * tf.square(scale_p))
        - 0.5
    )


def _sum_per_image(values):
    """Sums `(batch, ...)` over all but the batch axis."""
    return tf.reduce_sum(tf.reshape(values, (tf.shape(values)[0], -1)), axis=-1)


def _in_range(indices, size: int, name: str):
    """`indices` with an in-graph check that they lie in `[0, size)`."""
    check = tf.debugging.Assert(
        tf.reduce_all((indices >= 0) & (indices < size)),
        [f"Expected {name} in [0, {size}). Received:", indices],
    )
    with tf.control_dependencies([check]):
        return tf.identity(indices)


@_signatures_for(HierarchicalVAE)
def _hierarchical_signatures(model: HierarchicalVAE, decoder: keras.Model) -> dict[str, tuple]:
    """`decode(z1)`, `encode(x) -> {mean, stddev}` of q(z1|x, z2 = E[z2|x]) and
    `{mean_z2, stddev_z2}` of q(z2|x); `sample` draws z2 ~ N(0, I), then z1 ~ p(z1|z2)."""
    images = _image_spec(model)
    z1_spec = tf.TensorSpec((None, model.latent_dims[0]), tf.float32, name="z1")

    def levels(x):
        features = model.encoder(x, training=False)
        loc2, scale2 = model.posterior(features)
        return features, (loc2, scale2)

    def decode(z1):
        return _decoded(model, decoder(_checked(z1, z1_spec), training=False))

    def encode(x):
        features, (loc2, scale2) = levels(_checked(x, images))
        loc1, scale1 = model._posterior_z1(features, loc2)
        return {"mean": loc1, "stddev": scale1, "mean_z2": loc2, "stddev_z2": scale2}

    def sample(num_samples):
        z2 = _fresh_normal(tf.stack([_num_samples(num_samples), model.latent_dims[1]]))
        loc1, scale1 = model._prior_z1(z2)
        z1 = loc1 + scale1 * _fresh_normal(tf.shape(loc1))
        return {"images": model.likelihood.mean(decoder(z1, training=False))}

    def reconstruct(x):
        features, (loc2, _) = levels(_checked(x, images))
        loc1, _ = model._posterior_z1(features, loc2)
        return {"mean": model.likelihood.mean(decoder(loc1, training=False))}

    def elbo(x):
        x = _checked(x, images)
        features, (loc2, scale2) = levels(x)
        z2 = loc2 + scale2 * _fresh_normal(tf.shape(loc2))
        prior_loc1, prior_scale1 = model._prior_z1(z2)
        loc1, scale1 = model._posterior_z1(features, z2)
        z1 = loc1 + scale1 * _fresh_normal(tf.shape(loc1))
        log_likelihood = model.likelihood.distribution(decoder(z1, training=False)).log_prob(x)
        kl_z1 = _sum_per_image(_kl_normal(loc1, scale1, prior_loc1, prior_scale1))
        return {"elbo": log_likelihood - kl_z1 - _sum_per_image(_kl_normal(loc2, scale2))}

    return {
        "decode": (decode, [z1_spec]),
        "encode": (encode, [images]),
        "sample": (sample, [_COUNT]),
        "reconstruct": (reconstruct, [images]),
        "elbo": (elbo, [images]),
    }


@_signatures_for(GumbelSoftmaxVAE)
def _gumbel_signatures(model: GumbelSoftmaxVAE, decoder: keras.Model) -> dict[str, tuple]:
    """Codes are one-hot vectors flattened to `(None, num_variables * num_classes)`:
    `encode(x) -> {mean, stddev}` gives q's class probabilities; `sample` decodes
    uniformly drawn one-hot codes; `reconstruct` the most probable code; `elbo`
    an exact categorical draw (Gumbel-max) with the KL to the uniform prior."""
    images = _image_spec(model)
    codes_spec = tf.TensorSpec((None, model.latent_dim), tf.float32, name="z")

    def one_hot(scores):  # (batch, variables, classes) -> flat one-hot codes of the argmax
        classes = tf.argmax(scores, axis=-1, output_type=tf.int32)
        return tf.reshape(tf.one_hot(classes, model.num_classes), (-1, model.latent_dim))

    def logits(x):
        return model.posterior.logits(model.encoder(x, training=False))

    def decode(z):
        return _decoded(model, decoder(_checked(z, codes_spec), training=False))

    def encode(x):
        mean, stddev = model.posterior(model.encoder(_checked(x, images), training=False))
        return {"mean": mean, "stddev": stddev}

    def sample(num_samples):
        # The argmax of i.i.d. uniforms is a uniformly drawn class: a draw of the prior.
        shape = tf.stack([_num_samples(num_samples), model.num_variables, model.num_classes])
        return {"images": model.likelihood.mean(decoder(one_hot(_fresh_uniform(shape)), training=False))}

    def reconstruct(x):
        return {"mean": model.likelihood.mean(decoder(one_hot(logits(_checked(x, images))), training=False))}

    def elbo(x):
        x = _checked(x, images)
        scores = logits(x)
        gumbel = -tf.math.log(-tf.math.log(_fresh_uniform(tf.shape(scores)) + 1e-20) + 1e-20)
        params = decoder(one_hot(scores + gumbel), training=False)
        log_likelihood = model.likelihood.distribution(params).log_prob(x)
        return {"elbo": log_likelihood - tf.reduce_sum(kl_to_uniform(scores), axis=-1)}

    return {
        "decode": (decode, [codes_spec]),
        "encode": (encode, [images]),
        "sample": (sample, [_COUNT]),
        "reconstruct": (reconstruct, [images]),
        "elbo": (elbo, [images]),
    }


def _condition_spec(model: ConditionalVAE) -> tf.TensorSpec:
    if model.categorical:
        return tf.TensorSpec((None,), tf.int32, name="y")
    return tf.TensorSpec((None, model.condition_dim), tf.float32, name="y")


@_signatures_for(ConditionalVAE)
def _conditional_signatures(model: ConditionalVAE, decoder: keras.Model) -> dict[str, tuple]:
    """Every signature also takes `y`: int32 labels `(None,)` (categorical) or
    float vectors `(None, condition_dim)`, one row per image / latent / sample,
    or a single row for all of them."""
    images = _image_spec(model)
    latents = tf.TensorSpec((None, model.latent_dim), tf.float32, name="z")
    y_spec = _condition_spec(model)

    def condition(y, rows):
        """y as float vectors `(rows, condition_dim)`."""
        y = _checked(y, y_spec)
        count = tf.shape(y)[0]
        checks = [
            tf.debugging.Assert(
                tf.logical_or(tf.equal(count, 1), tf.equal(count, rows)),
                ["Expected y with one row, or one row per input. Received rows, expected:", count, rows],
            )
        ]
        with tf.control_dependencies(checks):
            vectors = (
                tf.one_hot(_in_range(y, model.condition_dim, "labels y"), model.condition_dim)
                if model.categorical
                else tf.identity(y)
            )
        return tf.broadcast_to(vectors, tf.stack([rows, model.condition_dim]))

    def posterior(x, y):
        x = _checked(x, images)
        y_vec = condition(y, tf.shape(x)[0])
        return model.posterior(model._features(x, y_vec, False)), y_vec

    def decode_params(z, y_vec):
        return decoder(tf.concat([z, y_vec], axis=-1), training=False)

    def decode(z, y):
        z = _checked(z, latents)
        return _decoded(model, decode_params(z, condition(y, tf.shape(z)[0])))

    def encode(x, y):
        (mean, stddev), _ = posterior(x, y)
        return {"mean": mean, "stddev": stddev}

    def sample(num_samples, y):
        count = _num_samples(num_samples)
        z = _fresh_normal(tf.stack([count, model.latent_dim]))
        return {"images": model.likelihood.mean(decode_params(z, condition(y, count)))}

    def reconstruct(x, y):
        (mean, _), y_vec = posterior(x, y)
        return {"mean": model.likelihood.mean(decode_params(mean, y_vec))}

    def elbo(x, y):
        (loc, scale), y_vec = posterior(x, y)
        z = loc + scale * _fresh_normal(tf.shape(loc))
        log_likelihood = model.likelihood.distribution(decode_params(z, y_vec)).log_prob(_checked(x, images))
        return {"elbo": log_likelihood - _sum_per_image(_kl_normal(loc, scale))}

    return {
        "decode": (decode, [latents, y_spec]),
        "encode": (encode, [images, y_spec]),
        "sample": (sample, [_COUNT, y_spec]),
        "reconstruct": (reconstruct, [images, y_spec]),
        "elbo": (elbo, [images, y_spec]),
    }


@_signatures_for(SpatialVAE)
def _spatial_signatures(model: SpatialVAE, decoder: keras.Model) -> dict[str, tuple]:
    """Latents are maps `(None, *model.latent_shape)`: `decode(z)`, `encode(x) -> {mean, stddev}` maps."""
    images = _image_spec(model)
    latents = tf.TensorSpec((None, *model.latent_shape), tf.float32, name="z")

    def posterior(x):
        return model.posterior(model.encoder(x, training=False))

    def decode(z):
        return _decoded(model, decoder(_checked(z, latents), training=False))

    def encode(x):
        mean, stddev = posterior(_checked(x, images))
        return {"mean": mean, "stddev": stddev}

    def sample(num_samples):
        z = _fresh_normal(tf.concat([[_num_samples(num_samples)], model.latent_shape], axis=0))
        return {"images": model.likelihood.mean(decoder(z, training=False))}

    def reconstruct(x):
        mean, _ = posterior(_checked(x, images))
        return {"mean": model.likelihood.mean(decoder(mean, training=False))}

    def elbo(x):
        x = _checked(x, images)
        loc, scale = posterior(x)
        z = loc + scale * _fresh_normal(tf.shape(loc))
        log_likelihood = model.likelihood.distribution(decoder(z, training=False)).log_prob(x)
        return {"elbo": log_likelihood - _sum_per_image(_kl_normal(loc, scale))}

    return {
        "decode": (decode, [latents]),
        "encode": (encode, [images]),
        "sample": (sample, [_COUNT]),
        "reconstruct": (reconstruct, [images]),
        "elbo": (elbo, [images]),
    }


@_signatures_for(VQVAE)
def _vqvae_signatures(model: VQVAE, decoder: keras.Model) -> dict[str, tuple]:
    """Latents are quantised maps `(None, h, w, D)`; also `decode_indices(indices: (None, h, w) int32)`.

    `encode(x) -> {mean, stddev, indices}`: z_q, zeros (a point-mass
    posterior) and the code index map. `sample` draws an index map from the
    PixelCNN prior one position at a time (a `tf.while_loop` of `Multinomial`
    draws) and decodes it. `elbo` is deterministic:
    log p(x|z_q) + log prior(indices).
    """
    images = _image_spec(model)
    height, width, depth = model.latent_shape
    latents = tf.TensorSpec((None, *model.latent_shape), tf.float32, name="z")
    index_spec = tf.TensorSpec((None, height, width), tf.int32, name="indices")
    positions = height * width

    def quantized(x):
        # `VectorQuantizer.nearest_codes` with `tf.argmin`: Keras' argmin adds
        # a BitwiseAnd (for -0.0), which is not a TFLite builtin.
        z_e = model.quantizer.project(model.encoder(x, training=False))
        flat = tf.reshape(z_e, (-1, depth))
        codebook = tf.convert_to_tensor(model.quantizer.codebook)
        distances = (
            tf.reduce_sum(tf.square(flat), axis=1, keepdims=True)
            - 2.0 * tf.matmul(flat, codebook, transpose_b=True)
            + tf.reduce_sum(tf.square(codebook), axis=1)[None, :]
        )
        indices = tf.reshape(tf.argmin(distances, axis=1, output_type=tf.int32), (-1, height, width))
        return indices, model.quantizer.lookup(indices)

    def decode(z):
        return _decoded(model, decoder(_checked(z, latents), training=False))

    def decode_indices(indices):
        indices = _in_range(_checked(indices, index_spec), model.num_codes, "code indices")
        return _decoded(model, decoder(model.quantizer.lookup(indices), training=False))

    def encode(x):
        indices, z_q = quantized(_checked(x, images))
        return {"mean": z_q, "stddev": tf.zeros_like(z_q), "indices": indices}

    def sample(num_samples):
        def draw(position, indices):
            logits = tf.reshape(model.prior_logits(indices), (-1, positions, model.num_codes))
            code = tf.raw_ops.Multinomial(
                logits=tf.gather(logits, position, axis=1), num_samples=1, seed=0, seed2=0, output_dtype=tf.int32
            )
            here = tf.reshape(tf.one_hot(position, positions, dtype=tf.int32), (1, height, width))
            return position + 1, indices * (1 - here) + code[:, :, None] * here

        start = tf.zeros(tf.stack([_num_samples(num_samples), height, width]), tf.int32)
        _, indices = tf.while_loop(lambda position, _: position < positions, draw, (tf.constant(0), start))
        z_q = model.quantizer.lookup(tf.ensure_shape(indices, (None, height, width)))
        return {"images": model.likelihood.mean(decoder(z_q, training=False))}

    def reconstruct(x):
        _, z_q = quantized(_checked(x, images))
        return {"mean": model.likelihood.mean(decoder(z_q, training=False))}

    def elbo(x):
        x = _checked(x, images)
        indices, z_q = quantized(x)
        log_likelihood = model.likelihood.distribution(decoder(z_q, training=False)).log_prob(x)
        return {"elbo": log_likelihood + model.prior_log_prob(indices)}

    return {
        "decode": (decode, [latents]),
        "encode": (encode, [images]),
        "sample": (sample, [_COUNT]),
        "reconstruct": (reconstruct, [images]),
        "elbo": (elbo, [images]),
        "decode_indices": (decode_indices, [index_spec]),
    }


def _archive(model: VAE, signatures=None) -> keras.export.ExportArchive:
    # Nothing is `track`ed by hand: `add_endpoint` keeps exactly the variables
    # the signatures use, so the original transposed-convolution kernels (the
    # serving decoder replaces them) are not stored twice.
    archive = keras.export.ExportArchive()
    functions = signature_functions(model)
    for name in functions if signatures is None else signatures:  # the first is also `serving_default`
        fn, input_signature = functions[name]
        archive.add_endpoint(name, fn, input_signature=input_signature)
    return archive


def _check_signatures(signatures, available=SIGNATURES) -> tuple[str, ...]:
    if isinstance(signatures, str):
        signatures = (signatures,)
    signatures = tuple(signatures)
    unknown = [name for name in signatures if name not in available]
    if not signatures or unknown or len(set(signatures)) != len(signatures):
        raise ValueError(
            f"Expected distinct signature names from {tuple(available)}. Received: signatures={signatures}"
        )
    return signatures


# -------------------------------------------------------------- SavedModel
def saved_model(
    model: VAE, base_dir, name: str = "vae", version: int = 1, overwrite: bool = False, allow_untrained: bool = False
) -> Path:
    """Writes `model` as a SavedModel in the TF Serving layout `base_dir/name/version`.

    The export is written to a hidden temporary folder beside the target and
    renamed into place, so a crash never leaves half an export where TF
    Serving would load it.

    Args:
        model: A trained `keras_vae.VAE` or latent-family model (module docstring).
        base_dir: The TF Serving model base folder (`--model_base_path`'s parent).
        name: The model name (a folder). Defaults to `"vae"`.
        version: The version, a positive integer (a folder). Defaults to 1.
        overwrite: Replace an existing version folder. Defaults to False.
        allow_untrained: Export a model that was never fitted (weights set by
            hand). Defaults to False: `check_exportable`.

    Returns:
        The version folder, `Path(base_dir) / name / str(version)`.

    Raises:
        FileExistsError: If the version folder exists and not `overwrite`.
        ValueError: For an unbuilt or untrained model, or a bad name/version.

    Example:

    >>> import tempfile, keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="gaussian", sigma=0.1)
    >>> folder = kv.export.saved_model(vae, tempfile.mkdtemp(), name="digits", version=2, allow_untrained=True)
    >>> folder.parent.name, folder.name
    ('digits', '2')
    """
    check_exportable(model, allow_untrained)
    version, name = _check_version(version), _check_name(name)
    parent = Path(base_dir) / name
    target = parent / str(version)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists; refusing to overwrite it. Use another version or overwrite=True."
        )
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=parent))
    try:
        _archive(model).write_out(str(staging), verbose=False)
        _replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _replace(source: Path, target: Path) -> None:
    """Renames `source` to `target`, moving an existing `target` aside first."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(source, target)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(source, target)


# ------------------------------------------------------------------ TFLite
def tflite(
    model: VAE,
    path,
    signatures=("decode",),
    quantize: str | None = None,
    overwrite: bool = False,
    allow_untrained: bool = False,
) -> Path:
    """Converts signatures of `model` to a `.tflite` file with builtin ops only.

    The signatures are those of `saved_model` and keep their names and their
    input/output names in the file, so with LiteRT:
    `Interpreter(path).get_signature_runner("decode")(z=z)["mean"]`.

    Args:
        model: A trained `keras_vae.VAE` or latent-family model (module docstring).
        path: The `.tflite` file to write.
        signatures: Names from `signature_names(model)`. Defaults to `("decode",)`.
        quantize: None (float32), `"float16"` (float16 weights) or
            `"dynamic"` (int8 weights, dynamic-range activations).
            Defaults to None.
        overwrite: Replace an existing file. Defaults to False.
        allow_untrained: Export a model that was never fitted (weights set by
            hand). Defaults to False: `check_exportable`.

    Returns:
        The path written.

    Raises:
        ValueError: If a signature needs TensorFlow (Flex) ops that are not
            TFLite builtins; the message names the signature(s) and op(s).
            (None of the library's signatures do: the VQ-VAE's prior
            sampling loop becomes a builtin `WHILE` with `MULTINOMIAL`
            draws. A custom decoder or network layer may.)
        FileExistsError: If `path` exists and not `overwrite`.

    Example:

    >>> import os, tempfile, keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="gaussian", sigma=0.1)
    >>> path = kv.export.tflite(vae, os.path.join(tempfile.mkdtemp(), "decoder.tflite"), allow_untrained=True)
    >>> path.suffix
    '.tflite'
    """
    check_exportable(model, allow_untrained)
    signatures = _check_signatures(signatures, signature_names(model))
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Expected quantize in {QUANTIZATIONS}. Received: quantize={quantize!r}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it. Pass overwrite=True.")
    with tempfile.TemporaryDirectory(prefix="keras_vae_tflite_") as folder:
        _archive(model, signatures).write_out(folder, verbose=False)
        flatbuffer = _convert(folder, signatures, quantize)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        staging.write_bytes(flatbuffer)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def _converter(saved_model_dir: str, signatures, quantize):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=list(signatures))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter


def _convert(saved_model_dir: str, signatures, quantize) -> bytes:
    try:
        return _converter(saved_model_dir, signatures, quantize).convert()
    except Exception as error:  # ConverterError: find which signature needs which ops
        ops = _flex_ops(str(error))
        if not ops:
            raise
        culprits = {}
        for name in signatures:
            try:
                _converter(saved_model_dir, [name], quantize).convert()
            except Exception as single:  # noqa: BLE001 - only to name the culprit
                culprits[name] = _flex_ops(str(single)) or ops
        detail = "; ".join(f"{name}: {', '.join(found)}" for name, found in culprits.items()) or ", ".join(ops)
        raise ValueError(
            f"Cannot convert to TFLite with builtin ops only; these signatures need TensorFlow (Flex) ops, "
            f"which the Python LiteRT runtime cannot run: {detail}. Export other signatures, or replace "
            "those ops (e.g. tf.random.normal instead of keras.random / stateless random ops)."
        ) from None


def _flex_ops(message: str) -> list[str]:
    """The TF op names a converter error says are not TFLite builtins."""
    found = set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message))
    for line in re.findall(r"TF Select ops: ([^\n]+)", message):
        found.update(op.strip() for op in line.split(",") if op.strip())
    return sorted(found)


# ------------------------------------------------------------------ LiteRT
def litert_runner(path, signature: str = "decode", num_threads: int | None = None):
    """Loads one signature of a `.tflite` file with LiteRT, with input checks.

    The raw LiteRT signature runner resizes its inputs to whatever it is
    given, so a wrong shape can run and return garbage (a `(1, 3)` z for a
    2-d latent is read as a `(1, 2)` one plus junk). The returned callable
    checks every input's shape (any batch) and dtype first.

    Args:
        path: A `.tflite` file written by `tflite`.
        signature: The signature to run. Defaults to `"decode"`.
        num_threads: CPU threads for LiteRT. Defaults to LiteRT's choice.

    Returns:
        A function `run(**inputs) -> dict` of NumPy outputs, e.g.
        `run(z=z)["mean"]`.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file has no such signature; when called, if an
            input is missing, unexpected or of the wrong shape or dtype.

    Example:

    >>> import os, tempfile, numpy as np, keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="gaussian", sigma=0.1)
    >>> path = kv.export.tflite(vae, os.path.join(tempfile.mkdtemp(), "decoder.tflite"), allow_untrained=True)
    >>> decode = kv.export.litert_runner(path, "decode")
    >>> decode(z=np.zeros((3, 2), "float32"))["mean"].shape
    (3, 8, 8, 1)
    """
    from ai_edge_litert.interpreter import Interpreter  # the optional [tflite] extra

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No TFLite file at {path}.")
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    available = interpreter.get_signature_list()
    if signature not in available:
        raise ValueError(f"{path} has no signature {signature!r}. It has: {sorted(available)}.")
    runner = interpreter.get_signature_runner(signature)
    details = runner.get_input_details()

    def run(**inputs) -> dict:
        if set(inputs) != set(details):
            raise ValueError(
                f"Signature {signature!r} takes inputs {sorted(details)}. Received: {sorted(inputs)}."
            )
        arrays = {}
        for name, detail in details.items():
            value = np.asarray(inputs[name])
            expected = [int(dim) for dim in detail["shape_signature"]]
            shown = "(" + ", ".join("batch" if dim == -1 else str(dim) for dim in expected) + ")"
            if value.ndim != len(expected) or any(e not in (-1, v) for e, v in zip(expected, value.shape, strict=True)):
                raise ValueError(f"Expected {name} of shape {shown}. Received: {name}.shape={value.shape}")
            dtype = np.dtype(detail["dtype"])
            if value.dtype != dtype and not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise ValueError(f"Expected {name} of dtype {dtype.name}. Received: {value.dtype.name}")
            arrays[name] = value.astype(dtype, copy=False)
        return runner(**arrays)

    return run
