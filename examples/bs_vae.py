"""A BS-VAE (Beta-Sigma VAE): optimal sigma per image and an explicit beta on the KL.

    python examples/bs_vae.py

With a calibrated sigma, beta is again a clean knob for the rate-distortion
trade-off: beta > 1 buys a more compressed, more regular latent space.
"""

import keras

import keras_vae as kv
from keras_vae.experiment import prepare_file


def main(beta: float = 10.0, epochs: int = 10, num_images: int | None = None,
         out: str = "runs/bs_vae.keras") -> kv.VAE:
    out = prepare_file(out)  # refuses to replace a saved model, before any training
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


if __name__ == "__main__":
    main()
