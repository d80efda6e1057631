"""Median train-step time of the conv sigma-VAE (optimal sigma, batch 128, embedded MNIST), printed as JSON.

It measures the keras_vae that Python imports, so two checkouts compare as paired, alternating runs:

    for i in 1 2 3; do for c in /path/to/old /path/to/new; do
        (cd $c && PYTHONPATH=$c .venv/bin/python benchmarks/step_time.py); done; done
"""
import json
import os
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_vae as kv  # noqa: E402

x = kv.data.load_arrays("mnist", "train")[:128 * 25]
keras.utils.set_random_seed(0)
vae = kv.build_vae((28, 28, 1), network="conv", latent_dim=20, likelihood="optimal", seed=0)
vae.compile(optimizer=keras.optimizers.Adam(1e-3))
vae.fit(x[:128 * 5], batch_size=128, epochs=1, verbose=0)  # trace + warm up
times = []


class StepTimer(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        times.append(time.perf_counter() - self.start)


vae.fit(x, batch_size=128, epochs=1, verbose=0, callbacks=[StepTimer()])
print(json.dumps({"median_ms": 1000 * float(np.median(times)), "images_per_s": 128 / float(np.median(times))}))
