"""`python -m keras_vae evaluate`: likelihood bounds, collapse statistics, FID and pictures of a saved VAE.

Example:

    python -m keras_vae evaluate --model=runs/demo/model.keras --dataset=mnist --out=runs/demo/eval

writes `eval.json` (ELBO, IWAE, bits/dim, active units, mutual information,
marginal KL, FID with its feature model named) and `samples.png`,
`reconstructions.png`, `interpolation.png`, `traversal.png`,
`kl_per_dim.png` into `--out`; a dataset with factor labels (`sprites`, an `.npz` with `factors`) adds the
disentanglement metrics to `eval.json`, `mutual_information.png` (factor x latent) and each traversal row's
most informative factor. A model of videos (`--model=sequence` in train) writes instead its test ELBO
and KL per frame and SVG's best-of-N SSIM and PSNR per predicted step (N = `--num_futures`, stated in
`eval.json`) as `best_of_n.png` and `best_of_n.csv`.
"""

from __future__ import annotations

from absl import flags

flags.DEFINE_string("model", None, "A saved model (.keras), e.g. runs/demo/model.keras.", required=True)
flags.DEFINE_string("dataset", "mnist", "'mnist' (embedded), 'sprites' (dSprites-style, with factors; the "
                    "model's size), 'tfds:NAME', a .npz file or an image folder.")
flags.DEFINE_enum("split", "test", ["train", "test", "all"], "Which split to evaluate on.")
flags.DEFINE_float("test_fraction", 0.1, "Test share for datasets without a test split.")
flags.DEFINE_integer("max_images", 0, "Evaluate on at most this many images (0: all).", lower_bound=0)
flags.DEFINE_integer("iwae_samples", 100, "Importance samples K of the IWAE bound (1000 is tighter, 10x slower).",
                     lower_bound=1)
flags.DEFINE_integer("fid_samples", 1000, "Prior samples for the FID.", lower_bound=2)
flags.DEFINE_string("feature_model", "auto",
                    "FID features: 'auto' (a small classifier trained on --dataset's labels, cached under "
                    "~/.cache/keras_vae), or 'none' to skip FID.")
flags.DEFINE_bool("dequantize", True, "Also bound the discrete bits/dim with uniform dequantization.")
flags.DEFINE_integer("batch_size", 100, "Images per batch.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of every random draw.")
flags.DEFINE_string("out", None, "Output folder (default: an 'eval' folder beside --model).")
flags.DEFINE_bool("overwrite", False, "Replace files evaluate writes (eval.json, its PNGs) already in --out.")
flags.DEFINE_integer("num_futures", 100, "Models of videos: sampled futures per test video for the best-of-N SSIM "
                     "and PSNR (SVG: 100).", lower_bound=1)
flags.DEFINE_integer("num_frames", 0, "--dataset=moving_mnist: frames per video (0: the model's context + future).",
                     lower_bound=0)
flags.DEFINE_integer("num_digits", 2, "--dataset=moving_mnist: digits per video.", lower_bound=1)
flags.DEFINE_integer("disentanglement_samples", 2000, "Factor-labelled datasets (sprites, an .npz with factors): "
                     "draws MIG, SAP and DCI train on (half as many to test).", lower_bound=2)
flags.DEFINE_integer("disentanglement_points", 500, "Factor-labelled datasets: training points of the BetaVAE and "
                     "FactorVAE scores (half as many to score; disentanglement_lib: 10,000).", lower_bound=2)
flags.DEFINE_integer("num_sequences", 0, "--dataset=moving_mnist: test videos to generate (0: 1,000).",
                     lower_bound=0)

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {' '.join(argv[1:])}")
    from keras_vae import evaluation

    results = evaluation.evaluate_saved_model(
        FLAGS.model, FLAGS.dataset, FLAGS.out, split=FLAGS.split, test_fraction=FLAGS.test_fraction,
        max_images=FLAGS.max_images, feature_model=FLAGS.feature_model, overwrite=FLAGS.overwrite,
        iwae_samples=FLAGS.iwae_samples, fid_samples=FLAGS.fid_samples, dequantized_bits=FLAGS.dequantize,
        batch_size=FLAGS.batch_size, seed=FLAGS.seed, progress=True, num_futures=FLAGS.num_futures,
        disentanglement_samples=FLAGS.disentanglement_samples, disentanglement_points=FLAGS.disentanglement_points,
        video_options=dict(num_frames=FLAGS.num_frames, num_digits=FLAGS.num_digits,
                           num_sequences=FLAGS.num_sequences),
    )
    if "best_of_n" in results:  # a model of videos
        print(f"ELBO {results['elbo']:.1f} nats/frame, KL {results['kl']:.2f} nats/frame, best of "
              f"N={results['best_of_n']}: SSIM {results['ssim']:.3f}, PSNR {results['psnr']:.2f} dB over "
              f"{results['predicted_frames']} predicted frames of {results['videos']} videos")
        return
    fid_text = f", FID(prior) {results['fid_prior']:.2f}" if "fid_prior" in results else ""
    print(
        f"ELBO {results['elbo']:.1f}, IWAE(K={FLAGS.iwae_samples}) {results['iwae']:.1f} nats/image, "
        f"{results['bits_per_dim']:.3f} bits/dim, active units {results['active_units']}/{results['latent_dim']}, "
        f"MI {results['mutual_information']:.2f}, marginal KL {results['marginal_kl']:.2f}{fid_text}"
    )
    if "disentanglement" in results:
        scores = results["disentanglement"]
        print("Disentanglement: " + ", ".join(f"{key} {scores[key]:.3f}" for key in (
            "beta_vae_score", "factor_vae_score", "mig", "sap", "dci_disentanglement", "dci_completeness",
            "dci_informativeness")) + f" (seed {scores['seed']}; samples {scores['samples']})")
