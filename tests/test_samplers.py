"""Post-hoc samplers (keras_vae.samplers): moments of the codes, bad input, save/load, export and TFLite."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import evaluation, export, latents, samplers
from keras_vae.noise import SeededNoise
from tests.conftest import make_images

X = make_images(64, (8, 8, 1), seed=3)
SEED = (5, 1)


def _correlated_codes(count, seed=0):
    rng = np.random.default_rng(seed)
    mixing = np.array([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.2, 2.0]])
    centres = np.where(rng.uniform(size=(count, 1)) < 0.3, [[3.0, -1.0, 0.0]], [[-1.0, 2.0, 1.0]])
    return centres + rng.normal(size=(count, 3)) @ mixing.T


def _draws(sampler, count=40_000):
    return latents.draw(sampler.distribution(), SeededNoise([7, 7]), count).numpy().astype("float64")


def test_gaussian_mixture_reproduces_the_moments_of_its_codes():
    codes = _correlated_codes(4000)
    sampler = samplers.GaussianMixtureSampler(3, num_components=2, seed=0).fit(codes)
    draws = _draws(sampler)
    np.testing.assert_allclose(draws.mean(axis=0), codes.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(np.cov(draws.T), np.cov(codes.T), atol=0.1)
    weights = np.sort(np.exp(sampler.logits.numpy()))
    np.testing.assert_allclose(weights, [0.3, 0.7], atol=0.03)  # the two clusters, found by EM


def test_two_stage_reproduces_the_moments_of_its_codes():
    codes = _correlated_codes(2000, seed=1)
    sampler = samplers.TwoStageSampler(3, hidden_units=64, epochs=40, seed=0).fit(codes)
    draws = _draws(sampler, 20_000)
    scale = codes.std(axis=0)
    np.testing.assert_allclose(draws.mean(axis=0) / scale, codes.mean(axis=0) / scale, atol=0.15)
    np.testing.assert_allclose(np.cov(draws.T) / np.outer(scale, scale), np.cov(codes.T) / np.outer(scale, scale),
                               atol=0.2)


def test_an_unfitted_mixture_sampler_is_the_standard_normal():
    p = samplers.GaussianMixtureSampler(2, num_components=3).distribution()
    np.testing.assert_allclose(p.mean().numpy(), [0.0, 0.0])
    np.testing.assert_allclose(p.covariance().numpy(), np.eye(2), atol=1e-6)


def test_too_few_or_bad_codes_raise():
    with pytest.raises(ValueError, match="estimates 29 parameters.*Received 29 codes"):
        samplers.GaussianMixtureSampler(3, num_components=3).fit(np.zeros((29, 3)))
    with pytest.raises(ValueError, match=r"codes of shape \(num_codes, 3\)"):
        samplers.GaussianMixtureSampler(3, num_components=1).fit(np.zeros((100, 4)))
    with pytest.raises(ValueError, match="NaN"):
        samplers.GaussianMixtureSampler(3, num_components=1).fit(np.full((100, 3), np.nan))
    with pytest.raises(ValueError, match="TwoStageSampler estimates 9 parameters"):
        samplers.TwoStageSampler(3).fit(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="num_components"):
        samplers.GaussianMixtureSampler(3, num_components=0)
    vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2)
    with pytest.raises(ValueError, match="estimates 65 parameters"):  # 64 images, 11 components of 2-d
        samplers.fit(vae, samplers.GaussianMixtureSampler(2, num_components=11), X)
    with pytest.raises(ValueError, match="latent_dim=3"):
        samplers.fit(vae, samplers.GaussianMixtureSampler(3, num_components=1), X)


@keras.saving.register_keras_serializable(package="keras_vae_tests")
class NoSamplerVAE(kv.VAE):
    def __init__(self, encoder, decoder, latent_dim, **kwargs):
        super().__init__(encoder, decoder, latent_dim, **kwargs)


def test_a_family_without_a_sampler_argument_refuses_one():
    model = NoSamplerVAE(kv.networks.mlp_encoder((8, 8, 1)), kv.networks.mlp_decoder((8, 8, 1), latent_dim=2), 2)
    with pytest.raises(TypeError, match="takes no post-hoc sampler"):
        samplers.fit(model, samplers.GaussianMixtureSampler(2, 1), X)


def test_export_refuses_an_unfitted_sampler(tmp_path):
    vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="learned",
                       sampler=samplers.GaussianMixtureSampler(2, 2))
    with pytest.raises(ValueError, match="never fitted"):
        export.saved_model(vae, tmp_path, allow_untrained=True)


@pytest.mark.parametrize("make", [lambda: samplers.GaussianMixtureSampler(2, num_components=2),
                                  lambda: samplers.TwoStageSampler(2, hidden_units=16, epochs=2)],
                         ids=["gmm", "two_stage"])
def test_sampler_is_saved_served_and_converted(make, tmp_path):
    keras.utils.set_random_seed(0)
    vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="learned", seed=0)
    sampler = samplers.fit(vae, make(), X)
    assert vae.sampler is sampler and vae.get_config()["sampler"]["class_name"] == type(sampler).__name__

    # The model, evaluation and the SavedModel draw z from the sampler.
    noise = SeededNoise(SEED)
    z = latents.draw(sampler.distribution(), noise, 5)
    expected = np.asarray(vae.decoded(z, {}, noise)[0])
    from_prior = np.asarray(vae.decoded(latents.draw(vae.prior_distribution(), SeededNoise(SEED), 5), {})[0])
    assert not np.allclose(expected, from_prior, atol=1e-3)
    np.testing.assert_allclose(evaluation.prior_samples(vae, 5, seed=3),
                               np.asarray(vae.decoded(latents.draw(sampler.distribution(), SeededNoise([3, 0]), 5),
                                                      {})[0]), rtol=1e-5, atol=1e-6)
    folder = export.saved_model(vae, tmp_path / "serving", allow_untrained=True, noise=lambda: SeededNoise(SEED))
    served = tf.saved_model.load(str(folder)).signatures["sample"](num_samples=tf.constant([5]))["images"]
    np.testing.assert_allclose(np.asarray(served), expected, rtol=1e-5, atol=1e-5)

    # .keras round trip: the fitted sampler comes back.
    vae.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(loaded.sampler) is type(sampler)
    loaded.sampler.check_fitted()
    again = latents.draw(loaded.sampler.distribution(), SeededNoise(SEED), 5)
    np.testing.assert_allclose(np.asarray(loaded.decoded(again, {}, SeededNoise(SEED))[0]), expected,
                               rtol=1e-5, atol=1e-5)

    # TFLite with builtin ops: the sample signature runs in LiteRT.
    path = export.tflite(vae, tmp_path / "sample.tflite", signatures=("sample",), allow_untrained=True)
    images = export.litert_runner(path, "sample")(num_samples=np.array([4], "int32"))["images"]
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))
