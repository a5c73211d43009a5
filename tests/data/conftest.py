"""Fixtures of the data tests: real face crops to write into RecordIO packs and ``.bin`` sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceverify.data.images import read_rgb


@pytest.fixture(scope="session")
def faces(faces_dir: Path) -> tuple[list[np.ndarray], list[int]]:
    """AT&T photos of 4 people (3, 4, 2 and 3 images), padded to 112x112 squares."""
    images, labels = [], []
    for label, (subject, count) in enumerate((("s1", 3), ("s2", 4), ("s3", 2), ("s4", 3))):
        for i in range(1, count + 1):
            photo = read_rgb(faces_dir / "att_faces" / subject / f"{i}.pgm")  # 112x92
            images.append(np.pad(photo, ((0, 0), (10, 10), (0, 0))))
            labels.append(label)
    return images, labels
