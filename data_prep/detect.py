"""Batched MTCNN face detection (Zhang et al., IEEE SPL 2016) via facenet-pytorch.

``FaceDetector.detect(images)`` returns, per image, every face's box ``[x1, y1, x2, y2]``,
probability and five landmarks ``[5, 2]`` (left eye, right eye, nose, left and right mouth
corner) in that image's pixel coordinates. facenet-pytorch ships the MTCNN weights inside the
package, so nothing is downloaded.

Images larger than ``max_side`` are downscaled for detection only (area interpolation) and the
results mapped back to full resolution, so a 12-megapixel photo costs about as much as a small
one. MTCNN batches only equal-sized images; a batch is split into groups of equal shape, in a
deterministic order, so the same batch always gives bit-identical detections.

Images MTCNN cannot search are answered, not crashed on: an image whose shorter side (after the
downscale) is below ``min_face_size`` has no pyramid level at all, so it gets no faces and a
``note`` saying why; if MTCNN still fails on a group, each image of it is retried alone and an
image that fails alone gets no faces and the error as its note, so one odd image never stops a
run of thousands.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from data_prep.faces import POLICIES, Detections, FacePolicy, choose_face  # noqa: F401 - the detector's results


class _FixedRows(torch.nn.Module):
    """Runs ``net`` on its input rows in chunks of exactly ``rows`` (the last one zero-padded), so
    each row's output does not depend on how many rows come with it.

    MTCNN's R-net and O-net score every candidate box of a batch of photos at once; on some CPUs
    (seen on an AVX-512/AMX Xeon, not on the earlier machines) the float32 kernels round a row
    differently for another number of rows, which moved a photo's landmarks by 1.5e-5 px with the
    photos batched beside it, so a sharded run differed from an unsharded one."""

    def __init__(self, net: torch.nn.Module, rows: int = 32):
        super().__init__()
        self.net, self.rows = net, int(rows)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = len(x)
        pad = -count % self.rows
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        parts = [self.net(x[start : start + self.rows]) for start in range(0, len(x), self.rows)]
        return tuple(torch.cat(outputs)[:count] for outputs in zip(*parts))


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
        self.min_face_size = int(min_face_size)
        self.mtcnn = MTCNN(
            keep_all=True,
            min_face_size=int(min_face_size),
            thresholds=list(thresholds),
            device=self.device,
            select_largest=False,
            post_process=False,
        )
        self.mtcnn.rnet = _FixedRows(self.mtcnn.rnet)
        self.mtcnn.onet = _FixedRows(self.mtcnn.onet)

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Downscale for detection if needed -> (image, per-axis factor back to full size).

        The longer side goes down to ``max_side``, but never the shorter one below
        ``min_face_size`` (a 30x2000 strip stays searchable)."""
        height, width = image.shape[:2]
        longest, shortest = max(height, width), min(height, width)
        if longest <= self.max_side:
            return image, np.ones(2)
        factor = max(self.max_side / longest, min(1.0, self.min_face_size / shortest))
        if factor >= 1.0:
            return image, np.ones(2)
        size = (max(int(round(width * factor)), 1), max(int(round(height * factor)), 1))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return small, np.array([width / size[0], height / size[1]])

    def too_small(self, shape: tuple[int, ...]) -> str:
        """Why MTCNN cannot search an image of ``shape`` (after the downscale), or ``""``.

        Its pyramid starts at scale 12 / min_face_size and needs the shorter side at >= 12 px
        there, so an image whose shorter side is below ``min_face_size`` has no level at all.
        """
        height, width = shape[:2]
        if min(height, width) < self.min_face_size:
            return (f"{width}x{height} image is smaller than the detector's minimum face size "
                    f"({self.min_face_size} px)")
        return ""

    def _mtcnn(self, batch: np.ndarray) -> list[tuple]:
        """MTCNN on a stack of equal-sized images. One image runs as a batch of two (itself twice,
        the first result kept): a batch of one takes another path whose landmarks differ in the
        5th digit; with that and the R-/O-net boxes scored in fixed chunks (:class:`_FixedRows`), a
        photo's detection does not depend on its batch, so a resumed, a sharded and an unsharded
        run give the same rows."""
        single = len(batch) == 1
        boxes, probs, points = self.mtcnn.detect(np.concatenate([batch, batch]) if single else batch, landmarks=True)
        return list(zip(boxes, probs, points))[: len(batch)]

    def _detect_group(self, batch: np.ndarray) -> list[tuple | Exception]:
        """MTCNN on equal-sized images -> per image ``(boxes, probs, points)`` (``None``s when no
        face) or the exception it raised; after a failure of the batch each image is run alone."""
        try:
            return self._mtcnn(batch)
        except (RuntimeError, IndexError, ValueError):
            alone: list[tuple | Exception] = []
            for image in batch:
                try:
                    alone.append(self._mtcnn(image[None])[0])
                except (RuntimeError, IndexError, ValueError) as err:
                    alone.append(err)
            return alone

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in RGB uint8 images ``[H, W, 3]`` (any sizes) -> one Detections each."""
        prepared = [self._prepare(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        results: list[Detections | None] = [None] * len(images)
        for i, (small, _) in enumerate(prepared):
            note = self.too_small(small.shape) if small.shape[:2] == images[i].shape[:2] else \
                self.too_small(small.shape).replace("image is", f"image (downscaled from "
                                                    f"{images[i].shape[1]}x{images[i].shape[0]}) is")
            if note:
                results[i] = Detections.empty(note)
            else:
                groups.setdefault(small.shape[:2], []).append(i)
        for shape in sorted(groups):
            members = groups[shape]
            batch = np.stack([prepared[i][0] for i in members])
            for i, out in zip(members, self._detect_group(batch)):
                if isinstance(out, Exception):
                    results[i] = Detections.empty(f"MTCNN failed on this image: {type(out).__name__}: {out}")
                    continue
                boxes, probs, points = out
                factor = prepared[i][1]
                if boxes is None:
                    results[i] = Detections.empty()
                    continue
                # pixel-centre convention of cv2.resize: x_full = (x_small + 0.5) * f - 0.5
                results[i] = Detections(
                    boxes=(np.asarray(boxes, dtype=np.float64) + 0.5) * np.tile(factor, 2) - 0.5,
                    scores=np.asarray(probs, dtype=np.float64),
                    landmarks=(np.asarray(points, dtype=np.float64) + 0.5) * factor - 0.5,
                )
        return [r if r is not None else Detections.empty() for r in results]
