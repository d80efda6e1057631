"""`python -m keras_vae export`: a trained `.keras` VAE -> TF Serving SavedModel (+ TFLite).

Example:

    python -m keras_vae export --model=runs/demo/model.keras --out=serving --version=1 --tflite

writes `serving/vae/1/` (serve it with `tensorflow/serving`, see `export/README.md`)
and, with `--tflite`, `serving/vae_1.tflite` for LiteRT.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

SIGNATURES = ("decode", "encode", "sample", "reconstruct", "elbo")  # keras_vae.export.SIGNATURES (test_help checks)

flags.DEFINE_string("model", None, "A trained VAE saved as .keras (e.g. runs/demo/model.keras).")
flags.DEFINE_string("out", "serving", "TF Serving base folder; the SavedModel goes to OUT/NAME/VERSION.")
flags.DEFINE_string("name", "vae", "Model name: the folder under --out and TF Serving's model name.")
flags.DEFINE_integer("version", 1, "Version folder (a positive integer).", lower_bound=1)
flags.DEFINE_bool("tflite", False, "Also write OUT/NAME_VERSION.tflite for LiteRT (builtin ops only).")
flags.DEFINE_list("tflite_signatures", ["decode"], f"Signatures in the .tflite file, from {list(SIGNATURES)}.")
flags.DEFINE_enum("quantize", "none", ["none", "float16", "dynamic"], "TFLite weight quantization.")
flags.DEFINE_bool("overwrite", False, "Replace an existing version folder / .tflite file.")
flags.DEFINE_integer("max_batch", 1024, "Largest batch (and num_samples) every signature accepts; larger requests "
                     "fail with a clear error instead of exhausting the server's memory.", lower_bound=1)

FLAGS = flags.FLAGS


def load_vae(path):
    """Loads a `.keras` VAE with safe_mode on; one line naming the file if it is missing, broken or foreign."""
    from keras_vae import files

    return files.load_vae(path, "--model")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.model:
        raise ValueError("--model is required (a trained .keras file).")
    from keras_vae import export

    model = load_vae(FLAGS.model)
    quantize = None if FLAGS.quantize == "none" else FLAGS.quantize
    # Everything is checked before anything is written; the .tflite file (the step that can refuse a
    # signature) is written first, and removed again if the SavedModel then fails.
    export.check_exportable(model)
    folder = export.check_saved_model_target(FLAGS.out, FLAGS.name, FLAGS.version, FLAGS.overwrite, "--overwrite")
    path = Path(FLAGS.out) / f"{FLAGS.name}_{FLAGS.version}.tflite"
    new_tflite = FLAGS.tflite and not path.exists()
    if FLAGS.tflite:
        export.check_tflite_target(model, path, FLAGS.tflite_signatures, quantize, FLAGS.overwrite, "--overwrite")
        export.tflite(model, path, signatures=FLAGS.tflite_signatures, quantize=quantize, overwrite=FLAGS.overwrite,
                      max_batch=FLAGS.max_batch)
    try:
        export.saved_model(model, FLAGS.out, name=FLAGS.name, version=FLAGS.version, overwrite=FLAGS.overwrite,
                           max_batch=FLAGS.max_batch)
    except BaseException:
        if new_tflite:
            path.unlink(missing_ok=True)
        raise
    print(f"SavedModel ({', '.join(export.signature_names(model))}; serving_default = decode; "
          f"max_batch={FLAGS.max_batch}) -> {folder}")
    if FLAGS.tflite:
        print(f"TFLite ({', '.join(FLAGS.tflite_signatures)}; quantize={quantize}) -> {path}")
