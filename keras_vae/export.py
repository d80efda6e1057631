"""Export a trained VAE of any family for serving: SavedModel (TF Serving layout) and TFLite (LiteRT).

The signatures are built from the model contract (`keras_vae.models.vae.VAE`),
so every family and every user subclass gets them, with its own latent and
its own inputs (`model.input_specs()`, `model.latent_spec()`; `None` is the
batch; a conditional model's signatures all take its conditions, e.g. `y`,
after their first input):

- `decode(z) -> {mean, sigma}`: the decoder mean and the calibrated decoder
  sigma of the trained model (`{mean, probs}` for a Bernoulli decoder; an
  autoregressive decoder draws its images pixel by pixel). `serving_default`
  is `decode`.
- `encode(x) -> {mean, stddev}` of q(z|x) (plus `scale_tril` for a
  correlated posterior, `indices` for a VQ code map, `mean_z2, stddev_z2`
  for the upper level of a two-level model).
- `sample(num_samples: (1,) int32) -> {images}`: decoder means at
  `num_samples[0]` fresh draws z ~ `model.sampling_distribution()` (the
  prior p(z), or a fitted post-hoc sampler's distribution).
- `reconstruct(x) -> {mean}`: the decoder mean at the posterior's mode.
- `elbo(x) -> {elbo}`: a one-sample ELBO estimate of each image in nats,
  with the model's running (calibrated) sigma, so scores do not depend on
  the batch: `VAE.compute_terms(..., fit_sigma=False)`, the same function the
  model trains with.
- whatever `model.extra_signatures` adds (the VQ-VAE's `decode_indices`).

Every signature checks its inputs in the graph, so TF Serving answers a bad
request with a clear `InvalidArgumentError` instead of garbage or an abort:
the shape (any batch), a batch (or `num_samples`) of 1 to `max_batch`
(default `MAX_BATCH`, 1024; an export option), finite latents, and images
finite and in [0, 1] (`keras_vae.graph_checks`).

Random draws come from `keras_vae.noise.FreshNoise` (the ops of
`tf.random.normal` / `tf.random.uniform` with seeds (0, 0)): fresh on every
call, and TFLite builtins.

`tflite` converts chosen signatures to one `.tflite` file with TFLite builtin
ops only (what the Python LiteRT runtime runs), optionally float16 or
dynamic-range quantized; `litert_runner` runs one with input checks. Both
exports use `serving_decoder`: the decoder with its transposed convolutions
rewritten as convolution + `depth_to_space`. A signature that needs
TensorFlow-only ops fails with a ValueError that names it and the ops.

Example:

>>> import tempfile, numpy as np, keras_vae as kv
>>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="bernoulli")
>>> folder = kv.export.saved_model(vae, tempfile.mkdtemp(), version=3, allow_untrained=True)  # weights as built
>>> folder.name, sorted(p.name for p in folder.iterdir())
('3', ['assets', 'fingerprint.pb', 'saved_model.pb', 'variables'])
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_vae import files, latents
from keras_vae.checks import positive_int
from keras_vae.graph_checks import COUNT_SPEC, checked_count, checked_finite, checked_pixels, checked_shape
from keras_vae.models.vae import VAE
from keras_vae.noise import FreshNoise, Noise
from keras_vae.serving_decoder import serving_decoder

# The signatures every model exports (`extra_signatures` may add more).
SIGNATURES = ("decode", "encode", "sample", "reconstruct", "elbo")
QUANTIZATIONS = (None, "float16", "dynamic")
# The largest batch (and `num_samples`) a signature accepts by default: a conv decoder's activations for 1024
# images take ~0.2 GB; 100,000 rows made TF Serving abort (std::bad_alloc) instead of answering with an error.
MAX_BATCH = 1024


# ------------------------------------------------------------------ checks
def check_exportable(model, allow_untrained: bool = False) -> VAE:
    """Returns `model` if it is a built, trained `VAE` whose decoder sigma is calibrated.

    A model whose optimizer never took a step (never fitted, or loaded
    without its optimizer) is refused unless `allow_untrained`: for weights
    set another way (`load_weights`, `set_weights`). An optimal-sigma model
    that never trained is refused even then: its running MSE is zero, so its
    served sigma would be the soft-clip floor (exp(-6)), not a calibrated one.

    Args:
        model: The model to export.
        allow_untrained: Export a model without optimizer steps. Defaults to False.

    Raises:
        TypeError: If `model` is not a `keras_vae.VAE` (of any family).
        ValueError: If it is not built, is an untrained optimal-sigma model,
            or never trained and not `allow_untrained`.
    """
    if not isinstance(model, VAE):
        raise TypeError(f"Expected a keras_vae.VAE. Received: model of type {type(model).__name__}")
    if not model.built or not model.likelihood.built or not model.posterior.built:
        raise ValueError("The VAE is not built: build it (or call it on a batch of images) before exporting.")
    optimal = getattr(model.likelihood, "optimal_sigma", None)
    if optimal is not None and float(optimal.num_updates.numpy()) == 0.0:
        raise ValueError(
            f"The VAE's likelihood has sigma={model.likelihood.sigma!r} but has never been trained, so it "
            "has no calibrated (running-average) sigma to export. Train it with model.fit first."
        )
    sampler = getattr(model, "sampler", None)
    if sampler is not None:
        sampler.check_fitted()
    optimizer = getattr(model, "optimizer", None)
    if not allow_untrained and (optimizer is None or int(optimizer.iterations.numpy()) == 0):
        raise ValueError(
            f"The {type(model).__name__} has never been trained (its optimizer took no steps), so the export "
            "would serve random weights. Train it with model.fit, load a trained .keras file with its optimizer "
            "(keras.models.load_model), or pass allow_untrained=True if its weights were set another way."
        )
    return model


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"Expected version to be a positive integer (TF Serving folder name). Received: version={version!r}"
        )
    return version


def _check_name(name) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"Expected name to be a plain folder name like 'vae'. Received: name={name!r}")
    return name


def check_saved_model_target(base_dir, name: str = "vae", version: int = 1, overwrite: bool = False,
                             overwrite_flag: str = "overwrite=True") -> Path:
    """The version folder `saved_model` would write, checked before any work; stale partial folders removed.

    `overwrite_flag` is how a refusal names `overwrite` (`"--overwrite"` for
    the command line).

    Returns:
        `Path(base_dir) / name / str(version)`.

    Raises:
        ValueError: For a bad name or version.
        NotADirectoryError: If `base_dir` or `base_dir/name` is a file.
        FileExistsError: If the version folder exists and not `overwrite`.

    Example:

    >>> check_saved_model_target("serving", "vae", 2).as_posix()
    'serving/vae/2'
    """
    version, name = _check_version(version), _check_name(name)
    parent = Path(base_dir) / name
    for folder in (Path(base_dir), parent):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file, not a folder: choose another base folder (--out).")
    files.check_writable(base_dir, "--out")
    target = parent / str(version)
    files.remove_partials(parent, str(version))  # what an export killed mid-write left
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists; refusing to overwrite it. Use another version or pass {overwrite_flag}."
        )
    return target


# -------------------------------------------------------------- signatures
def signature_functions(model: VAE, decoder: keras.Model | None = None,
                        noise: Callable[[], Noise] = FreshNoise, max_batch: int = MAX_BATCH) -> dict[str, tuple]:
    """The exported functions of any `VAE`: `{name: (fn, input_signature)}`, `decode` first.

    Each function checks its input shapes in-graph, runs the model's
    contract hooks (with `decoder` in place of `model.decoder`) and returns a
    dict of named tensors.

    Args:
        model: A `keras_vae.VAE` of any family.
        decoder: The decoder to serve. Defaults to `serving_decoder(model.decoder)`.
        noise: A function returning the `Noise` of one call. Defaults to
            `FreshNoise` (new draws every call); a `SeededNoise` maker gives
            reproducible graphs (not TFLite: stateless ops).
        max_batch: The largest batch (and `num_samples`) accepted. Defaults
            to `MAX_BATCH`.
    """
    decoder = serving_decoder(model.decoder) if decoder is None else decoder
    max_batch = positive_int("max_batch", max_batch)

    def checked(tensor, spec):
        return checked_shape(tensor, spec, max_batch)

    def checked_images(x):
        return checked_pixels(checked(x, image_spec))
    image_spec, *_ = model.input_specs().values()
    conditions = model.condition_specs()
    names = list(conditions)

    def with_serving_decoder(fn):
        def run(*args):
            with model.substituted(decoder=decoder):
                return fn(*args)

        return run

    # The served input names are the specs' names (`x`, `z`, `num_samples`, then the conditions).
    def served(body, first_spec: tf.TensorSpec):
        def run(first_value, *condition_values):
            values = zip(names, condition_values, strict=True)
            inputs = {name: checked(value, conditions[name]) for name, value in values}
            return body(first_value, inputs)

        return with_serving_decoder(run), [first_spec, *conditions.values()]

    def decoded_outputs(z, inputs, source=None):
        mean, stddev = model.decoded(z, inputs, source or noise())
        return model.likelihood.served_outputs(mean, stddev)

    def decode(z, inputs):
        return decoded_outputs(checked_finite(checked(z, model.latent_spec()), "z"), inputs)

    def encode(x, inputs):
        return latents.summary(model.posterior_distribution({"x": checked_images(x), **inputs}))

    def sample(num_samples, inputs):
        source = noise()
        z = latents.draw(model.sampling_distribution(inputs), source, checked_count(num_samples, max_batch))
        return {"images": model.decoded(model.decoder_latent(z), inputs, source)[0]}

    def reconstruct(x, inputs):
        inputs = {"x": checked_images(x), **inputs}
        z = model.decoder_latent(latents.mode(model.posterior_distribution(inputs)))
        return {"mean": model.decoded(z, inputs, noise(), greedy=True)[0]}

    def elbo(x, inputs):
        inputs = {"x": checked_images(x), **inputs}
        return {"elbo": model.compute_terms(inputs, noise(), fit_sigma=False)["elbo_per_image"]}

    functions = {
        "decode": served(decode, model.latent_spec()),
        "encode": served(encode, image_spec),
        "sample": served(sample, COUNT_SPEC),
        "reconstruct": served(reconstruct, image_spec),
        "elbo": served(elbo, image_spec),
    }
    for name, (fn, specs) in model.extra_signatures(decoded_outputs, checked).items():
        functions[name] = (with_serving_decoder(fn), specs)
    return functions


def signature_names(model: VAE) -> tuple[str, ...]:
    """The signatures `saved_model` writes for `model`, `decode` (= `serving_default`) first.

    Example:

    >>> import keras_vae as kv
    >>> signature_names(kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="bernoulli"))
    ('decode', 'encode', 'sample', 'reconstruct', 'elbo')
    """
    return tuple(signature_functions(model))


def _archive(model: VAE, signatures=None, noise: Callable[[], Noise] = FreshNoise,
             max_batch: int = MAX_BATCH) -> keras.export.ExportArchive:
    # Nothing is `track`ed by hand: `add_endpoint` keeps exactly the variables
    # the signatures use, so the original transposed-convolution kernels (the
    # serving decoder replaces them) are not stored twice.
    archive = keras.export.ExportArchive()
    functions = signature_functions(model, noise=noise, max_batch=max_batch)
    for name in functions if signatures is None else signatures:  # the first is also `serving_default`
        fn, input_signature = functions[name]
        archive.add_endpoint(name, fn, input_signature=input_signature)
    return archive


def _check_signatures(signatures, available=SIGNATURES) -> tuple[str, ...]:
    if isinstance(signatures, str):
        signatures = (signatures,)
    signatures = tuple(signatures)
    unknown = [name for name in signatures if name not in available]
    if not signatures or unknown or len(set(signatures)) != len(signatures):
        raise ValueError(
            f"Expected distinct signature names from {tuple(available)}. Received: signatures={signatures}"
        )
    return signatures


# -------------------------------------------------------------- SavedModel
def saved_model(
    model: VAE,
    base_dir,
    name: str = "vae",
    version: int = 1,
    overwrite: bool = False,
    allow_untrained: bool = False,
    noise: Callable[[], Noise] = FreshNoise,
    max_batch: int = MAX_BATCH,
) -> Path:
    """Writes `model` as a SavedModel in the TF Serving layout `base_dir/name/version`.

    The export is written to a hidden temporary folder beside the target and
    renamed into place, so a crash never leaves half an export where TF
    Serving would load it (the next export removes what a killed one left).

    Args:
        model: A trained `keras_vae.VAE` or latent-family model (module docstring).
        base_dir: The TF Serving model base folder (`--model_base_path`'s parent).
        name: The model name (a folder). Defaults to `"vae"`.
        version: The version, a positive integer (a folder). Defaults to 1.
        overwrite: Replace an existing version folder. Defaults to False.
        allow_untrained: Export a model that was never fitted (weights set by
            hand). Defaults to False: `check_exportable`.
        noise: The noise of each call (see `signature_functions`). Defaults
            to `FreshNoise`.
        max_batch: The largest batch (and `num_samples`) every signature
            accepts; larger requests fail with an `InvalidArgumentError`.
            Defaults to `MAX_BATCH` (1024).

    Returns:
        The version folder, `Path(base_dir) / name / str(version)`.

    Raises:
        FileExistsError: If the version folder exists and not `overwrite`.
        ValueError: For an unbuilt or untrained model, or a bad name/version.

    Example:

    >>> import tempfile, keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="gaussian", sigma=0.1)
    >>> folder = kv.export.saved_model(vae, tempfile.mkdtemp(), name="digits", version=2, allow_untrained=True)
    >>> folder.parent.name, folder.name
    ('digits', '2')
    """
    check_exportable(model, allow_untrained)
    max_batch = positive_int("max_batch", max_batch)
    target = check_saved_model_target(base_dir, name, version, overwrite)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}{files.PARTIAL}", dir=parent))
    try:
        _archive(model, noise=noise, max_batch=max_batch).write_out(str(staging), verbose=False)
        _replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _replace(source: Path, target: Path) -> None:
    """Renames `source` to `target`, moving an existing `target` aside first."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(source, target)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(source, target)


# ------------------------------------------------------------------ TFLite
def tflite(
    model: VAE,
    path,
    signatures=("decode",),
    quantize: str | None = None,
    overwrite: bool = False,
    allow_untrained: bool = False,
    max_batch: int = MAX_BATCH,
) -> Path:
    """Converts signatures of `model` to a `.tflite` file with builtin ops only.

    The signatures are those of `saved_model` and keep their names and their
    input/output names in the file, so with LiteRT:
    `Interpreter(path).get_signature_runner("decode")(z=z)["mean"]`.

    Args:
        model: A trained `keras_vae.VAE` or latent-family model (module docstring).
        path: The `.tflite` file to write.
        signatures: Names from `signature_names(model)`. Defaults to `("decode",)`.
        quantize: None (float32), `"float16"` (float16 weights) or
            `"dynamic"` (int8 weights, dynamic-range activations).
            Defaults to None.
        overwrite: Replace an existing file. Defaults to False.
        allow_untrained: Export a model that was never fitted (weights set by
            hand). Defaults to False: `check_exportable`.
        max_batch: As in `saved_model` (the converter drops the in-graph
            checks; `litert_runner` checks inputs). Defaults to `MAX_BATCH`.

    Returns:
        The path written.

    Raises:
        ValueError: If a signature needs TensorFlow (Flex) ops that are not
            TFLite builtins; the message names the signature(s) and op(s).
            (None of the library's signatures do: the VQ-VAE's prior
            sampling loop becomes a builtin `WHILE` with `MULTINOMIAL`
            draws. A custom decoder or network layer may.)
        FileExistsError: If `path` exists and not `overwrite`.

    Example:

    >>> import os, tempfile, keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="gaussian", sigma=0.1)
    >>> path = kv.export.tflite(vae, os.path.join(tempfile.mkdtemp(), "decoder.tflite"), allow_untrained=True)
    >>> path.suffix
    '.tflite'
    """
    check_exportable(model, allow_untrained)
    path, signatures = check_tflite_target(model, path, signatures, quantize, overwrite)
    with tempfile.TemporaryDirectory(prefix="keras_vae_tflite_") as folder:
        _archive(model, signatures, max_batch=positive_int("max_batch", max_batch)).write_out(folder, verbose=False)
        flatbuffer = _convert(folder, signatures, quantize)
    with files.atomic_path(path) as staging:
        staging.write_bytes(flatbuffer)
    return path


def check_tflite_target(model: VAE, path, signatures=("decode",), quantize: str | None = None,
                        overwrite: bool = False,
                        overwrite_flag: str = "overwrite=True") -> tuple[Path, tuple[str, ...]]:
    """Checks the arguments of `tflite` before any work; removes what a killed write of `path` left.

    `overwrite_flag` is how a refusal names `overwrite` (`"--overwrite"` for
    the command line).

    Returns:
        `(Path(path), signatures)` with `signatures` as a tuple.

    Raises:
        ValueError: For unknown or repeated signatures, a bad `quantize`, or
            a path that does not end in `.tflite`.
        FileExistsError: If `path` exists and not `overwrite`.
        NotADirectoryError: If a parent of `path` is a file.
    """
    signatures = _check_signatures(signatures, signature_names(model))
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Expected quantize in {QUANTIZATIONS}. Received: quantize={quantize!r}")
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"Expected a path ending in .tflite. Received: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a .tflite file path.")
    parent = next((folder for folder in path.parents if folder.exists()), None)
    if parent is not None and not parent.is_dir():
        raise NotADirectoryError(f"{parent} is a file, so {path} cannot be written there.")
    files.remove_partials(path.parent, path.stem)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it. Pass {overwrite_flag}.")
    return path, signatures


def _converter(saved_model_dir: str, signatures, quantize):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=list(signatures))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter


def _convert(saved_model_dir: str, signatures, quantize) -> bytes:
    try:
        return _converter(saved_model_dir, signatures, quantize).convert()
    except Exception as error:  # ConverterError: find which signature needs which ops
        ops = _flex_ops(str(error))
        if not ops:
            raise
        culprits = {signatures[0]: ops}  # one signature: it is the culprit
        if len(signatures) > 1:  # convert each alone: which needs which ops
            culprits = {}
            for name in signatures:
                try:
                    _converter(saved_model_dir, [name], quantize).convert()
                except Exception as single:  # noqa: BLE001 - only to name the culprit
                    culprits[name] = _flex_ops(str(single)) or ops
        detail = "; ".join(f"{name}: {', '.join(found)}" for name, found in culprits.items()) or ", ".join(ops)
        raise ValueError(
            f"Cannot convert to TFLite with builtin ops only; these signatures need ops that are not TFLite "
            f"builtins (TensorFlow Flex ops, or ops TFLite cannot lower), which the Python LiteRT runtime cannot "
            f"run: {detail}. Export other signatures, or replace "
            "those ops (e.g. tf.random.normal instead of keras.random / stateless random ops)."
        ) from None


def _flex_ops(message: str) -> list[str]:
    """The TF op names a converter error says are not TFLite builtins."""
    found = set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message))
    found.update(re.findall(r"failed to legalize operation '([\w.]+)'", message))
    for line in re.findall(r"TF Select ops: ([^\n]+)", message):
        found.update(op.strip() for op in line.split(",") if op.strip())
    return sorted(found)


# ------------------------------------------------------------------ LiteRT
def litert_runner(path, signature: str = "decode", num_threads: int | None = None, max_batch: int = MAX_BATCH):
    """Loads one signature of a `.tflite` file with LiteRT, with input checks.

    The TFLite converter drops the SavedModel's in-graph checks, and the raw
    LiteRT signature runner resizes its inputs to whatever it is given: a
    wrong shape either runs and returns garbage (a `(1, 3)` z for a 2-d
    latent is read as a `(1, 2)` one plus junk) or fails inside the XNNPACK
    delegate ("failed to reshape runtime node"), an error that names no
    input and repeats on later calls of that interpreter; an empty batch or
    NaN pixels run silently. The returned callable checks every input's shape
    (any batch of 1 to `max_batch`), dtype and finiteness first, and names
    the expected shape.

    Args:
        path: A `.tflite` file written by `tflite`.
        signature: The signature to run. Defaults to `"decode"`.
        num_threads: CPU threads for LiteRT. Defaults to LiteRT's choice.
        max_batch: The largest batch accepted. Defaults to `MAX_BATCH`.

    Returns:
        A function `run(**inputs) -> dict` of NumPy outputs, e.g.
        `run(z=z)["mean"]`.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file has no such signature; when called, if an
            input is missing, unexpected, of the wrong shape or dtype, of an
            empty or too large batch, or not finite.

    Example:

    >>> import os, tempfile, numpy as np, keras_vae as kv
    >>> vae = kv.build_vae((8, 8, 1), network="mlp", latent_dim=2, likelihood="gaussian", sigma=0.1)
    >>> path = kv.export.tflite(vae, os.path.join(tempfile.mkdtemp(), "decoder.tflite"), allow_untrained=True)
    >>> decode = kv.export.litert_runner(path, "decode")
    >>> decode(z=np.zeros((3, 2), "float32"))["mean"].shape
    (3, 8, 8, 1)
    """
    from ai_edge_litert.interpreter import Interpreter  # the optional [tflite] extra

    max_batch = positive_int("max_batch", max_batch)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No TFLite file at {path}.")
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    available = interpreter.get_signature_list()
    if signature not in available:
        raise ValueError(f"{path} has no signature {signature!r}. It has: {sorted(available)}.")
    runner = interpreter.get_signature_runner(signature)
    details = runner.get_input_details()

    def run(**inputs) -> dict:
        if set(inputs) != set(details):
            raise ValueError(
                f"Signature {signature!r} takes inputs {sorted(details)}. Received: {sorted(inputs)}."
            )
        arrays = {}
        for name, detail in details.items():
            value = np.asarray(inputs[name])
            expected = [int(dim) for dim in detail["shape_signature"]]
            shown = "(" + ", ".join("batch" if dim == -1 else str(dim) for dim in expected) + ")"
            if value.ndim != len(expected) or any(e not in (-1, v) for e, v in zip(expected, value.shape, strict=True)):
                raise ValueError(f"Expected {name} of shape {shown}. Received: {name}.shape={value.shape}")
            if expected and expected[0] == -1 and not 1 <= value.shape[0] <= max_batch:
                raise ValueError(f"Expected {name} of shape {shown} with a batch of 1 to {max_batch}. "
                                 f"Received: {name}.shape={value.shape}")
            dtype = np.dtype(detail["dtype"])
            if value.dtype != dtype and not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise ValueError(f"Expected {name} of dtype {dtype.name}. Received: {value.dtype.name}")
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                raise ValueError(f"Expected finite values of {name}. Received {int((~np.isfinite(value)).sum())} "
                                 "NaN or inf value(s).")
            arrays[name] = value.astype(dtype, copy=False)
        return runner(**arrays)

    return run
