"""The shared test harness of the model contract: one function every family's test calls.

`run_family_test(model, inputs, tmp_path)` checks, for any `keras_vae.VAE`:

- a few `fit` steps run, with finite metrics, and `evaluate` reports the ELBO;
- one ELBO everywhere: with the same noise, the train-step ELBO, `model.elbo`,
  `elbo_with_running_sigma`, `evaluation.elbo`, the `evaluate` command's
  `eval.json` and the SavedModel `elbo` signature agree to 1e-4 relative
  (the model must use a likelihood without a fitted sigma, e.g. a learned one);
- `.keras` save/load gives identical outputs;
- the SavedModel, with seeded noise, gives every signature's outputs equal to
  the model's own hooks with that noise;
- the `evaluate` command writes `eval.json` (IWAE >= ELBO, collapse statistics
  or the reason they are not defined) and its PNGs.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf

import keras_vae as kv
from keras_vae import evaluation, export, latents
from keras_vae.noise import SeededNoise

RTOL = 1e-4
SEED = (11, 0)


def _positional(inputs: dict) -> tuple:
    return tuple(inputs.values())


def fit_a_few_steps(model, inputs: dict, steps: int = 3) -> dict:
    """`fit` for `steps` batches; returns the last epoch's metrics (all finite)."""
    x, *labels = _positional(inputs)
    batch = max(len(x) // steps, 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, *labels, batch_size=batch, epochs=1, shuffle=False, verbose=0).history
    metrics = {name: values[-1] for name, values in history.items()}
    assert {"loss", "elbo", "rec", "kl", "sigma"} <= set(metrics), metrics
    assert all(np.isfinite(value) for value in metrics.values()), metrics
    assert np.isclose(metrics["elbo"], -metrics["rec"] - metrics["kl"], rtol=1e-4, atol=1e-3), metrics
    return metrics


def served_with_seeded_noise(model, tmp_path):
    """The SavedModel of `model`, exported with `SeededNoise(SEED)` for every draw, loaded back."""
    folder = export.saved_model(model, tmp_path / "serving", allow_untrained=True, noise=lambda: SeededNoise(SEED))
    return tf.saved_model.load(str(folder))


def assert_one_elbo_everywhere(model, inputs: dict, tmp_path):
    """The same draw gives the same ELBO in the train step, the model, evaluation, the CLI and serving.

    Returns the loaded SavedModel it compared (`served_with_seeded_noise` of the model after the step),
    for `assert_served_equals_model`."""
    x, *labels = _positional(inputs)
    # The model's noise before the step is SeededNoise(state); set it to SEED.
    model.seed_generator.state.assign(np.array(SEED, model.seed_generator.state.dtype))
    from_model = np.asarray(model.elbo(x, *labels, seed=SEED))
    running = np.asarray(model.elbo_with_running_sigma(x, *labels, seed=SEED))
    np.testing.assert_allclose(running, from_model, rtol=RTOL, atol=1e-3)  # no fitted sigma: the same number

    model.compile(optimizer=keras.optimizers.SGD(0.0))
    model.seed_generator.state.assign(np.array(SEED, model.seed_generator.state.dtype))
    step = model.fit(x, *labels, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history["elbo"][-1]
    np.testing.assert_allclose(step, from_model.mean(), rtol=RTOL)

    np.testing.assert_allclose(evaluation.elbo(model, tuple(inputs.values()), seed=SEED[0]), from_model.mean(),
                               rtol=RTOL)

    served = served_with_seeded_noise(model, tmp_path)
    np.testing.assert_allclose(np.asarray(served.signatures["elbo"](**_named(model, inputs))["elbo"]), from_model,
                               rtol=RTOL, atol=1e-3)

    data = tmp_path / "data.npz"
    np.savez(data, x=x, **({"y": labels[0]} if labels else {}))
    model.save(tmp_path / "model.keras")
    report = evaluation.evaluate_saved_model(
        tmp_path / "model.keras", str(data), tmp_path / "eval", split="all", feature_model="none",
        iwae_samples=64, seed=SEED[0], batch_size=len(x),
    )
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    np.testing.assert_allclose(saved["elbo"], from_model.mean(), rtol=RTOL)
    # IWAE >= ELBO holds in expectation; eval.json holds one-draw estimates of both, so allow for
    # the noise of the ELBO's estimate (3 standard deviations of the batch mean over 8 draws).
    draws = np.stack([np.asarray(model.elbo(x, *labels, seed=(SEED[0] + 1 + i, 0))).mean() for i in range(8)])
    margin = 3 * draws.std(ddof=1) + 1e-3
    assert saved["iwae"] >= saved["elbo"] - margin, (saved["iwae"], saved["elbo"], margin)
    assert saved["kl_estimator"] in ("analytic", "monte_carlo")
    for key in ("kl_per_dim", "active_units", "mutual_information", "marginal_kl"):
        assert key in saved, key
    assert {"samples.png", "reconstructions.png", "kl_per_dim.png"} <= {p.name for p in (tmp_path / "eval").iterdir()}
    np.testing.assert_allclose(report["elbo"], saved["elbo"], rtol=1e-6)
    return served


def _named(model, inputs: dict, first: str = "x") -> dict:
    specs = model.input_specs()
    named = {}
    for name, value in inputs.items():
        dtype = specs[name].dtype
        named[first if name == "x" else name] = tf.constant(np.asarray(value), dtype)
    return named


def assert_saving_round_trip(model, inputs: dict, tmp_path) -> keras.Model:
    """`.keras` save/load: encode, decode, reconstruct and the seeded ELBO are identical."""
    x, *labels = _positional(inputs)
    path = tmp_path / "round_trip.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    for method in ("encode", "reconstruct"):
        for a, b in zip(keras.tree.flatten(getattr(model, method)(x, *labels)),
                        keras.tree.flatten(getattr(loaded, method)(x, *labels)), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.elbo(x, *labels, seed=SEED)),
                               np.asarray(loaded.elbo(x, *labels, seed=SEED)), rtol=1e-6, atol=1e-5)
    return loaded


def assert_served_equals_model(model, inputs: dict, loaded, tmp_path, tflite: bool = True) -> None:
    """Every signature of `loaded`, `served_with_seeded_noise(model, ...)`, equals the model's hooks with
    the same noise; every signature converts to builtin-only TFLite, or fails naming the op."""
    x, *labels = _positional(inputs)
    conditions = {name: value for name, value in inputs.items() if name != "x"}
    assert set(loaded.signatures) >= {*export.SIGNATURES, "serving_default"}

    q = model.posterior_distribution(inputs)
    expected_encode = latents.summary(q)
    served = loaded.signatures["encode"](**_named(model, inputs))
    assert set(served) == set(expected_encode)
    for name, value in expected_encode.items():
        np.testing.assert_allclose(np.asarray(served[name]), np.asarray(value), rtol=1e-5, atol=1e-5)

    z = model.decoder_latent(latents.mode(q))
    mean, stddev = model.decoded(z, conditions, SeededNoise(SEED))
    served = loaded.signatures["decode"](z=z, **_named(model, conditions))
    expected = model.likelihood.served_outputs(mean, stddev)
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(served[name]), np.asarray(value), rtol=1e-5, atol=1e-5)

    served = loaded.signatures["reconstruct"](**_named(model, inputs))["mean"]
    np.testing.assert_allclose(np.asarray(served), np.asarray(model.reconstruct(x, *labels)), rtol=1e-5, atol=1e-5)

    count = 3
    sample_conditions = {name: value[:1] for name, value in conditions.items()}
    noise = SeededNoise(SEED)
    z = latents.draw(model.prior_distribution(sample_conditions), noise, count)
    expected = model.decoded(model.decoder_latent(z), sample_conditions, noise)[0]
    served = loaded.signatures["sample"](num_samples=tf.constant([count]), **_named(model, sample_conditions))
    np.testing.assert_allclose(np.asarray(served["images"]), np.asarray(expected), rtol=1e-5, atol=1e-5)

    if tflite:
        names = export.signature_names(model)
        try:
            path = export.tflite(model, tmp_path / "model.tflite", signatures=names, allow_untrained=True)
        except ValueError as error:  # allowed only with the op named
            assert "TFLite" in str(error) and ":" in str(error), error
            return
        fresh = kv.export.litert_runner(path, "encode")
        np.testing.assert_allclose(fresh(**{k: np.asarray(v) for k, v in _named(model, inputs).items()})["mean"],
                                   np.asarray(expected_encode["mean"]), rtol=1e-4, atol=1e-4)


def run_family_test(model, inputs: dict, tmp_path, tflite: bool = True) -> None:
    """The whole contract check for one model (see the module docstring)."""
    fit_a_few_steps(model, inputs)
    x, *labels = _positional(inputs)
    results = model.evaluate(x, *labels, batch_size=len(x), verbose=0, return_dict=True)
    assert np.isfinite(results["elbo"])
    served = assert_one_elbo_everywhere(model, inputs, tmp_path)  # one export for both checks
    assert_saving_round_trip(model, inputs, tmp_path)
    assert_served_equals_model(model, inputs, served, tmp_path, tflite=tflite)
