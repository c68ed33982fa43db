"""Procedural textured surfaces with and without defects, with pixel masks.

The built-in default dataset: seeded, any size divisible by 8, grayscale or
colour. Surfaces are smoothed noise at two scales plus machining stripes and a
brightness gradient; defects are scratches (thin straight lines), spots
(ellipses) and cracks (jagged random walks) of varying contrast and size,
darker or brighter than the surface.
"""

import numpy as np
from scipy import ndimage

DEFECT_KINDS = ("scratch", "spot", "crack")


def _texture(rng, height, width):
    fine = ndimage.gaussian_filter(rng.normal(size=(height, width)), 1.0)
    coarse = ndimage.gaussian_filter(rng.normal(size=(height, width)), 6.0)
    fine /= fine.std() + 1e-8
    coarse /= coarse.std() + 1e-8
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 12)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    gradient = (xx / width - 0.5) * rng.uniform(-0.15, 0.15) + (yy / height - 0.5) * rng.uniform(-0.15, 0.15)
    surface = (
        rng.uniform(0.35, 0.65)
        + 0.04 * fine
        + 0.05 * coarse
        + rng.uniform(0.0, 0.04) * stripes
        + gradient
    )
    return surface


def _segment_distance(yy, xx, p0, p1):
    """Distance of every grid point to the segment p0-p1."""
    d = np.subtract(p1, p0, dtype=np.float64)
    length2 = max(float(d @ d), 1e-9)
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / length2, 0.0, 1.0)
    return np.hypot(yy - (p0[0] + t * d[0]), xx - (p0[1] + t * d[1]))


def _defect_mask(rng, kind, height, width):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    size = min(height, width)
    centre = np.array([rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width])
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        half = rng.uniform(0.12, 0.35) * size
        offset = half * np.array([np.sin(angle), np.cos(angle)])
        return _segment_distance(yy, xx, centre - offset, centre + offset) <= rng.uniform(0.8, 2.0)
    if kind == "spot":
        ry, rx = rng.uniform(0.03, 0.09, size=2) * size + 1.5
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - centre[0], xx - centre[1]
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        return (u / ry) ** 2 + (v / rx) ** 2 <= 1.0
    # crack: a jagged random walk of short segments
    mask = np.zeros((height, width), bool)
    point = centre
    heading = rng.uniform(0, 2 * np.pi)
    width_px = rng.uniform(0.7, 1.5)
    for _ in range(rng.integers(4, 9)):
        heading += rng.normal(0, 0.6)
        step = rng.uniform(0.04, 0.09) * size
        nxt = point + step * np.array([np.sin(heading), np.cos(heading)])
        nxt = np.clip(nxt, [2, 2], [height - 3, width - 3])
        mask |= _segment_distance(yy, xx, point, nxt) <= width_px
        point = nxt
    return mask


def make_surface(rng, height, width, channels=1, kind=None):
    """One surface image (uint8, (H, W, C)) and its mask (uint8 0/1, (H, W)).

    Args:
        rng: ``numpy.random.Generator``.
        height, width: image size.
        channels: 1 (grayscale) or 3 (colour tint applied per channel).
        kind: None for a defect-free surface, or one of ``DEFECT_KINDS``.

    Example:
    >>> img, mask = make_surface(np.random.default_rng(0), 64, 64, kind="spot")
    >>> img.shape, img.dtype.name, bool(mask.any())
    ((64, 64, 1), 'uint8', True)
    """
    surface = _texture(rng, height, width)
    mask = np.zeros((height, width), bool)
    if kind is not None:
        mask = _defect_mask(rng, kind, height, width)
        contrast = rng.uniform(0.12, 0.35) * rng.choice([-1.0, 1.0])
        soft = ndimage.gaussian_filter(mask.astype(np.float64), 0.6)
        surface = surface + contrast * soft / max(soft.max(), 1e-8)
    surface += rng.normal(0, 0.01, size=surface.shape)
    if channels == 3:
        tint = rng.uniform(0.85, 1.15, size=3)
        surface = surface[..., None] * tint
    else:
        surface = surface[..., None]
    image = np.clip(np.round(surface * 255.0), 0, 255).astype(np.uint8)
    return image, mask.astype(np.uint8)


def make_synthetic(num_samples, height=128, width=128, channels=1, positive_fraction=0.4, seed=0):
    """A seeded set of surfaces: ``(images (N,H,W,C) uint8, masks (N,H,W) uint8, kinds)``.

    ``kinds[i]`` is the defect kind of sample i or None. Positives come first
    in no particular place: the order is shuffled by the seed.

    Example:
    >>> images, masks, kinds = make_synthetic(6, 64, 64, seed=1)
    >>> images.shape, sum(k is not None for k in kinds)
    ((6, 64, 64, 1), 2)
    """
    if height % 8 or width % 8:
        raise ValueError(f"synthetic size {height}x{width} (HxW) is not divisible by 8")
    rng = np.random.default_rng(seed)
    num_pos = int(round(num_samples * positive_fraction))
    kinds = [DEFECT_KINDS[i % len(DEFECT_KINDS)] for i in range(num_pos)]
    kinds += [None] * (num_samples - num_pos)
    kinds = [kinds[i] for i in rng.permutation(num_samples)]
    images = np.empty((num_samples, height, width, channels), np.uint8)
    masks = np.empty((num_samples, height, width), np.uint8)
    for i, kind in enumerate(kinds):
        images[i], masks[i] = make_surface(rng, height, width, channels, kind)
    return images, masks, kinds
