"""Training throughput of the sigma-VAE paper's conv network (latent 20, batch 128, 28x28x1).

Measures training images/s through `model.fit` and the `keras_vae.data.pipeline`
(cache, shuffle, batch, prefetch), for several settings, each in its own
process (so environment settings such as oneDNN apply), in interleaved rounds
(A B C .. A B C ..) because this machine is shared and noisy. Each process
times `--windows` windows of `--steps` steps after a warm-up and also measures
the sgemm rate at that moment, so the peak fraction is stated against both the
nominal peak and what the machine delivered then. Writes
`benchmarks/results/throughput.md` and `.json`.

    nice -n 10 python benchmarks/throughput.py [--variants=keras,xla,...] [--rounds=2]

FLOPs are counted from the layers: 2 * multiply-adds of every Conv2D,
Conv2DTranspose and Dense in encoder, posterior head and decoder for the
forward pass, times 3 for a training step (forward, input gradients, weight
gradients).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

RESULTS = Path(__file__).parent / "results"
NOMINAL_PEAK_GFLOPS = 216.0  # sgemm peak measured on this machine (issue 7)
REFERENCES = {"PyTorch sigma-VAE reference (issue 7)": 250.0, "plain Keras 3 port (issue 7)": 150.0}

VARIANTS = {
    "keras": dict(description="VAE.train_step, jit_compile=False (Keras 'auto' on CPU)", jit=False),
    "xla": dict(description="VAE.train_step, jit_compile=True", jit=True),
    "subpixel": dict(description="jit off; stride-2 6x6 ConvTranspose as 3x3 conv + depth_to_space", jit=False,
                     subpixel=True),
    "stock_last_layer": dict(description="jit off; the decoder's last layer a stock Conv2DTranspose, not "
                                         "NarrowConv2DTranspose", jit=False, stock_last_layer=True),
    "onednn_off": dict(description="jit off, TF_ENABLE_ONEDNN_OPTS=0", jit=False,
                       env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "bf16": dict(description="jit off, mixed_bfloat16 networks (likelihood, KL, sigma in float32)", jit=False,
                 precision="mixed_bfloat16"),
    "inter_op_1": dict(description="jit off, inter-op threads 1, intra-op threads 2", jit=False, threads=(1, 2)),
    "plain_port": dict(description="a plain Keras port: hand-written train_step, numpy input", jit=False,
                       plain=True),
    "pytorch": dict(description="PyTorch reference step (benchmarks/pytorch_reference.py), DataLoader input",
                    torch=True),
    "pytorch_bf16": dict(description="the PyTorch reference step under torch.autocast(bfloat16)", torch=True,
                         torch_args=["--bf16"]),
    "pytorch_pil_loader": dict(description="the PyTorch reference step fed like the official script: per-item PIL "
                                           "image + ToTensor (torchvision's MNIST path)", torch=True,
                               torch_args=["--pil_loader"]),
}
TARGET_VS_PYTORCH = 1.3  # issue 7: at least 1.3x the PyTorch reference, same machine, same run

flags.DEFINE_list("variants", ["keras", "xla", "subpixel", "stock_last_layer", "onednn_off", "plain_port", "bf16",
                               "pytorch", "pytorch_bf16"],
                  "Settings to time.")
flags.DEFINE_string("torch_python", sys.executable,
                    "A Python with torch installed, for the pytorch variant (skipped if it has none).")
flags.DEFINE_integer("rounds", 2, "Interleaved rounds (one process per variant per round).")
flags.DEFINE_integer("steps", 15, "Training steps per timed window.")
flags.DEFINE_integer("windows", 4, "Timed windows per process.")
flags.DEFINE_integer("warmup", 5, "Untimed steps first (tracing, pipeline fill).")
flags.DEFINE_string("child", None, "Internal: time one variant in this process and print JSON.")
flags.DEFINE_string("results_name", "throughput", "Stem of the files written into benchmarks/results/.")
flags.DEFINE_integer("paired_windows", 12, "Alternating keras/subpixel windows in one process (0: skip).")
FLAGS = flags.FLAGS

BATCH, LATENT, SHAPE = 128, 20, (28, 28, 1)


# ---------------------------------------------------------------- FLOP count
def training_flops_per_image(model) -> float:
    """3 x the forward FLOPs (2 per multiply-add) of the conv and dense layers."""
    import keras

    forward = 0
    for network in (model.encoder, model.decoder):
        for layer in network.layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
                kh, kw = layer.kernel_size
                channels_in = layer.input.shape[-1]
                if isinstance(layer, keras.layers.Conv2DTranspose):
                    positions = layer.input.shape[1] * layer.input.shape[2]  # each input pixel scatters a kernel
                else:
                    positions = layer.output.shape[1] * layer.output.shape[2]
                forward += 2 * positions * kh * kw * channels_in * layer.filters
            elif isinstance(layer, keras.layers.Dense):
                forward += 2 * layer.input.shape[-1] * layer.units
    head = model.posterior.dense
    forward += 2 * head.kernel.shape[0] * head.kernel.shape[1]
    return 3.0 * forward


def sgemm_gflops(size: int = 1024, repeats: int = 10) -> float:
    """The float32 matmul rate now (median of `repeats`), in GFLOP/s."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


# ------------------------------------------------------ the subpixel decoder
def subpixel_layer_class():
    """Conv2DTranspose(k even, stride 2, same) computed as Conv2D(k/2) + depth_to_space(2).

    Exactly the same function and the same kernel variable (k, k, out, in):
    output pixel (2m + r) gathers input pixels m-1, m, m+1 with kernel taps
    k-2-2t+r, t = 0..k/2-1, so the (k, k) kernel is reshaped to (k/2, 2, k/2, 2),
    reversed along the tap axes and moved to 4*out output channels.
    """
    import keras
    import tensorflow as tf

    class SubpixelConv2DTranspose(keras.layers.Conv2DTranspose):
        def call(self, inputs):
            k, _, out, cin = self.kernel.shape
            half = k // 2
            w = tf.reshape(self.kernel, (half, 2, half, 2, out, cin))
            w = tf.transpose(tf.reverse(w, axis=(0, 2)), (0, 2, 5, 1, 3, 4))
            y = tf.nn.conv2d(inputs, tf.reshape(w, (half, half, cin, 4 * out)), 1, "SAME")
            y = tf.nn.depth_to_space(y + tf.tile(self.bias, [4]), 2)
            return self.activation(y)

    return SubpixelConv2DTranspose


def subpixel_decoder(latent_dim: int):
    """The conv decoder with its two stride-2 6x6 transposed convolutions in subpixel form."""
    import keras
    from keras import layers

    from keras_vae.conv_transpose import NarrowConv2DTranspose

    layer = subpixel_layer_class()
    z = keras.Input((latent_dim,))
    x = layers.Reshape((7, 7, 128))(layers.Dense(7 * 7 * 128)(z))
    x = layer(64, 6, strides=2, padding="same", activation="relu")(x)
    x = layer(32, 6, strides=2, padding="same", activation="relu")(x)
    x = NarrowConv2DTranspose(1, 5, strides=1, padding="same")(x)  # as in networks.conv_decoder
    return keras.Model(z, x, name="subpixel_decoder")


def stock_layer_decoder(decoder):
    """`decoder` with its `NarrowConv2DTranspose` as a stock `Conv2DTranspose` (same config, same weights)."""
    import keras

    config = decoder.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "NarrowConv2DTranspose":
            layer.update(class_name="Conv2DTranspose", module="keras.layers", registered_name=None)
    stock = keras.Model.from_config(config)
    stock.set_weights(decoder.get_weights())
    return stock


# ------------------------------------------------------------ the plain port
def plain_port_model():
    """A plain Keras 3 port: the paper's nets from stock Keras layers, hand-written optimal-sigma ELBO, no TFP."""
    import keras
    import tensorflow as tf
    from keras import layers

    def stock_networks():
        encoder = keras.Sequential([
            keras.Input(SHAPE),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 4, strides=2, padding="same", activation="relu"),
            layers.Conv2D(128, 5, strides=2, padding="same", activation="relu"),
            layers.Flatten(),
        ])
        decoder = keras.Sequential([
            keras.Input((LATENT,)),
            layers.Dense(7 * 7 * 128),
            layers.Reshape((7, 7, 128)),
            layers.Conv2DTranspose(64, 6, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(32, 6, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(1, 5, padding="same"),
        ])
        return encoder, decoder

    class PlainVAE(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = stock_networks()
            self.head = layers.Dense(2 * LATENT)
            self.tracker = keras.metrics.Mean(name="loss")

        def train_step(self, data):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                mean, raw = tf.split(self.head(self.encoder(x)), 2, axis=-1)
                std = tf.nn.softplus(raw) + 1e-4
                z = mean + std * tf.random.normal(tf.shape(mean))
                mu = tf.sigmoid(self.decoder(z))
                log_sigma = 0.5 * tf.math.log(tf.reduce_mean(tf.square(x - mu)))
                nll = tf.reduce_sum(0.5 * tf.square((x - mu) / tf.exp(log_sigma)) + log_sigma
                                    + 0.5 * tf.math.log(2 * 3.141592653589793), axis=(1, 2, 3))
                kl = tf.reduce_sum(0.5 * (tf.square(mean) + tf.square(std) - 1) - tf.math.log(std), axis=-1)
                loss = tf.reduce_mean(nll + kl)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            self.tracker.update_state(loss)
            return {"loss": self.tracker.result()}

    model = PlainVAE()
    model.encoder.build((None, *SHAPE))
    model.head.build((None, model.encoder.output_shape[-1]))
    return model


# ------------------------------------------------------------------ one child
def run_child(name: str) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_vae as kv

    spec = VARIANTS[name]
    if "threads" in spec:
        tf.config.threading.set_inter_op_parallelism_threads(spec["threads"][0])
        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"][1])
    x = kv.data.load_arrays("mnist", "train")
    keras.utils.set_random_seed(0)
    kv.distribute.set_precision(spec.get("precision", "none"))
    reference = kv.build_vae(SHAPE, network="conv", latent_dim=LATENT, likelihood="optimal", seed=0)
    flops = training_flops_per_image(reference)
    if spec.get("plain"):
        model = plain_port_model()
    elif spec.get("subpixel"):
        decoder = subpixel_decoder(LATENT)
        decoder.set_weights(reference.decoder.get_weights())
        model = kv.VAE(reference.encoder, decoder, LATENT, likelihood="optimal", seed=0)
    elif spec.get("stock_last_layer"):
        model = kv.VAE(reference.encoder, stock_layer_decoder(reference.decoder), LATENT, likelihood="optimal", seed=0)
    else:
        model = reference
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=spec["jit"])

    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    total = FLAGS.warmup + FLAGS.steps * FLAGS.windows
    if spec.get("plain"):
        repeats = -(-total * BATCH // len(x))
        data = np.concatenate([x] * repeats)[: total * BATCH]
        model.fit(data, batch_size=BATCH, epochs=1, shuffle=True, verbose=0, callbacks=[Stamp()])
    else:
        dataset = kv.data.pipeline(x, BATCH, seed=0).repeat()
        model.fit(dataset, epochs=1, steps_per_epoch=total, verbose=0, callbacks=[Stamp()])
    rates = []
    for window in range(FLAGS.windows):
        start = stamps[FLAGS.warmup - 1 + window * FLAGS.steps]
        end = stamps[FLAGS.warmup - 1 + (window + 1) * FLAGS.steps]
        rates.append(FLAGS.steps * BATCH / (end - start))
    return {"variant": name, "images_per_second": rates, "flops_per_image": flops,
            "sgemm_gflops_now": sgemm_gflops()}


def run_paired() -> dict:
    """keras vs subpixel vs stock last layer vs plain port in ONE process, alternating train_on_batch windows."""
    import keras
    import numpy as np

    import keras_vae as kv

    x = kv.data.load_arrays("mnist", "train")
    keras.utils.set_random_seed(0)
    reference = kv.build_vae(SHAPE, network="conv", latent_dim=LATENT, likelihood="optimal", seed=0)
    decoder = subpixel_decoder(LATENT)
    decoder.set_weights(reference.decoder.get_weights())
    subpixel = kv.VAE(reference.encoder, decoder, LATENT, likelihood="optimal", seed=0)
    z = np.random.default_rng(0).normal(size=(BATCH, LATENT)).astype("float32")
    difference = float(np.max(np.abs(np.asarray(reference.decoder(z)) - np.asarray(decoder(z)))))
    stock_decoder = stock_layer_decoder(reference.decoder)
    stock_difference = float(np.max(np.abs(np.asarray(reference.decoder(z)) - np.asarray(stock_decoder(z)))))
    stock = kv.VAE(reference.encoder, stock_decoder, LATENT, likelihood="optimal", seed=0)
    models = {"keras": reference, "subpixel": subpixel, "stock_last_layer": stock, "plain_port": plain_port_model()}
    for model in models.values():
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    batches = [x[i * BATCH:(i + 1) * BATCH] for i in range(FLAGS.steps)]
    for model in models.values():  # trace and warm up
        for batch in batches[:3]:
            model.train_on_batch(batch)
    rates = {name: [] for name in models}
    for _ in range(FLAGS.paired_windows):
        for name, model in models.items():
            start = time.perf_counter()
            for batch in batches:
                model.train_on_batch(batch)
            rates[name].append(len(batches) * BATCH / (time.perf_counter() - start))
    ratios = [b / a for a, b in zip(rates["keras"], rates["subpixel"])]
    dataset = kv.data.pipeline(x, BATCH, seed=0)
    for _ in dataset:  # fills the cache
        pass
    start, images = time.perf_counter(), 0
    for _ in range(3):
        for batch in dataset:
            images += int(batch.shape[0])
    pipeline_rate = images / (time.perf_counter() - start)
    plain_ratios = [b / a for a, b in zip(rates["keras"], rates["plain_port"])]
    stock_ratios = [b / a for a, b in zip(rates["keras"], rates["stock_last_layer"])]
    return {"steps": len(batches), "rates": rates, "ratios": ratios, "plain_ratios": plain_ratios,
            "stock_ratios": stock_ratios,
            "decoder_max_abs_difference": difference, "stock_decoder_max_abs_difference": stock_difference,
            "pipeline_images_per_second": pipeline_rate}


# ----------------------------------------------------------------- the parent
def to_markdown(summary: dict) -> str:
    flops = summary["flops_per_image"]
    ceiling = NOMINAL_PEAK_GFLOPS * 1e9 / flops
    lines = [
        "# Training throughput: sigma-VAE conv net, latent 20, batch 128, 28x28x1 MNIST",
        "",
        f"Command: `{summary['command']}`; {summary['machine']}; written {summary['written']}.",
        f"Load (`uptime`) before: {summary['uptime_before']}; after: {summary['uptime_after']}.",
        "",
        summary["load_note"],
        "",
        f"FLOPs per trained image (counted from the layers, 3 x forward): {flops / 1e6:.0f} MFLOP; "
        f"ceiling at the nominal {NOMINAL_PEAK_GFLOPS:.0f} GFLOP/s sgemm peak: {ceiling:.0f} images/s.",
        "",
        "| variant | what | images/s (median) | min-max | % nominal peak | sgemm now (GFLOP/s) | % of sgemm now |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in summary["rows"].items():
        median = row["median"]
        gflops = median * flops / 1e9
        lines.append(
            f"| {name} | {VARIANTS[name]['description']} | {median:.0f} | {row['min']:.0f}-{row['max']:.0f} | "
            f"{100 * gflops / NOMINAL_PEAK_GFLOPS:.0f}% | {row['sgemm_now']:.0f} | "
            f"{100 * gflops / row['sgemm_now']:.0f}% |"
        )
    paired = summary.get("paired")
    if paired:
        ratios = paired["ratios"]
        lines += [
            "",
            f"Paired comparison in one process (same load), alternating windows of {paired['steps']} `train_on_batch` "
            "steps, "
            f"{len(ratios)} windows each: subpixel/keras images/s ratio median {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f}); keras median "
            f"{statistics.median(paired['rates']['keras']):.0f}, subpixel median "
            f"{statistics.median(paired['rates']['subpixel']):.0f} images/s. Max |decoder output difference| "
            f"at the same weights: {paired['decoder_max_abs_difference']:.1e}.",
            "",
            "Same process, same windows: plain_port/keras ratio median "
            f"{statistics.median(paired['plain_ratios']):.3f} "
            f"(min {min(paired['plain_ratios']):.2f}, max {max(paired['plain_ratios']):.2f}); plain_port median "
            f"{statistics.median(paired['rates']['plain_port']):.0f} images/s.",
            "",
            "Same process, same windows: stock_last_layer/keras ratio median "
            f"{statistics.median(paired['stock_ratios']):.3f} "
            f"(min {min(paired['stock_ratios']):.2f}, max {max(paired['stock_ratios']):.2f}); stock_last_layer median "
            f"{statistics.median(paired['rates']['stock_last_layer']):.0f} images/s. Max |decoder output difference| "
            f"at the same weights: {paired['stock_decoder_max_abs_difference']:.1e}.",
        ]
    rows = summary["rows"]
    for reason in summary.get("skipped", []):
        lines.append(f"\nNot run: {reason}.")
    if "keras" in rows and "pytorch" in rows:
        ratio = rows["keras"]["median"] / rows["pytorch"]["median"]
        met = "met" if ratio >= TARGET_VS_PYTORCH else "NOT met"
        lines += ["", f"Target check (same machine, same run): our `VAE.train_step` (keras row) "
                  f"{rows['keras']['median']:.0f} images/s = {ratio:.2f}x the PyTorch reference "
                  f"({rows['pytorch']['median']:.0f} images/s; target >= {TARGET_VS_PYTORCH}x: {met}); "
                  f"{100 * rows['keras']['median'] * flops / 1e9 / NOMINAL_PEAK_GFLOPS:.0f}% of the nominal peak."]
    if "keras" in rows and "pytorch_pil_loader" in rows:
        ratio = rows["keras"]["median"] / rows["pytorch_pil_loader"]["median"]
        lines.append(f"Against the same PyTorch step with the official script's per-item PIL loader "
                     f"({rows['pytorch_pil_loader']['median']:.0f} images/s): {ratio:.2f}x "
                     f"(>= {TARGET_VS_PYTORCH}x: {'met' if ratio >= TARGET_VS_PYTORCH else 'NOT met'}).")
    if "bf16" in rows and "pytorch" in rows:
        ratio = rows["bf16"]["median"] / rows["pytorch"]["median"]
        lines.append(f"With `--mixed_precision=mixed_bfloat16` (bf16 row, AMX on this CPU): "
                     f"{rows['bf16']['median']:.0f} images/s = {ratio:.2f}x the float32 PyTorch reference"
                     + (f", {rows['bf16']['median'] / rows['pytorch_bf16']['median']:.2f}x PyTorch under bf16 "
                        "autocast" if "pytorch_bf16" in rows else "") + ".")
    if "keras" in rows and "plain_port" in rows:
        ratio = rows["keras"]["median"] / rows["plain_port"]["median"]
        lines.append(f"Ours vs the plain Keras port (separate processes): {ratio:.2f}x.")
    notes = ["", "What each setting bought (this run):", ""]
    if "xla" in rows and "keras" in rows:
        notes.append(f"- XLA (`jit_compile=True`): {rows['xla']['median'] / rows['keras']['median']:.2f}x the "
                     "non-XLA step on this CPU, so Keras' `auto` (off on CPU) is the right default here.")
    if "onednn_off" in rows and "keras" in rows:
        notes.append(f"- oneDNN off: {rows['onednn_off']['median'] / rows['keras']['median']:.2f}x the default "
                     "(oneDNN on); keep the default.")
    if paired:
        gain = statistics.median(paired["ratios"])
        notes.append(f"- subpixel decoder (paired, same process): {gain:.3f}x; "
                     + ("faster here." if gain > 1.05 else "no gain beyond noise, so `keras_vae.networks.conv_decoder` "
                        "keeps the paper's `Conv2DTranspose` layers."))
        notes.append(f"- input pipeline alone (`keras_vae.data.pipeline`, cached): "
                     f"{paired['pipeline_images_per_second']:.0f} images/s, far above any training rate: "
                     "it never starves the step.")
        notes.append(f"- `NarrowConv2DTranspose` as the last decoder layer (paired, same process): ours runs "
                     f"{1 / statistics.median(paired['stock_ratios']):.3f}x the same model with a stock "
                     "`Conv2DTranspose` there.")
        notes.append(f"- our `VAE.train_step` vs the plain port, paired: the port runs "
                     f"{statistics.median(paired['plain_ratios']):.2f}x ours.")
    lines += notes
    lines += ["", "References (measured earlier on this machine, not in this run):", ""]
    lines += [f"- {name}: ~{value:.0f} images/s" for name, value in REFERENCES.items()]
    lines += ["", *summary.get("notes", [])]
    return "\n".join(lines) + "\n"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main(argv):
    if FLAGS.child == "paired":
        print("RESULT " + json.dumps(run_paired()), flush=True)
        return
    if FLAGS.child:
        print("RESULT " + json.dumps(run_child(FLAGS.child)), flush=True)
        return
    unknown = [v for v in FLAGS.variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"Unknown variants {unknown}; expected some of {list(VARIANTS)}")
    skipped = []
    torch_variants = [v for v in FLAGS.variants if VARIANTS[v].get("torch")]
    if torch_variants and subprocess.run([FLAGS.torch_python, "-c", "import torch"],
                                         capture_output=True).returncode != 0:
        skipped.append(f"{', '.join(torch_variants)}: `{FLAGS.torch_python}` cannot import torch (pass --torch_python)")
        FLAGS.variants = [v for v in FLAGS.variants if v not in torch_variants]
    uptime_before = _uptime()
    runs: dict[str, list[dict]] = {name: [] for name in FLAGS.variants}
    for round_index in range(FLAGS.rounds):
        for name in FLAGS.variants:
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **VARIANTS[name].get("env", {})}
            timing = [f"--steps={FLAGS.steps}", f"--windows={FLAGS.windows}", f"--warmup={FLAGS.warmup}"]
            if VARIANTS[name].get("torch"):
                command = [FLAGS.torch_python, str(Path(__file__).with_name("pytorch_reference.py")), *timing,
                           *VARIANTS[name].get("torch_args", [])]
            else:
                command = [sys.executable, __file__, f"--child={name}", *timing]
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
            if not lines:
                sys.exit(f"{name} failed:\n{output.stdout[-2000:]}\n{output.stderr[-4000:]}")
            result = json.loads(lines[-1][len("RESULT "):])
            runs[name].append(result)
            print(f"round {round_index + 1} {name}: {[round(r) for r in result['images_per_second']]} images/s, "
                  f"sgemm now {result['sgemm_gflops_now']:.0f} GFLOP/s", flush=True)
    paired = None
    if FLAGS.paired_windows > 0:
        command = [sys.executable, __file__, "--child=paired", "--steps=5", f"--paired_windows={FLAGS.paired_windows}"]
        output = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True,
                                text=True, check=False)
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            sys.exit(f"paired failed:\n{output.stdout[-2000:]}\n{output.stderr[-4000:]}")
        paired = json.loads(lines[-1][len("RESULT "):])
        print(f"paired subpixel/keras ratios: {[round(r, 2) for r in paired['ratios']]}", flush=True)
    rows = {}
    for name, results in runs.items():
        rates = [rate for r in results for rate in r["images_per_second"]]
        rows[name] = {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "all": rates,
                      "sgemm_now": statistics.median(r["sgemm_gflops_now"] for r in results)}
    uptime_after = _uptime()
    # The 1-minute load before the run: during it, this benchmark itself keeps both cores busy.
    load = float(uptime_before.split("load average:")[1].split(",")[0]) if "load average:" in uptime_before else 0.0
    summary = {
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "written": time.strftime("%Y-%m-%d %H:%M"),
        "uptime_before": uptime_before,
        "uptime_after": uptime_after,
        "load_note": (f"The machine WAS loaded (1-minute load {load:.1f} on {os.cpu_count()} cores before it "
                      "started: other jobs were running), so absolute numbers are low and noisy; compare variants "
                      "within this run only." if load > 1.0 else "The machine was otherwise idle "
                      f"(1-minute load {load:.2f} before the run)."),
        "flops_per_image": next(r[0]["flops_per_image"] for r in runs.values() if "flops_per_image" in r[0]),
        "rows": rows,
        "paired": paired,
        "skipped": skipped,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{FLAGS.results_name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / f"{FLAGS.results_name}.md").write_text(to_markdown(summary))
    print(to_markdown(summary))


if __name__ == "__main__":
    app.run(main)
