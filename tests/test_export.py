"""Tests for keras_vae.export with the real clients: TF, saved_model_cli, LiteRT, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import keras_vae as kv
from keras_vae import export
from tests.conftest import make_images, tiny_vae

SHAPE = (8, 8, 1)
LATENT = 2
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
# Quantized LiteRT vs float32 Keras, absolute, on outputs of order 1 (pixel
# means in [0, 1], posterior means and stddevs): float16 weights keep ~3
# significant digits; int8 dynamic-range weights ~2.
QUANTIZED_ATOL = {"float16": 5e-3, "dynamic": 5e-2}


def _trained(likelihood="optimal", steps_seed=0) -> kv.VAE:
    vae = tiny_vae(SHAPE, likelihood=likelihood, network="conv", latent_dim=LATENT, seed=steps_seed)
    vae.fit(make_images(32, SHAPE, seed=1), batch_size=16, epochs=1, verbose=0)
    return vae


def _latents(count=5, seed=0):
    return np.random.default_rng(seed).normal(size=(count, LATENT)).astype("float32")


def _running_sigma(vae) -> float:
    """The calibrated sigma, from the likelihood's variables by hand (not by its code)."""
    layer = vae.likelihood.optimal_sigma
    mse = float(layer.running_mse.numpy()) / (1.0 - layer.momentum ** float(layer.num_updates.numpy()))
    log_sigma = 0.5 * np.log(mse + 1e-12)
    return float(np.exp(-6.0 + np.log1p(np.exp(log_sigma + 6.0))))  # soft clip at -6


def _assert_same_scores(served, reference, slack=1e-3):
    """Two sets of one-sample ELBO estimates of one image agree within 5 standard errors."""
    served, reference = np.asarray(served, "float64"), np.asarray(reference, "float64")
    assert np.all(np.isfinite(served))
    standard_error = np.sqrt(served.var() / served.size + reference.var() / reference.size)
    assert abs(served.mean() - reference.mean()) < 5 * standard_error + slack * abs(reference.mean())


@pytest.fixture(scope="module")
def vae():
    return _trained()


@pytest.fixture(scope="module")
def exported(vae, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving")
    return export.saved_model(vae, base, name="vae", version=1)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported))


@pytest.fixture(scope="module")
def tflite_all(vae, tmp_path_factory):
    return export.tflite(vae, tmp_path_factory.mktemp("tflite") / "vae.tflite", signatures=export.SIGNATURES)


# ------------------------------------------------------------------ SavedModel
def test_tf_serving_layout(exported):
    assert exported.name == "1" and exported.parent.name == "vae"
    assert (exported / "saved_model.pb").is_file() and (exported / "variables").is_dir()
    # Only the version folder: no staging folder left behind for TF Serving to trip on.
    assert [p.name for p in exported.parent.iterdir()] == ["1"]


def test_signatures_names_and_shapes(loaded):
    signatures = loaded.signatures
    assert set(signatures) == {*export.SIGNATURES, "serving_default"}
    expected_inputs = {
        "decode": {"z": [None, LATENT]},
        "serving_default": {"z": [None, LATENT]},
        "encode": {"x": [None, *SHAPE]},
        "reconstruct": {"x": [None, *SHAPE]},
        "elbo": {"x": [None, *SHAPE]},
        "sample": {"num_samples": [1]},
    }
    expected_outputs = {
        "decode": {"mean", "sigma"},
        "serving_default": {"mean", "sigma"},
        "encode": {"mean", "stddev"},
        "reconstruct": {"mean"},
        "elbo": {"elbo"},
        "sample": {"images"},
    }
    for name, inputs in expected_inputs.items():
        spec = signatures[name].structured_input_signature[1]
        assert {key: value.shape.as_list() for key, value in spec.items()} == inputs, name
        assert set(signatures[name].structured_outputs) == expected_outputs[name], name


def test_signatures_match_keras(vae, loaded):
    z, x = _latents(), make_images(6, SHAPE, seed=5)
    mean, sigma = vae.decode(z)
    for name in ("decode", "serving_default"):
        out = loaded.signatures[name](z=tf.constant(z))
        np.testing.assert_allclose(out["mean"], mean, atol=1e-6)
        np.testing.assert_allclose(out["sigma"], sigma, atol=1e-6)
    # The served sigma is the calibrated running sigma, the same for every pixel and image.
    np.testing.assert_allclose(out["sigma"], _running_sigma(vae), rtol=1e-5)
    encoded = loaded.signatures["encode"](x=tf.constant(x))
    for got, want in zip((encoded["mean"], encoded["stddev"]), vae.encode(x), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    reconstructed = loaded.signatures["reconstruct"](x=tf.constant(x))["mean"]
    np.testing.assert_allclose(reconstructed, vae.reconstruct(x), atol=1e-6)


def test_sample_is_fresh_every_call(loaded):
    sample = loaded.signatures["sample"]
    first = sample(num_samples=tf.constant([4]))["images"].numpy()
    second = sample(num_samples=tf.constant([4]))["images"].numpy()
    assert first.shape == (4, *SHAPE)
    assert np.all((first >= 0) & (first <= 1))
    assert np.abs(first - second).max() > 1e-3


def test_elbo_is_the_running_sigma_elbo(vae, loaded):
    x = np.repeat(make_images(1, SHAPE, seed=7), 256, axis=0)  # 256 one-sample estimates of one image
    served = loaded.signatures["elbo"](x=tf.constant(x))["elbo"].numpy()
    assert served.shape == (256,)
    _assert_same_scores(served, vae.elbo_with_running_sigma(x))


def test_bernoulli_decode_returns_probs(tmp_path):
    vae = tiny_vae(SHAPE, likelihood="bernoulli", latent_dim=LATENT)  # no sigma to calibrate: allowed untrained
    loaded = tf.saved_model.load(str(export.saved_model(vae, tmp_path, allow_untrained=True)))
    z = _latents()
    out = loaded.signatures["decode"](z=tf.constant(z))
    assert set(out) == {"mean", "probs"}
    logits = vae.decoder(z).numpy()
    np.testing.assert_allclose(out["probs"], 1.0 / (1.0 + np.exp(-logits)), atol=1e-6)
    np.testing.assert_allclose(out["mean"], out["probs"])


def _python_script(code: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        check=False, capture_output=True, text=True, env=ENV, timeout=timeout,
    )


def test_saved_model_cli_show_and_run(vae, exported, tmp_path):
    cli = str(Path(sys.executable).with_name("saved_model_cli"))
    z = _latents(3, seed=3)
    np.save(tmp_path / "z.npy", z)
    show = subprocess.Popen(  # both clients at once: each spends seconds importing TensorFlow
        [cli, "show", "--all", "--dir", str(exported)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    run = subprocess.run(
        [cli, "run", "--dir", str(exported), "--tag_set", "serve", "--signature_def", "decode",
         "--inputs", f"z={tmp_path / 'z.npy'}", "--outdir", str(tmp_path / "out")],
        check=False, capture_output=True, text=True, env=ENV, timeout=240,
    )
    shown, show_errors = show.communicate(timeout=240)
    assert show.returncode == 0, show_errors[-2000:]
    for name in (*export.SIGNATURES, "serving_default"):
        assert f"signature_def['{name}']" in shown
    assert f"shape: (-1, {LATENT})" in shown and "shape: (-1, 8, 8, 1)" in shown
    assert run.returncode == 0, run.stderr[-2000:]
    mean, sigma = vae.decode(z)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "mean.npy"), mean, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "sigma.npy"), sigma, atol=1e-6)


def test_fresh_process_with_only_tensorflow_calls_every_signature(vae, exported, tmp_path):
    z, x = _latents(3, seed=4), make_images(3, SHAPE, seed=4)
    np.savez(tmp_path / "inputs.npz", z=z, x=x)
    result = _python_script(
        """
        import json, sys
        import numpy as np
        import tensorflow as tf
        folder, inputs, outputs = sys.argv[1:]
        data = np.load(inputs)
        model = tf.saved_model.load(folder)
        feeds = {"decode": {"z": data["z"]}, "serving_default": {"z": data["z"]},
                 "encode": {"x": data["x"]}, "reconstruct": {"x": data["x"]}, "elbo": {"x": data["x"]},
                 "sample": {"num_samples": np.array([2], "int32")}}
        results = {}
        for name, fn in model.signatures.items():
            for key, value in fn(**{k: tf.constant(v) for k, v in feeds[name].items()}).items():
                results[f"{name}/{key}"] = value.numpy()
        np.savez(outputs, **results)
        print(json.dumps({"keras_vae_imported": any(m.startswith("keras_vae") for m in sys.modules)}))
        """,
        str(exported), str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"keras_vae_imported": False}
    out = np.load(tmp_path / "outputs.npz")
    mean, sigma = vae.decode(z)
    np.testing.assert_allclose(out["decode/mean"], mean, atol=1e-6)
    np.testing.assert_allclose(out["serving_default/sigma"], sigma, atol=1e-6)
    np.testing.assert_allclose(out["encode/mean"], vae.encode(x)[0], atol=1e-6)
    np.testing.assert_allclose(out["encode/stddev"], vae.encode(x)[1], atol=1e-6)
    np.testing.assert_allclose(out["reconstruct/mean"], vae.reconstruct(x), atol=1e-6)
    assert out["sample/images"].shape == (2, *SHAPE)
    assert out["elbo/elbo"].shape == (3,) and np.all(np.isfinite(out["elbo/elbo"]))


# --------------------------------------------------------------------- TFLite
def test_tflite_float32_every_signature(vae, tflite_all):
    interpreter = Interpreter(model_path=str(tflite_all))
    assert set(interpreter.get_signature_list()) == set(export.SIGNATURES)
    stored = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert np.float16 not in stored and np.int8 not in stored
    z, x = _latents(), make_images(4, SHAPE, seed=6)
    decoded = interpreter.get_signature_runner("decode")(z=z)
    for key, want in zip(("mean", "sigma"), vae.decode(z), strict=True):
        np.testing.assert_allclose(decoded[key], want, atol=1e-5)
    encoded = interpreter.get_signature_runner("encode")(x=x)
    for key, want in zip(("mean", "stddev"), vae.encode(x), strict=True):
        np.testing.assert_allclose(encoded[key], want, atol=1e-5)
    reconstructed = interpreter.get_signature_runner("reconstruct")(x=x)["mean"]
    np.testing.assert_allclose(reconstructed, vae.reconstruct(x), atol=1e-5)
    x_many = np.repeat(x[:1], 256, axis=0)
    _assert_same_scores(interpreter.get_signature_runner("elbo")(x=x_many)["elbo"], vae.elbo_with_running_sigma(x_many))


def test_tflite_sample_differs_between_calls_and_interpreters(tflite_all):
    count = np.array([3], "int32")
    first = Interpreter(model_path=str(tflite_all)).get_signature_runner("sample")
    a, b = first(num_samples=count)["images"], first(num_samples=count)["images"]
    c = Interpreter(model_path=str(tflite_all)).get_signature_runner("sample")(num_samples=count)["images"]
    assert a.shape == (3, *SHAPE)
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - c).max() > 1e-3


@pytest.mark.parametrize("quantize, weight_dtype", [("float16", np.float16), ("dynamic", np.int8)])
def test_tflite_quantized_within_tolerance(vae, tmp_path, quantize, weight_dtype):
    path = export.tflite(vae, tmp_path / "q.tflite", signatures=("decode", "encode"), quantize=quantize)
    stored = [detail["dtype"] for detail in Interpreter(model_path=str(path)).get_tensor_details()]
    assert weight_dtype in stored  # the weights really are quantized
    z, x = _latents(), make_images(4, SHAPE, seed=8)
    decoded = export.litert_runner(path, "decode")(z=z)
    encoded = export.litert_runner(path, "encode")(x=x)
    atol = QUANTIZED_ATOL[quantize]
    for key, want in zip(("mean", "sigma"), vae.decode(z), strict=True):
        np.testing.assert_allclose(decoded[key], want, atol=atol)
    for key, want in zip(("mean", "stddev"), vae.encode(x), strict=True):
        np.testing.assert_allclose(encoded[key], want, atol=atol)


# ------------------------------------------------------------------ bad input
def test_refuses_non_vae_and_untrained_models(tmp_path):
    with pytest.raises(TypeError, match="Expected a keras_vae.VAE"):
        export.saved_model(keras.Sequential([keras.layers.Dense(2)]), tmp_path)
    untrained = tiny_vae(SHAPE, likelihood="optimal_per_image", latent_dim=LATENT)
    for allow in (False, True):  # no calibrated sigma, whatever the flag
        with pytest.raises(ValueError, match="sigma='optimal_per_image' but has never been trained"):
            export.saved_model(untrained, tmp_path, allow_untrained=allow)
        with pytest.raises(ValueError, match="sigma='optimal_per_image' but has never been trained"):
            export.tflite(untrained, tmp_path / "x.tflite", allow_untrained=allow)
    fixed = tiny_vae(SHAPE, likelihood="gaussian", latent_dim=LATENT, sigma=0.1)
    with pytest.raises(ValueError, match=r"never been trained \(its optimizer took no steps\).*allow_untrained"):
        export.saved_model(fixed, tmp_path)
    with pytest.raises(ValueError, match="never been trained"):
        export.tflite(fixed, tmp_path / "x.tflite")
    assert list(tmp_path.iterdir()) == []
    fixed.train_on_batch(make_images(8, SHAPE))  # one step: now it exports
    assert (export.saved_model(fixed, tmp_path) / "saved_model.pb").is_file()


def test_refuses_bad_arguments(vae, tmp_path):
    with pytest.raises(ValueError, match="version=0"):
        export.saved_model(vae, tmp_path, version=0)
    with pytest.raises(ValueError, match="name='../up'"):
        export.saved_model(vae, tmp_path, name="../up")
    with pytest.raises(ValueError, match="signatures"):
        export.tflite(vae, tmp_path / "a.tflite", signatures=("decode", "train"))
    with pytest.raises(ValueError, match="quantize='int4'"):
        export.tflite(vae, tmp_path / "a.tflite", quantize="int4")


def test_existing_version_refused_unless_overwrite(vae, tmp_path):
    first = export.saved_model(vae, tmp_path, version=3)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        export.saved_model(vae, tmp_path, version=3)
    other = tiny_vae(SHAPE, likelihood="gaussian", latent_dim=LATENT, sigma=0.25, seed=9)
    assert export.saved_model(other, tmp_path, version=3, overwrite=True, allow_untrained=True) == first
    z = _latents()
    out = tf.saved_model.load(str(first)).signatures["decode"](z=tf.constant(z))
    np.testing.assert_allclose(out["mean"], other.decode(z)[0], atol=1e-6)
    soft_clipped = np.exp(-6.0 + np.log1p(np.exp(np.log(0.25) + 6.0)))  # every mode soft-clips log sigma
    np.testing.assert_allclose(out["sigma"], soft_clipped, rtol=1e-5)
    assert [p.name for p in (tmp_path / "vae").iterdir()] == ["3"]
    (tmp_path / "d.tflite").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        export.tflite(vae, tmp_path / "d.tflite")
    assert (tmp_path / "d.tflite").read_bytes() == b"mine"


def test_crash_mid_export_leaves_nothing(vae, tmp_path, monkeypatch):
    real_write_out = type(keras.export.ExportArchive()).write_out

    def crash(self, filepath, **kwargs):
        real_write_out(self, filepath, **kwargs)
        (Path(filepath) / "variables").rename(Path(filepath) / "half")
        raise OSError("disk full")

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", crash)
    with pytest.raises(OSError, match="disk full"):
        export.saved_model(vae, tmp_path, version=1)
    assert list((tmp_path / "vae").iterdir()) == []


class _StatelessNoise(keras.layers.Layer):
    """Adds keras.random noise: stateless random ops, which TFLite builtins lack."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(0)

    def call(self, inputs):
        return inputs + 0.01 * keras.random.normal(keras.ops.shape(inputs), seed=self.seed_generator)


def test_signature_needing_flex_ops_is_a_clear_error(tmp_path):
    z = keras.Input((LATENT,))
    params = keras.layers.Reshape(SHAPE)(keras.layers.Dense(int(np.prod(SHAPE)))(z))
    decoder = keras.Model(z, _StatelessNoise()(params))
    vae = kv.VAE(kv.networks.mlp_encoder(SHAPE), decoder, latent_dim=LATENT, likelihood=kv.Gaussian(sigma=0.1))
    with pytest.raises(ValueError, match=r"decode: .*StatelessRandomNormalV2") as info:
        export.tflite(vae, tmp_path / "flex.tflite", signatures=("encode", "decode"), allow_untrained=True)
    assert "encode" not in str(info.value)
    assert not (tmp_path / "flex.tflite").exists()
    # Only the TFLite file is refused: TF Serving runs every TensorFlow op.
    assert (export.saved_model(vae, tmp_path, allow_untrained=True) / "saved_model.pb").is_file()


def test_wrong_input_shape_is_a_clear_error(loaded, tflite_all):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Expected z of shape \(batch, 2\)"):
        loaded.signatures["decode"](z=tf.zeros((2, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Expected x of shape \(batch, 8, 8, 1\)"):
        loaded.signatures["encode"](x=tf.zeros((1, 16, 4, 1)))  # same pixel count, wrong shape
    with pytest.raises(tf.errors.InvalidArgumentError, match="n >= 1"):
        loaded.signatures["sample"](num_samples=tf.constant([0]))
    decode = export.litert_runner(tflite_all, "decode")
    with pytest.raises(ValueError, match=r"Expected z of shape \(batch, 2\)\. Received: z.shape=\(2, 3\)"):
        decode(z=np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="takes inputs"):
        decode(x=np.zeros((2, 2), "float32"))
    with pytest.raises(ValueError, match="no signature 'train'"):
        export.litert_runner(tflite_all, "train")


# ----------------------------------------------------------------------- CLI
def test_export_command(vae, tmp_path):
    model_path = tmp_path / "model.keras"
    vae.save(model_path)
    command = [sys.executable, "-m", "keras_vae", "export", f"--model={model_path}", f"--out={tmp_path / 'serving'}",
               "--version=2", "--tflite", "--tflite_signatures=decode,sample"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=ENV, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "serving" / "vae" / "2" / "saved_model.pb").is_file()
    z = _latents()
    decoded = export.litert_runner(tmp_path / "serving" / "vae_2.tflite", "decode")(z=z)
    np.testing.assert_allclose(decoded["mean"], vae.decode(z)[0], atol=1e-5)
    assert "decode" in done.stdout and "vae_2.tflite" in done.stdout


# ------------------------------------------------------- the serving decoder
def test_serving_decoder_is_the_same_function_without_transposed_convolutions():
    rng = np.random.default_rng(9)
    z = rng.normal(size=(3, 4)).astype("float32")
    for shape in ((8, 8, 1), (7, 9, 3)):  # odd sizes go through the crop
        decoder = kv.networks.conv_decoder(shape, latent_dim=4, params_per_channel=2)
        for layer in decoder.layers:  # non-zero biases, so the tiled bias is checked too
            for weight in layer.weights:
                weight.assign(rng.normal(scale=0.1, size=weight.shape).astype("float32"))
        fast = export.serving_decoder(decoder)
        assert not any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in fast.layers)
        np.testing.assert_allclose(fast(z), decoder(z), atol=1e-5)
    # A stride-3 kernel-3 layer (k / s = 1) is rewritten; a kernel-4 stride-2 one (k / s even) is kept.
    z_in = keras.Input((4,))
    h = keras.layers.Reshape((2, 2, 1))(z_in)
    h = keras.layers.Conv2DTranspose(5, 3, strides=3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same")(h)
    decoder = keras.Model(z_in, h)
    fast = export.serving_decoder(decoder)
    assert [type(layer).__name__ for layer in fast.layers][-2:] == ["_TransposedAsConv", "Conv2DTranspose"]
    np.testing.assert_allclose(fast(z), decoder(z), atol=1e-5)


def _session_runner_class():
    """`benchmarks/tf_session.SessionRunner`: TF Serving's path (C API session, `TF_SessionRun`)."""
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "tf_session.py"
    spec = importlib.util.spec_from_file_location("tf_session", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SessionRunner


def test_c_api_session_runs_the_signatures_like_tf_serving(vae, exported, loaded):
    runner_class = _session_runner_class()
    decode = runner_class(exported, "decode", inter_op_threads=1)
    z = _latents()
    outputs = decode(z=z)
    assert sorted(outputs) == ["mean", "sigma"]
    expected = loaded.signatures["decode"](z=tf.constant(z))
    np.testing.assert_allclose(outputs["mean"], expected["mean"].numpy(), atol=1e-6)
    np.testing.assert_allclose(outputs["sigma"], _running_sigma(vae), rtol=1e-5)
    reconstruct = runner_class(exported, "reconstruct")
    x = make_images(3, SHAPE, seed=5)
    np.testing.assert_allclose(reconstruct(x=x)["mean"], loaded.signatures["reconstruct"](x=tf.constant(x))["mean"],
                               atol=1e-6)
    # No Python between the client and the graph: the in-graph shape check is what stops a bad request.
    with pytest.raises(RuntimeError, match=r"Expected z of shape \(batch, 2\)"):
        decode(z=np.zeros((2, 3), "float32"))
    with pytest.raises(KeyError, match="no signature 'decoder'"):
        runner_class(exported, "decoder")
    with pytest.raises(TypeError, match="float32 inputs only; 'sample' takes {'num_samples': 'int32'}"):
        runner_class(exported, "sample")
    with pytest.raises(FileNotFoundError, match="No saved_model.pb"):
        runner_class(exported.parent, "decode")
