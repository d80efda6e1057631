"""Tests for keras_vae.export on the latent families: hierarchical, Gumbel, conditional, spatial, VQ-VAE.

Each tiny model trains two steps, is exported as a SavedModel, loaded back
with `tf.saved_model.load` and every signature is checked against the Keras
model's own methods.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import export
from keras_vae.models.conditional import build_conditional_vae
from keras_vae.models.gumbel import build_gumbel_vae
from keras_vae.models.hierarchical import build_hierarchical_vae
from keras_vae.models.spatial import build_spatial_vae
from keras_vae.models.vqvae import build_vqvae
from tests.conftest import make_images

SHAPE = (8, 8, 1)
NUM_CLASSES = 3
FAMILIES = ("hierarchical", "gumbel", "conditional", "spatial", "vqvae")
BUILDERS = {
    # conv: the serving decoder's transposed-convolution rewrite runs in a family too.
    "hierarchical": lambda: build_hierarchical_vae(SHAPE, network="conv", latent_dim=3, top_latent_dim=2,
                                                   hidden_units=8, seed=0),
    "gumbel": lambda: build_gumbel_vae(SHAPE, network="mlp", latent_dim=4, num_classes=3, seed=0),
    "conditional": lambda: build_conditional_vae(SHAPE, num_classes=NUM_CLASSES, network="mlp", latent_dim=2, seed=0),
    "spatial": lambda: build_spatial_vae(SHAPE, latent_dim=2, downsampling=4, filters=8, seed=0),
    "vqvae": lambda: build_vqvae(SHAPE, latent_dim=3, num_codes=8, downsampling=4, filters=8,
                                 prior_filters=8, prior_layers=2, seed=0),
}
LABELS = np.array([0, 1, 2, 1, 0, 2], "int32")


def _trained(family: str) -> kv.VAE:
    keras.utils.set_random_seed(0)
    model = BUILDERS[family]()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)  # two steps: no tracing
    x = make_images(16, SHAPE, seed=1)
    labels = (np.arange(16) % NUM_CLASSES,) if family == "conditional" else ()
    model.fit(x, *labels, batch_size=8, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """{family: (keras model, loaded SavedModel)}, each exported once."""
    base = tmp_path_factory.mktemp("serving")
    out = {}
    for family in FAMILIES:
        model = _trained(family)
        out[family] = model, tf.saved_model.load(str(export.saved_model(model, base, name=family)))
    return out


def _inputs(family: str, model, count: int = 6, seed: int = 5) -> dict:
    """Inputs for every signature of `family`, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    x = make_images(count, SHAPE, seed=seed)
    latent_shape = model.latent_shape  # maps for spatial and VQ; z1 for hierarchical; (variables, classes) codes
    z = rng.normal(size=(count, *latent_shape)).astype("float32")
    if family == "gumbel":  # one-hot codes
        z = np.eye(model.num_classes, dtype="float32")[rng.integers(0, model.num_classes, (count, model.num_variables))]
    inputs = {"x": x, "z": z}
    if family == "vqvae":
        inputs["indices"] = rng.integers(0, model.num_codes, (count, *latent_shape[:2])).astype("int32")
    if family == "conditional":
        inputs["y"] = LABELS[:count]
    return inputs


def _keras_outputs(family: str, model, inputs: dict) -> dict:
    """The Keras model's outputs of the deterministic signatures, named as in the SavedModel."""
    x, z = inputs["x"], inputs["z"]
    condition = (inputs["y"],) if family == "conditional" else ()
    mean, sigma = model.decode(z, *condition)
    out = {"decode": {"mean": mean, "sigma": sigma}, "reconstruct": {"mean": model.reconstruct(x, *condition)}}
    if family == "hierarchical":
        (loc1, scale1), (loc2, scale2) = model.encode_levels(x)
        out["encode"] = {"mean": loc1, "stddev": scale1, "mean_z2": loc2, "stddev_z2": scale2}
    else:
        encoded = model.encode(x, *condition)
        out["encode"] = {"mean": encoded[0], "stddev": encoded[1]}
    if family == "vqvae":
        out["encode"]["indices"] = model.encode_indices(x)
        mean, sigma = model.decode_indices(inputs["indices"])
        out["decode_indices"] = {"mean": mean, "sigma": sigma}
        out["elbo"] = {"elbo": model.elbo_with_running_sigma(x)}  # deterministic: no sampling in a VQ-VAE
    return out


def _call(loaded, name: str, inputs: dict) -> dict:
    fn = loaded.signatures[name]
    wanted = fn.structured_input_signature[1]
    return {key: value.numpy() for key, value in fn(**{key: tf.constant(inputs[key]) for key in wanted}).items()}


# ------------------------------------------------------------------ signatures
EXPECTED_INPUTS = {
    "hierarchical": {"decode": {"z": [None, 3]}, "sample": {"num_samples": [1]}},
    "gumbel": {"decode": {"z": [None, 4, 3]}},
    "conditional": {
        "decode": {"z": [None, 2], "y": [None]},
        "encode": {"x": [None, *SHAPE], "y": [None]},
        "sample": {"num_samples": [1], "y": [None]},
        "elbo": {"x": [None, *SHAPE], "y": [None]},
    },
    "spatial": {"decode": {"z": [None, 2, 2, 2]}, "encode": {"x": [None, *SHAPE]}},
    "vqvae": {"decode": {"z": [None, 2, 2, 3]}, "decode_indices": {"indices": [None, 2, 2]}},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_signature_names_and_input_shapes(served, family):
    model, loaded = served[family]
    extra = {"decode_indices"} if family == "vqvae" else set()
    assert set(loaded.signatures) == {*export.SIGNATURES, "serving_default", *extra}
    assert export.signature_names(model)[0] == "decode"
    for name, inputs in EXPECTED_INPUTS[family].items():
        spec = loaded.signatures[name].structured_input_signature[1]
        assert {key: value.shape.as_list() for key, value in spec.items()} == inputs, name
    default = loaded.signatures["serving_default"].structured_input_signature[1]
    assert default == loaded.signatures["decode"].structured_input_signature[1]
    if family == "conditional":
        assert all(spec["y"].dtype == tf.int32 for spec in (
            loaded.signatures[name].structured_input_signature[1] for name in export.SIGNATURES))


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_signatures_equal_keras(served, family):
    model, loaded = served[family]
    inputs = _inputs(family, model)
    for name, expected in _keras_outputs(family, model, inputs).items():
        got = _call(loaded, name, inputs)
        assert set(got) == set(expected), name
        for key, want in expected.items():
            np.testing.assert_allclose(got[key], np.asarray(want), atol=1e-5, err_msg=f"{family} {name} {key}")


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_has_the_image_shape_and_is_fresh_every_call(served, family):
    _, loaded = served[family]
    inputs = {"num_samples": np.array([5], "int32")}
    if family == "conditional":
        inputs["y"] = np.array([2], "int32")  # one label for every sample
    first, second = (_call(loaded, "sample", inputs)["images"] for _ in range(2))
    assert first.shape == (5, *SHAPE)
    assert np.all(np.isfinite(first)) and np.all((first >= 0) & (first <= 1))
    assert np.abs(first - second).max() > 1e-4


def _assert_same_scores(served_scores, reference):
    """Two sets of one-sample ELBO estimates of one image agree within 5 standard errors."""
    served_scores, reference = np.asarray(served_scores, "float64"), np.asarray(reference, "float64")
    assert np.all(np.isfinite(served_scores))
    standard_error = np.sqrt(served_scores.var() / served_scores.size + reference.var() / reference.size)
    assert abs(served_scores.mean() - reference.mean()) < 5 * standard_error + 1e-3 * abs(reference.mean())


@pytest.mark.parametrize("family", ("hierarchical", "gumbel", "conditional", "spatial"))
def test_elbo_is_the_running_sigma_elbo(served, family):
    model, loaded = served[family]
    x = np.repeat(make_images(1, SHAPE, seed=7), 256, axis=0)  # 256 one-sample estimates of one image
    condition = (np.full((256,), 1, "int32"),) if family == "conditional" else ()
    inputs = {"x": x, **({"y": condition[0]} if condition else {})}
    scores = _call(loaded, "elbo", inputs)["elbo"]
    assert scores.shape == (256,)
    assert scores.std() > 0  # fresh noise for every image
    _assert_same_scores(scores, model.elbo_with_running_sigma(x, *condition))


# ------------------------------------------------------------ the condition y
def test_conditional_decode_changes_with_y_and_broadcasts_one_label(served):
    model, loaded = served["conditional"]
    z = np.zeros((4, model.latent_dim), "float32")
    decode = loaded.signatures["decode"]
    by_label = [decode(z=tf.constant(z), y=tf.fill([4], label))["mean"].numpy() for label in range(NUM_CLASSES)]
    for label, mean in enumerate(by_label):
        np.testing.assert_allclose(mean, model.decode(z, np.full(4, label))[0], atol=1e-5)
    assert np.abs(by_label[0] - by_label[1]).max() > 1e-4 and np.abs(by_label[1] - by_label[2]).max() > 1e-4
    one_label = decode(z=tf.constant(z), y=tf.constant([2]))["mean"].numpy()  # one row for the whole batch
    np.testing.assert_allclose(one_label, by_label[2], atol=1e-6)


def test_conditional_rejects_bad_labels(served):
    _, loaded = served["conditional"]
    z = tf.zeros((4, 2))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Expected labels y in \[0, 3\)"):
        loaded.signatures["decode"](z=z, y=tf.constant([0, 1, 3, 0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per input"):
        loaded.signatures["decode"](z=z, y=tf.constant([0, 1]))


def test_vector_conditions_take_float_y():
    keras.utils.set_random_seed(0)
    model = build_conditional_vae(SHAPE, num_classes=4, network="mlp", latent_dim=2, likelihood="gaussian",
                                  sigma=0.2, categorical=False, seed=0)
    functions = export.signature_functions(model)
    for name in ("decode", "encode", "sample"):
        y_spec = functions[name][1][-1]
        assert (y_spec.name, y_spec.shape.as_list(), y_spec.dtype) == ("y", [None, 4], tf.float32)
    decode = tf.function(functions["decode"][0])
    y = np.eye(4, dtype="float32")[[0, 3]]
    z = np.ones((2, 2), "float32")
    np.testing.assert_allclose(decode(z, y)["mean"], model.decode(z, y)[0], atol=1e-6)


# ------------------------------------------------------------------- refusals
def test_a_user_subclass_exports_and_non_models_are_refused(tmp_path):
    class MyVAE(kv.VAE):
        pass

    custom = MyVAE(kv.networks.mlp_encoder(SHAPE), kv.networks.mlp_decoder(SHAPE, latent_dim=2), latent_dim=2,
                   likelihood=kv.Gaussian(sigma=0.1))
    folder = export.saved_model(custom, tmp_path, allow_untrained=True)
    assert set(tf.saved_model.load(str(folder)).signatures) == {*export.SIGNATURES, "serving_default"}
    with pytest.raises(TypeError, match="Expected a keras_vae.VAE"):
        export.saved_model(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "other")


def test_untrained_optimal_sigma_family_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    with pytest.raises(ValueError, match="never been trained"):
        export.saved_model(BUILDERS["spatial"](), tmp_path)


def test_unknown_tflite_signature_names_the_family_signatures(served, tmp_path):
    model, _ = served["vqvae"]
    with pytest.raises(ValueError, match=r"decode_indices.*signatures=\('train',\)"):
        export.tflite(model, tmp_path / "vq.tflite", signatures=("train",))


# ---------------------------------------------------------------------- LiteRT
def test_vqvae_prior_sampling_and_encoder_run_in_litert(served, tmp_path):
    """The PixelCNN prior's position loop (WHILE + MULTINOMIAL) and the nearest-code search are builtins."""
    model, _ = served["vqvae"]
    path = export.tflite(model, tmp_path / "vq.tflite", signatures=("sample", "encode"))
    sample = export.litert_runner(path, "sample")
    first, second = (sample(num_samples=np.array([4], "int32"))["images"] for _ in range(2))
    assert first.shape == (4, *SHAPE) and np.abs(first - second).max() > 1e-4
    x = make_images(3, SHAPE, seed=3)
    encoded = export.litert_runner(path, "encode")(x=x)
    np.testing.assert_array_equal(encoded["indices"], model.encode_indices(x))
    np.testing.assert_allclose(encoded["mean"], model.encode(x)[0], atol=1e-5)
