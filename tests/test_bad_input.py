"""Issue 18: bad inputs, hostile files and crashes fail with one line naming the problem, before any work is lost.

Data files (corrupt images, hostile .npz headers, text named .npz, labels
that do not fit), broken or foreign .keras files, settings that would be
ignored, and the run files: written atomically, the checkpoint kept until the
model is saved, nothing left behind by a refused run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from keras_vae import data, experiment, export, files
from tests.conftest import make_images, tiny_vae


# ------------------------------------------------------------------ data files
def _huge_npz(path, shape=(10**6, 10**6, 1, 1)):
    """A .npz whose 'x' header declares `shape` (terabytes) over 16 bytes of data."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(b"\0" * 16)


def test_a_huge_declared_npz_shape_is_refused_from_its_header(tmp_path):
    _huge_npz(tmp_path / "huge.npz")
    with pytest.raises(ValueError, match=r"huge.npz: array 'x' declares shape \(1000000, 1000000, 1, 1\).*16 bytes"):
        data.load_arrays(str(tmp_path / "huge.npz"))


def test_a_text_file_named_npz_and_an_object_array_are_refused(tmp_path):
    (tmp_path / "notes.npz").write_text("not an archive\n")
    with pytest.raises(ValueError, match=r"notes.npz is not a .npz archive \(not a zip file\)"):
        data.load_arrays(str(tmp_path / "notes.npz"))
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match=r"objects.npz: array 'x' holds Python objects"):
        data.load_arrays(str(tmp_path / "objects.npz"))


def test_a_truncated_npz_names_the_file(tmp_path):
    np.savez_compressed(tmp_path / "full.npz", x=make_images(64))
    content = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        data.load_arrays(str(tmp_path / "cut.npz"))


def test_a_corrupt_image_in_a_folder_is_named(tmp_path):
    for index, image in enumerate(make_images(4)):
        keras.utils.save_img(tmp_path / f"{index}.png", image, scale=True)
    (tmp_path / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=r"2.png is not a readable PNG or JPEG image"):
        data.load_arrays(str(tmp_path))


def test_a_one_image_dataset_says_its_image_went_to_the_test_split(tmp_path):
    np.savez(tmp_path / "one.npz", x=make_images(1))
    with pytest.raises(ValueError, match=r"one.npz holds 1 image\(s\) and test_fraction=0.1 sends 1 to the test"):
        data.load_arrays(str(tmp_path / "one.npz"), "train")


def test_labels_of_another_length_in_a_npz_are_refused(tmp_path):
    np.savez(tmp_path / "short.npz", x=make_images(8), y=np.arange(7))
    with pytest.raises(ValueError, match=r"short.npz: 'y' has shape \(7,\) but 'x' holds 8 images"):
        data.load_arrays(str(tmp_path / "short.npz"))
    np.savez(tmp_path / "short_test.npz", x=make_images(8), x_test=make_images(4), y_test=np.arange(3))
    with pytest.raises(ValueError, match=r"'y_test' has shape \(3,\) but 'x_test' holds 4 images"):
        data.load_arrays(str(tmp_path / "short_test.npz"), "test")


@pytest.mark.parametrize(
    "x_test, y_train, message",
    [
        (make_images(4, (8, 9, 1)), None, r"test images have shape \(8, 9, 1\) but the train images \(8, 8, 1\)"),
        (make_images(4), np.arange(8) - 1, r"train labels of d.npz has 1 negative label\(s\), the first -1 at index 0"),
        (make_images(4), np.linspace(0, 1, 8), "Expected integer class labels; the train labels of d.npz"),
        (make_images(4), np.arange(7), r"one label per image: the train labels of d.npz has shape \(7,\)"),
    ],
)
def test_splits_are_checked_against_each_other(x_test, y_train, message):
    with pytest.raises(ValueError, match=message):
        data.check_splits(make_images(8), x_test, y_train, None, name="d.npz")


def test_an_unknown_tfds_dataset_is_one_line():
    with pytest.raises(ValueError, match=r"^--dataset=tfds:no_such_set: tensorflow_datasets has no dataset") as info:
        data.load_arrays("tfds:no_such_set")
    assert "\n" not in str(info.value)


def test_tfds_without_its_dependencies_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # `import` raises ImportError
    with pytest.raises(ValueError, match=r"--dataset=tfds:mnist needs the tensorflow_datasets package"):
        data.load_arrays("tfds:mnist")


# ------------------------------------------------------------------ train runs
@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "blobs.npz"
    np.savez(path, x=make_images(48), y=np.arange(48) % 3)
    return str(path)


def _config(tmp_path, dataset, **overrides):
    settings = dict(dataset=dataset, network="mlp", latent_dim=2, epochs=1, batch_size=16, out=str(tmp_path / "run"))
    return experiment.RunConfig(**{**settings, **overrides})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(likelihood="optimal", sigma=-5.0), r"--likelihood=optimal does not use it. Received: sigma=-5.0"),
        (dict(learning_rate=0.0), r"Expected --learning_rate > 0"),
        (dict(batch_size=0), r"Expected batch_size >= 1"),
    ],
)
def test_settings_that_would_be_ignored_or_never_train_are_refused(tmp_path, npz, overrides, message):
    with pytest.raises(ValueError, match=message):
        experiment.train(_config(tmp_path, npz, **overrides), verbose=0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(x_test=make_images(8, (8, 9, 1)), y=np.arange(48) % 3, y_test=np.arange(8)),
         r"test images have shape \(8, 9, 1\)"),
        (dict(y=np.arange(48) - 1, x_test=make_images(8), y_test=np.arange(8)), "negative label"),
        (dict(y=np.arange(48) % 3, x_test=make_images(8), y_test=np.arange(7)), "'y_test' has shape"),
        (dict(y=np.linspace(0, 2, 48), x_test=make_images(8), y_test=np.arange(8)), "Expected integer class labels"),
    ],
)
def test_labels_and_the_test_split_are_checked_before_training(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", x=make_images(48), **arrays)
    with pytest.raises(ValueError, match=message):
        experiment.train(_config(tmp_path, str(tmp_path / "d.npz"), model="conditional"), verbose=0)
    assert not (tmp_path / "run").exists()  # nothing was written: refused before any training


class _Crash(keras.callbacks.Callback):
    def __init__(self, where: str):
        super().__init__()
        setattr(self, where, self._crash)

    def _crash(self, *args, **kwargs):
        raise RuntimeError("crash")


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing_that_blocks_the_rerun(tmp_path, npz):
    with pytest.raises(RuntimeError, match="crash"):
        experiment.train(_config(tmp_path, npz), verbose=0, callbacks=[_Crash("on_train_begin")])
    assert not (tmp_path / "run").exists()
    # A record without a checkpoint (an older version's refusal) blocks nothing either.
    files.write_json(tmp_path / "run" / "backup" / experiment.BACKUP_SETTINGS, {"epochs": 99})
    experiment.train(_config(tmp_path, npz, likelihood="bernoulli"), verbose=0)
    assert (tmp_path / "run" / "model.keras").is_file() and not (tmp_path / "run" / "backup").exists()


def test_overwrite_refuses_a_backup_folder_that_is_not_ours(tmp_path, npz):
    mine = tmp_path / "run" / "backup" / "thesis.tex"
    mine.parent.mkdir(parents=True)
    mine.write_text("years of work")
    with pytest.raises(FileExistsError, match=r"backup holds files but no run_config.json.*even with --overwrite"):
        experiment.train(_config(tmp_path, npz, overwrite=True), verbose=0)
    assert mine.read_text() == "years of work"


def test_a_crash_while_saving_keeps_the_old_files_and_the_checkpoint(tmp_path, npz, monkeypatch):
    out = tmp_path / "run"
    experiment.train(_config(tmp_path, npz, likelihood="bernoulli"), verbose=0)
    before = {name: (out / name).read_bytes() for name in experiment.RUN_FILES}
    config = _config(tmp_path, npz, likelihood="learned", epochs=2, overwrite=True)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(experiment.plots, "reconstruction_grid", crash)  # the last file written
    with pytest.raises(OSError, match="disk full"):
        experiment.train(config, verbose=0)
    assert {name: (out / name).read_bytes() for name in experiment.RUN_FILES} == before  # the old run, whole
    assert not [p.name for p in out.iterdir() if files.PARTIAL in p.name]  # no temporaries left
    timing = json.loads((out / "backup" / experiment.BACKUP_TIMING).read_text())
    assert timing["epochs"] == 2 and timing["train_seconds"] > 0  # the finished training survives

    monkeypatch.undo()
    model, metrics = experiment.train(config, verbose=0)  # the rerun resumes after the last epoch: no training
    assert int(model.optimizer.iterations.numpy()) == 2 * 3  # 2 epochs of 43 images / 16 -> 3 steps, not more
    assert metrics["train_seconds"] == pytest.approx(timing["train_seconds"])  # the whole run's time
    assert metrics["images_per_second"] == pytest.approx(2 * metrics["train_images"] / timing["train_seconds"])
    assert json.loads((out / "metrics.json").read_text())["flags"]["likelihood"] == "learned"
    assert not (out / "backup").exists()


def test_overwrite_removes_the_old_evaluation_and_refuses_over_an_export(tmp_path, npz):
    out = tmp_path / "run"
    experiment.train(_config(tmp_path, npz, likelihood="bernoulli"), verbose=0)
    for name in ("eval.json", "samples.png"):
        files.write_text(out / "eval" / name, "old run's")
    experiment.train(_config(tmp_path, npz, likelihood="learned", overwrite=True), verbose=0)
    assert not (out / "eval").exists()
    saved = (out / "model.keras").read_bytes()
    (out / "serving" / "vae" / "1").mkdir(parents=True)
    (out / "serving" / "vae" / "1" / "saved_model.pb").write_bytes(b"old model")
    with pytest.raises(FileExistsError, match=r"would leave .*serving/vae/1.*Move or delete it first"):
        experiment.train(_config(tmp_path, npz, likelihood="bernoulli", overwrite=True), verbose=0)
    assert (out / "model.keras").read_bytes() == saved


# ------------------------------------------------------------------ .keras files
@pytest.fixture
def saved(tmp_path):
    vae = tiny_vae()
    vae.fit(make_images(16), batch_size=8, epochs=1, verbose=0)
    vae.save(tmp_path / "good.keras")
    return tmp_path / "good.keras"


def _rewrite_zip(source, target, **replacements):
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            new.writestr(item, replacements.get(item.filename, old.read(item.filename)))
    return target


def test_broken_and_foreign_keras_files_are_one_line_naming_the_file(saved, tmp_path):
    content = saved.read_bytes()
    (tmp_path / "cut.keras").write_bytes(content[: len(content) // 2])
    config = json.loads(zipfile.ZipFile(saved).read("config.json"))
    unregistered = json.dumps({**config, "class_name": "NoSuchVAE", "registered_name": "keras_vae>NoSuchVAE"})
    cases = {
        _rewrite_zip(saved, tmp_path / "weights.keras", **{"model.weights.h5": b"garbage"}): "Cannot load",
        _rewrite_zip(saved, tmp_path / "class.keras", **{"config.json": unregistered}): "NoSuchVAE",
        tmp_path / "cut.keras": "is not a Keras model file: not a zip archive",
    }
    dense = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    dense.save(tmp_path / "dense.keras")
    cases[tmp_path / "dense.keras"] = "holds a Sequential, not a keras_vae.VAE"
    code = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda t: t * 2)])
    code.save(tmp_path / "code.keras")
    cases[tmp_path / "code.keras"] = "safe_mode"
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            files.load_vae(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), info.value


def test_evaluate_refuses_to_overwrite_any_file_it_writes(saved, tmp_path):
    from keras_vae import evaluation

    out = tmp_path / "eval"
    out.mkdir()
    (out / "samples.png").write_bytes(b"my picture")
    with pytest.raises(FileExistsError, match=r"samples.png already exists; refusing to overwrite it"):
        evaluation.evaluate_saved_model(saved, "mnist", out, feature_model="none")
    assert (out / "samples.png").read_bytes() == b"my picture"


def _cli(*args):
    env = {**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "keras_vae", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_answers_a_garbage_model_and_an_ignored_flag_in_one_line(tmp_path, npz):
    (tmp_path / "junk.keras").write_bytes(b"\0" * 100)
    evaluated = _cli("evaluate", f"--model={tmp_path / 'junk.keras'}", "--feature_model=none")
    assert evaluated.returncode != 0 and "Traceback" not in evaluated.stderr
    assert "junk.keras is not a Keras model file" in evaluated.stderr.strip().splitlines()[-1]
    trained = _cli("train", f"--dataset={npz}", "--sigma=-5", "--likelihood=optimal", f"--out={tmp_path / 'run'}")
    assert trained.returncode != 0 and "Traceback" not in trained.stderr
    assert "does not use it. Received: sigma=-5.0" in trained.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("out", ["/sys/keras_vae_run", "/proc/keras_vae_run/inner"])
def test_an_unwritable_out_is_refused_before_loading_anything(out, npz):
    for check in (lambda: experiment.prepare_output(out, overwrite=False, create=False),
                  lambda: export.check_saved_model_target(out, "vae", 1)):
        with pytest.raises(PermissionError, match=rf"--out={out} cannot be written \(/(sys|proc): "):
            check()
    assert not __import__("os").path.exists(out)


def test_the_cli_reports_an_unwritable_out_in_one_line(npz):
    trained = _cli("train", f"--dataset={npz}", "--epochs=1", "--out=/sys/keras_vae_run")
    assert trained.returncode != 0 and "Traceback" not in trained.stderr
    last_line = trained.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: --out=/sys/keras_vae_run cannot be written (/sys: ")

