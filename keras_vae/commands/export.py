"""`python -m keras_vae export`: a trained `.keras` VAE -> TF Serving SavedModel (+ TFLite).

Example:

    python -m keras_vae export --model=runs/demo/model.keras --out=serving --version=1 --tflite

writes `serving/vae/1/` (serve it with `tensorflow/serving`, see `export/README.md`)
and, with `--tflite`, `serving/vae_1.tflite` for LiteRT.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from keras_vae import export

flags.DEFINE_string("model", None, "A trained VAE saved as .keras (e.g. runs/demo/model.keras).")
flags.DEFINE_string("out", "serving", "TF Serving base folder; the SavedModel goes to OUT/NAME/VERSION.")
flags.DEFINE_string("name", "vae", "Model name: the folder under --out and TF Serving's model name.")
flags.DEFINE_integer("version", 1, "Version folder (a positive integer).", lower_bound=1)
flags.DEFINE_bool("tflite", False, "Also write OUT/NAME_VERSION.tflite for LiteRT (builtin ops only).")
flags.DEFINE_list("tflite_signatures", ["decode"], f"Signatures in the .tflite file, from {list(export.SIGNATURES)}.")
flags.DEFINE_enum("quantize", "none", ["none", "float16", "dynamic"], "TFLite weight quantization.")
flags.DEFINE_bool("overwrite", False, "Replace an existing version folder / .tflite file.")

FLAGS = flags.FLAGS


def load_vae(path):
    """Loads a `.keras` VAE with safe_mode on; a clear error for a missing or foreign file."""
    import keras

    from keras_vae.models.vae import VAE

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Expected a .keras file. Received: --model={path}")
    if not path.is_file():
        raise FileNotFoundError(f"No model file at --model={path}")
    model = keras.models.load_model(path, safe_mode=True)
    if not isinstance(model, VAE):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a keras_vae.VAE.")  # noqa: TRY004 - a bad --model value
    return model


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.model:
        raise ValueError("--model is required (a trained .keras file).")
    model = load_vae(FLAGS.model)
    quantize = None if FLAGS.quantize == "none" else FLAGS.quantize
    folder = export.saved_model(model, FLAGS.out, name=FLAGS.name, version=FLAGS.version, overwrite=FLAGS.overwrite)
    print(f"SavedModel ({', '.join(export.signature_names(model))}; serving_default = decode) -> {folder}")
    if FLAGS.tflite:
        path = Path(FLAGS.out) / f"{FLAGS.name}_{FLAGS.version}.tflite"
        export.tflite(model, path, signatures=FLAGS.tflite_signatures, quantize=quantize, overwrite=FLAGS.overwrite)
        print(f"TFLite ({', '.join(FLAGS.tflite_signatures)}; quantize={quantize}) -> {path}")
