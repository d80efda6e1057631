"""Disentanglement through the CLI: train on factor-labelled sprites, evaluate's metrics, heat map and traversal."""

import json
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest

from keras_vae import data, disentanglement, evaluation, experiment, plots, sprites


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "keras_vae", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def sprites_npz(tmp_path):
    x, factors = data.sprites(num_images=300, image_size=16, seed=0)
    path = tmp_path / "sprites.npz"
    np.savez(path, x=x, factors=factors, factor_names=np.array(sprites.FACTOR_NAMES))
    return path, x, factors


def test_train_then_evaluate_writes_the_metrics_heat_map_and_named_traversal(tmp_path, sprites_npz):
    path, _, _ = sprites_npz
    run = tmp_path / "run"
    trained = run_cli("train", f"--dataset={path}", "--network=mlp", "--latent_dim=4", "--epochs=1",
                      "--batch_size=32", "--likelihood=bernoulli", "--align_latents=none", "--test_fraction=0.5",
                      f"--out={run}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    evaluated = run_cli("evaluate", f"--model={run / 'model.keras'}", f"--dataset={path}", "--test_fraction=0.5",
                        "--feature_model=none", "--iwae_samples=2", "--disentanglement_samples=60",
                        "--disentanglement_points=10", "--seed=3")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "Disentanglement: beta_vae_score" in evaluated.stdout
    report = json.loads((run / "eval" / "eval.json").read_text())["disentanglement"]
    for key in ("beta_vae_score", "factor_vae_score", "mig", "sap", "dci_disentanglement", "dci_completeness",
                "dci_informativeness"):
        assert 0.0 <= report[key] <= 1.0, key
    # the counts and seed it used: 60 + 30 draws of the 150 test images, 10 + 5 points of 64 images
    assert report["samples"]["mig_sap_dci_train"] == 60 and report["samples"]["sap_dci_test"] == 30
    assert report["samples"]["beta_factor_vae_points_train"] == 10
    assert report["samples"]["beta_factor_vae_points_eval"] == 5
    assert report["seed"] == 3 and report["data"] == "150 labelled images of the split"
    information = np.array(report["mutual_information"])
    assert information.shape == (5, 4) and (information >= 0).all()
    assert report["factor_names"] == list(sprites.FACTOR_NAMES)
    assert report["most_informative_factor"] == [sprites.FACTOR_NAMES[k] for k in information.argmax(axis=0)]
    for name in ("mutual_information.png", "traversal.png"):
        assert (run / "eval" / name).stat().st_size > 1000, name


def test_train_renders_sprites_at_image_size(tmp_path):
    config = experiment.RunConfig(dataset="sprites", image_size=16, network="mlp", latent_dim=2, epochs=1,
                                  batch_size=500, likelihood="bernoulli", align_latents="none",
                                  out=str(tmp_path / "run"))
    model, metrics = experiment.train(config, verbose=0)
    assert model.image_shape == (16, 16, 1)
    assert metrics["train_images"] == 9000 and metrics["flags"]["image_size"] == 16
    assert "image_size" not in experiment.run_record.applied_flags(
        experiment.RunConfig(dataset="mnist"), model, None)
    # evaluate renders fresh sprites of the model's size for the metrics
    results = evaluation.evaluate_saved_model(tmp_path / "run" / "model.keras", "sprites", feature_model="none",
                                              max_images=200, iwae_samples=2, disentanglement_samples=100,
                                              disentanglement_points=10)
    assert results["dataset"] == "sprites:16" and results["num_images"] == 200
    assert results["disentanglement"]["data"] == "freshly rendered Sprites"
    assert results["disentanglement"]["samples"]["mig_sap_dci_train"] == 100
    assert (tmp_path / "run" / "eval" / "mutual_information.png").exists()


def test_bad_factors_are_one_line_before_training(tmp_path, sprites_npz):
    _, x, _ = sprites_npz
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, factors=np.zeros((299, 5), "int64"))
    run = tmp_path / "run"
    result = run_cli("train", f"--dataset={path}", "--network=mlp", "--latent_dim=2", "--epochs=1", f"--out={run}")
    assert result.returncode != 0
    assert "Expected one row of factors in" in result.stderr and str(path) in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()[-1]) > 20
    assert not run.exists()

    np.savez(path, x=x, factors=np.zeros((300, 5), "float32"))
    with pytest.raises(ValueError, match="Expected integer factor labels; factors in .*bad.npz has dtype float32"):
        experiment.train(experiment.RunConfig(dataset=str(path), network="mlp", latent_dim=2, epochs=1,
                                              out=str(run)), verbose=0)
    assert not run.exists()


def test_ground_truth_of_each_source(sprites_npz):
    path, x, factors = sprites_npz
    rendered = disentanglement.ground_truth("sprites:16", np.zeros((2, 16, 16, 1)))
    assert isinstance(rendered, sprites.Sprites) and rendered.image_size == 16
    labelled = disentanglement.ground_truth(str(path), x[:20], split="train", test_fraction=0.5)
    assert labelled.num_images == 20 and labelled.factor_names == sprites.FACTOR_NAMES
    np.testing.assert_array_equal(labelled.factors, factors[:20])
    assert disentanglement.ground_truth("mnist", np.zeros((2, 28, 28, 1))) is None


def test_heat_map_and_traversal_label_factors_and_latents(tmp_path):
    information = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.7]])
    figure = plots.information_figure(information, ["shape", "scale"])
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["shape", "scale"]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["0", "1", "2"]
    assert "latent dimension" in axes.get_xlabel() and "factor" in axes.get_ylabel()
    assert "Mutual information" in axes.get_title()
    plt.close(figure)
    with pytest.raises(ValueError, match="3 rows"):
        plots.information_figure(information, ["shape", "scale", "x"])

    import keras_vae as kv

    model = kv.build_vae((8, 8, 1), network="mlp", latent_dim=3)
    names = disentanglement.most_informative_factors(information, ["shape", "scale"])
    assert names == ["shape", "scale", "scale"]
    figure = plots.traversal_figure(model, dims=[0, 2], steps=3, dim_labels=names)
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == ["z[0] shape", "z[2] scale"]
    plt.close(figure)
    with pytest.raises(ValueError, match="one label per latent dimension"):
        plots.traversal_figure(model, steps=3, dim_labels=["shape"])
