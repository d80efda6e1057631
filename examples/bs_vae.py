"""A BS-VAE (Beta-Sigma VAE): optimal sigma per image and an explicit beta on the KL.

    python examples/bs_vae.py --epochs=10

(`--help` lists the flags: the arguments of `main`.)

With a calibrated sigma, beta is again a clean knob for the rate-distortion
trade-off: beta > 1 buys a more compressed, more regular latent space.
"""

import argparse
import inspect

import keras

import keras_vae as kv
from keras_vae.experiment import prepare_file


def main(beta: float = 10.0, epochs: int = 10, num_images: int | None = None,
         out: str = "runs/bs_vae.keras", overwrite: bool = False) -> kv.VAE:
    out = prepare_file(out, overwrite)  # refuses to replace a saved model (unless overwrite), before any training
    x_train = kv.data.load_arrays("mnist", split="train")[:num_images]
    vae = kv.VAE(
        encoder=kv.networks.conv_encoder((28, 28, 1)),
        decoder=kv.networks.conv_decoder((28, 28, 1), latent_dim=20),
        latent_dim=20,
        likelihood=kv.Gaussian(sigma="optimal_per_image"),
        beta=beta,
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = vae.fit(x_train, batch_size=128, epochs=epochs)
    print(f"rate (KL) {history.history['kl'][-1]:.1f} nats, ELBO {history.history['elbo'][-1]:.1f} nats/image")
    vae.save(out)
    return vae


def parse_args(argv: list[str] | None = None) -> dict:
    """The command line's flags as `main`'s keyword arguments (defaults: `main`'s)."""
    defaults = {name: p.default for name, p in inspect.signature(main).parameters.items()}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beta", type=float, default=defaults["beta"],
                        help="KL weight (beta > 1: a more compressed latent space).")
    parser.add_argument("--epochs", type=int, default=defaults["epochs"], help="Passes over the train split.")
    parser.add_argument("--num_images", type=int, default=defaults["num_images"],
                        help="Use only the first N images of each split (default: all).")
    parser.add_argument("--out", default=defaults["out"], help="The .keras file to write.")
    parser.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
    return vars(parser.parse_args(argv))


if __name__ == "__main__":
    main(**parse_args())
