"""Pictures people look at, written as PNG files with matplotlib (Agg, no display needed).

Every picture explains itself: a title saying what is shown (and the
decoder and its sigma, `decoder_caption`), row and column legends on image
grids (original / reconstruction, linear / spherical, the latent dimension
and its values in a traversal) and axis labels with units on charts. Each
`*_grid` / chart function writes a PNG; the `*_figure` function beside it
returns the matplotlib figure, e.g. to show it in a notebook.

Example:

>>> figure = sample_figure(np.zeros((4, 8, 8, 1)), decoder="decoder: Gaussian, optimal sigma = 0.05")
>>> figure.axes[0].get_title()
'Prior samples: decoder means at z ~ p(z)\\ndecoder: Gaussian, optimal sigma = 0.05'
>>> plt.close(figure)
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from keras_vae import files  # noqa: E402


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
    with files.atomic_path(path) as temporary:  # a crash never leaves half a PNG
        plt.imsave(temporary, np.clip(image, 0.0, 1.0), cmap="gray" if array.shape[-1] == 1 else None,
                   vmin=0.0, vmax=1.0)
    return path


def decoder_caption(model, sigma: float | None = None) -> str:
    """One line naming the decoder's likelihood and its sigma, for titles.

    Args:
        model: A `VAE`.
        sigma: The decoder sigma the model serves (e.g. `metrics["sigma"]`,
            `decoder_sigma`), or None to leave the value out.

    Example:

    >>> import keras_vae as kv
    >>> decoder_caption(kv.build_vae((8, 8, 1), network="mlp", likelihood="optimal"), 0.0712)
    'decoder: Gaussian, optimal sigma = 0.0712 (pixels in [0, 1])'
    """
    name = type(model.likelihood).__name__
    mode = getattr(model.likelihood, "sigma", None)
    if mode is None:
        return f"decoder: {name} (no sigma)"
    kind = "fixed" if isinstance(mode, float) else str(mode)
    value = f" = {sigma:.3g}" if sigma is not None else (f" = {mode:g}" if isinstance(mode, float) else "")
    return f"decoder: {name}, {kind} sigma{value} (pixels in [0, 1])"


def decoder_sigma(model, inputs) -> float | None:
    """The mean decoder sigma at the posterior mode of `inputs` (a dict), or None without a sigma."""
    if getattr(model.likelihood, "sigma", None) is None:
        return None
    from keras_vae import latents

    checked = model.as_inputs(inputs)
    z = model.decoder_latent(latents.mode(model.posterior_distribution(checked)))
    return float(np.mean(np.asarray(model.decoded(z, checked, greedy=True)[1])))


def _title(text: str, decoder: str) -> str:
    return f"{text}\n{decoder}" if decoder else text


def grid_figure(images, num_columns: int, title: str, row_labels=(), column_labels=(), xlabel: str = "",
                ylabel: str = "", scale: int = 4):
    """A tiled grid of images `(N, H, W, C)` with a title and per-row and per-column labels.

    Args:
        images: The images, in rows of `num_columns`.
        num_columns: Images per row.
        title: The title (may have several lines).
        row_labels: One label per row of the grid (shown at its left), or ().
        column_labels: One label per column (shown below it), or ().
        xlabel: Axis label under the column labels. Defaults to "".
        ylabel: Axis label left of the row labels. Defaults to "".
        scale: Screen pixels per image pixel. Defaults to 4.

    Returns:
        A matplotlib `Figure` (close it with `plt.close` when done).
    """
    images = np.asarray(images, "float32")
    grid = tile(images, num_columns)
    height, width = images.shape[1:3]
    rows = math.ceil(len(images) / num_columns)
    for labels, count, what in ((row_labels, rows, "rows"), (column_labels, num_columns, "columns")):
        if labels and len(labels) != count:
            raise ValueError(f"Expected {count} labels for the {what}. Received {len(labels)}.")
    margin_left = 0.3 + 0.07 * max([len(str(label)) for label in row_labels] or [0]) + (0.3 if ylabel else 0)
    margin_bottom = 0.2 + (0.25 if column_labels else 0) + (0.25 if xlabel else 0)
    width_inches = max(grid.shape[1] * scale / 100 + margin_left + 0.3, 4.5)
    title = "\n".join(textwrap.fill(line, width=int(width_inches * 100 / 6.5)) for line in title.split("\n"))
    figsize = (width_inches, grid.shape[0] * scale / 100 + margin_bottom + 0.25 + 0.17 * (title.count("\n") + 1))
    figure, axes = plt.subplots(figsize=figsize, dpi=100)
    image = grid[..., 0] if grid.shape[-1] == 1 else grid
    axes.imshow(np.clip(image, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_title(title, fontsize=8)
    axes.set_yticks([r * (height + 1) + (height - 1) / 2 for r in range(rows)] if row_labels else [])
    axes.set_yticklabels([str(label) for label in row_labels], fontsize=7)
    axes.set_xticks([c * (width + 1) + (width - 1) / 2 for c in range(num_columns)] if column_labels else [])
    axes.set_xticklabels([str(label) for label in column_labels], fontsize=6)
    axes.tick_params(length=0)
    axes.set_xlabel(xlabel, fontsize=7)
    axes.set_ylabel(ylabel, fontsize=7)
    for spine in axes.spines.values():
        spine.set_visible(False)
    return figure


def sample_figure(images, num_columns: int | None = None, decoder: str = "",
                  title: str = "Prior samples: decoder means at z ~ p(z)"):
    """The figure of `sample_grid`."""
    images = np.asarray(images)
    columns = num_columns or math.ceil(math.sqrt(len(images)))
    return grid_figure(images, columns, _title(title, decoder))


def sample_grid(images, path, num_columns: int | None = None, decoder: str = "",
                title: str = "Prior samples: decoder means at z ~ p(z)") -> Path:
    """Writes a titled grid of images (e.g. `vae.sample(64)`) to `path`.

    Args:
        images: Images `(N, H, W, C)` in [0, 1].
        path: The PNG to write.
        num_columns: Images per row. Defaults to about sqrt(N).
        decoder: A second title line, e.g. `decoder_caption(model, sigma)`.
        title: What the images are. Defaults to prior samples.
    """
    return _save_figure(sample_figure(images, num_columns, decoder, title), path)


def reconstruction_figure(originals, reconstructions, decoder: str = ""):
    """The figure of `reconstruction_grid`."""
    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"Shapes differ: originals {originals.shape}, reconstructions {reconstructions.shape}.")
    columns = min(len(originals), 8)
    rows, labels = [], []
    for start in range(0, len(originals), columns):
        pair = (originals[start : start + columns], reconstructions[start : start + columns])
        pad = columns - len(pair[0])  # a short last row: blank tiles keep the pairs aligned
        rows += [np.concatenate([part, np.ones((pad, *part.shape[1:]), part.dtype)]) for part in pair]
        labels += ["original", "reconstruction"]
    title = "Reconstructions: each original above its reconstruction (decoder mean at the posterior mode)"
    return grid_figure(np.concatenate(rows), columns, _title(title, decoder), row_labels=labels)


def reconstruction_grid(originals, reconstructions, path, decoder: str = "") -> Path:
    """Writes originals (rows labelled "original") above their reconstructions ("reconstruction") to `path`.

    Args:
        originals: Images `(N, H, W, C)`.
        reconstructions: Their reconstructions, the same shape.
        path: The PNG to write.
        decoder: A second title line, e.g. `decoder_caption(model, sigma)`.
    """
    return _save_figure(reconstruction_figure(originals, reconstructions, decoder), path)


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


def interpolation_figure(model, x1, x2, steps: int = 10, decoder: str = ""):
    """The figure of `interpolation_grid`."""
    x = np.stack([np.asarray(end, "float32").reshape(model.image_shape) for end in (x1, x2)])
    means = np.asarray(model.encode(x)[0])
    rows = []
    for method in ("linear", "spherical"):
        z = interpolate(means[0], means[1], steps, method).astype("float32")
        rows.append(np.concatenate([x[:1], np.asarray(model.decode(z)[0]), x[1:]]))
    t = np.linspace(0.0, 1.0, steps)
    columns = ["image 1", *(f"t={value:.2g}" for value in t), "image 2"]
    title = "Interpolation between the posterior means of image 1 and image 2 (decoder means)"
    return grid_figure(np.concatenate(rows), steps + 2, _title(title, decoder), row_labels=["linear", "spherical"],
                       column_labels=columns, xlabel="t: fraction of the way from image 1 to image 2")


def interpolation_grid(model, x1, x2, path, steps: int = 10, decoder: str = "") -> Path:
    """Decodes linear (row "linear") and spherical (row "spherical") paths between two images' posterior means.

    Args:
        model: A VAE with `encode` and `decode`.
        x1: The first image `(H, W, C)` (or a batch of one).
        x2: The second image.
        path: The PNG to write.
        steps: Images per row, ends included. Defaults to 10.
        decoder: A second title line, e.g. `decoder_caption(model, sigma)`.

    Returns:
        The path. Each row also shows the originals at its two ends; the
        columns are labelled with t.
    """
    return _save_figure(interpolation_figure(model, x1, x2, steps, decoder), path)


def traversal_figure(model, z=None, dims=None, span: float = 3.0, steps: int = 9, decoder: str = "",
                     kl_per_dim=None, dim_labels=None):
    """The figure of `latent_traversal`."""
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
    kl = None if kl_per_dim is None else np.asarray(kl_per_dim, "float64").ravel()
    if dim_labels is not None and len(dim_labels) != latent_dim:
        raise ValueError(f"Expected one label per latent dimension ({latent_dim}). Received {len(dim_labels)}.")
    rows = [f"z[{d}]" + (f" {dim_labels[d]}" if dim_labels is not None else "")
            + (f" KL {kl[d]:.2f}" if kl is not None and len(kl) == latent_dim else "") for d in dims]
    at = "0 (the prior mean)" if z is None else "the given z"
    title = (f"Latent traversal: dimensions {', '.join(map(str, dims))} of {latent_dim}, each swept over "
             f"[{-span:g}, {span:g}], the others at {at}")
    return grid_figure(np.asarray(model.decode(latents)[0]), steps, _title(title, decoder), row_labels=rows,
                       column_labels=[f"{v:.2g}" for v in values], xlabel="value of the swept dimension",
                       ylabel="latent dimension" + (" (most informative factor)" if dim_labels is not None else "")
                       + (" (KL in nats)" if kl is not None else ""))


def latent_traversal(model, path, z=None, dims=None, span: float = 3.0, steps: int = 9, decoder: str = "",
                     kl_per_dim=None, dim_labels=None) -> Path:
    """One row per latent dimension (labelled `z[d]`): `z` with that dimension swept over [-span, span].

    Args:
        model: A VAE with `latent_dim` and `decode`.
        path: The PNG to write.
        z: The base latent `(latent_dim,)`. Defaults to zeros (the prior mean).
        dims: Dimensions to show, e.g. the most active ones. Defaults to all.
        span: Half-width of the sweep. Defaults to 3.
        steps: Images per row. Defaults to 9.
        decoder: A second title line, e.g. `decoder_caption(model, sigma)`.
        kl_per_dim: The KL of every dimension, to add to the row labels. Defaults to None.
        dim_labels: A label of every dimension to add to the row labels, e.g.
            the factor it carries most information about
            (`disentanglement.most_informative_factors`). Defaults to None.

    Returns:
        The path. The title names the dimensions and the range; the columns are labelled with the values.
    """
    return _save_figure(traversal_figure(model, z, dims, span, steps, decoder, kl_per_dim, dim_labels), path)


# ------------------------------------------------------------------ charts
def kl_bars(kl_per_dim, path, collapse_nats: float = 0.1, figsize=(6.4, 3.2), dpi: int = 100,
            decoder: str = "") -> Path:
    """A bar chart of the KL of each latent dimension, with the collapse threshold drawn.

    Args:
        kl_per_dim: Mean KL per dimension, nats (`evaluation.posterior_statistics`).
        path: The PNG to write (`figsize * dpi` pixels).
        collapse_nats: The line below which a dimension counts as collapsed.
            Defaults to 0.1.
        figsize: Inches. Defaults to (6.4, 3.2).
        dpi: Dots per inch. Defaults to 100.
        decoder: A second title line, e.g. `decoder_caption(model, sigma)`.
    """
    kl = np.asarray(kl_per_dim, "float64").ravel()
    figure, axes = plt.subplots(figsize=figsize, dpi=dpi)
    colours = ["tab:grey" if value < collapse_nats else "tab:blue" for value in kl]
    axes.bar(np.arange(len(kl)), kl, color=colours)
    axes.bar([], [], color="tab:grey", label="collapsed")
    axes.axhline(collapse_nats, color="tab:red", linestyle="--", linewidth=1,
                 label=f"collapse threshold, {collapse_nats} nats")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_xlabel("latent dimension")
    axes.set_ylabel("KL (nats per image)")
    title = (f"KL(q(z_d|x) || p(z_d)) per latent dimension: {int(np.sum(kl >= collapse_nats))} of {len(kl)} "
             f"above {collapse_nats} nats")
    axes.set_title(_title(title, decoder), fontsize=9)
    axes.legend(loc="upper right", fontsize=8)
    return _save_figure(figure, path)


def information_figure(information, factor_names, title: str = "", decoder: str = ""):
    """The figure of `information_heatmap`."""
    information = np.asarray(information, "float64")
    if information.ndim != 2 or information.shape[0] != len(factor_names):
        raise ValueError(f"Expected a (factor, latent) matrix with {len(factor_names)} rows. Received shape "
                         f"{information.shape}.")
    num_factors, num_codes = information.shape
    figure, axes = plt.subplots(figsize=(max(4.5, 1.6 + 0.45 * num_codes), 1.6 + 0.4 * num_factors), dpi=100)
    image = axes.imshow(information, cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest")
    for k in range(num_factors):
        for d in range(num_codes):
            value = information[k, d]
            axes.text(d, k, f"{value:.2f}", ha="center", va="center", fontsize=6,
                      color="black" if value > 0.6 * max(information.max(), 1e-12) else "white")
    axes.set_xticks(range(num_codes))
    axes.set_xticklabels([str(d) for d in range(num_codes)], fontsize=7)
    axes.set_yticks(range(num_factors))
    axes.set_yticklabels([str(name) for name in factor_names], fontsize=7)
    axes.set_xlabel("latent dimension (posterior mean)", fontsize=8)
    axes.set_ylabel("factor of variation", fontsize=8)
    figure.colorbar(image, ax=axes, label="mutual information (nats)")
    axes.set_title(_title(title or "Mutual information I(factor; z_d) of histogram-binned codes", decoder),
                   fontsize=8)
    return figure


def information_heatmap(information, factor_names, path, title: str = "", decoder: str = "") -> Path:
    """A factor x latent heat map of mutual information (`disentanglement.mutual_information`), values printed.

    Args:
        information: `(K, D)` nats, factor x latent dimension.
        factor_names: The K row labels.
        path: The PNG to write.
        title: The title. Defaults to a description of the matrix.
        decoder: A second title line, e.g. `decoder_caption(model, sigma)`.

    Returns:
        The path. Rows are labelled with the factor names, columns with the latent dimensions.
    """
    return _save_figure(information_figure(information, factor_names, title, decoder), path)


def rate_distortion_curve(points, path, figsize=(6.4, 4.8), dpi: int = 100,
                          distortion_label: str = "distortion: MSE per pixel", log_scale: bool = True,
                          title: str = "Rate-distortion: test KL against test distortion, one point per model") -> Path:
    """Distortion against rate: sweep points joined by a line, other models as labelled markers.

    Args:
        points: Dicts with `rate` (KL, nats), `distortion` (e.g. MSE), `label`
            and `group`; points of a group whose name starts with `"beta"`
            are joined (a beta sweep), the others (calibrated models) stand alone.
        path: The PNG to write (`figsize * dpi` pixels).
        figsize: Inches. Defaults to (6.4, 4.8).
        dpi: Dots per inch. Defaults to 100.
        distortion_label: The y axis label (what `distortion` is, and its
            unit). Defaults to MSE per pixel.
        log_scale: A logarithmic y axis. Defaults to True.
        title: The title. Defaults to saying what a point is.
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
    axes.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
    axes.set_xlabel("rate: KL(q(z|x) || p(z)) (nats)")
    axes.set_ylabel(distortion_label)
    axes.set_title(title, fontsize=9)
    if log_scale:
        axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save_figure(figure, path)


def _save_figure(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()  # keeps the pixel size, fits the labels inside it
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary)
    plt.close(figure)
    return path


def model_figures(model, inputs, out, kl_per_dim=None, num_samples: int = 64, seed: int = 0,
                  dim_labels=None) -> list[Path]:
    """Writes the standard pictures of a model of any family into folder `out`.

    `samples.png` (prior samples; a conditional model's cycle through the
    given conditions), `reconstructions.png`, and, given `kl_per_dim`,
    `kl_per_dim.png`. For a model with one unconditional latent vector also
    `interpolation.png` (first two images, linear then spherical) and
    `traversal.png` (the 8 dimensions of largest KL, or the first 8).

    Args:
        model: A `VAE` of any family.
        inputs: Images, or an inputs dict `{"x": images, **conditions}`.
        dim_labels: Labels of the latent dimensions for the traversal's rows
            (e.g. the factor each carries most information about). Defaults to None.

    Returns:
        The paths written.
    """
    from keras_vae import evaluation

    out = Path(out)
    inputs = evaluation.as_inputs(model, inputs)
    images = inputs["x"]
    conditions = {name: value for name, value in inputs.items() if name != "x"}
    first = {name: value[:32] for name, value in inputs.items()}
    decoder = decoder_caption(model, decoder_sigma(model, first))
    paths = [
        sample_grid(evaluation.prior_samples(model, num_samples, seed=seed, conditions=conditions),
                    out / "samples.png", num_columns=8, decoder=decoder),
        reconstruction_grid(images[:32], evaluation.reconstructions(model, first), out / "reconstructions.png",
                            decoder=decoder),
    ]
    if len(model.latent_shape) == 1 and not conditions:
        latent_dim = model.latent_shape[0]
        paths.append(interpolation_grid(model, images[0], images[min(1, len(images) - 1)], out / "interpolation.png",
                                        decoder=decoder))
        known = kl_per_dim is not None and len(kl_per_dim) == latent_dim
        order = np.argsort(-np.asarray(kl_per_dim)) if known else np.arange(latent_dim)
        paths.append(latent_traversal(model, out / "traversal.png", dims=sorted(order[:8].tolist()), decoder=decoder,
                                      kl_per_dim=kl_per_dim if known else None, dim_labels=dim_labels))
    if kl_per_dim is not None:
        paths.append(kl_bars(kl_per_dim, out / "kl_per_dim.png", decoder=decoder))
    return paths
