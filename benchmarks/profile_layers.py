"""Where a training step of the conv VAE spends its time: each layer's forward and backward pass.

Times every layer with weights of `keras_vae.networks.conv_encoder` /
`conv_decoder` (28x28x1, latent 20) on its own, at batch 128, as one
`tf.function` per layer: the forward pass, and the forward plus backward
pass (gradients for the weights and, except for the first layer, the
input, as in training). Compares the sum with the whole `VAE.train_step`
and states each layer's FLOP rate. A second table times the decoder's last
layer, `kv.NarrowConv2DTranspose`, against a stock `Conv2DTranspose` with the
same weights for 1 to 6 filters (the evidence for its `MAX_DEPTHWISE_FILTERS`).
Writes `benchmarks/results/profile_layers.md` and `.json`; run it on a quiet
machine, it takes about two minutes.

    python benchmarks/profile_layers.py [--repeats=20]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from timing import call_times  # noqa: E402  (benchmarks/timing.py)

import keras_vae as kv  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BATCH, LATENT, SHAPE = 128, 20, (28, 28, 1)

flags.DEFINE_integer("repeats", 20, "Timed calls per layer and pass (median).")
FLAGS = flags.FLAGS


def _median_ms(fn, repeats: int) -> float:
    return 1e3 * statistics.median(call_times(fn, repeats, warmup=3))


def _forward_flops(layer) -> float:
    """2 x multiply-adds of a Conv2D, Conv2DTranspose or Dense layer, per image."""
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
        kh, kw = layer.kernel_size
        grid = layer.input.shape if isinstance(layer, keras.layers.Conv2DTranspose) else layer.output.shape
        return 2.0 * grid[1] * grid[2] * kh * kw * layer.input.shape[-1] * layer.filters
    return 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]


def _shapes(layer) -> tuple[tuple, tuple]:
    """Input and output shapes without the batch (a Dense head outside a functional model: its kernel's)."""
    try:
        return tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:])
    except (AttributeError, ValueError):
        return (layer.kernel.shape[0],), (layer.kernel.shape[1],)


def _time_layer(layer, input_gradient: bool) -> dict:
    x = tf.random.normal((BATCH, *_shapes(layer)[0]))

    @tf.function
    def forward(x):
        return layer(x)

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.square(y))
        return tape.gradient(loss, ([x] if input_gradient else []) + layer.trainable_variables)

    def run(fn):
        return lambda: [t.numpy() for t in tf.nest.flatten(fn(x))]

    return {"forward_ms": _median_ms(run(forward), FLAGS.repeats),
            "train_ms": _median_ms(run(forward_backward), FLAGS.repeats)}


def _narrow_vs_stock(filters_list=(1, 2, 3, 4, 6)) -> list[dict]:
    """Train ms of the last decoder layer (28x28x32 -> 28x28xF, k5, s1) in both forms, same weights."""
    rows = []
    for filters in filters_list:
        keras.utils.set_random_seed(filters)
        narrow = kv.NarrowConv2DTranspose(filters, 5, padding="same")
        stock = keras.layers.Conv2DTranspose(filters, 5, padding="same")
        inputs = keras.Input((28, 28, 32))
        keras.Model(inputs, [narrow(inputs), stock(inputs)])  # gives both layers .input / .output
        stock.set_weights(narrow.get_weights())
        row = {"filters": filters, "depthwise_path": narrow.uses_depthwise_path}
        for name, layer in (("narrow", narrow), ("stock", stock)):
            timing = _time_layer(layer, input_gradient=True)
            row[f"{name}_forward_ms"], row[f"{name}_train_ms"] = timing["forward_ms"], timing["train_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _train_step_ms(model) -> float:
    x = kv.data.load_arrays("mnist", "train")[:BATCH]
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return _median_ms(lambda: model.train_on_batch(x), FLAGS.repeats)


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    model = kv.build_vae(SHAPE, network="conv", latent_dim=LATENT, likelihood="optimal", seed=0)
    layers = [("encoder", layer) for layer in model.encoder.layers if layer.weights]
    layers.append(("posterior head", model.posterior.dense))
    layers += [("decoder", layer) for layer in model.decoder.layers if layer.weights]
    rows = []
    for index, (part, layer) in enumerate(layers):
        timing = _time_layer(layer, input_gradient=index > 0)  # the images need no gradient
        flops = _forward_flops(layer)
        rows.append({"part": part, "layer": f"{type(layer).__name__} {layer.name}",
                     "shape": " -> ".join(map(str, _shapes(layer))),
                     "forward_mflop_per_image": flops / 1e6, **timing,
                     "train_gflops": 3 * flops * BATCH / (timing["train_ms"] / 1e3) / 1e9})
        print(json.dumps(rows[-1]), flush=True)
    step_ms = _train_step_ms(model)
    result = {"rows": rows, "train_step_ms": step_ms, "batch": BATCH, "narrow_vs_stock": _narrow_vs_stock(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, TF {tf.__version__}",
              "load_before": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
              "written": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_layers.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "profile_layers.md").write_text(to_markdown(result))
    print(to_markdown(result))


def to_markdown(result: dict) -> str:
    rows = result["rows"]
    total = sum(r["train_ms"] for r in rows)
    lines = [
        "# Where a conv-VAE training step spends its time (batch 128, 28x28x1, latent 20)",
        "",
        f"Command: `python benchmarks/profile_layers.py`; {result['machine']}; written {result['written']}; "
        f"1-minute load average {result['load_before'].split(',')[0]} at the end.",
        "",
        "Each layer alone in a `tf.function`, median of the calls; `train` = forward + backward (weight "
        "gradients, and input gradients after the first layer).",
        "",
        "| part | layer | shape | MFLOP/image (fwd) | forward ms | train ms | share of layer sum | GFLOP/s (train) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['part']} | {r['layer']} | {r['shape']} | {r['forward_mflop_per_image']:.2f} | "
                     f"{r['forward_ms']:.2f} | {r['train_ms']:.2f} | {100 * r['train_ms'] / total:.0f}% | "
                     f"{r['train_gflops']:.0f} |")
    lines += [
        "",
        f"Sum over layers: {total:.1f} ms per step ({BATCH * 1e3 / total:.0f} images/s); the whole "
        f"`VAE.train_step` (likelihood, KL, Adam, metrics included): {result['train_step_ms']:.1f} ms "
        f"({BATCH * 1e3 / result['train_step_ms']:.0f} images/s). Timed alone, every layer pays its own call "
        "and copies its gradients back to numpy, so the sum overstates the step: read the shares and the GFLOP/s. "
        "The train GFLOP/s count 3 x the forward FLOPs (forward, input and weight gradients).",
    ]
    narrow = result.get("narrow_vs_stock")
    if narrow:
        lines += [
            "",
            "The decoder's last layer, (28, 28, 32) -> (28, 28, F), kernel 5, stride 1, in both forms with the same "
            "weights: `NarrowConv2DTranspose` (depthwise form up to `MAX_DEPTHWISE_FILTERS` = "
            f"{kv.conv_transpose.MAX_DEPTHWISE_FILTERS} filters, stock beyond) and a stock `Conv2DTranspose`.",
            "",
            "| filters | depthwise form | narrow forward ms | stock forward ms | narrow train ms | stock train ms | "
            "train speed-up |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in narrow:
            form = "yes" if r["depthwise_path"] else "no"
            cells = [r["narrow_forward_ms"], r["stock_forward_ms"], r["narrow_train_ms"], r["stock_train_ms"]]
            lines.append(f"| {r['filters']} | {form} | " + " | ".join(f"{c:.2f}" for c in cells)
                         + f" | {r['stock_train_ms'] / r['narrow_train_ms']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    app.run(main)
