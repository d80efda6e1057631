"""Flow posteriors: an inverse autoregressive flow (IAF) on a diagonal Gaussian encoder head.

With `(mu, s, h) = head(features)`, the posterior q(z|x) is the law of

    z = f_T(... f_1(eps0)),   eps0 ~ N(mu, diag(s**2)),
    f_t(e) = (e - m_t(e; h)) * exp(-a_t(e; h)),

where `(m_t, a_t)` are autoregressive in `e` (output d sees inputs < d) and
conditioned on the context h. Each `f_t` is TFP's
`tfb.Invert(tfb.MaskedAutoregressiveFlow(...))`: the IAF direction of a MAF
(one pass of the network to draw, one to score a draw), and successive flows
reverse the order of the dimensions (`tfb.Permute`; z keeps the base's order). The log-determinant is
TFP's, `-sum_t sum_d a_t(...)`; `log q(z|x)` of the draw the step decodes is
read from TFP's bijector cache (no sequential inversion). The last layer of
every network starts at zero, so an untrained IAF is exactly its base head.

The shift-and-log-scale network is a masked MLP (MADE, Germain et al. 2015,
arXiv:1502.03509) written as a Keras 3 layer: TFP's `tfb.AutoregressiveNetwork`
is a `tf_keras` layer, whose weights a Keras 3 model neither trains nor saves.

References: Kingma et al. 2016, "Improved variational inference with inverse
autoregressive flow", arXiv:1606.04934.

Example:

>>> import numpy as np
>>> head = IAFPosterior(latent_dim=3, num_flows=2, hidden_units=8)
>>> q = head.distribution(np.zeros((2, 5), "float32"))
>>> q.event_shape.as_list(), q.batch_shape.as_list()
([3], [2])
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow_probability as tfp
from keras import ops

from keras_vae.checks import positive_int
from keras_vae.posteriors import DiagonalGaussian

tfb = tfp.bijectors
tfd = tfp.distributions


def autoregressive_masks(num_inputs: int, hidden_units: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MADE masks of two hidden layers: input -> hidden `(D, H)`, hidden -> hidden `(H, H)`, hidden -> output `(H, D)`.

    Input d has degree d (1-based); hidden unit k has degree m_k, cycling
    over 1 .. D - 1 (all 0, the context only, when D = 1). A connection is
    kept from input d to unit k when m_k >= d, from unit k to unit k' when
    m_k' >= m_k, and from unit k to output d when d > m_k; so output d
    depends on inputs < d only.

    Example:

    >>> to_hidden, hidden, to_output = autoregressive_masks(3, 4)
    >>> (to_hidden @ hidden @ to_output > 0).astype(int).tolist()  # input d reaches output d' only if d < d'
    [[0, 1, 1], [0, 0, 1], [0, 0, 0]]
    """
    inputs = np.arange(1, num_inputs + 1)
    hidden = np.arange(hidden_units) % max(num_inputs - 1, 1) + 1 if num_inputs > 1 else np.zeros(hidden_units)
    to_hidden = (hidden[None, :] >= inputs[:, None]).astype("float32")
    hidden_to_hidden = (hidden[None, :] >= hidden[:, None]).astype("float32")
    to_output = (inputs[None, :] > hidden[:, None]).astype("float32")
    return to_hidden, hidden_to_hidden, to_output


@keras.saving.register_keras_serializable(package="keras_vae")
class MaskedAutoregressiveNetwork(keras.layers.Layer):
    """The shift and log-scale of one autoregressive flow: a masked MLP of z with a context.

    `shift_d, log_scale_d = g_d(z_<d, h)`: two masked hidden layers (ELU)
    with the context added to the first, and a masked output layer that
    starts at zero (the flow starts as the identity).

    Args:
        latent_dim: Size of z.
        hidden_units: Width of the hidden layers.

    Call arguments:
        z: `(..., latent_dim)`.
        context: `(..., context_units)`, broadcasting with z's batch.

    Returns:
        `(shift, log_scale)`, each `(..., latent_dim)`.
    """

    def __init__(self, latent_dim: int, hidden_units: int, **kwargs):
        super().__init__(**kwargs)
        positive_int("latent_dim", latent_dim)
        positive_int("hidden_units", hidden_units)
        self.latent_dim = latent_dim
        self.hidden_units = hidden_units
        to_hidden, hidden_to_hidden, to_output = autoregressive_masks(latent_dim, hidden_units)
        self._masks = (to_hidden, hidden_to_hidden, np.concatenate([to_output, to_output], axis=1))

    def build(self, z_shape, context_shape=None):
        dim, units = self.latent_dim, self.hidden_units
        self.kernels = [
            self.add_weight(shape=(dim, units), initializer="glorot_uniform", name="kernel_in"),
            self.add_weight(shape=(units, units), initializer="glorot_uniform", name="kernel_hidden"),
            self.add_weight(shape=(units, 2 * dim), initializer="zeros", name="kernel_out"),
        ]
        self.biases = [
            self.add_weight(shape=(units,), initializer="zeros", name="bias_in"),
            self.add_weight(shape=(units,), initializer="zeros", name="bias_hidden"),
            self.add_weight(shape=(2 * dim,), initializer="zeros", name="bias_out"),
        ]
        self.context = keras.layers.Dense(units, use_bias=False, name="context")
        self.context.build(context_shape)

    def call(self, z, context):
        masks = [ops.convert_to_tensor(mask) for mask in self._masks]
        hidden = ops.matmul(z, self.kernels[0] * masks[0]) + self.biases[0] + self.context(context)
        hidden = ops.elu(hidden)
        hidden = ops.elu(ops.matmul(hidden, self.kernels[1] * masks[1]) + self.biases[1])
        out = ops.matmul(hidden, self.kernels[2] * masks[2]) + self.biases[2]
        shift, log_scale = ops.split(out, 2, axis=-1)
        return shift, log_scale

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "hidden_units": self.hidden_units}


@keras.saving.register_keras_serializable(package="keras_vae")
class IAFPosterior(keras.layers.Layer):
    """q(z|x): an inverse autoregressive flow on a diagonal Gaussian head (module docstring).

    Args:
        latent_dim: Size of z.
        num_flows: Number of autoregressive flows T (>= 1). Defaults to 2.
        hidden_units: Width of each flow's network and of the context h.
            Defaults to 320.
        base: The Gaussian head of eps0, a `DiagonalGaussian` (or its config).
            Defaults to `DiagonalGaussian(latent_dim)`.

    Call arguments:
        features: Encoder features, `(batch, num_features)`.

    Returns:
        `(loc, scale, context)` of the base Gaussian and the flows' context.

    Raises:
        ValueError: For non-positive sizes, or a base head that is not a
            Gaussian (a flow needs a continuous latent: a discrete one-hot
            code, e.g. `keras_vae.models.gumbel.GumbelSoftmax`, has none).
    """

    def __init__(self, latent_dim: int, num_flows: int = 2, hidden_units: int = 320, base=None, **kwargs):
        super().__init__(**kwargs)
        positive_int("latent_dim", latent_dim)
        positive_int("num_flows", num_flows)
        positive_int("hidden_units", hidden_units)
        if isinstance(base, dict):
            base = keras.saving.deserialize_keras_object(base)
        base = DiagonalGaussian(latent_dim) if base is None else base
        if not isinstance(base, DiagonalGaussian):
            raise ValueError(
                "An inverse autoregressive flow transforms a continuous (Gaussian) latent; it cannot act on a "
                f"discrete one. Expected a DiagonalGaussian base head. Received: base={type(base).__name__}"
            )
        if base.latent_dim != latent_dim:
            raise ValueError(f"The base head has latent_dim={base.latent_dim}, but latent_dim={latent_dim}.")
        self.latent_dim = latent_dim
        self.num_flows = num_flows
        self.hidden_units = hidden_units
        self.base = base
        self.context = keras.layers.Dense(hidden_units, activation="elu", name="context")
        self.networks = [MaskedAutoregressiveNetwork(latent_dim, hidden_units, name=f"flow_{t}")
                         for t in range(num_flows)]

    def build(self, features_shape):
        if not self.base.built:
            self.base.build(features_shape)
        self.context.build(features_shape)
        context_shape = (features_shape[0], self.hidden_units)
        for network in self.networks:
            network.build((None, self.latent_dim), context_shape)

    def call(self, features):
        loc, scale = self.base(features)
        return loc, scale, self.context(features)

    def compute_output_shape(self, features_shape):
        shape = (features_shape[0], self.latent_dim)
        return shape, shape, (features_shape[0], self.hidden_units)

    def bijector(self, context) -> tfb.Bijector:
        """The flow eps0 -> z given the context `(batch, hidden_units)`: a `tfb.Chain` of inverted MAFs.

        A draw eps0 `(..., batch, latent_dim)` broadcasts with the context
        (e.g. `(num_samples, batch, latent_dim)`).
        """
        steps = []
        reverse = tfb.Permute(permutation=list(reversed(range(self.latent_dim))))
        for index, network in enumerate(self.networks):
            if index > 0:
                steps.append(reverse)

            def shift_and_log_scale(z, network=network):
                return network(z, context)

            steps.append(tfb.Invert(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=shift_and_log_scale)))
        if self.num_flows % 2 == 0:
            steps.append(reverse)  # back to the base's order: an untrained flow is the identity
        return tfb.Chain(list(reversed(steps)))  # tfb.Chain applies its last bijector first

    def distribution(self, features) -> tfd.TransformedDistribution:
        """q(z|x) as a `tfd.TransformedDistribution` of the base `tfd.MultivariateNormalDiag`."""
        loc, scale, context = self(features)
        return tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc, scale), self.bijector(context))

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_flows": self.num_flows,
            "hidden_units": self.hidden_units,
            "base": keras.saving.serialize_keras_object(self.base),
        }
