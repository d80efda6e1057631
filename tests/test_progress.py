"""Progress of the long evaluation steps: each bar says what it computes, and is plain (no ANSI codes) in a log."""

from __future__ import annotations

import re

import numpy as np

from keras_vae import evaluation, feature_model, logs
from tests.conftest import make_images, tiny_vae


def flat_features(images, training=False):
    return np.asarray(images).reshape(len(images), -1)[:, :6]


def test_report_labels_every_pass_and_writes_plain_lines(capsys):
    vae = tiny_vae(likelihood="optimal")
    x = make_images(12, (8, 8, 1))
    evaluation.report(vae, x, iwae_samples=3, feature_extractor=flat_features, fid_samples=8, batch_size=5,
                      progress=True)
    lines = capsys.readouterr().out.splitlines()
    counts = [line for line in lines if re.match(r" ?\d+/\d+ - \d+s - ", line)]  # a pass has ended
    labels = [line for line in lines if line not in counts]
    assert labels == [
        "ELBO, 1 draw of z per image (12 images)",
        "IWAE bound, K=3 (12 images)",
        "IWAE bound, K=3, on dequantized images (8-bit bits/dim) (12 images)",
        "FID of prior samples: features of the real images (12 images)",
        "FID of prior samples: features of the prior samples (8 images)",
        "FID of reconstructions: features of the real images (12 images)",
        "FID of reconstructions: features of the reconstructions (12 images)",
    ], lines
    # Not a terminal: one plain count line when each pass ends, no bar redraws, no ANSI codes.
    assert [line.split(" - ")[0].strip() for line in counts] == ["12/12"] * 4 + ["8/8"] + ["12/12"] * 2
    assert not any("\x1b" in line or "\b" in line or "\r" in line for line in lines)


def test_no_progress_unless_asked(capsys):
    evaluation.iwae_bound(tiny_vae(), make_images(4, (8, 8, 1)), num_samples=2)
    assert capsys.readouterr().out == ""


def test_feature_classifier_training_reports_its_epochs(tmp_path, capsys):
    x = make_images(40, (8, 8, 1), seed=1)
    y = np.arange(40) % 2
    np.savez(tmp_path / "toy.npz", x=x[:32], y=y[:32], x_test=x[32:], y_test=y[32:])
    feature_model.get(str(tmp_path / "toy.npz"), epochs=2, directory=tmp_path / "cache")
    out = capsys.readouterr().out
    assert "Training the FID feature classifier on" in out and "(32 images, 2 epochs)" in out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "\x1b" not in out
    assert logs.progress_verbose() == 2  # pytest's captured stdout is not a terminal
