"""In-graph checks of served and trained tensors: shapes and batch sizes, counts, finite values, pixels.

Each function returns its tensor behind a `tf.debugging.Assert`, so a bad
input fails in the graph (a Python call, TF Serving or a `tf.data` step) with
a message that names what was expected, instead of garbage or an abort. The
TFLite converter drops these checks; `keras_vae.export.litert_runner` checks
LiteRT calls in Python.

Example:

>>> import tensorflow as tf
>>> spec = tf.TensorSpec((None, 2), tf.float32, name="z")
>>> served = tf.function(lambda z: checked_shape(z, spec, max_batch=4))
>>> served(tf.zeros((3, 2))).shape
TensorShape([3, 2])
>>> try:
...     served(tf.zeros((5, 2)))
... except tf.errors.InvalidArgumentError as error:
...     print("Expected z with a batch of 1 to 4" in error.message)
True
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

COUNT_SPEC = tf.TensorSpec((1,), tf.int32, name="num_samples")


def checked_shape(tensor, spec: tf.TensorSpec, max_batch: int | None = None):
    """Adds an in-graph check that `tensor` has the shape of `spec` (any batch, 1 to `max_batch` when given).

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
    checks = [check]
    if max_batch is not None and expected and expected[0] == -1:
        with tf.control_dependencies([check]):
            checks.append(tf.debugging.Assert(
                tf.logical_and(padded[0] >= 1, padded[0] <= max_batch),
                [f"Expected {spec.name} with a batch of 1 to {max_batch} (max_batch of the export). Received batch:",
                 padded[0]],
            ))
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def checked_finite(tensor, name: str):
    """Adds an in-graph check that every value of `tensor` is finite."""
    finite = tf.math.is_finite(tensor)
    check = tf.debugging.Assert(tf.reduce_all(finite), [
        f"Expected finite values of {name}. Non-finite values received:",
        tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int32)),
    ])
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def checked_count(num_samples, max_batch: int):
    """The `n` of a `num_samples = [n]` input, checked in-graph (shape `(1,)`, 1 <= n <= max_batch)."""
    num_samples = checked_shape(num_samples, COUNT_SPEC)
    positive = tf.debugging.Assert(
        tf.logical_and(num_samples[0] > 0, num_samples[0] <= max_batch),
        [f"Expected num_samples to be [n] with n >= 1 and n <= {max_batch} (max_batch of the export). Received:",
         num_samples],
    )
    with tf.control_dependencies([positive]):
        return tf.identity(num_samples[0])


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
