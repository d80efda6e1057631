"""Pictures people look at, written as PNG files with matplotlib (Agg, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


def tile(images, num_columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Tiles images `(N, H, W, C)` into one `(rows * (H + p) - p, cols * (W + p) - p, C)` array.

    Example:

    >>> tile(np.zeros((6, 4, 4, 1)), num_columns=3).shape
    (9, 14, 1)
    """
    images = np.clip(np.asarray(images, "float32"), 0.0, 1.0)
    if images.ndim != 4:
        raise ValueError(f"Expected images of rank 4 (N, H, W, C). Received shape {images.shape}.")
    count, height, width, channels = images.shape
    columns = num_columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.ones((rows * (height + padding) - padding, columns * (width + padding) - padding, channels), "float32")
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = row * (height + padding), column * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def save_image(array, path, scale: int = 4) -> Path:
    """Writes an `(H, W, C)` array in [0, 1] to a PNG, each pixel `scale` x `scale`."""
    array = np.asarray(array, "float32")
    array = np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = array[..., 0] if array.shape[-1] == 1 else array
    plt.imsave(path, np.clip(image, 0.0, 1.0), cmap="gray" if array.shape[-1] == 1 else None, vmin=0.0, vmax=1.0)
    return path


def sample_grid(images, path, num_columns: int | None = None) -> Path:
    """Writes a grid of images (e.g. `vae.sample(64)`) to `path`."""
    return save_image(tile(images, num_columns), path)


def reconstruction_grid(originals, reconstructions, path) -> Path:
    """Writes originals (odd rows) above their reconstructions (even rows) to `path`."""
    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"Shapes differ: originals {originals.shape}, reconstructions {reconstructions.shape}.")
    columns = min(len(originals), 8)
    rows = []
    for start in range(0, len(originals), columns):
        rows += [originals[start : start + columns], reconstructions[start : start + columns]]
    return save_image(tile(np.concatenate(rows), num_columns=columns), path)


# ------------------------------------------------------------ interpolation
def interpolate(z1, z2, steps: int = 10, method: str = "linear") -> np.ndarray:
    """Points from `z1` to `z2` (both ends included): `(steps, latent_dim)`.

    `"linear"`: (1 - t) z1 + t z2. `"spherical"` (slerp, White 2016):
    sin((1 - t) omega) / sin(omega) z1 + sin(t omega) / sin(omega) z2, with
    omega the angle between z1 and z2; it keeps the norm typical of a
    Gaussian prior sample, where a straight line passes close to the origin.

    Example:

    >>> interpolate(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 3, "spherical").round(3).tolist()
    [[1.0, 0.0], [0.707, 0.707], [0.0, 1.0]]
    """
    if method not in ("linear", "spherical"):
        raise ValueError(f"Expected method 'linear' or 'spherical'. Received: method={method!r}")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"Expected steps >= 2. Received: steps={steps!r}")
    z1, z2 = np.asarray(z1, "float64").ravel(), np.asarray(z2, "float64").ravel()
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 differ in shape: {z1.shape} and {z2.shape}.")
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if method == "linear":
        return (1 - t) * z1 + t * z2
    cosine = np.dot(z1, z2) / max(np.linalg.norm(z1) * np.linalg.norm(z2), 1e-12)
    omega = np.arccos(np.clip(cosine, -1.0, 1.0))
    if omega < 1e-6:  # (anti)parallel within float precision: slerp is the line
        return (1 - t) * z1 + t * z2
    return (np.sin((1 - t) * omega) * z1 + np.sin(t * omega) * z2) / np.sin(omega)


def interpolation_grid(model, x1, x2, path, steps: int = 10) -> Path:
    """Decodes linear (top row) and spherical (bottom row) paths between two images' posterior means.

    Args:
        model: A VAE with `encode` and `decode`.
        x1: The first image `(H, W, C)` (or a batch of one).
        x2: The second image.
        path: The PNG to write.
        steps: Images per row, ends included. Defaults to 10.

    Returns:
        The path. Each row also shows the originals at its two ends.
    """
    x = np.stack([np.asarray(end, "float32").reshape(model.image_shape) for end in (x1, x2)])
    means = np.asarray(model.encode(x)[0])
    rows = []
    for method in ("linear", "spherical"):
        z = interpolate(means[0], means[1], steps, method).astype("float32")
        rows.append(np.concatenate([x[:1], np.asarray(model.decode(z)[0]), x[1:]]))
    return save_image(tile(np.concatenate(rows), num_columns=steps + 2), path)


def latent_traversal(model, path, z=None, dims=None, span: float = 3.0, steps: int = 9) -> Path:
    """One row per latent dimension: `z` with that dimension swept over [-span, span].

    Args:
        model: A VAE with `latent_dim` and `decode`.
        path: The PNG to write.
        z: The base latent `(latent_dim,)`. Defaults to zeros (the prior mean).
        dims: Dimensions to show, e.g. the most active ones. Defaults to all.
        span: Half-width of the sweep. Defaults to 3.
        steps: Images per row. Defaults to 9.

    Returns:
        The path.
    """
    latent_dim = model.latent_shape[0]
    base = np.zeros(latent_dim, "float32") if z is None else np.asarray(z, "float32").reshape(latent_dim)
    dims = list(range(latent_dim)) if dims is None else [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if bad or not dims:
        raise ValueError(f"Expected dims in [0, {latent_dim}). Received: dims={dims}")
    values = np.linspace(-span, span, steps, dtype="float32")
    latents = np.repeat(base[None], len(dims) * steps, axis=0)
    for row, dim in enumerate(dims):
        latents[row * steps : (row + 1) * steps, dim] = values
    return save_image(tile(np.asarray(model.decode(latents)[0]), num_columns=steps), path)


# ------------------------------------------------------------------ charts
def kl_bars(kl_per_dim, path, collapse_nats: float = 0.1, figsize=(6.4, 3.2), dpi: int = 100) -> Path:
    """A bar chart of the KL of each latent dimension, with the collapse threshold drawn.

    Args:
        kl_per_dim: Mean KL per dimension, nats (`evaluation.posterior_statistics`).
        path: The PNG to write (`figsize * dpi` pixels).
        collapse_nats: The line below which a dimension counts as collapsed.
            Defaults to 0.1.
        figsize: Inches. Defaults to (6.4, 3.2).
        dpi: Dots per inch. Defaults to 100.
    """
    kl = np.asarray(kl_per_dim, "float64").ravel()
    figure, axes = plt.subplots(figsize=figsize, dpi=dpi)
    colours = ["tab:grey" if value < collapse_nats else "tab:blue" for value in kl]
    axes.bar(np.arange(len(kl)), kl, color=colours)
    axes.axhline(collapse_nats, color="tab:red", linestyle="--", linewidth=1, label=f"{collapse_nats} nats")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_xlabel("latent dimension")
    axes.set_ylabel("KL (nats)")
    axes.set_title(f"KL per dimension: {int(np.sum(kl >= collapse_nats))} of {len(kl)} above {collapse_nats}")
    axes.legend(loc="upper right")
    return _save_figure(figure, path)


def rate_distortion_curve(points, path, figsize=(6.4, 4.8), dpi: int = 100) -> Path:
    """Distortion against rate: sweep points joined by a line, other models as labelled markers.

    Args:
        points: Dicts with `rate` (KL, nats), `distortion` (e.g. MSE), `label`
            and `group`; points of a group whose name starts with `"beta"`
            are joined (a beta sweep), the others (calibrated models) stand alone.
        path: The PNG to write (`figsize * dpi` pixels).
        figsize: Inches. Defaults to (6.4, 4.8).
        dpi: Dots per inch. Defaults to 100.
    """
    if not points:
        raise ValueError("Expected at least one point to plot.")
    figure, axes = plt.subplots(figsize=figsize, dpi=dpi)
    groups: dict[str, list] = {}
    for point in points:
        groups.setdefault(point.get("group", ""), []).append(point)
    markers = iter("s^DvP*Xo")
    for group, members in groups.items():
        members = sorted(members, key=lambda p: p["rate"])
        rates = [p["rate"] for p in members]
        distortions = [p["distortion"] for p in members]
        if group.startswith("beta"):
            axes.plot(rates, distortions, "o-", label=group)
        else:
            axes.plot(rates, distortions, next(markers, "o"), markersize=9, label=group)
        for p in members:
            axes.annotate(p.get("label", ""), (p["rate"], p["distortion"]), fontsize=7,
                          textcoords="offset points", xytext=(4, 4))
    axes.set_xlabel("rate: KL(q(z|x) || p(z)) (nats)")
    axes.set_ylabel("distortion: MSE per pixel")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save_figure(figure, path)


def _save_figure(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()  # keeps the pixel size, fits the labels inside it
    figure.savefig(path)
    plt.close(figure)
    return path


def model_figures(model, inputs, out, kl_per_dim=None, num_samples: int = 64, seed: int = 0) -> list[Path]:
    """Writes the standard pictures of a model of any family into folder `out`.

    `samples.png` (prior samples; a conditional model's cycle through the
    given conditions), `reconstructions.png`, and, given `kl_per_dim`,
    `kl_per_dim.png`. For a model with one unconditional latent vector also
    `interpolation.png` (first two images, linear then spherical) and
    `traversal.png` (the 8 dimensions of largest KL, or the first 8).

    Args:
        model: A `VAE` of any family.
        inputs: Images, or an inputs dict `{"x": images, **conditions}`.

    Returns:
        The paths written.
    """
    from keras_vae import evaluation

    out = Path(out)
    inputs = evaluation.as_inputs(model, inputs)
    images = inputs["x"]
    conditions = {name: value for name, value in inputs.items() if name != "x"}
    first = {name: value[:32] for name, value in inputs.items()}
    paths = [
        sample_grid(evaluation.prior_samples(model, num_samples, seed=seed, conditions=conditions),
                    out / "samples.png", num_columns=8),
        reconstruction_grid(images[:32], evaluation.reconstructions(model, first), out / "reconstructions.png"),
    ]
    if len(model.latent_shape) == 1 and not conditions:
        latent_dim = model.latent_shape[0]
        paths.append(interpolation_grid(model, images[0], images[min(1, len(images) - 1)], out / "interpolation.png"))
        order = np.argsort(-np.asarray(kl_per_dim)) if kl_per_dim is not None and len(kl_per_dim) == latent_dim \
            else np.arange(latent_dim)
        paths.append(latent_traversal(model, out / "traversal.png", dims=sorted(order[:8].tolist())))
    if kl_per_dim is not None:
        paths.append(kl_bars(kl_per_dim, out / "kl_per_dim.png"))
    return paths
