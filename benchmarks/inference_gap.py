"""Inference suboptimality of the diagonal and IAF posteriors (Cremer, Li & Duvenaud 2018, arXiv:1801.03558).

The models of `benchmarks/priors.py` (conv net, latent 20, optimal sigma,
batch 128, Adam 1e-3, seed 0, the 9,000 embedded MNIST train images, sigma
refitted after training as `train` does), scored on the first `--images`
test images. Every bound uses the served (running, refitted) sigma, as the
ELBO and IWAE of `benchmarks/results/priors.md` do; the decoder is frozen.

- log p(x): per image, the best of the IWAE bounds with `--logp_samples`
  importance samples of each proposal (the amortised q, q* and, for the IAF
  model, flow*); each is a lower bound, tighter for a better proposal;
- ELBO(amortised q): `--eval_samples` draws per image;
- ELBO(q*): a diagonal Gaussian per image (its loc and log scale, started at
  the amortised q's loc and scale, or at the flow's mode and the base scale,
  both in units of that starting scale) optimised with Adam on the `--svi_samples`-draw ELBO for `--svi_steps`
  steps, scored with `--eval_samples` fresh draws;
- for the IAF model also ELBO(flow*): the flow's base loc, log scale and
  context per image optimised the same way (the flow networks shared and
  frozen: a lower bound on the best per-image flow).

approximation gap = log p(x) - ELBO(q*), amortisation gap = ELBO(q*) - ELBO(amortised),
and log p(x) - max(ELBO(q*), ELBO(flow*)): what a per-image flow leaves.

    python benchmarks/inference_gap.py [--models=standard,iaf] [--epochs=10] [--images=100]
                                       [--logp_samples=1000] [--svi_steps=300]

Writes `benchmarks/results/inference_gap.json` and `inference_gap.md`;
trained models are kept under `--cache` and reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import priors  # benchmarks/priors.py (the script's folder is on sys.path): its models, training and flags
import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags

import keras_vae as kv
from keras_vae import data, evaluation, files, latents

tfd = tfp.distributions
RESULTS = Path(__file__).parent / "results"

flags.DEFINE_list("models", ["standard", "iaf"], "Models to train and decompose: standard (diagonal) and iaf.")
flags.DEFINE_integer("images", 100, "Test images decomposed.")
flags.DEFINE_integer("logp_samples", 1000, "Importance samples of the log p(x) estimate.")
flags.DEFINE_integer("eval_samples", 500, "Draws per image of each ELBO.")
flags.DEFINE_integer("svi_steps", 300, "Adam steps of the per-image optimisation.")
flags.DEFINE_integer("svi_samples", 5, "Draws per image per step of the per-image optimisation.")
flags.DEFINE_float("svi_learning_rate", 1e-2, "Adam learning rate of the per-image optimisation.")
flags.DEFINE_string("cache", "/tmp/keras_vae_inference_gap", "Folder of the trained models (reused when present).")
flags.DEFINE_string("tag", "", "Suffix of the model names in the cache and the table (e.g. for other settings).")
flags.DEFINE_enum("sigma", "served", ["served", "draws"],
                  "The decoder sigma of every bound: served (the RMSE of the train reconstructions at the posterior's "
                  "mode, what `train` serves) or draws (the RMSE at one draw of q per train image, what the batch "
                  "fit of training sees).")
FLAGS = flags.FLAGS


def trained(name: str, x_train: np.ndarray) -> tuple[kv.VAE, dict]:
    """`benchmarks/priors.py`'s model `name` (`--epochs`, `--num_flows`, `--flow_units`, `--seed` are its flags),
    from the cache when it holds it."""
    path = Path(FLAGS.cache) / f"{name}{FLAGS.tag}_e{FLAGS.epochs}_s{FLAGS.seed}.keras"
    if path.exists():
        return keras.saving.load_model(path), {"trained": f"loaded {path}"}
    model, images_per_second = priors.train(name, x_train)
    with files.atomic_path(path) as temporary:
        model.save(temporary)
    return model, {"trained": f"{len(x_train) * FLAGS.epochs / images_per_second:.0f} s"}


def train_rmse(model, x_train: np.ndarray, draw: bool) -> float:
    """The RMSE of the decoder means of the first 2,000 train images at the posterior's mode or at one draw."""
    total = 0.0
    images = x_train[:2000]
    for start in range(0, len(images), 500):
        batch = tf.constant(images[start:start + 500])
        q = model.posterior_distribution(batch)
        z = q.sample() if draw else latents.mode(q)
        total += float(tf.reduce_sum(tf.square(batch - model.likelihood.mean(model.decoder_params(z, {"x": batch})))))
    return float(np.sqrt(total / images.size))


def repeat(x, times: int):
    return tf.reshape(tf.repeat(x[None], times, axis=0), (-1, *x.shape[1:]))


def elbo_draws(model, q, x, num_samples: int):
    """log p(x|z) + log p(z) - log q(z|x) at `num_samples` reparameterised draws of q: `(num_samples, N)`."""
    z = q.sample(num_samples)  # (S, N, latent); a flow's draw keeps its log q in TFP's cache
    images = repeat(x, num_samples)
    log_likelihood = model.likelihood_distribution(tf.reshape(z, (-1, z.shape[-1])), {"x": images}).log_prob(images)
    log_prior = model.prior_distribution().log_prob(z)
    return tf.reshape(log_likelihood, (num_samples, -1)) + log_prior - q.log_prob(z)


def mean_elbo(model, make_q, x, num_samples: int, chunk: int = 50) -> np.ndarray:
    total = np.zeros(len(x))
    for start in range(0, num_samples, chunk):
        size = min(chunk, num_samples - start)
        total += tf.reduce_sum(elbo_draws(model, make_q(), x, size), axis=0).numpy()
    return total / num_samples


def iwae(model, make_q, x, num_samples: int, chunk: int = 50) -> np.ndarray:
    """The IWAE bound with `num_samples` importance samples of the proposal `make_q()`, per image: `(N,)`."""
    log_weights = [elbo_draws(model, make_q(), x, min(chunk, num_samples - start)).numpy()
                   for start in range(0, num_samples, chunk)]
    log_weights = np.concatenate(log_weights, axis=0)
    return (tf.reduce_logsumexp(log_weights, axis=0) - np.log(num_samples)).numpy()


def optimised(model, make_q, variables, x, label: str) -> tuple[np.ndarray, list]:
    """Adam on the per-image ELBO over `variables` (the decoder frozen); the trace every 100 steps."""
    optimizer = keras.optimizers.Adam(FLAGS.svi_learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            values = elbo_draws(model, make_q(), x, FLAGS.svi_samples)
            loss = -tf.reduce_sum(tf.reduce_mean(values, axis=0))  # each image's ELBO is its own problem
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return -loss / len(x)

    trace, running = [], []
    start = time.perf_counter()
    for index in range(FLAGS.svi_steps):
        running.append(float(step()))
        if (index + 1) % 100 == 0:
            trace.append(round(float(np.mean(running)), 2))
            running = []
            print(f"{label} step {index + 1}: mean train ELBO {trace[-1]:.2f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    return mean_elbo(model, make_q, x, FLAGS.eval_samples), trace


def decompose(name: str, model, x) -> dict:
    tf.random.set_seed(FLAGS.seed)
    q = model.posterior_distribution(x)
    mode = latents.mode(q)
    row = {"sigma_served": float(tf.reduce_mean(model.likelihood_distribution(mode, {"x": x}).stddev()))}
    start = time.perf_counter()
    log_p = evaluation.iwae_log_likelihood(model, x, FLAGS.logp_samples, seed=FLAGS.seed)
    iwae_100 = evaluation.iwae_log_likelihood(model, x, 100, seed=FLAGS.seed + 1)
    print(f"{name}: log p(x) {np.mean(log_p):.2f} in {time.perf_counter() - start:.0f} s", flush=True)
    amortised = mean_elbo(model, lambda: model.posterior_distribution(x), x, FLAGS.eval_samples)
    row.update(log_p=float(np.mean(log_p)), iwae_100=float(np.mean(iwae_100)), elbo_amortised=float(np.mean(amortised)))

    # The IAF's q is a flow of a diagonal Gaussian: start q* at the flow's mode with the base's scale.
    # (Not `hasattr(q, "bijector")`: TFP's MultivariateNormalDiag is itself a TransformedDistribution of N(0, I).)
    base_scale = (q.distribution if name == "iaf" else q).stddev()
    # Optimised in units of the starting scale (loc = mode + scale0 * shift, scale = scale0 * exp(log_ratio)),
    # so one Adam step moves each coordinate by about learning_rate posterior standard deviations.
    shift, log_ratio = tf.Variable(tf.zeros_like(mode)), tf.Variable(tf.zeros_like(mode))

    def diagonal_q():
        return tfd.MultivariateNormalDiag(mode + base_scale * shift, base_scale * tf.exp(log_ratio))

    diagonal, trace = optimised(model, diagonal_q, [shift, log_ratio], x, f"{name} diagonal q*")
    row.update(elbo_diagonal_optimised=float(np.mean(diagonal)), trace_diagonal=trace)
    estimates = {"amortised": log_p, "diagonal q*": iwae(model, diagonal_q, x, FLAGS.logp_samples)}
    if name == "iaf":
        head = model.posterior
        features = model.encoder(x)
        base_loc, base_scale, context = head(features)
        shift, log_ratio = tf.Variable(tf.zeros_like(base_loc)), tf.Variable(tf.zeros_like(base_loc))
        context_variable = tf.Variable(context)

        def flow_q():
            base = tfd.MultivariateNormalDiag(base_loc + base_scale * shift, base_scale * tf.exp(log_ratio))
            return tfd.TransformedDistribution(base, head.bijector(context_variable))

        flow, trace = optimised(model, flow_q, [shift, log_ratio, context_variable], x, f"{name} flow q*")
        row.update(elbo_flow_optimised=float(np.mean(flow)), trace_flow=trace)
        estimates["flow*"] = iwae(model, flow_q, x, FLAGS.logp_samples)
    # Each IWAE estimate is a lower bound on log p(x) in expectation, and the tighter the proposal the tighter the
    # bound: log p(x) is the best of them per image.
    best_log_p = np.max(np.stack(list(estimates.values())), axis=0)
    best_elbo = max(row["elbo_diagonal_optimised"], row.get("elbo_flow_optimised", -np.inf))
    row.update(
        iwae_by_proposal={key: float(np.mean(value)) for key, value in estimates.items()},
        log_p_amortised_iwae=row["log_p"],
        log_p=float(np.mean(best_log_p)),
        approximation_gap=float(np.mean(best_log_p)) - row["elbo_diagonal_optimised"],
        amortisation_gap=row["elbo_diagonal_optimised"] - row["elbo_amortised"],
        inference_gap=float(np.mean(best_log_p)) - row["elbo_amortised"],
        best_optimised_gap=float(np.mean(best_log_p)) - best_elbo,
    )
    return row


def to_markdown(rows: dict, info: dict) -> str:
    lines = [
        "# Inference suboptimality: the ELBO gap split into approximation and amortisation (Cremer et al. 2018)",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in info["commands"]) + f". Written {info['written']}; `uptime` at "
        f"the start: {info['uptime']}.",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in info["settings"].items()) + ".",
        f"Models as in `benchmarks/priors.py` (conv net, latent 20, optimal sigma refitted after training, "
        f"{info['settings']['epochs']} epochs on the 9,000 embedded MNIST train images, seed "
        f"{info['settings']['seed']}). Scored on the first {info['settings']['images']} test images, nats per image, "
        "with the served sigma (running, refitted on the train split at the posterior's mode), as in `priors.md`; "
        "rows marked `sigma at draws` serve instead the RMSE of the train reconstructions at one draw of q (the "
        "statistic the batch fit of training sees). log p(x): per image the best IWAE bound with K = logp_samples "
        "over the proposals amortised q, q* and flow* (each a lower bound; the IWAE columns give each proposal's). "
        "ELBOs: eval_samples draws per image. q*: a diagonal Gaussian per image, Adam on its ELBO (decoder frozen), "
        "started at the amortised q; flow*: the IAF's base loc, log scale and context per image (flow networks "
        "frozen). approximation = log p(x) - ELBO(q*); amortisation = ELBO(q*) - ELBO(amortised).",
        "",
        "| model | sigma | log p(x) | IWAE K=100 amortised | IWAE amortised | IWAE q* | IWAE flow* | ELBO amortised "
        "| ELBO q* (diagonal) | ELBO flow* | approximation gap | amortisation gap | log p(x) - ELBO "
        "| log p(x) - best optimised ELBO |",
        "|---|" + "---:|" * 13,
    ]
    for name, r in rows.items():
        flow = f"{r['elbo_flow_optimised']:.1f}" if "elbo_flow_optimised" in r else "-"
        proposals = r.get("iwae_by_proposal", {})
        iwae_cells = " | ".join(f"{proposals[k]:.1f}" if k in proposals else "-"
                                for k in ("amortised", "diagonal q*", "flow*"))
        lines.append(
            f"| {name} | {r['sigma_served']:.4f} | {r['log_p']:.1f} | {r['iwae_100']:.1f} | {iwae_cells} "
            f"| {r['elbo_amortised']:.1f} | {r['elbo_diagonal_optimised']:.1f} | {flow} | {r['approximation_gap']:.1f} "
            f"| {r['amortisation_gap']:.1f} | {r['inference_gap']:.1f} | {r.get('best_optimised_gap', np.nan):.1f} |")
    lines += ["", "Per-image optimisation traces (mean training ELBO every 100 Adam steps):", ""]
    for name, r in rows.items():
        lines.append(f"- {name}, diagonal q*: {r['trace_diagonal']}")
        if "trace_flow" in r:
            lines.append(f"- {name}, flow*: {r['trace_flow']}")
    lines += ["", "Train RMSE (first 2,000 train images) at the posterior's mode and at one draw of q:", ""]
    for name, r in rows.items():
        if "rmse_train_mode" in r:
            lines.append(f"- {name}: {r['rmse_train_mode']:.4f} at the mode, {r['rmse_train_draw']:.4f} at a draw")
    return "\n".join(lines) + "\n"


def main(argv):
    unknown = [m for m in FLAGS.models if m not in ("standard", "iaf")]
    if unknown:
        sys.exit(f"Unknown models {unknown}; expected some of ['standard', 'iaf']")
    x_train, x_test = data.load_arrays("mnist", "train"), data.load_arrays("mnist", "test")
    x = tf.constant(x_test[: FLAGS.images])
    settings = {k: FLAGS[k].value for k in ("epochs", "images", "logp_samples", "eval_samples", "svi_steps",
                                            "svi_samples", "svi_learning_rate", "num_flows", "flow_units", "seed")}
    json_path = RESULTS / "inference_gap.json"
    previous = json.loads(json_path.read_text()) if json_path.exists() else {}
    same = {k: v for k, v in previous.get("settings", {}).items() if k != "sigma"} == settings
    rows = previous.get("rows", {}) if same else {}
    command = "python benchmarks/inference_gap.py " + " ".join(sys.argv[1:])
    info = {"settings": settings, "commands": [*previous.get("commands", []), command] if rows else [command],
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    for name in FLAGS.models:
        model, training = trained(name, x_train)
        training["rmse_train_mode"] = train_rmse(model, x_train, draw=False)
        training["rmse_train_draw"] = train_rmse(model, x_train, draw=True)
        if FLAGS.sigma == "draws":
            model.likelihood.refit_to(np.asarray(training["rmse_train_draw"] ** 2, "float32"))
        print(name, training, flush=True)
        row = f"{name}{FLAGS.tag}" + (" (sigma at draws)" if FLAGS.sigma == "draws" else "")
        rows[row] = {**training, **decompose(name, model, x.numpy())}
        info["written"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        files.write_json(json_path, {**info, "rows": rows})
        files.write_text(RESULTS / "inference_gap.md", to_markdown(rows, info))
    print(to_markdown(rows, info))


if __name__ == "__main__":
    app.run(main)
