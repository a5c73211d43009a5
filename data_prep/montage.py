"""A grid of aligned crops in one PNG, to look at alignment quality at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from faceverify.data.images import read_rgb
from faceverify.errors import InvalidInputError


def montage(paths: Sequence[str | Path], out: str | Path, columns: int = 12, pad: int = 2) -> Path:
    """Tile the images (all of one size) row by row with ``pad`` white pixels between them."""
    if not paths:
        raise InvalidInputError("montage needs at least one image")
    images = [read_rgb(p) for p in paths]
    height, width = images[0].shape[:2]
    rows = (len(images) + columns - 1) // columns
    canvas = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, columns)
        y, x = pad + r * (height + pad), pad + c * (width + pad)
        canvas[y : y + height, x : x + width] = image
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return out
