"""`train --prior/--posterior/--sampler` (issue 17): the run uses and records the choice, its export samples from
it, and bad choices are one-line errors before any training step."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae import experiment, export, latents, priors, run_config, samplers
from keras_vae.noise import SeededNoise
from tests.conftest import make_images

SEED = (4, 2)


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "blobs.npz"
    np.savez(path, x=make_images(48, (8, 8, 1)))  # 36 train and 12 test images
    return str(path)


def config(tmp_path, npz, **overrides):
    settings = dict(dataset=npz, network="mlp", latent_dim=2, epochs=1, batch_size=16, test_fraction=0.25,
                    out=str(tmp_path / "run"))
    return experiment.RunConfig(**{**settings, **overrides})


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "keras_vae", *args], capture_output=True, text=True, timeout=300)


def test_flag_choices_are_the_library_names():
    assert run_config.PRIOR_NAMES == priors.NAMES
    assert run_config.SAMPLER_NAMES == samplers.NAMES


# flags, then what metrics.json records: prior, posterior, sampler, kl_estimator, and the sizes kept in "flags"
CASES = {
    "mixture": (dict(prior="mixture", prior_components=3),
                ("MixturePrior", "DiagonalGaussian", "none", "monte_carlo"), {"prior_components": 3}),
    "vamp": (dict(prior="vamp", pseudo_inputs=4), ("VampPrior", "DiagonalGaussian", "none", "monte_carlo"),
             {"pseudo_inputs": 4}),
    "iaf": (dict(posterior="iaf", num_flows=2, flow_hidden_units=8),
            ("StandardNormal", "IAFPosterior", "none", "monte_carlo"), {"num_flows": 2, "flow_hidden_units": 8}),
    "gaussian": (dict(sampler="gaussian"), ("StandardNormal", "WhitenedGaussian", "whitening", "analytic"), {}),
    "gaussian_iaf": (dict(sampler="gaussian", posterior="iaf", flow_hidden_units=8),
                     ("StandardNormal", "IAFPosterior", "GaussianMixtureSampler", "monte_carlo"),
                     {"num_flows": 2, "flow_hidden_units": 8}),
    "gmm": (dict(sampler="gmm", sampler_components=2),
            ("StandardNormal", "WhitenedGaussian", "GaussianMixtureSampler", "analytic"), {"sampler_components": 2}),
    "two_stage": (dict(sampler="two_stage", two_stage_units=8, two_stage_epochs=2),
                  ("StandardNormal", "WhitenedGaussian", "TwoStageSampler", "analytic"),
                  {"two_stage_units": 8, "two_stage_epochs": 2}),
}
SIZES = ("prior_components", "pseudo_inputs", "num_flows", "flow_hidden_units", "sampler_components",
         "two_stage_units", "two_stage_epochs")


@pytest.mark.parametrize("case", list(CASES))
def test_each_choice_is_trained_recorded_saved_and_exported(tmp_path, npz, case):
    flags, (prior, posterior, sampler, estimator), sizes = CASES[case]
    model, metrics = experiment.train(config(tmp_path, npz, **flags), verbose=0)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (written["prior"], written["posterior"], written["sampler"], written["kl_estimator"]) == (
        prior, posterior, sampler, estimator)
    for name in ("prior", "posterior", "sampler"):
        assert written["flags"][name] == config(tmp_path, npz, **flags).__dict__[name]
    assert {name: written["flags"][name] for name in SIZES if name in written["flags"]} == sizes  # only the used
    assert np.isfinite(written["test_elbo"])
    if case == "gaussian":  # the whitening fold, nothing fitted besides
        assert model.sampler is None and written["latent_alignment_nats"] > 0
    if case == "gaussian_iaf":
        assert model.sampler.num_components == 1 and written["latent_alignment_nats"] is None

    loaded = keras.models.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    assert type(loaded.sampler).__name__ == (sampler if sampler.endswith("Sampler") else "NoneType")
    assert type(loaded.posterior).__name__ == posterior
    if loaded.sampler is not None:
        loaded.sampler.check_fitted()

    # The exported `sample` draws z from the model's sampler (or its prior) and reloads.
    noise = SeededNoise(SEED)
    z = latents.draw(loaded.sampling_distribution({}), noise, 5)
    expected = np.asarray(loaded.decoded(z, {}, noise)[0])
    folder = export.saved_model(loaded, tmp_path / "serving", noise=lambda: SeededNoise(SEED))
    served = tf.saved_model.load(str(folder)).signatures["sample"](num_samples=tf.constant([5]))["images"]
    assert served.shape == (5, 8, 8, 1)
    np.testing.assert_allclose(np.asarray(served), expected, rtol=1e-4, atol=1e-5)
    if loaded.sampler is not None:  # and not from the prior
        z_prior = latents.draw(loaded.prior_distribution({}), SeededNoise(SEED), 5)
        assert not np.allclose(np.asarray(loaded.decoded(z_prior, {}, SeededNoise(SEED))[0]), expected, atol=1e-3)


def test_cli_trains_exports_and_evaluates_with_a_prior_flow_and_sampler(tmp_path, npz):
    out = tmp_path / "run"
    result = run_cli("train", f"--dataset={npz}", "--network=mlp", "--latent_dim=2", "--epochs=1", "--batch_size=16",
                     "--test_fraction=0.25", "--prior=mixture", "--prior_components=2", "--posterior=iaf",
                     "--flow_hidden_units=8", "--sampler=gmm", "--sampler_components=2", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["prior"], metrics["posterior"], metrics["sampler"], metrics["kl_estimator"]) == (
        "MixturePrior", "IAFPosterior", "GaussianMixtureSampler", "monte_carlo")
    result = run_cli("export", f"--model={out / 'model.keras'}", f"--out={tmp_path / 'serving'}")
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = tf.saved_model.load(str(tmp_path / "serving" / "vae" / "1"))
    images = loaded.signatures["sample"](num_samples=tf.constant([3]))["images"].numpy()
    assert images.shape == (3, 8, 8, 1) and np.all((images >= 0) & (images <= 1))


@pytest.mark.parametrize("flags, message", [
    (dict(prior="mixture", prior_components=0), "positive integer. Received: prior_components=0"),
    (dict(sampler="gmm", sampler_components=-1), "positive integer. Received: sampler_components=-1"),
    (dict(posterior="iaf", model="gumbel"), "--model=gumbel's latent is discrete"),
    (dict(posterior="iaf", model="vqvae"), "--model=vqvae's latent is discrete"),
    (dict(prior="vamp", model="hierarchical"), "applies to --model=vae"),
    (dict(prior="vamp"), "has 36"),  # 500 pseudo-inputs from 36 train images
    (dict(sampler="gmm"), "needs more than 59 train images"),  # 10 components in 2-D: 59 parameters
    (dict(sampler="gaussian", align_latents="center"), "--sampler=gaussian is the whitening fold"),
], ids=["prior_components", "sampler_components", "iaf_gumbel", "iaf_vqvae", "vamp_hierarchical", "pseudo_inputs",
        "gmm_too_few_codes", "gaussian_and_center"])
def test_bad_choices_fail_before_training(tmp_path, npz, flags, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        experiment.train(config(tmp_path, npz, **flags), verbose=0)
    assert not (tmp_path / "run").exists()  # nothing written: it failed before the run started


def test_cli_bad_choices_are_one_line(tmp_path, npz):
    for args, message in [(("--posterior=iaf", "--model=gumbel"), "--model=gumbel's latent is discrete"),
                          (("--prior_components=0",), "--prior_components")]:
        result = run_cli("train", f"--dataset={npz}", "--network=mlp", "--epochs=1", f"--out={tmp_path / 'run'}",
                         *args)
        assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "run").exists()


def test_evaluation_scores_the_samples_of_the_fitted_sampler(tmp_path, npz):
    from keras_vae import evaluation

    model, _ = experiment.train(config(tmp_path, npz, sampler="gmm", sampler_components=2), verbose=0)
    x = make_images(12, (8, 8, 1), seed=1)

    def features(images, training=False):  # stands in for the FID feature model: the images' means, as 2-D features
        images = np.asarray(images)
        return np.stack([images.mean(axis=(1, 2, 3)), images.std(axis=(1, 2, 3))], axis=1)

    results = evaluation.report(model, x, iwae_samples=2, feature_extractor=features, fid_samples=20,
                                dequantized_bits=False)
    assert results["prior_samples_from"] == "GaussianMixtureSampler"
    expected = evaluation.fid(x, evaluation.prior_samples(model, 20, seed=0), features)
    np.testing.assert_allclose(results["fid_prior"], expected, rtol=1e-5)
    samplers.detach(model)
    assert evaluation.report(model, x, iwae_samples=2, feature_extractor=features, fid_samples=20,
                             dequantized_bits=False)["prior_samples_from"] == "prior"


def test_a_family_with_its_own_prior_records_its_distribution():
    from keras_vae import latent_choices, models

    model = models.get("gumbel")((8, 8, 1), network="conv", latent_dim=2, likelihood="optimal")
    described = latent_choices.describe(experiment.RunConfig(model="gumbel"), model, make_images(4, (8, 8, 1)))
    assert described == {"prior": "Independent", "posterior": "GumbelSoftmax", "sampler": "none",
                         "kl_estimator": "analytic"}
