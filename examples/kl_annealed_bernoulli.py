"""A Bernoulli VAE with linear KL warm-up and free bits, trained with `model.fit`.

    python examples/kl_annealed_bernoulli.py --epochs=10

(`--help` lists the flags: the arguments of `main`.)

beta rises from 0 to 1 over the first `warmup_steps` steps (KLAnnealing assigns
it before every batch); free bits keep each latent dimension above 0.1 nats.
"""

import argparse
import inspect

import keras

import keras_vae as kv
from keras_vae.experiment import prepare_file


def main(warmup_steps: int = 500, epochs: int = 10, num_images: int | None = None,
         out: str = "runs/annealed_bernoulli.keras", overwrite: bool = False) -> kv.VAE:
    out = prepare_file(out, overwrite)  # refuses to replace a saved model (unless overwrite), before any training
    x_train = kv.data.load_arrays("mnist", split="train")[:num_images]
    vae = kv.build_vae((28, 28, 1), network="conv", latent_dim=20, likelihood="bernoulli", free_bits=0.1)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    schedule = kv.annealing.linear(warmup_steps=warmup_steps)
    vae.fit(x_train, batch_size=128, epochs=epochs, callbacks=[kv.callbacks.KLAnnealing(schedule)])
    vae.save(out)
    return vae


def parse_args(argv: list[str] | None = None) -> dict:
    """The command line's flags as `main`'s keyword arguments (defaults: `main`'s)."""
    defaults = {name: p.default for name, p in inspect.signature(main).parameters.items()}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup_steps", type=int, default=defaults["warmup_steps"],
                        help="Steps over which beta rises linearly from 0 to 1.")
    parser.add_argument("--epochs", type=int, default=defaults["epochs"], help="Passes over the train split.")
    parser.add_argument("--num_images", type=int, default=defaults["num_images"],
                        help="Use only the first N images of each split (default: all).")
    parser.add_argument("--out", default=defaults["out"], help="The .keras file to write.")
    parser.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
    return vars(parser.parse_args(argv))


if __name__ == "__main__":
    main(**parse_args())
