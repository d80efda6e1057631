"""Noise sources: every random draw of a model goes through one, passed in.

A model never calls a random op of its own. The ELBO, the IWAE weights,
sampling and the exported graphs all take a `Noise` and ask it for standard
normal or uniform tensors, so one draw can be shared by a training step, a
test and a served graph:

- `SeededNoise(seed)`: counter-based draws from a `(2,)` seed with TF's
  stateless ops (`stateless_fold_in` of the call index). The same seed and
  the same sequence of calls give the same noise, eagerly, in a
  `tf.function` and in a SavedModel. Under a `tf.distribute` strategy each
  replica draws the global batch's noise and keeps its own rows, so a
  distributed step uses exactly the single-device draws.
- `FreshNoise()`: the ops of `tf.random.normal` / `tf.random.uniform` with
  seeds (0, 0), new on every call in every process and TFLite builtins: what
  exported graphs use.

Example:

>>> import numpy as np
>>> a = SeededNoise([1, 2]).normal((2, 3))
>>> b = SeededNoise([1, 2]).normal((2, 3))
>>> bool(np.all(a.numpy() == b.numpy()))
True
"""

from __future__ import annotations

import tensorflow as tf

from keras_vae.layers import cross_replica_sum


class Noise:
    """Base class: standard normal and U(0, 1) tensors of a given shape."""

    def normal(self, shape):
        """A standard normal tensor of `shape` (float32)."""
        raise NotImplementedError

    def uniform(self, shape):
        """A U(0, 1) tensor of `shape` (float32)."""
        raise NotImplementedError


class FreshNoise(Noise):
    """Fresh draws on every call: `RandomStandardNormal` / `RandomUniform` with seeds (0, 0).

    `tf.random.normal` would bake in op seeds derived from a global seed
    (`keras.utils.set_random_seed`), so every restarted server would replay
    the same draws; seeds (0, 0) ask TensorFlow and LiteRT for random seeds.
    """

    def normal(self, shape):
        return tf.raw_ops.RandomStandardNormal(shape=shape, dtype=tf.float32, seed=0, seed2=0)

    def uniform(self, shape):
        return tf.raw_ops.RandomUniform(shape=shape, dtype=tf.float32, seed=0, seed2=0)


class SeededNoise(Noise):
    """Counter-based stateless draws from `seed`, sliced per replica under a strategy.

    Args:
        seed: A `(2,)` integer seed (a tensor or a list), e.g. the value of
            `keras.random.SeedGenerator.next()`.
    """

    def __init__(self, seed):
        self.seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        self.count = 0

    def _next_seed(self):
        seed = tf.random.experimental.stateless_fold_in(self.seed, self.count)
        self.count += 1
        return seed

    def _draw(self, shape, sampler):
        seed = self._next_seed()
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return sampler(shape, seed=seed)
        # This replica's rows of the global batch's draw (the seed is the same on every replica).
        shape = tf.unstack(tf.convert_to_tensor(shape, tf.int32)) if not isinstance(shape, (list, tuple)) else shape
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        local = tf.cast(shape[0], tf.float32)
        counts = tf.cast(tf.round(cross_replica_sum(tf.one_hot(replica, context.num_replicas_in_sync) * local)),
                         tf.int32)
        offset = tf.reduce_sum(counts[:replica])
        full = sampler(tf.stack([tf.reduce_sum(counts), *shape[1:]]), seed=seed)
        rows = full[offset : offset + shape[0]]
        return tf.ensure_shape(rows, [d if isinstance(d, int) else None for d in shape])

    def normal(self, shape):
        return self._draw(shape, tf.random.stateless_normal)

    def uniform(self, shape):
        return self._draw(shape, tf.random.stateless_uniform)


def gumbel_from_uniform(uniform):
    """Standard Gumbel noise `-log(-log(u))` from U(0, 1) noise `u` (guarded against log 0)."""
    return -tf.math.log(-tf.math.log(uniform + 1e-20) + 1e-20)


def gumbel(noise: Noise, shape):
    """Standard Gumbel noise of `shape`, from `noise`'s uniforms."""
    return gumbel_from_uniform(noise.uniform(shape))
