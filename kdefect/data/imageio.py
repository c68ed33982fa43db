"""Reading images and masks from files, with ``InputError`` naming the file on failure.

Images decode to uint8 (H, W, C) grayscale or RGB; masks decode to uint8
luminance (H, W), so palette masks whose raw indices are 0/1 (KolektorSDD)
come out as 0/255 and any value > 0 counts as defect.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from kdefect.data.labels import resize_bilinear
from kdefect.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
# What tf.io.decode_image reads when streaming from disk.
STREAMABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _open(path, what):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        img = Image.open(path)
        img.load()
    except Exception as err:  # PIL raises many types for corrupt/truncated files
        raise InputError(f"cannot read {what} {path}: {err} (expected a readable image file)") from None
    return img


def read_image(path, channels=1):
    """Decode an image file to uint8 (H, W, channels): grayscale (1) or RGB (3).

    Example:
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.new("RGB", (6, 4)).save(p)
    >>> read_image(p, 1).shape, read_image(p, 3).shape
    ((4, 6, 1), (4, 6, 3))
    """
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3, got {channels!r}")
    img = _open(path, "image")
    if img.mode in ("I", "I;16", "I;16B", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 / max(float(arr.max()), 1.0) if arr.max() > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8))
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def read_mask(path):
    """Decode a mask file to uint8 luminance (H, W); defect = any value > 0.

    Palette masks are mapped through their palette (KolektorSDD's raw 0/1
    indices become 0/255); colour masks become their luminance; 16-bit and
    float masks are kept as ``(value > 0) * 255``.

    Example:
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.png")
    >>> m = Image.new("P", (4, 4)); m.putpalette([0, 0, 0, 255, 255, 255]); m.putpixel((1, 1), 1)
    >>> m.save(p); int(read_mask(p).max())
    255
    """
    img = _open(path, "mask")
    if img.mode in ("I", "I;16", "I;16B", "F"):
        return ((np.asarray(img) > 0) * 255).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def image_size(path):
    """(height, width) of an image file from its header, without decoding the pixels.

    Example:
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.new("L", (6, 4)).save(p); image_size(p)
    (4, 6)
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception as err:
        raise InputError(f"cannot read image {path}: {err} (expected a readable image file)") from None
    return height, width


def to_input(image, height, width):
    """Resize a uint8 (H, W, C) image bilinearly (like cv2 INTER_LINEAR) to uint8 (height, width, C).

    Rounds like the streaming ``tf.data`` path, so in-memory and streamed
    datasets give the same pixels.

    Example:
    >>> to_input(np.zeros((10, 20, 1), np.uint8), 8, 16).shape
    (8, 16, 1)
    """
    if image.shape[:2] == (height, width):
        return np.asarray(image, np.uint8)
    resized = resize_bilinear(image, height, width)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def list_images(folder):
    """Image files directly inside ``folder`` (by suffix, case-insensitive), sorted by name.

    Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); Image.new("L", (2, 2)).save(os.path.join(d, "b.PNG"))
    >>> [p.name for p in list_images(d)]
    ['b.PNG']
    """
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
