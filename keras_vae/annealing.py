"""KL annealing: pure schedule functions `step -> beta`, and a callback that feeds them to a model.

A schedule is any callable from the training step (an int, counted from 0) to
a float. `KLAnnealing` assigns `schedule(step)` to the model's non-trainable
`beta` variable before every batch, so the compiled train step never retraces.

Example:

>>> schedule = linear(warmup_steps=100)
>>> [schedule(0), schedule(50), schedule(100), schedule(1000)]
[0.0, 0.5, 1.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras

Schedule = Callable[[int], float]


def _check_positive(value, name: str) -> None:
    if not value > 0:
        raise ValueError(f"Expected {name} > 0. Received: {name}={value}")


def constant(value: float = 1.0) -> Schedule:
    """beta = `value` at every step.

    Example:

    >>> constant(4.0)(123)
    4.0
    """
    value = float(value)
    return lambda step: value


def linear(warmup_steps: int, start: float = 0.0, end: float = 1.0) -> Schedule:
    """beta rises linearly from `start` to `end` over `warmup_steps`, then stays at `end`.

    Args:
        warmup_steps: Steps of the warm-up.
        start: beta at step 0. Defaults to 0.0.
        end: beta from `warmup_steps` on. Defaults to 1.0.

    References:
        Bowman et al. Generating Sentences from a Continuous Space. arXiv:1511.06349.
    """
    _check_positive(warmup_steps, "warmup_steps")
    return lambda step: float(start + (end - start) * min(max(step, 0) / warmup_steps, 1.0))


def cyclical(period: int, ramp_fraction: float = 0.5, start: float = 0.0, end: float = 1.0) -> Schedule:
    """beta ramps linearly from `start` to `end` during the first `ramp_fraction` of each
    `period`-step cycle, then holds `end` for the rest of the cycle.

    References:
        Fu et al. Cyclical Annealing Schedule. arXiv:1903.10145.

    Example:

    >>> s = cyclical(period=10, ramp_fraction=0.5)
    >>> [s(0), s(5), s(9), s(10), s(12)]
    [0.0, 1.0, 1.0, 0.0, 0.4]
    """
    _check_positive(period, "period")
    if not 0.0 < ramp_fraction <= 1.0:
        raise ValueError(f"Expected 0 < ramp_fraction <= 1. Received: ramp_fraction={ramp_fraction}")
    ramp_steps = period * ramp_fraction

    def schedule(step: int) -> float:
        position = max(step, 0) % period
        return float(start + (end - start) * min(position / ramp_steps, 1.0))

    return schedule


def exponential(rate: float, start: float = 1.0, end: float = 0.5) -> Schedule:
    """value = max(end, start * exp(-rate * step)): the Gumbel-softmax temperature schedule.

    Decays from `start` towards `end` and stops there (Jang et al. use
    `max(0.5, exp(-r * t))` with r of 1e-5 to 1e-4). With `end > start` it
    rises instead: value = min(end, start * exp(rate * step)).

    References:
        Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax.
        ICLR 2017. arXiv:1611.01144.

    Example:

    >>> s = exponential(rate=0.01)
    >>> [round(s(0), 3), round(s(50), 3), s(1000)]
    [1.0, 0.607, 0.5]
    """
    _check_positive(rate, "rate")
    _check_positive(start, "start")
    if end >= start:
        return lambda step: float(min(end, start * math.exp(rate * max(step, 0))))
    return lambda step: float(max(end, start * math.exp(-rate * max(step, 0))))


def sigmoid(midpoint: int, steepness: float = 0.01, start: float = 0.0, end: float = 1.0) -> Schedule:
    """beta = start + (end - start) * sigmoid(steepness * (step - midpoint)).

    Example:

    >>> sigmoid(midpoint=100)(100)
    0.5
    """
    _check_positive(steepness, "steepness")

    def schedule(step: int) -> float:
        exponent = -steepness * (step - midpoint)
        fraction = 0.0 if exponent > 700 else 1.0 / (1.0 + math.exp(exponent))
        return float(start + (end - start) * fraction)

    return schedule


class KLAnnealing(keras.callbacks.Callback):
    """Sets `model.beta = schedule(step)` before every training batch.

    The step is the optimizer's iteration count, so a resumed run (e.g. with
    `BackupAndRestore`) continues the schedule where it stopped. beta is a
    variable, so the compiled train step is traced once.

    Args:
        schedule: A callable `step -> beta`, e.g. `linear(warmup_steps=5000)`.

    Example:

    >>> callback = KLAnnealing(linear(warmup_steps=1000))
    """

    def __init__(self, schedule: Schedule):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"Expected a callable schedule step -> beta. Received: {schedule!r}")
        self.schedule = schedule

    def _assign(self) -> None:
        if not hasattr(self.model, "beta"):
            raise ValueError(f"KLAnnealing needs a model with a `beta` variable; {type(self.model).__name__} has none.")
        step = int(self.model.optimizer.iterations.numpy())
        self.model.beta.assign(self.schedule(step))

    def on_train_begin(self, logs=None):
        self._assign()

    def on_train_batch_begin(self, batch, logs=None):
        self._assign()


class TemperatureAnnealing(keras.callbacks.Callback):
    """Sets `model.temperature = schedule(step)` before every training batch.

    Like `KLAnnealing`, for models with a non-trainable `temperature`
    variable (the Gumbel-softmax VAE).

    Args:
        schedule: A callable `step -> temperature`, e.g. `exponential(rate=1e-4)`.

    Example:

    >>> callback = TemperatureAnnealing(exponential(rate=1e-4, end=0.5))
    """

    def __init__(self, schedule: Schedule):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"Expected a callable schedule step -> temperature. Received: {schedule!r}")
        self.schedule = schedule

    def _assign(self) -> None:
        if not hasattr(self.model, "temperature"):
            raise ValueError(
                "TemperatureAnnealing needs a model with a `temperature` variable; "
                f"{type(self.model).__name__} has none."
            )
        temperature = self.schedule(int(self.model.optimizer.iterations.numpy()))
        if not temperature > 0:
            raise ValueError(f"The schedule gave a temperature <= 0: {temperature}")
        self.model.temperature.assign(temperature)

    def on_train_begin(self, logs=None):
        self._assign()

    def on_train_batch_begin(self, batch, logs=None):
        self._assign()
