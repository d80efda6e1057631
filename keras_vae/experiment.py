"""Train-and-evaluate runs: what `python -m keras_vae train` and the benchmarks call.

A run trains a `VAE` with `model.fit` on a dataset's train split, evaluates it
on the test split and writes `model.keras`, `metrics.json`, `samples.png` and
`reconstructions.png` into its output folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from keras_vae import (
    annealing,
    calibration,
    data,
    distribute,
    files,
    latent_centering,
    latent_choices,
    latent_whitening,
    latents,
    likelihoods,
    models,
    networks,
    plots,
    run_record,
)
from keras_vae.models.vae import VAE, takes_argument
from keras_vae.run_config import LATENT_ALIGNMENTS, RunConfig  # noqa: F401 - experiment.RunConfig is public

RUN_FILES = ("model.keras", "metrics.json", "samples.png", "reconstructions.png")
# The pictures `train` writes beside the model (images, or a video model's strips and GIF); `metrics.json`
# lists those of its run as `figures`.
RUN_FIGURES = ("samples.png", "reconstructions.png", "prediction_*.png", "predictions.gif")
BACKUP_SETTINGS = "run_config.json"  # in the backup folder: the settings of the run it can resume
BACKUP_TIMING = "timing.json"  # in the backup folder: the epochs trained and their seconds, over every process
# What `python -m keras_vae evaluate` writes into its default output folder, `OUT/eval`.
EVAL_FILES = ("eval.json", "samples.png", "reconstructions.png", "interpolation.png", "traversal.png",
              "kl_per_dim.png", "best_of_n.png", "best_of_n.csv",  # these two: models of videos
              "mutual_information.png")  # a factor-labelled dataset


def align_latents(model, x_train: np.ndarray, mode: str) -> float | None:
    """Applies the `mode` step of `RunConfig.align_latents` to `model` in place.

    Returns:
        Its ELBO gain over `x_train` in nats per image, or None when `mode` is
        `"none"` or the model does not support the step (other families).

    Example:

    >>> import keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2)
    >>> align_latents(vae, np.zeros((4, 8, 8, 1), "float32"), "center")
    0.0
    """
    if mode == "whiten" and latent_whitening.supports(model):
        return latent_whitening.whiten_latents(model, x_train)
    if mode == "center" and latent_centering.supports(model):
        shift = latent_centering.center_latents(model, x_train)
        return float(shift @ shift / 2)
    return None


def prepare_output(out, overwrite: bool, create: bool = True) -> Path:
    """Checks (and creates) `out`, refusing to replace a saved model unless `overwrite`.

    With `overwrite` over a previous run, what was derived from the old model
    must not stay beside the new one: `eval/` holding only what `evaluate`
    writes, and the old run's pictures that the new run does not write
    again, are removed once the new model is saved (`stale_outputs`); an
    export (a SavedModel or `.tflite` file) or other files in `eval/` are
    refused, naming them.

    Args:
        out: The run's folder.
        overwrite: Replace a previous run's files.
        create: Create `out`. Defaults to True; False only checks.

    Raises:
        FileExistsError: If `out` already holds a run's files and not
            `overwrite`, or exports of the old model.
        NotADirectoryError: If `out` is a file.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out={out} is a file, not a folder.")
    files.check_writable(out, "--out")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds {', '.join(existing)}; refusing to overwrite it. "
            "Choose another --out or pass --overwrite."
        )
    if existing:
        stale_outputs(out)  # refuses what it cannot remove
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def stale_outputs(out) -> list[Path]:
    """What a previous run in `out` left that `--overwrite` removes once the new model is saved.

    Returns:
        `out / "eval"` when it holds only files `evaluate` writes, and the
        pictures the previous run wrote (the `figures` of its `metrics.json`
        that are names in `RUN_FIGURES`, or for a run that did not list
        them, the files of those names);
        `train` removes those the new run does not write again.

    Raises:
        FileExistsError: If `out/eval` holds other files, or `out` holds an
            export of the old model (a SavedModel or a `.tflite` file).
    """
    out = Path(out)
    evaluation = out / "eval"
    unknown = [str(p) for p in evaluation.iterdir() if p.name not in EVAL_FILES] if evaluation.is_dir() else []
    exports = sorted({str(p.parent) for p in out.glob("**/saved_model.pb")} | {str(p) for p in out.glob("**/*.tflite")})
    if unknown or exports:
        raise FileExistsError(
            f"--overwrite would leave what was made from the old model in {out} beside the new one: "
            f"{', '.join(exports + unknown)}. Move or delete it first, or choose another --out."
        )
    try:
        names = json.loads((out / "metrics.json").read_text())["figures"]
    except (OSError, ValueError, KeyError, TypeError):  # no metrics.json, or one written before it listed them
        names = [p.name for pattern in RUN_FIGURES for p in out.glob(pattern)]
    ours = [name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FIGURES)]
    pictures = [out / name for name in ours if (out / name).is_file()]
    return ([evaluation] if evaluation.is_dir() else []) + pictures


def prepare_file(path, overwrite: bool = False) -> Path:
    """Makes the parent folder of a file to be written, refusing to replace it unless `overwrite`.

    Call it before training, so a clash fails before any work is done.

    Args:
        path: The file, e.g. `"runs/sigma_vae.keras"`.
        overwrite: Allow replacing an existing file. Defaults to False.

    Returns:
        `path` as a `Path`.

    Raises:
        FileExistsError: If `path` exists and not `overwrite`.

    Example:

    >>> import tempfile
    >>> prepare_file(Path(tempfile.mkdtemp()) / "new" / "model.keras").parent.is_dir()
    True
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it. Choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def evaluate(model: VAE, x_test: np.ndarray, batch_size: int = 128, y_test=None) -> dict:
    """Test-set numbers in nats per image: ELBO, its terms, MSE and the inference sigma.

    `test_elbo` fits optimal sigmas to each test batch (as in training and the
    sigma-VAE reference code); `test_elbo_running_sigma` uses the sigma the
    model carries for inference instead. `test_mse` is per pixel, at the
    reconstruction (`model.reconstruct`); `sigma` is the mean decoder sigma over the test set.
    Labels `y_test` go to models that take them (the conditional VAE); the
    model's further metrics (e.g. `perplexity`, `kl_z1`) come as `test_NAME`.
    A model with a `run_metrics(x_test, batch_size)` hook (e.g. of videos) gives its own.
    """
    if hasattr(model, "run_metrics"):
        return model.run_metrics(x_test, batch_size)
    labels = () if y_test is None else (y_test,)
    results = model.evaluate(x_test, *labels, batch_size=batch_size, verbose=0, return_dict=True)
    reconstructions, sigmas, running_elbo = [], [], []
    for start in range(0, len(x_test), batch_size):
        batch = x_test[start : start + batch_size]
        batch_labels = tuple(y[start : start + batch_size] for y in labels)
        inputs = model.as_inputs(batch, *batch_labels)
        # The reconstruction (decoder mean at the posterior's mode) and its sigma, in one decoder pass.
        z = model.decoder_latent(latents.mode(model.posterior_distribution(inputs)))
        mean, sigma = model.decoded(z, inputs, greedy=True)
        reconstructions.append(np.asarray(mean))
        sigmas.append(np.asarray(sigma).mean(axis=(1, 2, 3)))
        running_elbo.append(np.asarray(model.elbo_with_running_sigma(batch, *batch_labels)))
    reconstructions = np.concatenate(reconstructions)
    served_sigma = float(np.mean(np.concatenate(sigmas)))
    test_rmse = float(np.sqrt(np.mean((reconstructions - x_test) ** 2)))
    extra = {f"test_{name}": float(value) for name, value in results.items()
             if name not in ("loss", "elbo", "rec", "kl", "sigma", "beta")}
    return {
        **extra,
        "test_elbo": float(results["elbo"]),
        "test_elbo_running_sigma": float(np.mean(np.concatenate(running_elbo))),
        "test_rec": float(results["rec"]),
        "test_kl": float(results["kl"]),
        "test_mse": test_rmse**2,
        "test_rmse": test_rmse,
        "sigma": served_sigma,
        "sigma_over_test_rmse": served_sigma / max(test_rmse, 1e-12),
    }


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and says where and with which sigma.

    Replaces `keras.callbacks.TerminateOnNaN`, whose message names neither
    the step nor the likelihood. `message` keeps the explanation.

    Args:
        sigma_mode: The likelihood / sigma mode, for the message.
    """

    def __init__(self, sigma_mode: str):
        super().__init__()
        self.sigma_mode = sigma_mode
        self.message = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.all(np.isfinite(loss)):
            return
        step = int(np.asarray(self.model.optimizer.iterations))
        self.message = (
            f"Training stopped: the loss became {float(np.ravel(loss)[0])} at step {step} "
            f"(epoch {getattr(self, '_epoch', 0) + 1}, batch {batch + 1}) with likelihood {self.sigma_mode}. "
            "Try a lower --learning_rate, a larger fixed sigma, or an optimal sigma mode."
        )
        print(self.message, flush=True)
        self.model.stop_training = True


@contextlib.contextmanager
def _precision(name: str):
    """Sets the mixed-precision policy while the model is built, then restores the previous one."""
    previous = keras.mixed_precision.global_policy()
    distribute.set_precision(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _is_chief(strategy) -> bool:
    """Whether this process writes the run's files (always, except non-chief multi-workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def _pixelcnn_builder(config: RunConfig):
    """`--network=pixelcnn`: a builder of `VLAE`s with the run's receptive field."""
    if config.model != "vae":
        raise ValueError(f"--network=pixelcnn builds a VLAE and needs --model=vae. Received: --model={config.model}")

    def build(input_shape, network, likelihood, sigma, **kwargs):
        del network  # the encoder is the conv one
        likelihood = likelihoods.get(likelihood, sigma=sigma)
        return models.build_vlae(input_shape, likelihood=likelihood, receptive_field=config.receptive_field, **kwargs)

    return build


def prepare_backup(backup: Path, config: RunConfig) -> Path:
    """Checks that an interrupted run's checkpoint in `backup` is one this run may resume.

    The same settings resume it (what `BackupAndRestore` then does). Other
    settings are refused, since resuming would silently continue another
    run, unless `config.overwrite`, which discards the old checkpoint and
    starts afresh. The folder then records this run's settings.

    Raises:
        FileExistsError: If `backup` holds a checkpoint of other settings and
            not `config.overwrite`.
    """
    discard = check_backup(backup, config)
    if discard:
        shutil.rmtree(backup)
    elif not has_checkpoint(backup):
        (backup / BACKUP_TIMING).unlink(missing_ok=True)  # nothing to resume: a fresh start
    backup.mkdir(parents=True, exist_ok=True)
    files.write_json(backup / BACKUP_SETTINGS, _settings(config))
    return backup


def _settings(config: RunConfig) -> dict:
    return json.loads(json.dumps({k: v for k, v in dataclasses.asdict(config).items() if k != "overwrite"}))


def has_checkpoint(backup: Path) -> bool:
    """Whether `backup` holds a checkpoint to resume (more than this library's own records)."""
    return backup.is_dir() and any(p.name not in (BACKUP_SETTINGS, BACKUP_TIMING) for p in backup.iterdir())


def check_backup(backup: Path, config: RunConfig) -> bool:
    """The checks of `prepare_backup`, writing nothing: whether its checkpoint is to be discarded.

    Raises:
        FileExistsError: If `backup` holds a checkpoint of other settings and
            not `config.overwrite`, or is not this library's (a file, or a
            folder without its `run_config.json`), even with `overwrite`.
    """
    backup = Path(backup)
    record = backup / BACKUP_SETTINGS
    if backup.exists() and not backup.is_dir():
        raise FileExistsError(f"{backup} is a file, where the run keeps its checkpoint folder; move it away.")
    if not has_checkpoint(backup):
        return False
    if not record.is_file():
        raise FileExistsError(
            f"{backup} holds files but no {BACKUP_SETTINGS}, so it is not a checkpoint of keras_vae: refusing to "
            "delete or resume it, even with --overwrite. Move it away or choose another --out."
        )
    try:
        saved = json.loads(record.read_text())
    except ValueError:
        saved = {}
    settings = _settings(config)
    if saved == settings:
        return False
    changed = sorted(k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k))
    if not config.overwrite:
        raise FileExistsError(
            f"{backup} holds the checkpoint of an interrupted run with other settings "
            f"({', '.join(changed) or 'unrecorded'}). Rerun that command to resume it, or pass "
            "--overwrite to discard it and start afresh."
        )
    return True


def check_config(config: RunConfig) -> None:
    """Refuses settings that are invalid or would be silently ignored, before any data is read.

    Raises:
        ValueError: Naming the setting and what to do instead.
    """
    if config.mixed_precision not in distribute.PRECISIONS:
        raise ValueError(
            f"Expected mixed_precision in {distribute.PRECISIONS}. Received: mixed_precision={config.mixed_precision!r}"
        )
    if config.align_latents not in LATENT_ALIGNMENTS:
        raise ValueError(
            f"Expected align_latents in {LATENT_ALIGNMENTS}. Received: align_latents={config.align_latents!r}"
        )
    if not (np.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise ValueError(f"Expected --learning_rate > 0 (0 never changes the weights). "
                         f"Received: learning_rate={config.learning_rate}")
    default_sigma = RunConfig.__dataclass_fields__["sigma"].default
    if config.likelihood != "gaussian" and config.sigma != default_sigma:
        raise ValueError(
            f"--sigma sets the fixed sigma of --likelihood=gaussian, but --likelihood={config.likelihood} does not "
            f"use it. Received: sigma={config.sigma}. Drop --sigma, or use --likelihood=gaussian."
        )
    for name in ("epochs", "batch_size", "latent_dim"):
        if getattr(config, name) < 1:
            raise ValueError(f"Expected {name} >= 1. Received: {name}={getattr(config, name)}")
    for name in ("beta", "free_bits", "kl_warmup_steps"):
        if not getattr(config, name) >= 0:
            raise ValueError(f"Expected {name} >= 0. Received: {name}={getattr(config, name)}")
    if not 0.0 <= config.refit_split < 1.0:
        raise ValueError(f"Expected 0 <= --refit_split < 1 (a fraction of the train split). "
                         f"Received: refit_split={config.refit_split}")
    latent_choices.check_config(config)  # --prior, --posterior, --sampler and their sizes


def _backup_name(strategy) -> str:
    """The checkpoint folder: `backup`, and one of its own for every non-chief multi-worker."""
    return "backup" if _is_chief(strategy) else f"backup_worker{strategy.cluster_resolver.task_id}"


class _EpochTimer(keras.callbacks.Callback):
    """Sums the wall time and the number of training epochs (excluding evaluation) over a resumed run.

    Args:
        record: A JSON file that keeps the sums between processes (in the
            checkpoint folder), or None.
    """

    def __init__(self, record: Path | None = None):
        super().__init__()
        self.record = record
        self.seconds, self.epochs = 0.0, 0

    def on_train_begin(self, logs=None):
        saved = json.loads(self.record.read_text()) if self.record is not None and self.record.is_file() else {}
        self.seconds, self.epochs = float(saved.get("train_seconds", 0.0)), int(saved.get("epochs", 0))

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._start
        self.epochs += 1
        if self.record is not None:
            files.write_json(self.record, {"epochs": self.epochs, "train_seconds": self.seconds})


def video_options(config: RunConfig, split: str) -> dict:
    """The `keras_vae.video.load_videos` options of a video `--dataset` (`moving_mnist`'s size flags).

    Example:

    >>> video_options(RunConfig(num_sequences=90), "test")["num_sequences"]
    10
    """
    count = config.num_sequences
    if count and split == "test":
        count = max(1, count // 9)
    return dict(num_sequences=count or None, num_frames=config.num_frames, frame_size=config.frame_size,
                num_digits=config.num_digits)


def dataset_source(config: RunConfig) -> str:
    """`--dataset` as `data.load_arrays` reads it: `sprites` rendered at `--image_size`.

    Example:

    >>> dataset_source(RunConfig(dataset="sprites", image_size=32))
    'sprites:32'
    """
    return f"sprites:{config.image_size}" if config.dataset == "sprites" else config.dataset


def check_data_kind(config: RunConfig, x_train: np.ndarray) -> dict:
    """Refuses videos for a model of images and images for a model of videos (one that takes `context_frames`).

    Returns:
        The builder arguments the data set: `context_frames` and `future_frames` for videos, else none.
    """
    takes_videos = models.default_argument(models.FAMILIES.get(config.model, VAE), "context_frames") is not None
    video_models = [name for name, family in models.FAMILIES.items()
                    if models.default_argument(family, "context_frames") is not None]
    if np.ndim(x_train) == 5 and not takes_videos:
        raise ValueError(f"--dataset={config.dataset} holds videos (shape {x_train.shape[1:]}), but --model="
                         f"{config.model} takes images. Use a model of videos (--model={'/'.join(video_models)}).")
    if np.ndim(x_train) != 5 and takes_videos:
        raise ValueError(f"--model={config.model} takes videos (N, T, H, W, C), but --dataset={config.dataset} "
                         f"holds arrays of shape {x_train.shape}.")
    if not takes_videos:
        return {}
    if x_train.shape[1] < config.context_frames + 1:
        raise ValueError(f"--dataset={config.dataset} has {x_train.shape[1]} frames per video, but "
                         f"--context_frames={config.context_frames} needs at least {config.context_frames + 1} "
                         "(context frames + 1).")
    return {"context_frames": config.context_frames, "future_frames": int(x_train.shape[1]) - config.context_frames}


def run_figures(model: VAE, x_test: np.ndarray, y_test, metrics: dict, seed: int = 0) -> dict:
    """The pictures `train` writes, `{file name: write(path)}`: the model's own (its `run_figures(x_test, seed)`
    hook, e.g. video strips), else `samples.png` and `reconstructions.png`."""
    if hasattr(model, "run_figures"):
        return model.run_figures(x_test, seed=seed)
    test_labels = () if y_test is None else (y_test[:32],)
    decoder = plots.decoder_caption(model, metrics["sigma"])  # the likelihood and its sigma, in the titles
    return {
        "samples.png": lambda path: plots.sample_grid(np.asarray(model.sample(64)), path, num_columns=8,
                                                      decoder=decoder),
        "reconstructions.png": lambda path: plots.reconstruction_grid(
            x_test[:32], np.asarray(model.reconstruct(x_test[:32], *test_labels)), path, decoder=decoder),
    }


def hold_out(x_train: np.ndarray, y_train: np.ndarray | None, config: RunConfig) -> tuple:
    """Splits `--refit_split` of the train split off for the refit of the served sigma.

    Returns:
        `((x_train, y_train), refit_inputs)`: the images that train, and the
        images (or `(images, labels)`) the sigma is refitted on: the held-out
        ones, or the train split itself when `refit_split` is 0.

    Raises:
        ValueError: If the fraction leaves no image on one side.
    """
    if config.refit_split == 0:
        return (x_train, y_train), x_train if y_train is None else (x_train, y_train)
    count = int(round(config.refit_split * len(x_train)))
    if not 1 <= count < len(x_train):
        raise ValueError(f"--refit_split={config.refit_split} of the {len(x_train)} train images of "
                         f"--dataset={config.dataset} holds out {count}; it needs at least 1 on each side.")
    order = np.random.default_rng(config.seed).permutation(len(x_train))
    kept, held = np.sort(order[count:]), np.sort(order[:count])
    if y_train is None:
        return (x_train[kept], None), x_train[held]
    return (x_train[kept], y_train[kept]), (x_train[held], y_train[held])


def train(config: RunConfig, verbose: int | str = "auto", callbacks=()) -> tuple[VAE, dict]:
    """Trains and evaluates one run and writes its files into `config.out`.

    Args:
        config: The run's settings.
        verbose: Keras progress output. Defaults to `"auto"` (a progress bar).
        callbacks: Extra Keras callbacks.

    Returns:
        `(model, metrics)`; `metrics` is also written to `metrics.json`.
    """
    strategy = distribute.get_strategy(config.distribute)  # first: multi-worker needs it before any TF op
    check_config(config)
    likelihood = likelihoods.get(config.likelihood, sigma=config.sigma)  # bad names fail before any work
    if config.refit_split and (likelihood.refit_reduction is None or not config.refit_sigma):
        reason = ("--norefit_sigma is set" if not config.refit_sigma
                  else f"--likelihood={config.likelihood} has none")
        raise ValueError(f"--refit_split holds images out for the refit of the served sigma, but {reason}. "
                         "Drop --refit_split.")
    builder = models.get(config.model)
    if config.network == "pixelcnn":
        builder = _pixelcnn_builder(config)
    else:
        networks.get(config.network)
    source = dataset_source(config)
    x_train, y_train = data.load_arrays(source, "train", config.test_fraction, with_labels=True,
                                        video_options=video_options(config, "train"))
    x_test, y_test = data.load_arrays(source, "test", config.test_fraction, with_labels=True,
                                      video_options=video_options(config, "test"))
    for split in ("train", "test"):  # factor labels (sprites, an .npz with factors): checked before any work
        data.factors(source, split, config.test_fraction)
    likelihood.validate(x_train)  # e.g. 8-bit likelihoods need pixels on the 1/255 grid
    model_kwargs = check_data_kind(config, x_train)
    if takes_argument(models.FAMILIES[config.model], "condition_dim"):  # a model conditioned on labels
        if y_train is None or y_test is None:
            raise ValueError(f"--model=conditional needs labels, but dataset {config.dataset!r} has none.")
    else:
        y_train = y_test = None
    min_frames = config.context_frames + 1 if "context_frames" in model_kwargs else None
    # every array against every other
    data.check_splits(x_train, x_test, y_train, y_test, name=config.dataset, min_frames=min_frames)
    if y_train is not None:
        model_kwargs["num_classes"] = int(max(np.max(y_train), np.max(y_test))) + 1
    (x_train, y_train), refit_inputs = hold_out(x_train, y_train, config)
    out = prepare_output(config.out, config.overwrite, create=False)
    backup_path = out / _backup_name(strategy)
    check_backup(backup_path, config)
    stale = stale_outputs(out) if config.overwrite and (out / "model.keras").exists() else []
    keras.utils.set_random_seed(config.seed)
    with strategy.scope(), _precision(config.mixed_precision):
        model = builder(
            x_train.shape[1:],
            network=config.network,
            latent_dim=config.latent_dim,
            likelihood=likelihoods.get(config.likelihood, config.sigma, config.data_dependent_start),
            sigma=config.sigma,
            beta=config.beta,
            free_bits=config.free_bits,
            seed=config.seed,
            **model_kwargs,
            **latent_choices.model_parts(config, x_train),  # --prior, --posterior
        )
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            jit_compile="auto" if config.jit_compile is None else config.jit_compile,
        )
    if config.align_latents == "whiten" and latent_whitening.supports(model) and len(x_train) <= config.latent_dim:
        raise ValueError(
            f"--align_latents=whiten fits a covariance of the {config.latent_dim} latent dimensions and needs more "
            f"train images than that. Received {len(x_train)}. Use --align_latents=center or none."
        )
    with strategy.scope():  # float32 whatever --mixed_precision: it is fitted and drawn outside the networks
        sampler = latent_choices.make_sampler(config, model, x_train)  # checks its size; fitted after training
    # Everything is checked: only now does the run write into `out`.
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    backup = prepare_backup(backup_path, config)
    timer = _EpochTimer(backup / BACKUP_TIMING)
    sigma_mode = f"gaussian(sigma={config.sigma})" if config.likelihood == "gaussian" else repr(config.likelihood)
    nan_stop = StopOnNaN(sigma_mode)
    run_callbacks = [
        nan_stop,
        # The checkpoint stays until the model is saved (below), so a crash in between loses no training.
        keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
        timer,  # after the checkpoint: its record counts the epochs the checkpoint holds
        # After the timer: validation on the test split, TensorBoard under OUT/tensorboard, history.csv.
        *(run_record.callbacks(out, backup, x_test, y_test, model, config.batch_size, config.seed)
          if _is_chief(strategy) else []),
        *callbacks,
    ]
    if config.kl_warmup_steps > 0:
        run_callbacks.append(annealing.KLAnnealing(annealing.linear(config.kl_warmup_steps, end=config.beta)))
    if hasattr(model, "temperature"):  # a relaxed categorical posterior
        run_callbacks.append(annealing.TemperatureAnnealing(annealing.exponential(rate=1e-3, end=0.5)))
    if y_train is None:
        inputs = dict(x=data.pipeline(x_train, config.batch_size, seed=config.seed), shuffle=False)  # it shuffles
    else:
        inputs = dict(x=x_train, y=y_train, batch_size=config.batch_size, shuffle=True)
    try:
        history = model.fit(
            **inputs,
            epochs=config.epochs,
            verbose=verbose,
            callbacks=run_callbacks,
        )
    except BaseException:
        if not has_checkpoint(backup):  # failed before its first epoch: leave nothing that blocks the rerun
            shutil.rmtree(backup, ignore_errors=True)
            if created and not any(out.iterdir()):
                out.rmdir()
        raise
    losses = history.history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        shutil.rmtree(backup, ignore_errors=True)  # its last epoch holds the diverged weights
        raise FloatingPointError(
            (nan_stop.message or f"Training diverged (loss {losses[-1]}) with likelihood {sigma_mode}.")
            + " Nothing was saved."
        )
    if config.refit_sigma:
        calibration.refit_sigma(model, refit_inputs)
    alignment_gain = align_latents(model, x_train, config.align_latents)
    latent_choices.fit_sampler(model, sampler, x_train, config)  # on the codes of the aligned model
    metrics = evaluate(model, x_test, config.batch_size, y_test)
    metrics.update(
        epochs=config.epochs,
        train_seconds=timer.seconds,  # every epoch of the run, also those of an interrupted process it resumed
        images_per_second=len(x_train) * timer.epochs / max(timer.seconds, 1e-9),
        latent_alignment_nats=alignment_gain,
        train_images=len(x_train),
        refit_images=len(refit_inputs[0] if isinstance(refit_inputs, tuple) else refit_inputs),
        test_images=len(x_test),
    )
    if not hasattr(model, "run_metrics"):  # a model of images: its prior, posterior, sampler and KL estimator
        metrics.update(latent_choices.describe(config, model, x_test, () if y_test is None else (y_test,)))
    metrics.update(run_record.describe(metrics, config, model, alignment_gain))  # flags that applied, units, versions
    if not _is_chief(strategy):
        shutil.rmtree(backup, ignore_errors=True)
        return model, metrics
    figures = run_figures(model, x_test, y_test, metrics, config.seed)
    metrics["figures"] = sorted(figures)  # so that an --overwrite run knows which pictures were this run's
    # Every file goes to a temporary name first; they are renamed into place together at the end of the
    # `with`, so a crash leaves the previous run's files (or none), never half of them.
    with contextlib.ExitStack() as stack:
        temporary = {name: stack.enter_context(files.atomic_path(out / name))
                     for name in ("model.keras", "metrics.json", *figures)}
        model.save(temporary["model.keras"])
        temporary["metrics.json"].write_text(json.dumps(metrics, indent=2) + "\n")
        for name, write in figures.items():
            write(temporary[name])
    for path in stale:  # the old model's evaluation, and its pictures that this run did not replace
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name not in figures:
            path.unlink(missing_ok=True)
    shutil.rmtree(backup, ignore_errors=True)  # the model is saved: the checkpoint is no longer needed
    return model, metrics
