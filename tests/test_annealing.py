"""KL schedules are pure functions; KLAnnealing assigns beta every step without retracing."""

import math

import pytest

from keras_vae import annealing
from tests.conftest import make_images, tiny_vae


def test_schedules_values():
    assert annealing.constant(0.3)(10**6) == 0.3
    lin = annealing.linear(10, start=0.2, end=1.2)
    assert [lin(0), lin(5), lin(10), lin(99)] == pytest.approx([0.2, 0.7, 1.2, 1.2])
    cyc = annealing.cyclical(period=8, ramp_fraction=0.25)
    assert [cyc(s) for s in (0, 1, 2, 7, 8, 9)] == pytest.approx([0, 0.5, 1, 1, 0, 0.5])
    sig = annealing.sigmoid(midpoint=50, steepness=0.1)
    assert sig(50) == 0.5 and sig(60) == pytest.approx(1 / (1 + math.exp(-1)))
    assert sig(-10**6) == 0.0 and sig(10**6) == 1.0


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="warmup_steps"):
        annealing.linear(0)
    with pytest.raises(ValueError, match="ramp_fraction"):
        annealing.cyclical(10, ramp_fraction=0.0)
    with pytest.raises(ValueError, match="callable"):
        annealing.KLAnnealing(1.0)


def count_training_traces(epochs: int, callbacks=()) -> tuple[int, list, object]:
    """Trains a tiny VAE and counts how often its training step was traced."""
    vae = tiny_vae(likelihood="gaussian")
    traces, betas = [], []
    original = vae.compute_terms

    def counting(x, training=False):
        traces.append(training)  # Python here runs only while tracing
        return original(x, training=training)

    vae.compute_terms = counting

    class Record(annealing.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            betas.append(float(self.model.beta))

    vae.fit(make_images(32), batch_size=8, epochs=epochs, verbose=0, callbacks=[*callbacks, Record()])
    return traces.count(True), betas, vae


def test_callback_assigns_beta_each_step_without_retracing():
    baseline, _, _ = count_training_traces(epochs=1)
    traces, betas, vae = count_training_traces(epochs=3, callbacks=[annealing.KLAnnealing(annealing.linear(8))])
    # Each of the 12 steps ran with the schedule's beta for that step...
    assert betas == pytest.approx([annealing.linear(8)(step) for step in range(12)])
    assert float(vae.beta) == 1.0
    # ...and the step was traced no more often than without annealing (Keras traces it a fixed number of times).
    assert traces == baseline
