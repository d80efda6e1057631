"""The VAE under tf.distribute: Mirrored (2 logical CPUs) and MultiWorker (2 processes) vs one device.

Each comparison trains the same model (same seed, same data, same global
batch) and compares the all-reduced gradients of one step, the weights after a
few SGD steps, the reported metrics and the optimal-sigma running average.

TF fixes its devices when it first runs an op, so every distributed run lives
in a subprocess that executes this file as a script (`python
tests/test_distribute.py local OUT` or `... worker INDEX OUT`), bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SHAPE = (8, 8, 2)
GLOBAL_BATCH = 8
STEPS = 3
CONFIGS = {
    "optimal_conv": dict(network="conv", likelihood="optimal"),
    # (per-channel sigma: see test_optimal_sigma_is_the_global_batch_rmse)
    "per_image_beta_free_bits": dict(network="mlp", likelihood="optimal_per_image", beta=2.0, free_bits=0.5),
    # The latent families: the same equalities through their own compute_terms.
    "conditional": dict(model="conditional", network="mlp", likelihood="optimal", num_classes=3),
    "hierarchical": dict(model="hierarchical", network="mlp", likelihood="optimal", free_bits=0.2),
    "gumbel": dict(model="gumbel", network="mlp", likelihood="optimal", num_classes=4),
    "spatial": dict(model="spatial", likelihood="optimal", downsampling=4, beta=1.0),
    "vqvae_ema": dict(model="vqvae", likelihood="optimal", num_codes=8, downsampling=4, ema=True,
                      restart_dead_codes=False),
    "vlae": dict(model="vlae", likelihood="optimal", receptive_field=3, filters=8),
    # The data-dependent start of a learned sigma, on the first global batch.
    # (log_sigma_scale 1: plain SGD on the default scale of 30, made for Adam, is unstable here.)
    "learned_start": dict(network="mlp", likelihood="learned", log_sigma_scale=1.0),
}
LABELLED = {"conditional"}
# MultiWorker runs the same train step as Mirrored, over processes: it is checked on the configs whose
# state is all-reduced in its own way (the running sigma, the VQ-VAE's EMA codebook, the data-dependent
# start of a learned sigma); every config is checked under Mirrored.
MULTIWORKER_CONFIGS = ("optimal_conv", "vqvae_ema", "learned_start")
TIMEOUT_S = 240


# ----------------------------------------------------------- the subprocess side
def _run_config(strategy, config: dict, x: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """STEPS steps of SGD that also record the last step's all-reduced gradients."""
    import keras
    import tensorflow as tf

    import keras_vae as kv

    class RecordingSGD(keras.optimizers.SGD):
        """Plain SGD that keeps a copy of the gradients it applied last."""

        def build(self, variables):
            super().build(variables)
            self.recorded = [self.add_variable_from_reference(v, name="gradient") for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            self.recorded[self._get_variable_index(variable)].assign(gradient)
            super().update_step(gradient, variable, learning_rate)

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        keras.utils.set_random_seed(0)
        settings = dict(config)
        name = settings.pop("model", "vae")
        if "log_sigma_scale" in settings:
            scale = settings.pop("log_sigma_scale")
            settings["likelihood"] = kv.Gaussian(settings["likelihood"], log_sigma_scale=scale)
        builder = kv.build_vlae if name == "vlae" else kv.models.get(name)  # VLAE: --network=pixelcnn in the CLI
        vae = builder(SHAPE, latent_dim=3, seed=0, **settings)
        vae.compile(optimizer=RecordingSGD(1e-3))
    inputs = x if labels is None else (x, labels)
    history = vae.fit(tf.data.Dataset.from_tensor_slices(inputs).batch(GLOBAL_BATCH), verbose=0).history
    sigma_layer = vae.likelihood.optimal_sigma  # None for a learned sigma (its start is in the weights)
    return {
        "gradients": [np.asarray(g) for g in vae.optimizer.recorded],
        "weights": [np.asarray(w) for w in vae.trainable_weights],
        # running sigma, beta, seed states; the VQ-VAE's EMA codebook and usage
        "state": [np.asarray(w) for w in vae.non_trainable_weights],
        "metrics": {name: float(values[-1]) for name, values in history.items()},
        "running_mse": None if sigma_layer is None else np.asarray(sigma_layer.running_mse),
        "num_updates": None if sigma_layer is None else float(np.asarray(sigma_layer.num_updates)),
    }


def _naive_run(strategy, config: dict, x: np.ndarray) -> dict:
    """The same run with per-replica statistics and unscaled loss: what the tests must tell apart."""
    from keras_vae import layers
    from keras_vae.models import vae

    saved = vae._num_replicas, vae.cross_replica_sum, layers.cross_replica_sum
    vae._num_replicas = lambda: 1
    vae.cross_replica_sum = layers.cross_replica_sum = lambda value: value
    try:
        return _run_config(strategy, config, x)
    finally:
        vae._num_replicas, vae.cross_replica_sum, layers.cross_replica_sum = saved


def _optimal_sigma_under_mirrored(strategy, x: np.ndarray) -> dict:
    """OptimalSigma called per replica on unequal halves, in training mode."""
    import tensorflow as tf

    import keras_vae as kv

    means = np.clip(x + np.linspace(-0.3, 0.3, x.shape[0])[:, None, None, None], 0, 1).astype("float32")
    split = 3  # unequal shares: 3 images on replica 0, the rest on replica 1
    parts = [(x[:split], means[:split]), (x[split:], means[split:])]
    results = {}
    for reduction in ("batch", "channel", "image"):
        with strategy.scope():
            layer = kv.OptimalSigma(reduction, momentum=0.9)
            layer.build(x.shape, x.shape)
        values = strategy.experimental_distribute_values_from_function(
            lambda context: parts[context.replica_id_in_sync_group]
        )
        step = tf.function(lambda pair, layer=layer: layer(pair[0], pair[1], training=True))
        per_replica = strategy.run(step, args=(values,))
        results[reduction] = {
            "log_sigma": [np.asarray(v) for v in strategy.experimental_local_results(per_replica)],
            "running_mse": [np.asarray(v) for v in strategy.experimental_local_results(layer.running_mse.value)],
        }
    return {"targets": x, "means": means, "split": split, **results}


def _main(argv: list[str]) -> None:
    mode, out = argv[0], Path(argv[-1])
    sys.path.insert(0, str(Path(__file__).parent))
    import tensorflow as tf

    if mode == "local":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategies = {"single": None, "mirrored": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
    else:
        strategies = {"multiworker": tf.distribute.MultiWorkerMirroredStrategy()}
    from conftest import make_images

    x = make_images(GLOBAL_BATCH * STEPS, shape=SHAPE, seed=1)
    labels = np.arange(len(x)) % 3
    keys = list(CONFIGS) if mode == "local" else MULTIWORKER_CONFIGS
    results = {name: {key: _run_config(s, CONFIGS[key], x, labels if key in LABELLED else None) for key in keys}
               for name, s in strategies.items()}
    if mode == "local":
        results["naive_mirrored"] = _naive_run(strategies["mirrored"], CONFIGS["optimal_conv"], x)
        results["optimal_sigma"] = _optimal_sigma_under_mirrored(strategies["mirrored"], make_images(8, SHAPE, 2))
    if mode == "local" or argv[1] == "0":
        np.save(out, np.array(results, dtype=object), allow_pickle=True)


# ----------------------------------------------------------------- the test side
def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Launches the local (single + mirrored) and the 2 MultiWorker processes at once."""
    tmp = tmp_path_factory.mktemp("distribute")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    script = str(Path(__file__).resolve())
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    commands = [([sys.executable, script, "local", str(tmp / "local.npy")], env)]
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        commands.append(([sys.executable, script, "worker", str(index), str(tmp / "multiworker.npy")],
                         {**env, "TF_CONFIG": tf_config}))
    processes = [subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for cmd, e in commands]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]
    local = np.load(tmp / "local.npy", allow_pickle=True).item()
    multiworker = np.load(tmp / "multiworker.npy", allow_pickle=True).item()
    return {**local, **multiworker}


def _assert_close(a, b, what: str, tol: float = 1e-5):
    for i, (u, v) in enumerate(zip(a, b)):
        scale = max(1.0, float(np.max(np.abs(u))))
        np.testing.assert_allclose(v, u, rtol=0, atol=tol * scale, err_msg=f"{what}[{i}]")


@pytest.mark.parametrize(("strategy", "config"), [("mirrored", key) for key in CONFIGS]
                         + [("multiworker", key) for key in MULTIWORKER_CONFIGS])
def test_gradients_and_training_match_single_device(runs, strategy, config):
    single, distributed = runs["single"][config], runs[strategy][config]
    assert len(single["gradients"]) == len(distributed["gradients"]) > 4
    assert max(float(np.max(np.abs(g))) for g in single["gradients"]) > 1e-3  # gradients are not trivially zero
    _assert_close(single["gradients"], distributed["gradients"], f"{strategy} gradient")
    _assert_close(single["weights"], distributed["weights"], f"{strategy} weights after {STEPS} SGD steps")
    assert len(single["state"]) == len(distributed["state"])
    _assert_close(single["state"], distributed["state"], f"{strategy} non-trainable state after {STEPS} steps")
    for name, value in single["metrics"].items():
        assert distributed["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-5), name
    if config == "learned_start":  # no running statistic; the started sigma is among the weights compared above
        assert single["running_mse"] is None and distributed["running_mse"] is None
    else:
        np.testing.assert_allclose(distributed["running_mse"], single["running_mse"], rtol=1e-5)
        assert distributed["num_updates"] == single["num_updates"] == STEPS


def test_per_replica_statistics_would_be_caught(runs):
    # Guards the comparison above: per-replica means and an unscaled loss give other gradients.
    single, naive = runs["single"]["optimal_conv"], runs["naive_mirrored"]
    worst = max(float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(a))))
                for a, b in zip(single["gradients"], naive["gradients"]))
    assert worst > 1e-3


def test_optimal_sigma_is_the_global_batch_rmse(runs):
    r = runs["optimal_sigma"]
    squared = (r["targets"] - r["means"]) ** 2
    expected = {
        "batch": 0.5 * np.log(squared.mean() + 1e-12),
        "channel": 0.5 * np.log(squared.mean(axis=(0, 1, 2)) + 1e-12),
    }
    per_image = squared.mean(axis=(1, 2, 3))
    split = r["split"]
    # Per-replica means would be wrong: the halves differ in size and error.
    assert not np.isclose(squared[:split].mean(), squared.mean(), rtol=1e-3)
    for reduction, value in expected.items():
        for replica in range(2):
            np.testing.assert_allclose(r[reduction]["log_sigma"][replica], value, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(r[reduction]["running_mse"][replica], 0.1 * np.exp(2 * value), rtol=1e-5)
    for replica, rows in enumerate([slice(0, split), slice(split, None)]):
        np.testing.assert_allclose(r["image"]["log_sigma"][replica].ravel(),
                                   0.5 * np.log(per_image[rows] + 1e-12), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["image"]["running_mse"][replica], 0.1 * per_image.mean(), rtol=1e-5)


def test_xla_compiled_step_matches_the_graph_step(monkeypatch):
    # jit_compile is a speed option only: the same steps give the same model. XLA draws
    # other random numbers from the same seed, so both runs use one fixed noise here.
    import keras
    import tensorflow as tf

    import keras_vae as kv
    from tests.conftest import make_images, tiny_vae

    class ConstantNoise(kv.noise.Noise):
        def normal(self, shape):
            return tf.fill(shape, 0.7)

    monkeypatch.setattr(kv.VAE, "noise", lambda self, seed=None: ConstantNoise())
    x = make_images(16, SHAPE, seed=4)
    weights = {}
    for jit in (False, True):
        vae = tiny_vae(SHAPE, likelihood="optimal", network="conv", latent_dim=3)
        vae.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=jit)
        vae.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0)
        weights[jit] = [np.asarray(w) for w in vae.weights]
    _assert_close(weights[False], weights[True], "XLA weights")


if __name__ == "__main__":
    _main(sys.argv[1:])
