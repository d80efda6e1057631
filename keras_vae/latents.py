"""The latent math written once: reparameterised draws, modes, summaries and per-dimension KLs.

Every model family returns its posterior q(z|x) and its prior p(z) as
`tfd.Distribution`s; these functions act on those objects, whatever family
made them, so the ELBO, IWAE, sampling, evaluation and export need no
family of their own:

- `draw(d, noise, num_samples)`: a reparameterised draw with the noise
  passed in (`keras_vae.noise`): `loc + scale.matvec(eps)` for Gaussians,
  a Gumbel-max one-hot draw for categoricals, the point of a point mass, a
  walk down a `tfd.JointDistributionSequential` (each level drawn given the
  ones above), or the distribution's own `draw(noise, num_samples)` method
  (our distributions, e.g. the VQ-VAE's code prior); a mixture
  (`tfd.MixtureSameFamily`) draws a Gumbel-max component and that
  component's draw, a flow (`tfd.TransformedDistribution`) its bijector at
  its base's draw (TFP's bijector cache then gives `log_prob` at that draw
  without inverting the flow).
- `mode(d)`: the point a deterministic reconstruction decodes.
- `log_prob(d, z)`: the log density, also of a joint's list of levels.
- `kl_per_dimension(q, p, z)`: KL(q || p) per latent dimension, summing to
  `tfd.kl_divergence(q, p)`; split by the chain rule for a lower-triangular
  Gaussian, level by level (given the draw `z`) for a joint, and one
  column from `tfd.kl_divergence` (or a Monte Carlo estimate where TFP has
  no KL) for anything else.
- `standard_normal(shape)`: the prior N(0, I) over latents of `shape`.

Example:

>>> import numpy as np, tensorflow_probability as tfp
>>> from keras_vae.noise import SeededNoise
>>> q = tfp.distributions.MultivariateNormalDiag(np.zeros((2, 3), "float32"), np.ones((2, 3), "float32"))
>>> draw(q, SeededNoise([0, 1])).shape, kl_per_dimension(q, standard_normal((3,))).shape
(TensorShape([2, 3]), TensorShape([2, 3]))
"""

from __future__ import annotations

import inspect

import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae.noise import Noise, gumbel

tfd = tfp.distributions

ANALYTIC = "analytic"
MONTE_CARLO = "monte_carlo"


def standard_normal(shape) -> tfd.Distribution:
    """p(z) = N(0, I) over one latent of `shape` (no batch): `MultivariateNormalDiag` for a vector,
    else `Independent(Normal)` over the whole map."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 1:
        return tfd.MultivariateNormalDiag(loc=tf.zeros(shape), scale_diag=tf.ones(shape))
    return tfd.Independent(tfd.Normal(tf.zeros(shape), tf.ones(shape)), reinterpreted_batch_ndims=len(shape))


def _inner(d):
    return d.distribution if isinstance(d, tfd.Independent) else d


def _levels(joint: tfd.JointDistributionSequential, values):
    """Yields each level's distribution of a sequential joint, given `values` of the levels above."""
    for index, level in enumerate(joint.model):
        if callable(level) and not isinstance(level, tfd.Distribution):
            arity = len(inspect.signature(level).parameters)
            level = level(*list(reversed(values[:index]))[:arity])  # TFP's order: the nearest level first
        yield level


def draw(d, noise: Noise, num_samples=None):
    """A reparameterised draw of `d` from the noise `noise`.

    Args:
        d: A distribution (see the module docstring for the kinds handled).
        noise: A `keras_vae.noise.Noise`.
        num_samples: Draw this many independent samples in front of the
            batch (for a prior with no batch). Defaults to None: one draw.

    Returns:
        A tensor (a list of tensors for a joint distribution).
    """
    if hasattr(d, "draw"):
        return d.draw(noise, num_samples)
    if isinstance(d, tfd.JointDistributionSequential):
        values = []
        for level in _levels(d, values):
            values.append(draw(level, noise, num_samples if not values else None))
        return values
    inner = _inner(d)
    if isinstance(inner, (tfd.MultivariateNormalLinearOperator, tfd.Normal)):
        loc = inner.loc
        shape = tf.concat([[num_samples], tf.shape(loc)], 0) if num_samples is not None else tf.shape(loc)
        eps = noise.normal(shape)
        if isinstance(inner, tfd.Normal):
            return loc + inner.scale * eps
        return loc + inner.scale.matvec(eps)
    if isinstance(inner, tfd.OneHotCategorical):
        logits = inner.logits_parameter()
        shape = tf.concat([[num_samples], tf.shape(logits)], 0) if num_samples is not None else tf.shape(logits)
        scores = logits + gumbel(noise, shape)  # Gumbel-max: an exact categorical draw
        return tf.one_hot(tf.argmax(scores, axis=-1), tf.shape(logits)[-1], dtype=tf.float32)
    if isinstance(inner, tfd.Deterministic):
        loc = inner.loc
        return loc if num_samples is None else tf.repeat(loc[None], num_samples, axis=0)
    if isinstance(inner, tfd.MixtureSameFamily):
        components = draw(inner.components_distribution, noise, num_samples)  # (..., K, *event)
        logits = inner.mixture_distribution.logits_parameter()
        event_rank = len(inner.event_shape)
        scores = logits + gumbel(noise, tf.shape(components)[: tf.rank(components) - event_rank])
        chosen = tf.one_hot(tf.argmax(scores, axis=-1), tf.shape(logits)[-1], dtype=components.dtype)
        return tf.reduce_sum(tf.reshape(chosen, tf.concat([tf.shape(chosen), [1] * event_rank], 0)) * components,
                             axis=-1 - event_rank)
    if _is_flow(inner):
        return inner.bijector.forward(draw(inner.distribution, noise, num_samples))
    raise TypeError(f"keras_vae.latents cannot draw from a {type(d).__name__} with noise passed in; give it a "
                    "`draw(noise, num_samples)` method.")


def log_prob(d, z):
    """`d.log_prob(z)`; a sequential joint is walked level by level with the values `z` (TFP's own
    `log_prob` would first draw an unbatched sample to name the levels)."""
    if isinstance(d, tfd.JointDistributionSequential):
        values = list(z)
        return tf.add_n([level.log_prob(value) for level, value in zip(_levels(d, values), values, strict=True)])
    return d.log_prob(z)


def mode(d):
    """The point a deterministic reconstruction decodes: the mean of a Gaussian, the most probable
    class of a categorical, the point of a point mass, or each level's at the levels above."""
    if hasattr(d, "draw_mode"):
        return d.draw_mode()
    if isinstance(d, tfd.JointDistributionSequential):
        values = []
        for level in _levels(d, values):
            values.append(mode(level))
        return values
    inner = _inner(d)
    if isinstance(inner, tfd.OneHotCategorical):
        logits = inner.logits_parameter()
        return tf.one_hot(tf.argmax(logits, axis=-1), tf.shape(logits)[-1], dtype=tf.float32)
    if isinstance(inner, tfd.Deterministic):
        return inner.loc
    if _is_flow(inner):
        return inner.bijector.forward(mode(inner.distribution))
    return d.mean()


def moments(d) -> tuple:
    """`(mean, stddev)` of `d`'s marginals, or of a categorical's one-hot code (probabilities)."""
    inner = _inner(d)
    if isinstance(inner, tfd.OneHotCategorical):
        probs = inner.probs_parameter()
        return probs, tf.sqrt(probs * (1.0 - probs))
    if isinstance(inner, tfd.Deterministic):
        return inner.loc, tf.zeros_like(inner.loc)
    if isinstance(inner, tfd.MultivariateNormalTriL):
        # Marginal stddevs by summing squares, not `diag_part`: TFLite has no MatrixDiagPart op.
        return inner.loc, tf.sqrt(tf.reduce_sum(tf.square(inner.scale.to_dense()), axis=-1))
    if _is_flow(inner):  # no closed form: the flow of the base's mode, and the base's stddev
        return mode(inner), moments(inner.distribution)[1]
    return d.mean(), d.stddev()


def summary(d) -> dict:
    """The `encode` outputs of a posterior: `{mean, stddev}` (plus `scale_tril` for a correlated one);
    a joint gives its last level's, each level above prefixed by its name, at the levels' modes."""
    if hasattr(d, "summary"):
        return d.summary()
    if isinstance(d, tfd.JointDistributionSequential):
        values, found, outputs = [], [], {}
        for level in _levels(d, values):
            found.append(level)
            values.append(mode(level))
        # Levels are named from the decoder's up: z1 is the last, z2 the one above it, ...
        names = [f"z{len(found) - i}" for i in range(len(found))]
        for name, level in zip(names[:-1], found[:-1], strict=True):
            mean, stddev = moments(level)
            outputs.update({f"mean_{name}": mean, f"stddev_{name}": stddev})
        mean, stddev = moments(found[-1])
        return {"mean": mean, "stddev": stddev, **outputs}
    mean, stddev = moments(d)
    outputs = {"mean": mean, "stddev": stddev}
    if isinstance(_inner(d), tfd.MultivariateNormalTriL):
        outputs["scale_tril"] = _inner(d).scale.to_dense()
    return outputs


def is_gaussian(d) -> bool:
    """Whether `d` is a (diagonal or correlated) Gaussian over one latent."""
    return isinstance(_inner(d), (tfd.MultivariateNormalLinearOperator, tfd.Normal))


def is_standard_normal(d) -> bool:
    """Whether `d` is N(0, I) (checked on its values: call it eagerly)."""
    if not is_gaussian(d) or isinstance(_inner(d), tfd.MultivariateNormalTriL):
        return False
    mean, stddev = d.mean(), d.stddev()
    return bool(tf.reduce_all(tf.equal(mean, 0.0)) and tf.reduce_all(tf.equal(stddev, 1.0)))


def _flat(values):
    return tf.reshape(values, tf.stack([tf.shape(values)[0], -1]))


def kl_per_dimension(q, p, z=None):
    """KL(q || p) per latent dimension, `(batch, ...)` nats, summing to the KL of each image.

    - Gaussians with a diagonal scale (`MultivariateNormalDiag`,
      `Independent(Normal)`) and factorised categoricals: the KL of each
      factor, `tfd.kl_divergence` of the factors.
    - `MultivariateNormalTriL` q against a diagonal p: the chain-rule terms
      `E_q KL(q(z_d | z_<d) || p(z_d)) = log(s_d / T_dd) + (Sigma_dd + (mu_d - m_d)**2) / (2 s_d**2) - 1/2`.
    - `JointDistributionSequential` q and p with the same levels: each
      level's KL given the draw `z` of the levels above, flattened and
      concatenated in level order.
    - Anything else: one column, `tfd.kl_divergence(q, p)` where TFP (or a
      `tfd.RegisterKL` of ours) has it, else the one-sample Monte Carlo
      estimate `q.log_prob(z) - p.log_prob(z)` (see `kl_estimator`).

    Args:
        q: The posterior, batch `(batch,)`.
        p: The prior (any batch that broadcasts).
        z: The draw of q the step decodes (needed for joints and Monte Carlo).

    Returns:
        A tensor `(batch, ...)`; sum it over all but the batch axis for the KL.
    """
    if isinstance(q, tfd.JointDistributionSequential):
        values = list(z)
        parts = []
        for index, (q_level, p_level) in enumerate(zip(_levels(q, values), _levels(p, values), strict=True)):
            parts.append(_flat(kl_per_dimension(q_level, p_level, values[index])))
        return tf.concat(parts, axis=-1)
    q_inner, p_inner = _inner(q), _inner(p)
    if isinstance(q_inner, tfd.MultivariateNormalTriL) and _diagonal_gaussian(p):
        scale_tril = q_inner.scale.to_dense()
        # Diagonals by masking and summing, not `diag_part`: TFLite has no MatrixDiagPart op.
        scale_diag = tf.reduce_sum(scale_tril * tf.eye(scale_tril.shape[-1], dtype=scale_tril.dtype), axis=-1)
        variance = tf.reduce_sum(tf.square(scale_tril), axis=-1)
        prior_scale = p.stddev()
        return (tf.math.log(prior_scale / scale_diag)
                + (variance + tf.square(q_inner.loc - p.mean())) / (2.0 * tf.square(prior_scale)) - 0.5)
    if _diagonal_gaussian(q) and _diagonal_gaussian(p):
        return tfd.kl_divergence(tfd.Normal(q.mean(), q.stddev()), tfd.Normal(p.mean(), p.stddev()))
    if isinstance(q, tfd.Independent) and isinstance(p, tfd.Independent) and type(q_inner) is type(p_inner):
        return tfd.kl_divergence(q_inner, p_inner)
    try:
        return tfd.kl_divergence(q, p)[:, None]
    except NotImplementedError:  # no closed form: the one-sample Monte Carlo estimate at the step's draw
        return (log_prob(q, z) - log_prob(p, z))[:, None]


def _is_flow(d) -> bool:
    """A flow of a base distribution: a `tfd.TransformedDistribution` (which TFP may build as its
    non-composite base class, hence the duck test) that is not one of TFP's Gaussians."""
    return (isinstance(getattr(d, "bijector", None), tfp.bijectors.Bijector)
            and isinstance(getattr(d, "distribution", None), tfd.Distribution)
            and not isinstance(d, tfd.MultivariateNormalLinearOperator))


def _diagonal_gaussian(d) -> bool:
    return isinstance(_inner(d), (tfd.MultivariateNormalDiag, tfd.Normal))


def kl_estimator(q, p) -> str:
    """`"analytic"` when `kl_per_dimension(q, p, z)` is in closed form (Gaussians, factorised
    categoricals, TFP's or a registered KL, or level by level given the draw above), else `"monte_carlo"`."""
    if isinstance(q, tfd.JointDistributionSequential):
        return ANALYTIC
    if (is_gaussian(q) and _diagonal_gaussian(p)) or (
            isinstance(q, tfd.Independent) and isinstance(p, tfd.Independent) and type(_inner(q)) is type(_inner(p))):
        return ANALYTIC
    try:
        tfd.kl_divergence(q, p)
    except NotImplementedError:
        return MONTE_CARLO
    return ANALYTIC
