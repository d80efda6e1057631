"""`SequenceVAE`: stochastic video prediction with a learned prior (SVG-LP) and any keras_vae likelihood.

A video is split into `context_frames` frames x_<c that the model conditions
on and the future x_c..x_{T-1} it predicts. With h = the frame encoder,

    posterior  q(z_t | x_<=t)   an LSTM over h(x_0), ..., h(x_t)
    prior      p(z_t | x_<t)    an LSTM over h(x_0), ..., h(x_{t-1})
    likelihood p(x_t | z_t, x_<t): an LSTM frame predictor over (h(x_{t-1}), z_t)
               (z = 0 during the context), then the frame decoder with skip
               connections from the last context frame, then any
               `keras_vae.likelihoods` layer per frame.

In the model contract the inputs are `{"x": future, "context": context}`
(`condition_specs()` names the context; `{"x": video}` or a video batch is
split into the two), the latent is `(T - c, latent_dim)` and the ELBO is

    sum_t E_q log p(x_t | z_<=t, x_<t) - sum_t KL(q(z_t | x_<=t) || p(z_t | x_<t))

summed over pixels and predicted frames (nats per video; divide by T - c for
nats per frame), written once in the base `VAE`: `beta`, KL annealing, free
bits and every sigma mode work unchanged. Shared sigmas are one sigma over
all predicted frames (optimal sigma: the MSE of the batch's predicted frames).
Training is teacher forced (the predictor and the prior read the true
previous frame); `decode`, `sample` and `predict` feed back the model's own
frames (the decoder means), with z from the given latents or drawn from the
learned prior step by step.

References:
    Denton, Fergus. Stochastic Video Generation with a Learned Prior.
    ICML 2018. arXiv:1802.07687.
    Rybkin, Daniilidis, Levine. Simple and Effective VAE Training with
    Calibrated Decoders. ICML 2021. arXiv:2006.13202.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from keras_vae.checks import positive_int
from keras_vae.models.vae import VAE, build, checked_pixels
from keras_vae.noise import FreshNoise, Noise
from keras_vae.video import validate_videos

tfd = tfp.distributions

MIN_SCALE = 1e-4


# ------------------------------------------------------------------ layers
@keras.saving.register_keras_serializable(package="keras_vae")
class RecurrentHead(keras.layers.Layer):
    """Dense embedding -> LSTM cell -> Dense output, over a sequence or one step at a time.

    Args:
        units: LSTM units (and embedding size).
        output_dim: Size of each output.
        output_activation: Activation of the output layer. Defaults to None.

    Call arguments:
        inputs: `(batch, time, features)`.

    Returns:
        `(batch, time, output_dim)`, the LSTM run from a zero state.

    Example:

    >>> import numpy as np
    >>> head = RecurrentHead(8, 3)
    >>> tuple(head(np.zeros((2, 5, 4), "float32")).shape)
    (2, 5, 3)
    """

    def __init__(self, units: int, output_dim: int, output_activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.output_dim = int(units), int(output_dim)
        self.output_activation = output_activation
        self.embed = keras.layers.Dense(self.units, name="embed")
        self.rnn = keras.layers.RNN(keras.layers.LSTMCell(self.units), return_sequences=True, name="lstm")
        self.head = keras.layers.Dense(self.output_dim, activation=output_activation, name="out")

    def build(self, input_shape):
        self.embed.build((None, input_shape[-1]))
        self.rnn.build((None, None, self.units))
        self.head.build((None, self.units))

    def call(self, inputs):
        return self.head(self.rnn(self.embed(inputs)))

    def zero_state(self, batch):
        zeros = tf.zeros(tf.stack([batch, self.units]))
        return [zeros, zeros]

    def step(self, inputs, states):
        """One step: `(outputs (batch, output_dim), states)`."""
        hidden, states = self.rnn.cell(self.embed(inputs), states)
        return self.head(hidden), list(states)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "output_dim": self.output_dim,
                "output_activation": self.output_activation}


def _gaussian(params) -> tuple:
    loc, raw = tf.split(params, 2, axis=-1)
    return loc, tf.nn.softplus(raw) + MIN_SCALE


def _over_steps(loc, scale) -> tfd.Distribution:
    """`Independent(Normal)` with batch `(batch,)` and event `(steps, latent_dim)`."""
    return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=2)


# ---------------------------------------------------------------- networks
def _norm(channels: int, name: str) -> keras.layers.Layer:
    """Group normalization (4 groups) after every hidden convolution, where SVG's DCGAN frame networks
    have batch normalization: it keeps activations bounded as theirs does, without batch statistics, so
    training and inference compute one ELBO. Without it the decoder's logits diverge in the first Adam
    steps and the sigmoid mean saturates at 0, where its gradients vanish (black frames;
    benchmarks/results/sequence.md)."""
    return keras.layers.GroupNormalization(groups=math.gcd(int(channels), 4), name=name)


def frame_encoder(frame_shape, filters: int = 32, feature_dim: int = 128, name: str = "frame_encoder") -> keras.Model:
    """SVG's DCGAN-style frame encoder: three stride-2 convolutions (group-normalised), then h(x) in [-1, 1].

    Args:
        frame_shape: `(H, W, C)`, H and W divisible by 8.
        filters: Filters of the first convolution (doubled twice). Defaults to 32.
        feature_dim: Size of h(x). Defaults to 128.

    Returns:
        A functional model from frames to `[h (feature_dim,), skip1, skip2, skip3]`
        (the feature maps at 1/2, 1/4 and 1/8 resolution, for the decoder's skips).
    """
    height, width, _ = frame_shape
    if height % 8 or width % 8:
        raise ValueError(f"Expected frame height and width divisible by 8. Received: frame_shape={tuple(frame_shape)}")
    frames = keras.Input(frame_shape, name="frame")
    skips, h = [], frames
    for level in range(3):
        h = keras.layers.Conv2D(filters * 2**level, 4, strides=2, padding="same", name=f"down{level}")(h)
        h = keras.layers.LeakyReLU(0.2)(_norm(filters * 2**level, f"down{level}_norm")(h))
        skips.append(h)
    features = keras.layers.Dense(feature_dim, activation="tanh", name="features")(keras.layers.Flatten()(h))
    return keras.Model(frames, [features, *skips], name=name)


def frame_decoder(frame_shape, filters: int = 32, feature_dim: int = 128, params_per_channel: int = 1,
                  name: str = "frame_decoder") -> keras.Model:
    """The frame decoder: from h to the likelihood's parameters, concatenating the encoder's skips at each scale.

    Returns:
        A functional model from `[h (feature_dim,), skip1, skip2, skip3]` to
        `(H, W, C * params_per_channel)`.
    """
    height, width, channels = frame_shape
    if height % 8 or width % 8:
        raise ValueError(f"Expected frame height and width divisible by 8. Received: frame_shape={tuple(frame_shape)}")
    features = keras.Input((feature_dim,), name="features")
    skips = [keras.Input((height // 2 ** (k + 1), width // 2 ** (k + 1), filters * 2**k), name=f"skip{k}")
             for k in range(3)]
    h = keras.layers.Dense((height // 8) * (width // 8) * filters * 4, name="project")(features)
    h = keras.layers.Reshape((height // 8, width // 8, filters * 4))(h)
    h = keras.layers.LeakyReLU(0.2)(_norm(filters * 4, "project_norm")(h))
    for level in (2, 1, 0):
        h = keras.layers.Concatenate()([h, skips[level]])
        maps = filters * 2 ** max(level - 1, 0)
        h = keras.layers.Conv2D(maps, 3, padding="same", name=f"conv{level}")(h)
        h = keras.layers.UpSampling2D(2)(keras.layers.LeakyReLU(0.2)(_norm(maps, f"conv{level}_norm")(h)))
    params = keras.layers.Conv2D(channels * params_per_channel, 3, padding="same", name="params")(h)
    return keras.Model([features, *skips], params, name=name)


# ------------------------------------------------------------ distributions
class _PerVideo(tfd.Distribution):
    """A float32 distribution with batch `(B,)`, one per video, and no parameters of its own."""

    def __init__(self, reparameterization_type, parameters: dict, name: str):
        super().__init__(dtype=tf.float32, reparameterization_type=reparameterization_type, validate_args=False,
                         allow_nan_stats=True, parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _batch_shape(self):
        return tf.TensorShape([None])


class Frames(_PerVideo):
    """Videos of independent frames: a per-frame distribution with batch `(B * T,)` (video-major)
    seen as one with batch `(B,)` and event `(T, H, W, C)`; `log_prob` sums over the frames."""

    def __init__(self, per_frame: tfd.Distribution, steps, name: str = "Frames"):
        parameters = dict(locals())
        self.per_frame, self.steps = per_frame, steps
        super().__init__(per_frame.reparameterization_type, parameters, name)

    def _event_shape(self):
        return tf.TensorShape([None, *self.per_frame.event_shape])

    def _videos(self, frames):
        return tf.reshape(frames, tf.concat([[-1, self.steps], tf.shape(frames)[1:]], 0))

    def _log_prob(self, x):
        flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))
        return tf.reduce_sum(tf.reshape(self.per_frame.log_prob(flat), (-1, self.steps)), axis=-1)

    def _mean(self):
        return self._videos(self.per_frame.mean())

    def _stddev(self):
        return self._videos(self.per_frame.stddev())


# ------------------------------------------------------------------ the prior
class RolloutPrior(_PerVideo):
    """The learned prior without the future: z drawn from p(z_t | x_<t) step by step, each
    x_t the decoder mean at z_t (the model's own frames), for `num_future` steps.

    Only `draw(noise, num_samples)` is defined (what `sample` and the exported
    `sample` call); with the future frames, `prior_distribution` gives the
    teacher-forced prior instead, which has a density.
    """

    def __init__(self, model: SequenceVAE, context, num_future, name: str = "RolloutPrior"):
        parameters = dict(locals())
        self.model, self.context, self.num_future = model, context, num_future
        super().__init__(tfd.FULLY_REPARAMETERIZED, parameters, name)

    def _event_shape(self):
        return tf.TensorShape([None, self.model.latent_dim])

    def draw(self, noise, num_samples=None):
        """Latents `(num_samples * batch, num_future, latent_dim)`, draw-major."""
        context = self.context if num_samples is None else _repeat(self.context, num_samples)
        return self.model.rollout(context, self.num_future, noise=noise)[1]


def _repeat(value, times):
    """`(batch, ...)` -> `(times * batch, ...)`, draw-major (the base VAE's order)."""
    return tf.tile(value, tf.concat([[times], tf.ones([tf.rank(value) - 1], tf.int32)], 0))


# ------------------------------------------------------------------ the model
@keras.saving.register_keras_serializable(package="keras_vae")
class SequenceVAE(VAE):
    """SVG-LP: a recurrent posterior, a learned recurrent prior and a recurrent frame predictor.

    Args:
        encoder: A frame encoder, a functional model from frames `(H, W, C)`
            to `[h, *skips]` (`frame_encoder`).
        decoder: A frame decoder from `[h_hat, *skips]` to the likelihood's
            parameters `(H, W, C * params_per_channel)` (`frame_decoder`).
        latent_dim: Size of each z_t.
        context_frames: Frames the model conditions on. Defaults to 5.
        future_frames: Frames `sample` draws (training and scoring take any
            number). Defaults to 10.
        hidden_units: Units of the three LSTMs. Defaults to 128.
        likelihood, beta, free_bits, seed: As in `VAE`.

    Example:

    >>> import keras, numpy as np, keras_vae as kv
    >>> model = build_sequence_vae((16, 16, 1), context_frames=2, future_frames=3, latent_dim=2,
    ...                            filters=4, feature_dim=8, hidden_units=8, seed=0)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> videos = kv.video.moving_mnist("train", num_sequences=4, num_frames=5, frame_size=16, num_digits=1)
    >>> history = model.fit(videos, batch_size=2, epochs=1, verbose=0)
    >>> model.predict(videos[:1, :2], num_future=4, num_samples=3).shape
    TensorShape([1, 3, 4, 16, 16, 1])
    """

    latent_choices = ()  # a latent per frame with a learned recurrent prior of its own

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        latent_dim: int,
        context_frames: int = 5,
        future_frames: int = 10,
        hidden_units: int = 128,
        likelihood="optimal",
        beta: float = 1.0,
        free_bits: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        for name, value in (("context_frames", context_frames), ("future_frames", future_frames),
                            ("hidden_units", hidden_units), ("latent_dim", latent_dim)):
            positive_int(name, value)
        try:
            feature_dim = int(encoder.output_shape[0][-1])
        except (AttributeError, TypeError, ValueError, IndexError) as error:
            raise ValueError("SequenceVAE needs a frame encoder with outputs [h, *skips] (see frame_encoder).") \
                from error
        self.context_frames, self.future_frames = context_frames, future_frames
        self.hidden_units, self.feature_dim = hidden_units, feature_dim
        posterior = RecurrentHead(hidden_units, 2 * latent_dim, name="posterior")
        posterior.build((None, None, feature_dim))
        prior = RecurrentHead(hidden_units, 2 * latent_dim, name="prior")
        prior.build((None, None, feature_dim))
        predictor = RecurrentHead(hidden_units, feature_dim, output_activation="tanh", name="predictor")
        predictor.build((None, None, feature_dim + latent_dim))
        self.prior_head, self.predictor = prior, predictor  # before the base builds (and locks) the model
        super().__init__(encoder, decoder, latent_dim, likelihood, beta, free_bits, posterior, seed, **kwargs)

    def _check_decoder_input(self, decoder_input_shape, image_shape) -> None:
        shapes = decoder_input_shape if isinstance(decoder_input_shape, list) else [decoder_input_shape]
        encoder_skips = [tuple(shape[1:]) for shape in self.encoder.output_shape[1:]]
        if tuple(shapes[0][1:]) != (self.feature_dim,) or [tuple(s[1:]) for s in shapes[1:]] != encoder_skips:
            raise ValueError(f"The frame decoder takes inputs {[tuple(s[1:]) for s in shapes]}, but the frame encoder "
                             f"gives h of size {self.feature_dim} and skips {encoder_skips}: expected "
                             f"{[(self.feature_dim,), *encoder_skips]}.")

    @classmethod
    def networks_for(cls, input_shape, network: str, params_per_channel: int, latent_dim: int = 10,
                     filters: int = 32, feature_dim: int = 128, **arguments) -> dict:
        """The constructor arguments `build` makes: `frame_encoder` and `frame_decoder` (`network` must be
        `"conv"`) for frames `input_shape` (or videos `(T, H, W, C)`), plus `arguments`."""
        if network != "conv":
            raise ValueError(f"SequenceVAE uses the 'conv' frame networks. Received: network={network!r}")
        if len(input_shape) == 4:  # a video's shape (frames, H, W, C), as the CLI passes: its frames
            input_shape = tuple(input_shape[1:])
        return {"encoder": frame_encoder(input_shape, filters, feature_dim),
                "decoder": frame_decoder(input_shape, filters, feature_dim, params_per_channel),
                "latent_dim": latent_dim, **arguments}

    # ------------------------------------------------------------ specs
    @property
    def latent_shape(self) -> tuple:
        """`(steps, latent_dim)`: one z_t per predicted frame (any number of steps)."""
        return (None, self.latent_dim)

    def condition_specs(self) -> dict[str, tf.TensorSpec]:
        """`context`: the frames the model conditions on, `(None, context_frames, H, W, C)`."""
        return {"context": tf.TensorSpec((None, self.context_frames, *self.image_shape), tf.float32, name="context")}

    def input_specs(self) -> dict[str, tf.TensorSpec]:
        """`x`: the future frames `(None, None, H, W, C)`, then the context."""
        return {"x": tf.TensorSpec((None, None, *self.image_shape), tf.float32, name="x"), **self.condition_specs()}

    # ------------------------------------------------------------ inputs
    def split(self, videos) -> dict:
        """`{"x": future, "context": first context_frames frames}` of videos `(B, T, H, W, C)`."""
        videos = ops.convert_to_tensor(videos, "float32")
        return {"x": videos[:, self.context_frames :], "context": videos[:, : self.context_frames]}

    def as_inputs(self, inputs, *conditions) -> dict:
        """An inputs dict: `{"x": future, "context": ...}` as given, or a whole video (dict `{"x": video}`,
        or a video batch without a context) split into the two."""
        if isinstance(inputs, dict):
            return inputs if "context" in inputs or "x" not in inputs else self.split(inputs["x"])
        if isinstance(inputs, (tuple, list)) and not conditions:
            inputs, *conditions = inputs
        if not conditions:
            return self.split(inputs)
        return super().as_inputs(inputs, *conditions)

    def _check_video(self, x, min_frames: int, name: str, max_frames: int | None = None):
        if isinstance(x, np.ndarray):
            validate_videos(x, self.image_shape, min_frames, name=name)
        elif len(x.shape) != 5 or tuple(x.shape[2:]) != self.image_shape:
            raise ValueError(f"Expected {name} of shape (batch, frames, {', '.join(map(str, self.image_shape))}). "
                             f"Received: {name}.shape={tuple(x.shape)}")
        elif x.shape[1] is not None and x.shape[1] < min_frames:
            raise ValueError(f"{name} has {x.shape[1]} frames, but the model needs at least {min_frames}.")
        if max_frames is not None and x.shape[1] is not None and x.shape[1] > max_frames:
            raise ValueError(f"{name} has {x.shape[1]} frames, but the model was trained with {max_frames} context "
                             "frames.")
        return ops.convert_to_tensor(x, "float32")

    def _checked_inputs(self, x, conditions) -> dict:
        if not conditions:
            return self.split(self._check_video(x, self.context_frames + 1, "x"))
        (context,) = conditions if len(conditions) == 1 else self._conditions(conditions).values()
        context = self._check_video(context, self.context_frames, "context", self.context_frames)
        return {"x": self._check_video(x, 1, "x"), "context": context}

    def _checked_latent(self, z):
        z = ops.convert_to_tensor(z, "float32")
        if len(z.shape) != 3 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"Expected z of shape (batch, steps, {self.latent_dim}). "
                             f"Received: z.shape={tuple(z.shape)}")
        return z

    def _step_inputs(self, data) -> dict:
        """A training batch: videos (split here) or `(future, context)` pairs."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            long_enough = tf.debugging.Assert(
                tf.shape(x)[1] > self.context_frames,
                [f"Expected videos of at least {self.context_frames + 1} frames (context + 1). Received shape:",
                 tf.shape(x)])
            with tf.control_dependencies([long_enough]):
                return self.split(checked_pixels(x))
        return {"x": checked_pixels(x), "context": checked_pixels(y)}

    def _check_labels(self, x, y, method: str) -> None:
        """Videos need no labels: without a context they are split (see `as_inputs`)."""

    def _check_data(self, x, name: str):
        if isinstance(x, np.ndarray):
            validate_videos(x, self.image_shape, self.context_frames + 1, name=name)
            self.likelihood.validate(x.reshape(-1, *self.image_shape))
        elif isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            spec = spec[0] if isinstance(spec, tuple) else spec
            if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 5 or tuple(spec.shape[2:]) != self.image_shape:
                raise ValueError(f"Expected a dataset of video batches (batch, frames, "
                                 f"{', '.join(map(str, self.image_shape))}). Received elements {spec} in {name}.")
            frames = spec.shape[1]
            if frames is not None and not isinstance(x.element_spec, tuple) and frames < self.context_frames + 1:
                raise ValueError(f"{name} has {frames} frames per video, but the model needs at least "
                                 f"{self.context_frames + 1} (context frames + 1).")
            if not spec.dtype.is_floating:
                raise ValueError(f"Expected float frames in [0, 1]; {name} has dtype {spec.dtype.name}.")

    # ------------------------------------------------------------ features
    def _encode_frames(self, frames, training: bool = False):
        """`h` of frames `(B, T, H, W, C)` as `(B, T, feature_dim)` and the skips of the last frame."""
        shape = tf.shape(frames)
        outputs = self.encoder(tf.reshape(frames, tf.concat([[-1], shape[2:]], 0)), training=training)
        features = tf.reshape(outputs[0], tf.stack([shape[0], shape[1], self.feature_dim]))
        skips = []
        for skip in outputs[1:]:
            skip = tf.reshape(skip, tf.concat([shape[:2], tf.shape(skip)[1:]], 0))
            skips.append(skip[:, -1])
        return features, skips

    def features(self, inputs, training: bool = False):
        """`(h of context + future (B, T, feature_dim), skips of the last context frame)`, once per
        `compute_terms` (the posterior, the prior and the likelihood share it)."""
        cache = self.__dict__.get("_feature_cache")
        x, context = inputs["x"], inputs["context"]
        if cache and cache[0] is x and cache[1] is context and cache[2] == training:
            return cache[3]
        context = ops.convert_to_tensor(context, "float32")
        future_h, _ = self._encode_frames(ops.convert_to_tensor(x, "float32"), training)
        context_h, skips = self._encode_frames(context, training)
        result = (tf.concat([context_h, future_h], axis=1), skips)
        if cache is not None:
            self.__dict__["_feature_cache"] = (inputs["x"], inputs["context"], training, result)
        return result

    def compute_terms(self, inputs, noise: Noise | None = None, training: bool = False, fit_sigma: bool = True):
        self.__dict__["_feature_cache"] = ()
        try:
            return super().compute_terms(inputs, noise, training, fit_sigma)
        finally:
            self.__dict__["_feature_cache"] = None

    def log_importance_weights(self, inputs, num_samples: int, noise: Noise | None = None):
        self.__dict__["_feature_cache"] = ()
        try:
            return super().log_importance_weights(inputs, num_samples, noise)
        finally:
            self.__dict__["_feature_cache"] = None

    # ------------------------------------------------ the contract: distributions
    def posterior_distribution(self, inputs, training: bool = False):
        """q(z_t | x_<=t) for the predicted steps: batch `(B,)`, event `(T - c, latent_dim)`."""
        inputs = self.as_inputs(inputs)
        h, _ = self.features(inputs, training)
        return _over_steps(*_gaussian(self.posterior(h, training=training)[:, self.context_frames :]))

    def prior_distribution(self, inputs=None, training: bool = False):
        """p(z_t | x_<t): teacher forced given the future `x`; else a `RolloutPrior` of `future_frames` steps."""
        if inputs is None or "context" not in inputs:
            raise ValueError("SequenceVAE's prior is conditioned on the context frames: pass {'context': frames}.")
        if "x" not in inputs:
            return RolloutPrior(self, ops.convert_to_tensor(inputs["context"], "float32"), self.future_frames)
        h, _ = self.features(inputs, training)
        return _over_steps(*_gaussian(self.prior_head(h[:, :-1], training=training)[:, self.context_frames - 1 :]))

    def likelihood_distribution(self, z, inputs, training: bool = False, fit_sigma: bool = False):
        """p(x_c.. | z, x_<c): the likelihood layer per frame, batch `(B,)`, event `(T - c, H, W, C)`."""
        params = self.decoder_params(z, inputs, training)
        shape = tf.shape(params)
        flat = tf.reshape(params, tf.concat([[-1], shape[2:]], 0))
        x = inputs.get("x") if fit_sigma else None
        if x is not None:
            x = tf.reshape(ops.convert_to_tensor(x, "float32"), tf.concat([[-1], tf.shape(x)[2:]], 0))
        return Frames(self.scoring_likelihood.distribution(flat, x, training=training), shape[1])

    def decoder_params(self, z, inputs, training: bool = False):
        """The decoder's parameters of every predicted frame, `(B, steps, H, W, C * k)`: teacher
        forced when `inputs` has the future `x`, else from the model's own frames (`rollout`)."""
        if "x" not in inputs:
            return self.rollout(self._context(inputs, tf.shape(z)[0]), tf.shape(z)[1], z=z)[2]
        h, skips = self.features(inputs, training)
        batch, steps = tf.shape(z)[0], tf.shape(z)[1]
        padded = tf.concat([tf.zeros(tf.stack([batch, self.context_frames - 1, self.latent_dim])), z], axis=1)
        predicted = self.predictor(tf.concat([h[:, :-1], padded], axis=-1), training=training)
        predicted = predicted[:, self.context_frames - 1 :]
        return self._decode_features(predicted, skips, batch, steps, training)

    def _decode_features(self, predicted, skips, batch, steps, training=False):
        flat = tf.reshape(predicted, (-1, self.feature_dim))
        tiled = [tf.repeat(skip, steps, axis=0) for skip in skips]
        params = self.decoder_network([flat, *tiled], training=training)
        return tf.reshape(params, tf.concat([tf.stack([batch, steps]), tf.shape(params)[1:]], 0))

    def _context(self, inputs, rows):
        """The context, one row broadcast to `rows`, or tiled draw-major to `rows = k * batch`."""
        if "context" not in inputs:
            raise ValueError("SequenceVAE decodes given the context frames: pass the context after z.")
        context = ops.convert_to_tensor(inputs["context"], "float32")
        return _repeat(context, rows // tf.shape(context)[0])

    # ------------------------------------------------------------ generation
    def rollout(self, context, num_future, z=None, noise: Noise | None = None):
        """Generates `num_future` frames after `context`, feeding back the decoder means.

        Args:
            context: `(B, c, H, W, C)`, 1 <= c <= context_frames.
            num_future: Steps (an int or a scalar tensor).
            z: Latents `(B, num_future, latent_dim)`; None draws them from
                the learned prior with `noise`.
            noise: The noise of the prior draws. Defaults to the model's.

        Returns:
            `(frames (B, n, H, W, C), z (B, n, latent_dim), params (B, n, H, W, C * k))`.
        """
        context = ops.convert_to_tensor(context, "float32")
        batch, num_future = tf.shape(context)[0], tf.convert_to_tensor(num_future, tf.int32)
        h, skips = self._encode_frames(context)
        prior_states, predictor_states = self.prior_head.zero_state(batch), self.predictor.zero_state(batch)
        no_z = tf.zeros(tf.stack([batch, self.latent_dim]))
        for step in range(context.shape[1] - 1):  # warm up on the context (z = 0 in the predictor)
            _, prior_states = self.prior_head.step(h[:, step], prior_states)
            _, predictor_states = self.predictor.step(tf.concat([h[:, step], no_z], -1), predictor_states)
        if z is None:
            eps = (noise or self.noise()).normal(tf.stack([batch, num_future, self.latent_dim]))
        params_shape = (*self.image_shape[:2], self.decoder.output_shape[-1])
        frame_shape = self.image_shape

        def body(step, previous, prior_states, predictor_states, frames, latents, all_params):
            prior_params, prior_states = self.prior_head.step(previous, prior_states)
            if z is None:
                loc, scale = _gaussian(prior_params)
                z_t = loc + scale * tf.gather(eps, step, axis=1)
            else:
                z_t = tf.gather(z, step, axis=1)
            predicted, predictor_states = self.predictor.step(tf.concat([previous, z_t], -1), predictor_states)
            params = self.decoder_network([predicted, *skips])
            frame = self.likelihood.mean(params)
            here = tf.one_hot(step, num_future)
            frames += here[None, :, None, None, None] * frame[:, None]
            all_params += here[None, :, None, None, None] * params[:, None]
            latents += here[None, :, None] * z_t[:, None]
            previous = self.encoder(frame)[0]
            return step + 1, previous, prior_states, predictor_states, frames, latents, all_params

        start = (tf.constant(0), h[:, -1], prior_states, predictor_states,
                 tf.zeros(tf.concat([tf.stack([batch, num_future]), frame_shape], 0)),
                 tf.zeros(tf.stack([batch, num_future, self.latent_dim])),
                 tf.zeros(tf.concat([tf.stack([batch, num_future]), params_shape], 0)))
        _, _, _, _, frames, latents, all_params = tf.while_loop(lambda step, *_: step < num_future, body, start)
        return (tf.ensure_shape(frames, (None, None, *frame_shape)),
                tf.ensure_shape(latents, (None, None, self.latent_dim)),
                tf.ensure_shape(all_params, (None, None, *params_shape)))

    def predict(self, context, num_future: int, num_samples: int = 1, noise: Noise | None = None):
        """Sampled futures: `num_samples` rollouts of `num_future` frames from the learned prior.

        (This replaces Keras' `Model.predict`, which has no meaning for this model.)

        Args:
            context: Frames `(B, c, H, W, C)`, 1 <= c <= context_frames.
            num_future: Frames to generate.
            num_samples: Futures per video. Defaults to 1.
            noise: The noise of the draws. Defaults to the model's (fresh each call).

        Returns:
            Decoder means `(B, num_samples, num_future, H, W, C)`.
        """
        positive_int("num_samples", num_samples)
        positive_int("num_future", num_future)
        context = self._check_video(context, 1, "context", self.context_frames)
        frames = self.rollout(_repeat(context, num_samples), num_future, noise=noise)[0]
        frames = tf.reshape(frames, (num_samples, -1, num_future, *self.image_shape))
        return tf.transpose(frames, (1, 0, 2, 3, 4, 5))

    def extra_signatures(self, decoded_outputs, checked) -> dict:
        """`predict(context, num_future: (1,) int32) -> {frames}`: one sampled future per context,
        the recurrent loop in the graph, fresh noise every call."""
        context_spec = self.condition_specs()["context"]
        count_spec = tf.TensorSpec((1,), tf.int32, name="num_future")

        def predict(context, num_future):
            context, num_future = checked(context, context_spec), checked(num_future, count_spec)
            positive = tf.debugging.Assert(num_future[0] > 0, ["Expected num_future = [n], n >= 1:", num_future])
            with tf.control_dependencies([positive]):
                return {"frames": self.rollout(context, tf.identity(num_future[0]), noise=FreshNoise())[0]}

        return {"predict": (predict, [context_spec, count_spec])}

    # -------------------------------------------- hooks of train and evaluate (keras_vae.video_runs)
    @property
    def num_frames(self) -> int:
        """Frames of the videos the model was built for: `context_frames + future_frames`."""
        return self.context_frames + self.future_frames

    def run_metrics(self, x_test, batch_size: int = 128) -> dict:
        """`train`'s test numbers, per predicted frame (`keras_vae.video_runs.run_metrics`)."""
        from keras_vae import video_runs

        return video_runs.run_metrics(self, x_test, batch_size)

    def run_figures(self, x_test, seed: int = 0) -> dict:
        """`train`'s pictures: prediction strips and a GIF (`keras_vae.video_runs.run_figures`)."""
        from keras_vae import video_runs

        return video_runs.run_figures(self, x_test, seed)

    def evaluation_report(self, x, batch_size: int = 100, seed: int = 0, num_samples: int = 100) -> tuple:
        """`evaluate`'s report: ELBO and KL per frame, best-of-N SSIM/PSNR per step
        (`keras_vae.video_runs.evaluation_report`)."""
        from keras_vae import video_runs

        return video_runs.evaluation_report(self, x, batch_size, seed, num_samples)

    def sample(self, num_samples: int, context=None):
        """Futures of `future_frames` frames from the learned prior: `(num_samples * B, future_frames, H, W, C)`
        (draw-major). `predict` gives any length, shaped per video."""
        if context is None:
            raise ValueError("SequenceVAE samples futures of context frames: sample(num_samples, context).")
        context = self._check_video(context, 1, "context", self.context_frames)
        return super().sample(num_samples, context)


def build_sequence_vae(input_shape, **arguments) -> SequenceVAE:
    """Builds a `SequenceVAE` (SVG-LP) for frames of `input_shape` (see `keras_vae.models.vae.build`):
    `latent_dim` (default 10), `filters` (32), `feature_dim` (128) of the frame networks, and the
    constructor's `context_frames`, `future_frames`, `hidden_units`, `beta`, `free_bits`, `seed`.

    Example:

    >>> build_sequence_vae((32, 32, 1), likelihood="learned").latent_shape
    (None, 10)
    """
    return build(SequenceVAE, input_shape, **arguments)
