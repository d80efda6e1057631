"""Issue 18: served signatures under bad input and load; an export that refuses leaves nothing behind.

Every signature bounds its batch (`max_batch`), checks images (empty, NaN,
out of [0, 1]) and latents (NaN) in the graph; `litert_runner` does the same
before LiteRT sees the input; the export command checks everything before it
writes, and an export killed mid-write leaves nothing the next one trips on.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_vae import export
from tests.conftest import make_images, tiny_vae

SHAPE, LATENT, MAX_BATCH = (8, 8, 1), 2, 4
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def vae():
    model = tiny_vae(SHAPE, likelihood="optimal", network="mlp", latent_dim=LATENT)
    model.fit(make_images(16, SHAPE), batch_size=8, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def served(vae, tmp_path_factory):
    folder = export.saved_model(vae, tmp_path_factory.mktemp("serving"), max_batch=MAX_BATCH)
    return tf.saved_model.load(str(folder)).signatures


def test_every_signature_bounds_its_batch(served):
    images, z = make_images(MAX_BATCH + 1, SHAPE), np.zeros((MAX_BATCH + 1, LATENT), "float32")
    for name, inputs in [("decode", dict(z=z)), ("encode", dict(x=images)), ("reconstruct", dict(x=images)),
                         ("elbo", dict(x=images))]:
        input_name, value = next(iter(inputs.items()))
        assert served[name](**{input_name: tf.constant(value[:MAX_BATCH])})  # the largest batch runs
        for bad in (value, value[:0]):  # too large, empty
            with pytest.raises(tf.errors.InvalidArgumentError, match=rf"Expected {input_name} with a batch of 1 to 4"):
                served[name](**{input_name: tf.constant(bad)})
    assert served["sample"](num_samples=tf.constant([MAX_BATCH]))["images"].shape[0] == MAX_BATCH
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"n <= 4 \(max_batch of the export\)"):
        served["sample"](num_samples=tf.constant([10**9]))


def test_images_and_latents_are_checked_in_the_graph(served):
    nan_images = make_images(2, SHAPE)
    nan_images[1, 3, 3, 0] = np.nan
    for name in ("encode", "reconstruct", "elbo"):
        with pytest.raises(tf.errors.InvalidArgumentError, match="Expected pixel values in"):
            served[name](x=tf.constant(nan_images))
        with pytest.raises(tf.errors.InvalidArgumentError, match="Expected pixel values in"):
            served[name](x=tf.constant(make_images(2, SHAPE) * 255))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite values of z"):
        served["decode"](z=tf.constant([[0.0, np.nan]]))


def test_bad_export_arguments_fail_before_writing(vae, tmp_path):
    with pytest.raises(ValueError, match="max_batch=0"):
        export.saved_model(vae, tmp_path, max_batch=0)
    with pytest.raises(ValueError, match=r"Expected a path ending in .tflite. Received: .*model.bin"):
        export.tflite(vae, tmp_path / "model.bin")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(NotADirectoryError, match="file is a file"):
        export.saved_model(vae, tmp_path / "file")
    with pytest.raises(NotADirectoryError, match="file is a file"):
        export.tflite(vae, tmp_path / "file" / "vae.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_leftovers_of_a_killed_export_are_removed(vae, tmp_path):
    (tmp_path / "vae" / ".1.partial-dead0000" / "variables").mkdir(parents=True)
    (tmp_path / "vae" / ".2.partial-other000").mkdir()  # another version's: not ours to remove
    (tmp_path / ".vae_1.partial-dead0000.tflite").write_bytes(b"half")
    export.saved_model(vae, tmp_path)
    export.tflite(vae, tmp_path / "vae_1.tflite")
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == [".2.partial-other000", "1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae", "vae_1.tflite"]


def test_litert_runner_checks_batch_shape_and_values(vae, tmp_path):
    path = export.tflite(vae, tmp_path / "vae.tflite", signatures=("decode", "encode"))
    decode = export.litert_runner(path, "decode", max_batch=MAX_BATCH)
    assert decode(z=np.zeros((MAX_BATCH, LATENT), "float32"))["mean"].shape == (MAX_BATCH, *SHAPE)
    for bad in (np.zeros((0, LATENT), "float32"), np.zeros((MAX_BATCH + 1, LATENT), "float32")):
        with pytest.raises(ValueError, match=r"Expected z of shape \(batch, 2\) with a batch of 1 to 4"):
            decode(z=bad)
    with pytest.raises(ValueError, match=r"Expected finite values of z. Received 1 NaN"):
        decode(z=np.array([[0.0, np.nan]], "float32"))
    encode = export.litert_runner(path, "encode")
    with pytest.raises(ValueError, match=r"Expected x of shape \(batch, 8, 8, 1\). Received: x.shape=\(1, 8, 8, 3\)"):
        encode(x=np.zeros((1, 8, 8, 3), "float32"))
    assert encode(x=make_images(1, SHAPE))["mean"].shape == (1, LATENT)  # still works after the refusals


def test_export_command_checks_the_tflite_signatures_before_writing(vae, tmp_path):
    model_path = tmp_path / "model.keras"
    vae.save(model_path)
    out = tmp_path / "serving"
    command = [sys.executable, "-m", "keras_vae", "export", f"--model={model_path}", f"--out={out}", "--tflite",
               "--tflite_signatures=decode,train"]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=240)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "signatures=('decode', 'train')" in done.stderr.strip().splitlines()[-1]
    assert not out.exists()  # no vae/1 for the corrected rerun to trip on
