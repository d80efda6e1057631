"""A sigma-VAE on MNIST with plain `model.fit`: the decoder sigma is set to its optimum.

    python examples/sigma_vae.py --epochs=10

(`--help` lists the flags: the arguments of `main`.)

No beta to tune: sigma*^2 = the batch's mean squared error, and the model keeps
a running average of it so that sampling and export use a calibrated sigma.
"""

import argparse
import inspect

import keras

import keras_vae as kv
from keras_vae.experiment import prepare_file


def main(epochs: int = 10, num_images: int | None = None, out: str = "runs/sigma_vae.keras",
         overwrite: bool = False) -> kv.VAE:
    out = prepare_file(out, overwrite)  # refuses to replace a saved model (unless overwrite), before any training
    x_train = kv.data.load_arrays("mnist", split="train")[:num_images]
    x_test = kv.data.load_arrays("mnist", split="test")[:num_images]
    vae = kv.VAE(
        encoder=kv.networks.conv_encoder(input_shape=(28, 28, 1)),
        decoder=kv.networks.conv_decoder(output_shape=(28, 28, 1), latent_dim=20),
        latent_dim=20,
        likelihood=kv.Gaussian(sigma="optimal"),  # or "learned": a shared sigma trained by Adam
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    vae.fit(x_train, batch_size=128, epochs=epochs)
    results = vae.evaluate(x_test, batch_size=128, return_dict=True)
    sigma = float(vae.decode(vae.encode(x_test[:1])[0])[1][0, 0, 0, 0])
    print(f"test ELBO {results['elbo']:.1f} nats/image; calibrated sigma {sigma:.4f}")
    vae.save(out)
    return vae


def parse_args(argv: list[str] | None = None) -> dict:
    """The command line's flags as `main`'s keyword arguments (defaults: `main`'s)."""
    defaults = {name: p.default for name, p in inspect.signature(main).parameters.items()}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=defaults["epochs"], help="Passes over the train split.")
    parser.add_argument("--num_images", type=int, default=defaults["num_images"],
                        help="Use only the first N images of each split (default: all).")
    parser.add_argument("--out", default=defaults["out"], help="The .keras file to write.")
    parser.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
    return vars(parser.parse_args(argv))


if __name__ == "__main__":
    main(**parse_args())
