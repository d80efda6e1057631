"""`python -m keras_vae train`: train a VAE and write model.keras, metrics.json and PNGs."""

from __future__ import annotations

import inspect

from absl import flags

from keras_vae import distribute, experiment, likelihoods, models, networks

_DEFAULTS = experiment.RunConfig()

flags.DEFINE_string("dataset", _DEFAULTS.dataset, "'mnist' (embedded), 'tfds:NAME', a .npz file or an image folder.")
flags.DEFINE_enum("model", _DEFAULTS.model, list(models.NAMES), "Model family (conditional uses the labels).")
flags.DEFINE_enum("likelihood", _DEFAULTS.likelihood, list(likelihoods.NAMES), "Decoder likelihood.")
flags.DEFINE_float("sigma", _DEFAULTS.sigma, "Fixed sigma for --likelihood=gaussian.")
flags.DEFINE_enum("network", _DEFAULTS.network, [*networks.NAMES, "pixelcnn"],
                  "Encoder/decoder network; 'pixelcnn' trains a VLAE (conv encoder, PixelCNN decoder).")
flags.DEFINE_integer("receptive_field", _DEFAULTS.receptive_field,
                     "--network=pixelcnn: side of the decoder's view (odd, 3..image size).", lower_bound=3)
flags.DEFINE_integer("latent_dim", _DEFAULTS.latent_dim, "Size of z.", lower_bound=1)
flags.DEFINE_float("beta", _DEFAULTS.beta, "KL weight (BS-VAE: optimal_per_image with beta). Unset: the "
                  "model's own default (1e-6 for --model=spatial, 1.0 for the others).", lower_bound=0.0)
flags.DEFINE_float("free_bits", _DEFAULTS.free_bits, "Per-dimension KL floor in nats.", lower_bound=0.0)
flags.DEFINE_integer("kl_warmup_steps", _DEFAULTS.kl_warmup_steps, "Linear KL warm-up steps (0: none).", lower_bound=0)
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Images per step.", lower_bound=1)
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Training epochs.", lower_bound=1)
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Adam learning rate.", lower_bound=0.0)
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Random seed.")
flags.DEFINE_float("test_fraction", _DEFAULTS.test_fraction, "Test share for datasets without a test split.")
flags.DEFINE_string("out", _DEFAULTS.out, "Output folder.")
flags.DEFINE_bool("overwrite", _DEFAULTS.overwrite, "Replace a model already saved in --out.")
flags.DEFINE_enum("distribute", _DEFAULTS.distribute, list(distribute.STRATEGIES),
                  "tf.distribute strategy; 'multiworker' reads TF_CONFIG (run the same command on every worker).")
flags.DEFINE_enum("mixed_precision", _DEFAULTS.mixed_precision, list(distribute.PRECISIONS),
                  "Networks compute in this precision; likelihood, KL and sigma stay float32.")
flags.DEFINE_bool("jit_compile", _DEFAULTS.jit_compile,
                  "XLA-compile the train step (--nojit_compile: off; unset: Keras 'auto', off on CPU).")
flags.DEFINE_enum("align_latents", _DEFAULTS.align_latents, list(experiment.LATENT_ALIGNMENTS),
                  "After training, fit the prior to the codes of the train split by an exact map of z: 'whiten' "
                  "(mean and covariance), 'center' (mean only) or 'none'. Plain VAEs only.")
flags.DEFINE_bool("data_dependent_start", _DEFAULTS.data_dependent_start,
                  "Start a learned or per-pixel sigma at the RMSE of the first batch's untrained reconstruction "
                  "(--nodata_dependent_start: the paper's start, sigma = 1).")
flags.DEFINE_bool("refit_sigma", _DEFAULTS.refit_sigma,
                  "After training, refit an optimal sigma on the train split at the final weights.")

FLAGS = flags.FLAGS


def model_default_beta(model: str) -> float:
    """The `beta` default of the model's builder: 1e-6 for `"spatial"`, 1.0 for the others.

    Example:

    >>> model_default_beta("spatial"), model_default_beta("vae")
    (1e-06, 1.0)
    """
    parameter = inspect.signature(models.get(model)).parameters.get("beta")
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return _DEFAULTS.beta
    return float(parameter.default)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {' '.join(argv[1:])}")
    values = {field: FLAGS[field].value for field in experiment.RunConfig.__dataclass_fields__}
    if not FLAGS["beta"].present:  # --beta not given: the model's default, not the VAE's 1.0
        values["beta"] = model_default_beta(values["model"])
    config = experiment.RunConfig(**values)
    _, metrics = experiment.train(config)
    print(
        f"test ELBO {metrics['test_elbo']:.1f} nats/image, test MSE {metrics['test_mse']:.4f}, "
        f"sigma {metrics['sigma']:.4f}, {metrics['images_per_second']:.0f} images/s -> {config.out}"
    )
