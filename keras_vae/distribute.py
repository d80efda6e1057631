"""Scale settings for a run: the `tf.distribute` strategy and the mixed-precision policy, by name.

We do not write our own distribution: `model.fit` under a strategy's scope
does it, and `VAE.train_step` keeps the loss, the gradients and the optimal
sigma equal to the single-device ones for the same global batch.

- `"none"`: the default strategy (one device).
- `"mirrored"`: `tf.distribute.MirroredStrategy` over the local GPUs (or CPU).
- `"multiworker"`: `tf.distribute.MultiWorkerMirroredStrategy`; every worker
  runs the same command with its own `TF_CONFIG`, e.g.
  `{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}`.
  Create it first thing in the program, before any other TF op.

Example:

>>> strategy = get_strategy("none")
>>> strategy.num_replicas_in_sync
1
>>> set_precision("none")
'float32'
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("none", "mirrored", "multiworker")
PRECISIONS = ("none", "mixed_float16", "mixed_bfloat16")


def get_strategy(name: str = "none") -> tf.distribute.Strategy:
    """Returns the `tf.distribute` strategy called `name`.

    Args:
        name: One of `STRATEGIES`. Defaults to `"none"`.

    Returns:
        A strategy; build and compile the model inside `strategy.scope()`.

    Raises:
        ValueError: If `name` is unknown, or `"multiworker"` is asked for
            without a valid `TF_CONFIG` naming a worker cluster.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Expected distribute in {STRATEGIES}. Received: distribute={name!r}")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        raw = os.environ.get("TF_CONFIG")
        try:
            config = json.loads(raw) if raw else None
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {raw!r}") from error
        if not config or "worker" not in config.get("cluster", {}) or "task" not in config:
            raise ValueError(
                "distribute='multiworker' needs TF_CONFIG with a 'cluster' of 'worker' addresses and this "
                f"process's 'task'. Received: TF_CONFIG={raw!r}"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def set_precision(name: str = "none") -> str:
    """Sets Keras' global dtype policy for models built from now on.

    `"mixed_float16"` and `"mixed_bfloat16"` make the networks compute in
    low precision with float32 variables; the VAE keeps its posterior,
    likelihood, KL and sigma statistics in float32, and `compile` wraps the
    optimizer in a `LossScaleOptimizer` under `"mixed_float16"`.

    Args:
        name: One of `PRECISIONS`. Defaults to `"none"` (float32).

    Returns:
        The name of the policy now in force.
    """
    if name not in PRECISIONS:
        raise ValueError(f"Expected mixed_precision in {PRECISIONS}. Received: mixed_precision={name!r}")
    keras.mixed_precision.set_global_policy("float32" if name == "none" else name)
    return keras.mixed_precision.global_policy().name
