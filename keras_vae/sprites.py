"""dSprites-style images rendered procedurally, with their known generative factors.

Five independent factors, as in dSprites (Matthey et al. 2017):

- `shape`: 3 values (square, ellipse, heart);
- `scale`: 6 values, the shape's size from 0.5 to 1 of its largest size;
- `orientation`: 40 values, rotations by 2 pi k / 40 (k < 40, so no angle
  repeats; a square looks the same every 10 steps and an ellipse every 20,
  as in dSprites);
- `x` and `y`: 32 values each, the centre's position from left to right and
  from top to bottom, placed so that every shape stays inside the image.

Images are white shapes on black, float32 in [0, 1], `(N, S, S, 1)`, 64 x 64
by default. Each pixel is the share of its `supersample x supersample`
sub-pixels inside the shape, so half-pixel moves of a small image still
change it. The shapes are implicit curves evaluated with numpy:
`max(|u|, |v|) <= 1` (square), `u**2 + (v / 0.5)**2 <= 1` (ellipse) and
`(u**2 + v**2 - 1)**3 <= u**2 v**3` (heart), in the shape's own frame.

`Sprites` is the renderer as ground-truth data for the disentanglement
metrics (`sample_factors`, `images_of`); `sprites(...)` returns every
combination or a seeded subset as arrays.

Example:

>>> x, factors = sprites(num_images=4, image_size=16, seed=0)
>>> x.shape, x.dtype.name, factors.shape
((4, 16, 16, 1), 'float32', (4, 5))

References:
    Matthey, Higgins, Hassabis, Lerchner. dSprites: Disentanglement testing
    Sprites dataset. https://github.com/deepmind/dsprites-dataset, 2017.
"""

from __future__ import annotations

import numpy as np

from keras_vae.checks import positive_int
from keras_vae.disentanglement import GroundTruthData

FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
NUM_COMBINATIONS = int(np.prod(FACTOR_SIZES))  # 737,280

_LARGEST_HALF_SIZE = 0.15  # half-width of a scale-1 shape, as a share of the image side
_MARGIN = _LARGEST_HALF_SIZE * 1.42  # the largest shape rotated by 45 degrees stays inside
_ELLIPSE_MINOR = 0.5
_HEART_CENTRE = 0.1  # the heart curve spans v in [-1, 1.2]; shift it to centre it


def _check_factors(factors) -> np.ndarray:
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
        raise ValueError(
            f"Expected factors of shape (N, {len(FACTOR_SIZES)}) for {FACTOR_NAMES}. Received shape {factors.shape}."
        )
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"Expected integer factor indices. Received dtype {factors.dtype}.")
    for column, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES, strict=True)):
        values = factors[:, column]
        if values.size and (values.min() < 0 or values.max() >= size):
            raise ValueError(f"Expected {name} indices in [0, {size}). Received values in "
                             f"[{values.min()}, {values.max()}].")
    return factors.astype("int64")


def factor_values(factors) -> dict[str, np.ndarray]:
    """The physical value of each factor index: scale in [0.5, 1], angle in radians, centre in [0, 1].

    Example:

    >>> values = factor_values(np.array([[2, 5, 10, 0, 31]]))
    >>> [round(float(values[name][0]), 4) for name in ("scale", "orientation", "x", "y")]
    [1.0, 1.5708, 0.213, 0.787]
    """
    factors = _check_factors(factors)
    positions = np.linspace(_MARGIN, 1.0 - _MARGIN, FACTOR_SIZES[3])
    return {
        "shape": factors[:, 0],
        "scale": np.linspace(0.5, 1.0, FACTOR_SIZES[1])[factors[:, 1]],
        "orientation": 2.0 * np.pi * factors[:, 2] / FACTOR_SIZES[2],
        "x": positions[factors[:, 3]],
        "y": positions[factors[:, 4]],
    }


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) in the shape's own frame lie inside shape number `shape`."""
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0
    if shape == 1:
        return u**2 + (v / _ELLIPSE_MINOR) ** 2 <= 1.0
    w = v + _HEART_CENTRE
    return (u**2 + w**2 - 1.0) ** 3 <= u**2 * w**3


def render(factors, image_size: int = 64, supersample: int = 4, batch_size: int = 256) -> np.ndarray:
    """Draws the sprite of each row of factor indices: `(N, image_size, image_size, 1)` float32 in [0, 1].

    Args:
        factors: Integer indices `(N, 5)`, columns as in `FACTOR_NAMES`.
        image_size: Side of the square images. Defaults to 64.
        supersample: Sub-pixels per pixel side; a pixel's value is the share
            of its sub-pixels inside the shape. Defaults to 4.
        batch_size: Images drawn per numpy pass (memory). Defaults to 256.

    Returns:
        The images.

    Example:

    >>> image = render(np.array([[0, 5, 0, 16, 16]]), image_size=32)[0, ..., 0]
    >>> float(image.max()), float(image[0, 0])
    (1.0, 0.0)
    """
    factors = _check_factors(factors)
    image_size = positive_int("image_size", image_size)
    supersample = positive_int("supersample", supersample)
    batch_size = positive_int("batch_size", batch_size)
    # Only a window around each shape is evaluated: the largest rotated shape fits in `window` pixels.
    window = min(image_size, int(np.ceil(2 * _MARGIN * image_size)) + 2)
    offsets = ((np.arange(window * supersample) + 0.5) / supersample).astype("float32")  # sub-pixel centres
    images = np.zeros((len(factors), image_size, image_size, 1), "float32")
    for shape in range(FACTOR_SIZES[0]):
        rows = np.flatnonzero(factors[:, 0] == shape)
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            values = factor_values(factors[batch])
            corner = {name: np.clip(np.floor(values[name] * image_size - window / 2), 0, image_size - window)
                      .astype("int64") for name in ("x", "y")}
            scale, angle, x, y = (values[name].astype("float32")[:, None, None]
                                  for name in ("scale", "orientation", "x", "y"))
            half = _LARGEST_HALF_SIZE * scale
            cos, sin = np.cos(angle), np.sin(angle)
            dx = (corner["x"][:, None, None] + offsets[None, None, :]) / image_size - x
            dy = (corner["y"][:, None, None] + offsets[None, :, None]) / image_size - y
            # Rotate the image point back by the shape's angle (v points up the image) into the shape's frame.
            u = (cos * dx - sin * dy) / half
            v = -(sin * dx + cos * dy) / half
            pixels = _inside(shape, u, v).reshape(len(batch), window, supersample, window, supersample).mean(
                axis=(2, 4), dtype="float32")
            for index, row in enumerate(batch):
                top, left = corner["y"][index], corner["x"][index]
                images[row, top : top + window, left : left + window, 0] = pixels[index]
    return images


def all_factors() -> np.ndarray:
    """Every combination of factor indices, `(737280, 5)` int64, the last factor varying fastest.

    Example:

    >>> all_factors()[:2].tolist()
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    """
    return np.indices(FACTOR_SIZES).reshape(len(FACTOR_SIZES), -1).T.astype("int64")


def sample_factors(num: int, rng: np.random.Generator) -> np.ndarray:
    """`num` rows of factor indices, each factor uniform and independent of the others.

    Example:

    >>> sample_factors(3, np.random.default_rng(0)).shape
    (3, 5)
    """
    num = positive_int("num", num)
    return np.stack([rng.integers(0, size, num) for size in FACTOR_SIZES], axis=1).astype("int64")


def sprites(num_images: int | None = None, image_size: int = 64, seed: int = 0,
            supersample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Sprite images with their factor indices: every combination, or a seeded subset.

    Args:
        num_images: How many distinct combinations, drawn without
            replacement with `seed`, in random order; None for all 737,280 in
            `all_factors` order (at 64 x 64 that is 12 GB of float32: use a
            subset or a smaller `image_size`). Defaults to None.
        image_size: Side of the images. Defaults to 64.
        seed: Seed of the subset. Defaults to 0.
        supersample: Sub-pixels per pixel side (`render`). Defaults to 4.

    Returns:
        `(x, factors)`: images `(N, S, S, 1)` float32 in [0, 1] and integer
        factor indices `(N, 5)`, columns as in `FACTOR_NAMES`.

    Example:

    >>> x, factors = sprites(num_images=3, image_size=8, seed=1)
    >>> bool((sprites(num_images=3, image_size=8, seed=1)[0] == x).all())
    True
    """
    factors = subset_factors(num_images, seed)
    return render(factors, image_size, supersample), factors


def subset_factors(num_images: int | None = None, seed: int = 0) -> np.ndarray:
    """The factor indices `sprites(num_images, seed=seed)` draws, without rendering them.

    Example:

    >>> subset_factors(2, seed=0).shape
    (2, 5)
    """
    factors = all_factors()
    if num_images is None:
        return factors
    num_images = positive_int("num_images", num_images)
    if num_images > NUM_COMBINATIONS:
        raise ValueError(f"Expected num_images <= {NUM_COMBINATIONS} (every combination). Received: {num_images}")
    rows = np.random.default_rng(seed).choice(NUM_COMBINATIONS, size=num_images, replace=False)
    return factors[rows]


class Sprites(GroundTruthData):
    """The sprite renderer as ground-truth data: draw factors, render the images of any factors.

    The interface the disentanglement metrics sample from
    (`keras_vae.disentanglement.GroundTruthData`): independent uniform
    factors, and images rendered on demand, so a metric can fix one factor
    and vary the others.

    Args:
        image_size: Side of the images. Defaults to 64.
        supersample: Sub-pixels per pixel side. Defaults to 4.

    Example:

    >>> data = Sprites(image_size=16)
    >>> factors = data.sample_factors(2, np.random.default_rng(0))
    >>> data.images_of(factors).shape, data.factor_names[0]
    ((2, 16, 16, 1), 'shape')
    """

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES

    def __init__(self, image_size: int = 64, supersample: int = 4):
        self.image_size = positive_int("image_size", image_size)
        self.supersample = positive_int("supersample", supersample)

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """`num` rows of independent uniform factor indices."""
        return sample_factors(num, rng)

    def images_of(self, factors, rng: np.random.Generator | None = None) -> np.ndarray:
        """The images of rows of factor indices (rendering is deterministic: `rng` is unused)."""
        del rng
        return render(factors, self.image_size, self.supersample)
