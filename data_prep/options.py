"""The options of ``faceverify align`` and ``faceverify pack``, apart from the code that runs them.

The command line builds its flags from these dataclasses (``ALIGN_FLAGS``, ``PACK_FLAGS``) for
``--help`` and argument errors; keeping them here, free of torch, OpenCV and MTCNN, lets
``faceverify align --help`` or a mistyped flag answer without loading any of those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from faceverify.config import ConfigError, check_device, check_range, parse_hw


@dataclass
class AlignConfig:
    """Options of ``faceverify align``."""

    template: Literal["112x96", "112x112"] = "112x96"
    scale: float = 1.0  # output scale factor: 2.0 gives 224x192 crops of the same geometry
    purpose: Literal["train", "eval"] = "train"  # picks the on_fail default: skip / center
    on_fail: Literal["default", "skip", "center"] = "default"
    landmarks_file: str = ""  # "relpath x1 y1 ... x5 y5" per line
    landmarks_for: Literal["failures", "all"] = "failures"
    policy: Literal["center", "largest", "most-confident"] = "center"
    device: str = "auto"
    batch_size: int = 8
    threads: int = 2  # threads decoding and writing, overlapped with detection
    workers: int = 1  # processes, each aligning one shard of the photos (data_prep.shards), then merged
    ext: Literal["png", "jpg"] = "png"
    thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.7])
    min_face_size: int = 20
    max_side: int = 1024  # larger photos are downscaled for detection only
    limit: int = 0  # process only the first N sources (sorted); 0 = all

    def __post_init__(self) -> None:
        check_device(self.device)
        check_range("scale", self.scale, 0, strict_min=True)
        check_range("batch_size", self.batch_size, 1)
        check_range("threads", self.threads, 0)
        check_range("workers", self.workers, 1)
        check_range("min_face_size", self.min_face_size, 1)
        check_range("max_side", self.max_side, 12)
        check_range("limit", self.limit, 0)
        if len(self.thresholds) != 3 or not all(0 < t <= 1 for t in self.thresholds):
            raise ConfigError(f"thresholds must be three MTCNN stage thresholds in (0, 1], got {self.thresholds}")

    def resolved_on_fail(self) -> str:
        if self.on_fail != "default":
            return self.on_fail
        return "skip" if self.purpose == "train" else "center"


# `faceverify align` flags: the AlignConfig fields that get one (the CLI generates name, type and choices).
ALIGN_FLAGS: dict[str, str] = {
    "template": "5-point template: 112x96 (Wen et al. / SphereFace) or 112x112 (ArcFace)",
    "scale": "output scale factor (2 gives 224x192 crops of the 112x96 template)",
    "purpose": "train: faces not found are skipped; eval: they get the centre fallback",
    "on_fail": "what to do with photos without a detected face (default: the purpose's)",
    "landmarks_file": "file of 'relpath x1 y1 ... x5 y5' lines",
    "landmarks_for": "use the landmarks file for failures only, or for every listed image",
    "policy": "which face of a multi-face photo: centre, largest, most-confident",
    "device": "auto, cpu, cuda, cuda:N",
    "batch_size": "images per MTCNN batch",
    "threads": "decode/write threads per process",
    "workers": "processes on this machine, each aligning a shard of the photos, merged at the end",
    "ext": "crop file format",
    "min_face_size": "MTCNN's smallest face, in pixels",
    "limit": "only the first N images (sorted); 0 = all",
}



@dataclass
class PackConfig:
    min_images: int = 1
    exclude_identities: str = ""  # file: one identity folder name per line
    only_detected: bool = False  # leave out `fallback` crops
    size: str = ""  # "HxW" to resize (e.g. 56x48 for the CPU profile); "" keeps the crop size
    workers: int = 4

    def __post_init__(self) -> None:
        check_range("min_images", self.min_images, 0)
        check_range("workers", self.workers, 0)
        parse_size(self.size)


# `faceverify pack` flags: the PackConfig fields that get one.
PACK_FLAGS: dict[str, str] = {
    "min_images": "leave out identities with fewer images",
    "exclude_identities": "file of identity folder names (or RecordIO label values) to leave out",
    "only_detected": "leave out fallback crops",
    "size": "resize to HxW, e.g. 56x48",
    "workers": "decoding threads",
}


def parse_size(text: str) -> tuple[int, int] | None:
    """``pack --size``: ``None`` for ``""`` (keep the crop size), else :func:`~faceverify.config.parse_hw`."""
    return parse_hw(text, "size") if text else None
