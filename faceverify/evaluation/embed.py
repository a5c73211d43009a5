"""Batched feature extraction for evaluation, with flip test-time augmentation.

Any callable ``embed(batch) -> features`` plugs in: ``batch`` is the normalised float tensor
``[B, 3, H, W]`` (see :func:`faceverify.data.transforms.to_network_input`) on ``device``, and
``features`` is ``[B, D]``. A trained network in eval mode is such a callable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from faceverify.data.images import read_rgb
from faceverify.data.transforms import fit_array, horizontal_flip, to_network_input
from faceverify.errors import InvalidInputError
from faceverify.progress import progress_bar

EmbedFn = Callable[[torch.Tensor], torch.Tensor]


class ImageFiles(Dataset):
    """uint8 ``[H, W, 3]`` tensors of image files, fitted to ``image_size`` (H, W) if given (the
    112x112 -> 112x96 template crop, or a same-aspect resize; see ``transforms.check_fit``)."""

    def __init__(self, paths: Sequence[str | Path], image_size: tuple[int, int] | None = None):
        self.paths = [Path(p) for p in paths]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = read_rgb(self.paths[index])
        if self.image_size is not None:
            image = fit_array(image, tuple(self.image_size))
        return torch.from_numpy(image)


@torch.no_grad()
def embed_images(
    embed: EmbedFn,
    paths: Sequence[str | Path],
    *,
    image_size: tuple[int, int] | None = None,
    batch_size: int = 128,
    with_flip: bool = True,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embed every image -> ``(features [N, D], features_of_mirrored_images [N, D] or None)``."""
    loader = DataLoader(
        ImageFiles(paths, image_size),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
    )
    plain: list[np.ndarray] = []
    flipped: list[np.ndarray] = []
    for images in progress_bar(loader, desc="embed", unit="batch", enabled=progress, leave=False):
        batch = to_network_input(images, device)
        plain.append(embed(batch).float().cpu().numpy())
        if with_flip:
            flipped.append(embed(horizontal_flip(batch)).float().cpu().numpy())
    features = np.concatenate(plain) if plain else np.zeros((0, 0), np.float32)
    features_flip = np.concatenate(flipped) if with_flip and flipped else None
    return features, features_flip


@torch.no_grad()
def embed_arrays(
    embed: EmbedFn,
    images: np.ndarray,
    *,
    image_size: tuple[int, int] | None = None,
    batch_size: int = 128,
    with_flip: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embed uint8 ``[N, H, W, 3]`` images already in memory (a decoded ``.bin`` set), fitted to
    ``image_size`` exactly as image files are (``fit_array``), so a set exported from a tree scores
    as the tree does -> ``(features [N, D], features of the mirrored images or None)``."""
    plain: list[np.ndarray] = []
    flipped: list[np.ndarray] = []
    for start in progress_bar(range(0, len(images), batch_size), desc="embed", unit="batch",
                              enabled=progress, leave=False):
        chunk = images[start : start + batch_size]
        if image_size is not None:
            chunk = np.stack([fit_array(image, tuple(image_size)) for image in chunk])
        batch = to_network_input(torch.from_numpy(np.ascontiguousarray(chunk)), device)
        plain.append(embed(batch).float().cpu().numpy())
        if with_flip:
            flipped.append(embed(horizontal_flip(batch)).float().cpu().numpy())
    features = np.concatenate(plain) if plain else np.zeros((0, 0), np.float32)
    return features, (np.concatenate(flipped) if with_flip and flipped else None)


def combine_flip(
    features: np.ndarray, features_flip: np.ndarray | None, mode: str
) -> np.ndarray:
    """Test-time flip: ``none`` -> f(x); ``concat`` -> [f(x), f(flip x)] (Wen et al.);
    ``sum`` -> f(x) + f(flip x)."""
    if mode == "none":
        return features
    if features_flip is None:
        raise InvalidInputError(f"flip mode {mode!r} needs features of the mirrored images (embeddings_flip)")
    if features_flip.shape != features.shape:
        raise InvalidInputError(
            f"embeddings_flip has shape {features_flip.shape}, embeddings {features.shape}; they must match"
        )
    if mode == "concat":
        return np.concatenate([features, features_flip], axis=1)
    if mode == "sum":
        return features + features_flip
    raise InvalidInputError(f"unknown flip mode {mode!r}; valid: none, concat, sum")
