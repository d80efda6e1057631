"""What `train` and `evaluate` compute and draw for a model of videos (`SequenceVAE`'s hooks).

The commands never name a model family: `keras_vae.experiment` calls a
model's `run_metrics(x_test, batch_size)` and `run_figures(x_test, seed)`,
and `keras_vae.evaluation.evaluate_saved_model` its
`evaluation_report(x, ...)`, where the model has them. `SequenceVAE`'s are
the functions here:

- `run_metrics`: the test ELBO, reconstruction term and KL in nats per
  predicted frame (`test_elbo` = `-test_rec - test_kl`), the ELBO per video,
  the teacher-forced reconstruction MSE and the served sigma.
- `run_figures`: `prediction_K.png`, a strip per test example (context |
  ground truth, then context | sampled future, one row each), and
  `predictions.gif` (each example's true video beside one sampled video).
- `evaluation_report`: SVG's protocol, N futures per test video from the
  learned prior and the best SSIM / PSNR of each predicted step over the N
  (`keras_vae.video.best_of_n_metrics`), written as `best_of_n.png` (the
  two curves against the step) and `best_of_n.csv` (the table), besides the
  test ELBO and KL per frame.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from keras_vae import latents, video

STRIPS = 4  # test examples with a strip in a run's folder
STRIP_SAMPLES = 3  # sampled futures per strip
BEST_OF_N_FILES = ("best_of_n.png", "best_of_n.csv")


def _future_frames(model, x) -> int:
    return int(x.shape[1]) - model.context_frames


def run_metrics(model, x_test: np.ndarray, batch_size: int = 128) -> dict:
    """Test numbers of a model of videos, per predicted frame (a frame is the image of `metrics.json`'s units).

    Args:
        model: A `SequenceVAE`.
        x_test: Test videos `(N, T, H, W, C)`, T > context_frames.
        batch_size: Videos per batch. Defaults to 128.

    Returns:
        `test_elbo`, `test_rec`, `test_kl` (nats per predicted frame; an
        optimal sigma fitted to each batch, as in training),
        `test_elbo_running_sigma` (per frame, at the served sigma),
        `test_elbo_per_video`, `test_mse` / `test_rmse` (teacher-forced
        reconstructions of the future frames, per pixel), `sigma` (served,
        mean over the test split), `sigma_over_test_rmse` and
        `predicted_frames` (per video).
    """
    steps = _future_frames(model, x_test)
    results = model.evaluate(x_test, batch_size=batch_size, verbose=0, return_dict=True)
    squared, sigmas, running = [], [], []
    for start in range(0, len(x_test), batch_size):
        batch = x_test[start : start + batch_size]
        inputs = model.as_inputs(batch)
        z = model.decoder_latent(latents.mode(model.posterior_distribution(inputs)))
        mean, sigma = model.decoded(z, inputs, greedy=True)
        squared.append(np.square(np.asarray(mean) - batch[:, model.context_frames :]).mean(axis=(1, 2, 3, 4)))
        sigmas.append(np.asarray(sigma).mean(axis=(1, 2, 3, 4)))
        running.append(np.asarray(model.elbo_with_running_sigma(batch)))
    rmse = float(np.sqrt(np.mean(np.concatenate(squared))))
    sigma = float(np.mean(np.concatenate(sigmas)))
    extra = {f"test_{name}": float(value) for name, value in results.items()
             if name not in ("loss", "elbo", "rec", "kl", "sigma", "beta")}
    return {
        **extra,
        "test_elbo": float(results["elbo"]) / steps,
        "test_elbo_running_sigma": float(np.mean(np.concatenate(running))) / steps,
        "test_rec": float(results["rec"]) / steps,
        "test_kl": float(results["kl"]) / steps,
        "test_elbo_per_video": float(results["elbo"]),
        "test_mse": rmse**2,
        "test_rmse": rmse,
        "sigma": sigma,
        "sigma_over_test_rmse": sigma / max(rmse, 1e-12),
        "predicted_frames": steps,
    }


def run_figures(model, x_test: np.ndarray, seed: int = 0, num_examples: int = STRIPS,
                num_samples: int = STRIP_SAMPLES) -> dict:
    """The pictures of a `train` run, `{file name: write(path)}`: a strip per example and one GIF.

    The futures are drawn from the learned prior (the model's own frames fed
    back) with noise seeded by `seed`, once, when the first picture is written.
    """
    count = min(num_examples, len(x_test))
    c, steps = model.context_frames, _future_frames(model, x_test)
    drawn = {}

    def futures() -> np.ndarray:
        if "samples" not in drawn:
            drawn["samples"] = np.asarray(model.predict(x_test[:count, :c], num_future=steps, num_samples=num_samples,
                                                        noise=model.noise([seed, 0])))
        return drawn["samples"]

    def strip(k):
        return lambda path: video.write_strip(path, x_test[k, :c], x_test[k, c:], futures()[k])

    def gif(path):
        samples = np.concatenate([np.repeat(x_test[:count, None, :c], num_samples, axis=1), futures()], axis=2)
        pairs = np.stack([x_test[:count], samples[:, 0]], axis=1).reshape(-1, *x_test.shape[1:])
        video.write_gif(path, pairs)

    return {**{f"prediction_{k}.png": strip(k) for k in range(count)}, "predictions.gif": gif}


def best_of_n(model, x: np.ndarray, num_samples: int, batch_size: int = 100, seed: int = 0) -> dict:
    """SVG's best-of-N SSIM and PSNR of every test video and predicted step, `{"ssim", "psnr"}` `(N, steps)`.

    Args:
        model: A `SequenceVAE`.
        x: Videos `(N, T, H, W, C)`; the first `context_frames` are the context.
        num_samples: Futures drawn per video (N; SVG: 100).
        batch_size: Frames generated per call (videos x futures). Defaults to 100.
        seed: Seed of the draws. Defaults to 0.
    """
    c, steps = model.context_frames, _future_frames(model, x)
    noise = model.noise([seed, 0])
    rows = max(1, batch_size // num_samples)
    ssim, psnr = [], []
    for start in range(0, len(x), rows):
        batch = x[start : start + rows]
        samples = np.asarray(model.predict(batch[:, :c], num_future=steps, num_samples=num_samples, noise=noise))
        scores = video.best_of_n_metrics(batch[:, c:], samples)
        ssim.append(scores["ssim"])
        psnr.append(scores["psnr"])
    return {"ssim": np.concatenate(ssim), "psnr": np.concatenate(psnr)}


def best_of_n_table(scores: dict, context_frames: int) -> str:
    """The CSV of `best_of_n`: one row per predicted step (its frame index), mean and standard error."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["step", "frame", "ssim_mean", "ssim_sem", "psnr_mean", "psnr_sem"])
    count = len(scores["ssim"])
    for step in range(scores["ssim"].shape[1]):
        ssim, psnr = scores["ssim"][:, step], scores["psnr"][:, step]
        writer.writerow([step + 1, context_frames + step, f"{ssim.mean():.5f}", f"{ssim.std() / np.sqrt(count):.5f}",
                         f"{psnr.mean():.4f}", f"{psnr.std() / np.sqrt(count):.4f}"])
    return text.getvalue()


def best_of_n_figure(scores: dict, num_samples: int, path) -> None:
    """`best_of_n.png`: mean best-of-N SSIM and PSNR against the predicted step (error bars: standard error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_vae import files

    steps = np.arange(1, scores["ssim"].shape[1] + 1)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, name, unit in ((axes[0], "ssim", "SSIM"), (axes[1], "psnr", "PSNR (dB)")):
        values = scores[name]
        axis.errorbar(steps, values.mean(axis=0), yerr=values.std(axis=0) / np.sqrt(len(values)), marker="o")
        axis.set_xlabel("predicted step")
        axis.set_ylabel(f"best-of-{num_samples} {unit}")
        axis.grid(alpha=0.3)
    figure.suptitle(f"Best of N={num_samples} sampled futures per test video ({len(scores['ssim'])} videos)")
    figure.tight_layout()
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


def evaluation_report(model, x: np.ndarray, batch_size: int = 100, seed: int = 0, num_samples: int = 100) -> tuple:
    """What `evaluate` reports for a model of videos: `(results, {file name: write(path)})`.

    Args:
        model: A `SequenceVAE`.
        x: Test videos `(N, T, H, W, C)` with more than `context_frames` frames.
        batch_size: Videos per ELBO batch, frames per prediction call. Defaults to 100.
        seed: Seed of the draws. Defaults to 0.
        num_samples: Futures per video for the best-of-N metrics (N; SVG: 100). Defaults to 100.

    Returns:
        `results`: `elbo`, `rec`, `kl` (nats per predicted frame), `elbo_per_video`,
        `kl_per_step` (nats, one per predicted step), `best_of_n` (N),
        `ssim_per_step` / `psnr_per_step` (means over the videos) and their
        means over the steps `ssim` / `psnr`, `videos`, `context_frames`,
        `predicted_frames`; and the writers of `best_of_n.png` and `best_of_n.csv`.
    """
    video.validate_videos(x, model.image_shape, model.context_frames + 1, name="the evaluated videos")
    metrics = run_metrics(model, x, batch_size)
    kl_steps = []
    for start in range(0, len(x), batch_size):
        inputs = model.as_inputs(x[start : start + batch_size])
        q, p = model.posterior_distribution(inputs), model.prior_distribution(inputs)
        kl_steps.append(np.asarray(q.distribution.kl_divergence(p.distribution)).sum(axis=-1))
    scores = best_of_n(model, x, num_samples, batch_size, seed)
    results = {
        "elbo": metrics["test_elbo"], "rec": metrics["test_rec"], "kl": metrics["test_kl"],
        "elbo_per_video": metrics["test_elbo_per_video"], "mse": metrics["test_mse"], "sigma": metrics["sigma"],
        "kl_per_step": np.concatenate(kl_steps).mean(axis=0).tolist(),
        "best_of_n": int(num_samples),
        "ssim_per_step": scores["ssim"].mean(axis=0).tolist(), "psnr_per_step": scores["psnr"].mean(axis=0).tolist(),
        "ssim": float(scores["ssim"].mean()), "psnr": float(scores["psnr"].mean()),
        "videos": len(x), "context_frames": model.context_frames, "predicted_frames": metrics["predicted_frames"],
        "units": "elbo, rec, kl: nats per predicted frame; kl_per_step: nats; psnr: dB (capped at 100)",
    }
    from keras_vae import files

    figures = {
        "best_of_n.png": lambda path: best_of_n_figure(scores, num_samples, path),
        "best_of_n.csv": lambda path: files.write_text(path, best_of_n_table(scores, model.context_frames)),
    }
    return results, figures
