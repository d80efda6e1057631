"""keras_vae.calibration: the data-dependent start of learned sigmas and the refit of the served sigma."""

import keras
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import calibration, experiment, latents
from keras_vae.noise import SeededNoise
from tests.conftest import make_images

X = make_images(32, (8, 8, 1), seed=2)


def build(likelihood, **kwargs):
    keras.utils.set_random_seed(0)
    model = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood=likelihood, seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    return model


def rmse_of_the_first_draw(model, x):
    """By hand: the RMSE of the decoder mean at the draw z = loc + scale * eps the first step makes."""
    eps = SeededNoise(model.seed_generator.state.value).normal((len(x), 2)).numpy()
    loc, scale = (np.asarray(t) for t in model.encode(x))
    mean = np.asarray(model.decode(loc + scale * eps)[0])
    return float(np.sqrt(np.mean((x - mean) ** 2)))


def test_learned_sigma_starts_at_the_first_batchs_rmse_and_its_first_loss_is_the_optimal_one():
    learned = build("learned")
    expected = rmse_of_the_first_draw(learned, X[:16])  # (encode and decode draw no noise)
    first = learned.fit(X, batch_size=16, epochs=1, shuffle=False, verbose=0).history  # lr 0: weights stay
    sigma = float(np.exp(learned.likelihood.log_sigma_scale * learned.likelihood.log_sigma_variable.numpy()))
    assert sigma == pytest.approx(expected, rel=1e-5)
    # The same networks and noise (same seed, same init): the optimal mode's loss on that first batch.
    optimal = build("optimal")
    step = optimal.fit(X[:16], batch_size=16, epochs=1, shuffle=False, verbose=0).history
    learned_first = build("learned").fit(X[:16], batch_size=16, epochs=1, shuffle=False, verbose=0).history
    assert learned_first["loss"][0] == pytest.approx(step["loss"][0], rel=1e-4)
    assert np.isfinite(first["loss"][0])


def test_per_pixel_sigma_starts_with_its_mean_log_sigma_at_the_rmse():
    model = build("per_pixel")
    x = X[:16]
    state = model.seed_generator.state.value
    assert calibration.start(model, {"x": x})
    q = model.posterior_distribution({"x": x})
    params = model.decoder(latents.draw(q, SeededNoise(state)))
    mean = np.asarray(model.likelihood.mean(params))
    log_sigma = np.log(np.asarray(model.likelihood.stddev(params)))
    assert float(np.mean(log_sigma)) == pytest.approx(0.5 * np.log(np.mean((x - mean) ** 2)), abs=2e-2)  # soft clip


def test_the_start_is_saved_runs_once_and_can_be_turned_off(tmp_path):
    model = build("learned")
    model.fit(X, batch_size=16, epochs=1, shuffle=False, verbose=0)
    value = float(model.likelihood.log_sigma_variable.numpy())
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert float(loaded.likelihood.started.numpy()) == 1.0
    assert not calibration.start(loaded, {"x": X[16:]})  # a resumed model does not start again
    loaded.compile(optimizer=keras.optimizers.SGD(0.0))
    loaded.fit(X[16:], batch_size=16, epochs=1, verbose=0)
    assert float(loaded.likelihood.log_sigma_variable.numpy()) == pytest.approx(value)
    paper = build(kv.likelihoods.get("learned", data_dependent_start=False))
    paper.fit(X, batch_size=16, epochs=1, verbose=0)
    assert float(paper.likelihood.log_sigma_variable.numpy()) == 0.0  # sigma 1, as in the paper


@pytest.mark.parametrize("mode", ["optimal", "optimal_per_channel", "optimal_per_image", "learned"])
def test_refit_sets_the_served_sigma_to_the_rmse_over_the_data(mode):
    model = build(mode)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(X, batch_size=8, epochs=2, verbose=0)
    served = calibration.refit_sigma(model, X, batch_size=10)
    squared = (X - np.asarray(model.decode(np.asarray(model.encode(X)[0]))[0])) ** 2  # reconstruction errors
    expected = np.sqrt(squared.mean(axis=(0, 1, 2)) if mode == "optimal_per_channel" else squared.mean())
    likelihood = model.likelihood
    unclipped = (likelihood.log_sigma_scale * likelihood.log_sigma_variable if mode == "learned"
                 else likelihood.optimal_sigma.running_log_sigma())
    np.testing.assert_allclose(np.exp(np.asarray(unclipped)), expected, rtol=1e-4)
    # What decode serves: the same sigma through the soft clip at log sigma = -6.
    clipped = np.exp(np.asarray(model.likelihood.soft_clip(np.log(expected).astype("float32"))))
    np.testing.assert_allclose(np.asarray(model.decode(np.zeros((1, 2), "float32"))[1])[0, 0, 0], clipped, rtol=1e-4)
    assert served == pytest.approx(float(np.mean(clipped)), rel=1e-4)
    for fixed in (kv.Gaussian(sigma=0.5), kv.Bernoulli()):
        assert calibration.refit_sigma(build(fixed), X) is None


def test_refit_rescales_a_per_pixel_sigma_to_the_maximum_likelihood_scale():
    model = build("per_pixel")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(X, batch_size=8, epochs=2, verbose=0)
    mean, before = (np.asarray(t) for t in model.decode(np.asarray(model.encode(X)[0])))
    served = calibration.refit_sigma(model, X, batch_size=10)
    mean_after, after = (np.asarray(t) for t in model.decode(np.asarray(model.encode(X)[0])))
    np.testing.assert_array_equal(mean_after, mean)  # only sigma moves
    standardised = ((X - mean) / after) ** 2
    assert standardised.mean() == pytest.approx(1.0, abs=2e-3)  # by hand: the mean squared z is 1
    # One factor for every pixel (the soft clip at log sigma = -6 bends the smallest sigmas by up to 0.2% here),
    # the closed-form ML scale of the sigmas before.
    ratio = after / before
    np.testing.assert_allclose(ratio, np.median(ratio), rtol=5e-3)
    assert np.median(ratio) == pytest.approx(np.sqrt((((X - mean) / before) ** 2).mean()), rel=2e-3)
    assert served == pytest.approx(float(after.mean()), rel=2e-3)


def test_train_refits_the_served_sigma_and_records_it(tmp_path):
    data = tmp_path / "blobs.npz"
    np.savez(data, x=make_images(60, (8, 8, 1), seed=5), x_test=make_images(20, (8, 8, 1), seed=6))
    config = experiment.RunConfig(dataset=str(data), network="mlp", latent_dim=2, epochs=2, batch_size=20,
                                     out=str(tmp_path / "run"), align_latents="none")
    model, metrics = experiment.train(config, verbose=0)
    x_train = np.load(data)["x"]
    train_rmse = np.sqrt(np.mean((x_train - np.asarray(model.reconstruct(x_train))) ** 2))
    clipped = float(np.exp(np.asarray(model.likelihood.soft_clip(np.float32(np.log(train_rmse))))))
    assert metrics["sigma"] == pytest.approx(clipped, rel=1e-4)  # the refitted sigma is served
    assert metrics["sigma_over_test_rmse"] == pytest.approx(metrics["sigma"] / metrics["test_rmse"])
    assert metrics["test_mse"] == pytest.approx(metrics["test_rmse"] ** 2)


def test_refit_split_holds_images_out_of_training_and_refits_the_served_sigma_on_them(tmp_path):
    data = tmp_path / "blobs.npz"
    np.savez(data, x=make_images(60, (8, 8, 1), seed=5), x_test=make_images(20, (8, 8, 1), seed=6))
    config = experiment.RunConfig(dataset=str(data), network="mlp", latent_dim=2, epochs=2, batch_size=20,
                                  likelihood="learned", refit_split=0.25, out=str(tmp_path / "run"),
                                  align_latents="none")
    model, metrics = experiment.train(config, verbose=0)
    assert (metrics["train_images"], metrics["refit_images"]) == (45, 15)
    held = np.load(data)["x"][np.sort(np.random.default_rng(config.seed).permutation(60)[:15])]
    held_rmse = np.sqrt(np.mean((held - np.asarray(model.reconstruct(held))) ** 2))
    clipped = float(np.exp(np.asarray(model.likelihood.soft_clip(np.float32(np.log(held_rmse))))))
    assert metrics["sigma"] == pytest.approx(clipped, rel=1e-4)  # the learned sigma serves the held-out RMSE
    loaded = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert float(np.asarray(loaded.decode(np.zeros((1, 2), "float32"))[1]).mean()) == pytest.approx(clipped, rel=1e-4)


@pytest.mark.parametrize("settings, message", [
    (dict(likelihood="bernoulli", refit_split=0.1), "--likelihood=bernoulli has none"),
    (dict(refit_split=0.1, refit_sigma=False), "--norefit_sigma is set"),
    (dict(refit_split=0.999), "holds out 60; it needs at least 1 on each side"),
    (dict(refit_split=1.5), "Expected 0 <= --refit_split < 1"),
])
def test_a_refit_split_that_cannot_apply_is_refused_before_training(tmp_path, settings, message):
    data = tmp_path / "blobs.npz"
    np.savez(data, x=make_images(60, (8, 8, 1), seed=5), x_test=make_images(20, (8, 8, 1), seed=6))
    config = experiment.RunConfig(dataset=str(data), network="mlp", latent_dim=2, epochs=1, batch_size=20,
                                  out=str(tmp_path / "run"), align_latents="none", **settings)
    with pytest.raises(ValueError, match=message):
        experiment.train(config, verbose=0)
    assert not (tmp_path / "run").exists()
