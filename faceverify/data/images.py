"""Reading any face photo as an 8-bit RGB array, with a clear error for unreadable files.

Handles JPEG, PNG, BMP, PGM/PPM, GIF (first frame), WebP and TIFF through Pillow:
EXIF orientation is applied, gray images become 3-channel, palette images are expanded,
RGBA / LA images are composited over white, CMYK is converted, 16-bit images are rescaled.
Truncated or corrupt files, zero-byte files and non-images raise :class:`UnreadableImageError`
carrying the decoder's reason, so callers can record it and carry on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceverify.errors import FaceverifyError, MissingInputError

Image.MAX_IMAGE_PIXELS = 200_000_000  # phone panoramas are legitimate input


class UnreadableImageError(FaceverifyError, OSError):
    """The file could not be decoded as an image; ``reason`` is the decoder's message."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() if arr.size else 1.0
        scale = 255.0 / top if top > 255 else 1.0
        gray = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode ``path`` to a contiguous ``uint8`` array ``[H, W, 3]`` in RGB order.

    Raises:
        UnreadableImageError: zero-byte, truncated, corrupt or non-image files.
        FileNotFoundError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"image {path} does not exist")
    if path.stat().st_size == 0:
        raise UnreadableImageError(path, "zero-byte file")
    try:
        with Image.open(path) as image:
            image.load()  # force a full decode so truncation is detected here
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
            array = np.array(rgb, dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)
    except UnidentifiedImageError as err:
        raise UnreadableImageError(path, f"not a recognised image format ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(path, f"{type(err).__name__}: {err}") from err
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise UnreadableImageError(path, f"decoded to an unusable shape {array.shape}")
    return np.ascontiguousarray(array)
