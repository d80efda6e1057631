"""A Bernoulli VAE with linear KL warm-up and free bits, trained with `model.fit`.

    python examples/kl_annealed_bernoulli.py

beta rises from 0 to 1 over the first `warmup_steps` steps (KLAnnealing assigns
it before every batch); free bits keep each latent dimension above 0.1 nats.
"""

import keras

import keras_vae as kv
from keras_vae.experiment import prepare_file


def main(warmup_steps: int = 500, epochs: int = 10, num_images: int | None = None,
         out: str = "runs/annealed_bernoulli.keras") -> kv.VAE:
    out = prepare_file(out)  # refuses to replace a saved model, before any training
    x_train = kv.data.load_arrays("mnist", split="train")[:num_images]
    vae = kv.build_vae((28, 28, 1), network="conv", latent_dim=20, likelihood="bernoulli", free_bits=0.1)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    schedule = kv.annealing.linear(warmup_steps=warmup_steps)
    vae.fit(x_train, batch_size=128, epochs=epochs, callbacks=[kv.annealing.KLAnnealing(schedule)])
    vae.save(out)
    return vae


if __name__ == "__main__":
    main()
