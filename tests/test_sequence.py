"""Tests for keras_vae/models/sequence.py: SVG-LP on the model contract."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_vae import export, video
from keras_vae.models.sequence import SequenceVAE, build_sequence_vae
from keras_vae.noise import SeededNoise
from tests import harness

FRAME = (16, 16, 1)
CONTEXT, FUTURE = 2, 3
SEED = (5, 1)


def tiny(likelihood="learned", **kwargs) -> SequenceVAE:
    keras.utils.set_random_seed(0)
    model = build_sequence_vae(FRAME, latent_dim=2, likelihood=likelihood, context_frames=CONTEXT,
                               future_frames=FUTURE, filters=4, feature_dim=8, hidden_units=8, seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def videos(count=6, frames=CONTEXT + FUTURE, seed=0):
    return video.moving_mnist("train", count, frames, FRAME[0], num_digits=1, seed=seed)


# ------------------------------------------------------------ by hand
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _head_by_hand(head, inputs):
    """Dense -> LSTM (Keras' gate order i, f, c, o) -> Dense, in numpy, from a zero state."""
    embed_w, embed_b = (np.asarray(w) for w in head.embed.weights)
    kernel, recurrent, bias = (np.asarray(w) for w in head.rnn.cell.weights)
    out_w, out_b = (np.asarray(w) for w in head.head.weights)
    units = head.units
    h = np.zeros((inputs.shape[0], units)), np.zeros((inputs.shape[0], units))
    hidden, cell = h
    outputs = []
    for t in range(inputs.shape[1]):
        z = (inputs[:, t] @ embed_w + embed_b) @ kernel + hidden @ recurrent + bias
        i, f, c, o = (z[:, k * units : (k + 1) * units] for k in range(4))
        cell = _sigmoid(f) * cell + _sigmoid(i) * np.tanh(c)
        hidden = _sigmoid(o) * np.tanh(cell)
        out = hidden @ out_w + out_b
        outputs.append(np.tanh(out) if head.output_activation == "tanh" else out)
    return np.stack(outputs, axis=1)


def _split_gaussian(params):
    loc, raw = np.split(params, 2, axis=-1)
    return loc, np.log1p(np.exp(raw)) + 1e-4


def test_teacher_forced_elbo_terms_by_hand():
    model = tiny(likelihood="gaussian", sigma=0.2)
    x = videos(3)
    context, future = x[:, :CONTEXT], x[:, CONTEXT:]
    terms = model.compute_terms({"x": future, "context": context}, SeededNoise(SEED))

    outputs = model.encoder(x.reshape(-1, *FRAME))
    h = np.asarray(outputs[0]).reshape(3, CONTEXT + FUTURE, -1)
    skips = [np.asarray(s).reshape(3, CONTEXT + FUTURE, *s.shape[1:])[:, CONTEXT - 1] for s in outputs[1:]]
    q_loc, q_scale = _split_gaussian(_head_by_hand(model.posterior, h)[:, CONTEXT:])  # q(z_t | x_<=t)
    p_loc, p_scale = _split_gaussian(_head_by_hand(model.prior_head, h[:, :-1])[:, CONTEXT - 1 :])  # p(z_t | x_<t)
    z = q_loc + q_scale * np.asarray(SeededNoise(SEED).normal((3, FUTURE, 2)))  # the first draw of the step
    latent_in = np.concatenate([np.zeros((3, CONTEXT - 1, 2)), z], axis=1)  # z = 0 over the context
    predicted = _head_by_hand(model.predictor, np.concatenate([h[:, :-1], latent_in], -1))[:, CONTEXT - 1 :]
    params = np.asarray(model.decoder([predicted.reshape(-1, predicted.shape[-1]).astype("float32"),
                                       *[np.repeat(s, FUTURE, axis=0) for s in skips]]))
    mean = _sigmoid(params).reshape(future.shape)
    log_sigma = -6.0 + np.log1p(np.exp(np.log(0.2) + 6.0))  # the likelihood's soft clip
    log_likelihood = np.sum(-0.5 * ((future - mean) / np.exp(log_sigma)) ** 2 - log_sigma - 0.5 * np.log(2 * np.pi),
                            axis=(1, 2, 3, 4))
    kl = np.log(p_scale / q_scale) + (q_scale**2 + (q_loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5

    np.testing.assert_allclose(np.asarray(terms["log_likelihood"]), log_likelihood, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(terms["kl_per_dim"]), kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(terms["elbo_per_image"]), log_likelihood - kl.sum(axis=(1, 2)), rtol=1e-4)
    np.testing.assert_allclose(float(terms["elbo"]), np.mean(log_likelihood - kl.sum(axis=(1, 2))), rtol=1e-4)


def test_learned_prior_kl_matches_monte_carlo():
    model = tiny()
    inputs = model.split(videos(2, seed=1))
    q, p = model.posterior_distribution(inputs), model.prior_distribution(inputs)
    analytic = np.asarray(model.compute_terms(inputs)["kl_per_dim"]).sum(axis=(1, 2))
    z = q.sample(20000, seed=3)
    log_ratio = np.asarray(q.log_prob(z) - p.log_prob(z))
    mc, error = log_ratio.mean(axis=0), log_ratio.std(axis=0) / np.sqrt(len(log_ratio))
    assert np.all(np.abs(analytic - mc) < 4 * error + 1e-3), (analytic, mc, error)
    assert np.all(analytic > 0)


def test_optimal_sigma_is_the_rmse_of_the_predicted_frames():
    model = tiny(likelihood="optimal")
    inputs = model.split(videos(4))
    terms = model.compute_terms(inputs, SeededNoise(SEED))
    z = model.reparameterize(model.posterior_distribution(inputs), SeededNoise(SEED))
    mean = np.asarray(model.likelihood.mean(model.decoder_params(z, inputs)))
    log_sigma = 0.5 * np.log(np.mean((np.asarray(inputs["x"]) - mean) ** 2) + 1e-8)
    expected = np.exp(-6.0 + np.log1p(np.exp(log_sigma + 6.0)))
    assert float(terms["sigma"]) == pytest.approx(expected, rel=1e-3)


def test_beta_and_free_bits_enter_the_loss():
    inputs = None
    values = {}
    for beta, free_bits in ((1.0, 0.0), (3.0, 0.0), (1.0, 50.0)):
        model = tiny(beta=beta, free_bits=free_bits)
        inputs = inputs or model.split(videos(4))
        values[(beta, free_bits)] = {k: float(v) for k, v in model.compute_terms(inputs, SeededNoise(SEED)).items()
                                     if np.ndim(v) == 0}
    base = values[(1.0, 0.0)]
    assert values[(3.0, 0.0)]["loss"] == pytest.approx(base["rec"] + 3 * base["kl"], rel=1e-5)
    assert values[(1.0, 50.0)]["loss"] == pytest.approx(base["rec"] + 50.0 * FUTURE * 2, rel=1e-5)
    assert values[(1.0, 50.0)]["elbo"] == pytest.approx(base["elbo"], rel=1e-6)


# ------------------------------------------------------------ generation
def test_predict_shapes_freshness_and_the_first_step():
    model = tiny()
    x = videos(3)
    context = x[:, :CONTEXT]
    a = np.asarray(model.predict(context, num_future=5, num_samples=4))
    b = np.asarray(model.predict(context, num_future=5, num_samples=4))
    assert a.shape == (3, 4, 5, *FRAME) and np.all((a >= 0) & (a <= 1))
    assert np.abs(a - b).max() > 1e-4  # fresh noise every call
    assert np.abs(a[:, 0] - a[:, 1]).max() > 1e-4  # samples of one video differ
    seeded = [np.asarray(model.predict(context, 5, 2, noise=SeededNoise(SEED))) for _ in range(2)]
    np.testing.assert_array_equal(*seeded)
    # Step 0 sees only true frames: the free-running frame equals the teacher-forced one at the same z.
    z = np.random.default_rng(0).normal(size=(3, FUTURE, 2)).astype("float32")
    free = np.asarray(model.decode(z, context)[0])
    forced = np.asarray(model.decoded(z, model.split(x))[0])
    assert free.shape == forced.shape == (3, FUTURE, *FRAME)
    np.testing.assert_allclose(free[:, 0], forced[:, 0], rtol=1e-5, atol=1e-6)
    assert np.abs(free[:, 1:] - forced[:, 1:]).max() > 1e-6  # later steps feed back the model's own frames
    assert model.sample(2, context).shape == (6, FUTURE, *FRAME)


def test_bad_input_is_refused_before_training():
    model = tiny()
    with pytest.raises(ValueError, match="at least 3"):
        model.fit(videos(4, frames=CONTEXT), batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="rank 5"):
        model.fit(videos(4)[:, 0], batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="frames of shape"):
        model.fit(np.zeros((4, 5, 8, 8, 1), "float32"), batch_size=2, verbose=0)
    nan = videos(4)
    nan[1, 3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(nan, batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        model.fit(videos(4) * 2.0 + 0.5, batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="trained with 2 context frames"):
        model.predict(videos(2)[:, :3], num_future=2)
    assert int(model.optimizer.iterations.numpy()) == 0


# ------------------------------------------------------------ the contract
def test_the_shared_harness_minus_evaluation(tmp_path):
    """The contract harness's fit, save/load and served-signature checks (the evaluation
    command reads images only, so `assert_one_elbo_everywhere` is replaced by the checks below)."""
    model = tiny()
    x = videos(6)
    inputs = {"x": x[:, CONTEXT:], "context": x[:, :CONTEXT]}
    harness.fit_a_few_steps(model, inputs)
    step = model.evaluate(x, batch_size=6, verbose=0, return_dict=True)["elbo"]
    assert np.isfinite(step)
    harness.assert_saving_round_trip(model, inputs, tmp_path)
    served = harness.served_with_seeded_noise(model, tmp_path)
    harness.assert_served_equals_model(model, inputs, served, tmp_path, tflite=False)

    # One ELBO: the model, the running-sigma ELBO, the train step and the served `elbo` agree.
    from_model = np.asarray(model.elbo(x, seed=harness.SEED))
    np.testing.assert_allclose(np.asarray(model.elbo_with_running_sigma(x, seed=harness.SEED)), from_model,
                               rtol=1e-5)
    served_elbo = served.signatures["elbo"](x=tf.constant(inputs["x"]), context=tf.constant(inputs["context"]))
    np.testing.assert_allclose(np.asarray(served_elbo["elbo"]), from_model, rtol=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    model.seed_generator.state.assign(np.array(harness.SEED, model.seed_generator.state.dtype))
    fitted = model.fit(x, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history["elbo"][-1]
    np.testing.assert_allclose(fitted, from_model.mean(), rtol=1e-4)


def test_exported_predict_is_fresh_and_takes_any_length(tmp_path):
    model = tiny()
    x = videos(4)
    model.fit(x, batch_size=2, epochs=1, verbose=0)
    folder = export.saved_model(model, tmp_path / "serving")
    loaded = tf.saved_model.load(str(folder))
    assert {"predict", *export.SIGNATURES} <= set(loaded.signatures)
    predict = loaded.signatures["predict"]
    context = tf.constant(x[:2, :CONTEXT])
    a = np.asarray(predict(context=context, num_future=tf.constant([7]))["frames"])
    b = np.asarray(predict(context=context, num_future=tf.constant([7]))["frames"])
    assert a.shape == (2, 7, *FRAME) and np.abs(a - b).max() > 1e-5
    with pytest.raises(tf.errors.InvalidArgumentError):
        predict(context=tf.constant(x[:2, : CONTEXT + 1]), num_future=tf.constant([2]))

    # TFLite: the prior rollout of `predict` is builtin ops only and runs in LiteRT, fresh and of any length;
    # the posterior's LSTM over a video of any length (`encode`) is not, and the error names its op.
    path = export.tflite(model, tmp_path / "predict.tflite", signatures=("predict",))
    runner = Interpreter(model_path=str(path)).get_signature_runner("predict")
    first, second = (runner(context=x[:2, :CONTEXT], num_future=np.array([count], "int32"))["frames"]
                     for count in (3, 3))
    longer = runner(context=x[:2, :CONTEXT], num_future=np.array([7], "int32"))["frames"]
    assert first.shape == (2, 3, *FRAME) and longer.shape == (2, 7, *FRAME)
    assert np.abs(first - second).max() > 1e-5 and 0.0 <= first.min() and first.max() <= 1.0
    with pytest.raises(ValueError, match="encode: tf.TensorListReserve"):
        export.tflite(model, tmp_path / "encode.tflite", signatures=("encode",))


@pytest.mark.parametrize("likelihood", ["bernoulli", "per_pixel"])
def test_other_likelihoods_give_gradients_and_predict(likelihood):
    model = tiny(likelihood=likelihood)
    inputs = model.split(videos(2))
    with tf.GradientTape() as tape:
        loss = model.compute_terms(inputs, SeededNoise(SEED), training=True)["loss"]
    gradients = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss)) and all(g is not None for g in gradients)
    assert model.predict(videos(1)[:, :CONTEXT], 2, 2).shape == (1, 2, 2, *FRAME)
