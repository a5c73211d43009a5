"""Batched MTCNN face detection (Zhang et al., IEEE SPL 2016) via facenet-pytorch.

``FaceDetector.detect(images)`` returns, per image, every face's box ``[x1, y1, x2, y2]``,
probability and five landmarks ``[5, 2]`` (left eye, right eye, nose, left and right mouth
corner) in that image's pixel coordinates. facenet-pytorch ships the MTCNN weights inside the
package, so nothing is downloaded.

Images larger than ``max_side`` are downscaled for detection only (area interpolation) and the
results mapped back to full resolution, so a 12-megapixel photo costs about as much as a small
one. MTCNN batches only equal-sized images; a batch is split into groups of equal shape, in a
deterministic order, so the same batch always gives bit-identical detections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import cv2
import numpy as np
import torch

FacePolicy = Literal["center", "largest", "most-confident"]
POLICIES: tuple[str, ...] = ("center", "largest", "most-confident")


@dataclass
class Detections:
    """Faces found in one image: ``boxes [F, 4]``, ``scores [F]``, ``landmarks [F, 5, 2]``."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2)))


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
        raise ValueError(f"unknown face policy {policy!r}; valid: {', '.join(POLICIES)}")
    height, width = image_size
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    distance = np.linalg.norm(centres - np.array([width / 2.0, height / 2.0]), axis=1)
    tied = distance <= distance.min() + near_tie * float(np.hypot(width, height))
    candidates = np.flatnonzero(tied)
    return int(candidates[np.argmax(areas[candidates])])


class FaceDetector:
    """facenet-pytorch MTCNN with ``keep_all=True``, batched over equal-sized images."""

    def __init__(
        self,
        device: str | torch.device | None = None,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        min_face_size: int = 20,
        max_side: int = 1024,
    ):
        from facenet_pytorch import MTCNN

        if device is None or device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.max_side = int(max_side)
        self.mtcnn = MTCNN(
            keep_all=True,
            min_face_size=int(min_face_size),
            thresholds=list(thresholds),
            device=self.device,
            select_largest=False,
            post_process=False,
        )

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Downscale for detection if needed -> (image, per-axis factor back to full size)."""
        height, width = image.shape[:2]
        longest = max(height, width)
        if longest <= self.max_side:
            return image, np.ones(2)
        factor = self.max_side / longest
        size = (max(int(round(width * factor)), 1), max(int(round(height * factor)), 1))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return small, np.array([width / size[0], height / size[1]])

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in RGB uint8 images ``[H, W, 3]`` (any sizes) -> one Detections each."""
        prepared = [self._prepare(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (small, _) in enumerate(prepared):
            groups.setdefault(small.shape[:2], []).append(i)
        results: list[Detections | None] = [None] * len(images)
        for shape in sorted(groups):
            members = groups[shape]
            batch = np.stack([prepared[i][0] for i in members])
            boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
            for j, i in enumerate(members):
                factor = prepared[i][1]
                if boxes[j] is None:
                    results[i] = Detections.empty()
                    continue
                # pixel-centre convention of cv2.resize: x_full = (x_small + 0.5) * f - 0.5
                results[i] = Detections(
                    boxes=(np.asarray(boxes[j], dtype=np.float64) + 0.5) * np.tile(factor, 2) - 0.5,
                    scores=np.asarray(probs[j], dtype=np.float64),
                    landmarks=(np.asarray(points[j], dtype=np.float64) + 0.5) * factor - 0.5,
                )
        return [r if r is not None else Detections.empty() for r in results]
