"""Pictures people look at, written as PNG files with matplotlib (Agg, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tile(images, num_columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Tiles images `(N, H, W, C)` into one `(rows * (H + p), cols * (W + p), C)` array.

    Example:

    >>> tile(np.zeros((6, 4, 4, 1)), num_columns=3).shape
    (10, 15, 1)
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
