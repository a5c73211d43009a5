"""Faces found in a photo and which of them to align: :class:`Detections` and :func:`choose_face`.

Apart from the detector (:mod:`data_prep.detect`), so that what only reads detections (the
alignment pipeline's bookkeeping, ``faceverify align --workers N`` before its shards start) does
not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from faceverify.errors import InvalidInputError

FacePolicy = Literal["center", "largest", "most-confident"]
POLICIES: tuple[str, ...] = ("center", "largest", "most-confident")


@dataclass
class Detections:
    """Faces found in one image: ``boxes [F, 4]``, ``scores [F]``, ``landmarks [F, 5, 2]``."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    note: str = ""  # why the image could not be searched (too small, detector failure), else ""

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(note: str = "") -> "Detections":
        return Detections(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2)), note)


def choose_face(
    detections: Detections,
    image_size: tuple[int, int],
    policy: FacePolicy = "center",
    near_tie: float = 0.05,
) -> int | None:
    """Index of the face to align, or None when there is none.

    ``center``: the face whose box centre is nearest the image centre (LFW and CASIA crops are
    centred on their subject); faces within ``near_tie`` x image diagonal of the nearest count as
    tied and the largest of them wins. ``largest``: the largest box area. ``most-confident``: the
    highest MTCNN probability.
    """
    if len(detections) == 0:
        return None
    boxes = detections.boxes
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if policy == "largest":
        return int(np.argmax(areas))
    if policy == "most-confident":
        return int(np.argmax(detections.scores))
    if policy != "center":
        raise InvalidInputError(f"unknown face policy {policy!r}; valid: {', '.join(POLICIES)}")
    height, width = image_size
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    distance = np.linalg.norm(centres - np.array([width / 2.0, height / 2.0]), axis=1)
    tied = distance <= distance.min() + near_tie * float(np.hypot(width, height))
    candidates = np.flatnonzero(tied)
    return int(candidates[np.argmax(areas[candidates])])
