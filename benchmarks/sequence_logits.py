"""Issue 16 diagnostic: do the SequenceVAE decoder's logits stay in range in the first training steps?

Trains `kv.build_sequence_vae` (32x32 SM-MNIST, 2 digits, 5 + 10 frames, batch 32, Adam) and every 10
steps prints the range of the decoder's logits on 32 test videos (teacher forced, posterior means), the
MSE of the predicted frames (all-black frames score 0.0501 on these videos) and their mean pixel. A
decoder whose logits fall far below -10 has a saturated sigmoid mean: it predicts black frames and
gets no gradient (what the frame networks did before they had group normalization).

    nice -n 10 .venv/bin/python benchmarks/sequence_logits.py 2e-3 optimal 6   # learning rate, likelihood, x10 steps

Prints only; the readings are in benchmarks/results/sequence.md.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_vae as kv  # noqa: E402


def main(learning_rate: float, likelihood: str, rounds: int) -> None:
    keras.utils.set_random_seed(0)
    x = kv.video.moving_mnist("train", 640, 15, 32, 2, seed=0)
    x_test = kv.video.moving_mnist("test", 32, 15, 32, 2, seed=1)
    model = kv.build_sequence_vae((32, 32, 1), context_frames=5, future_frames=10, likelihood=likelihood,
                                  latent_dim=10, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    future = x_test[:, 5:]
    print(f"all-black MSE {np.mean(future ** 2):.5f}")

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            inputs = model.as_inputs(x_test)
            params = np.asarray(model.decoder_params(model.posterior_distribution(inputs).mean(), inputs))
            mean = np.asarray(model.likelihood.mean(params))
            print(f"step {(epoch + 1) * 10}: loss {logs['loss']:.1f} kl {logs['kl']:.3f} logits min {params.min():.1f}"
                  f" median {np.median(params):.2f} max {params.max():.2f} mse {np.mean((mean - future) ** 2):.5f}"
                  f" mean pixel {mean.mean():.4f}", flush=True)

    batches = tf.data.Dataset.from_tensor_slices(x).repeat().batch(32)
    model.fit(batches, steps_per_epoch=10, epochs=rounds, verbose=0, callbacks=[Probe()])


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(float(arguments[0]) if arguments else 2e-3, arguments[1] if len(arguments) > 1 else "optimal",
         int(arguments[2]) if len(arguments) > 2 else 6)
