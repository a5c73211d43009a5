"""Embedding every face image of an IJB release, aligned from the release's own landmarks.

No detector runs: each loose crop is warped with the 5-point similarity transform of its listed
landmarks onto the model's template (112x112 or 112x96, :mod:`faceverify.data.alignment`), fitted
to the network input, and embedded with its mirror. Images are read and warped on a thread pool
(OpenCV releases the GIL), embedded in batches, and written in resumable chunks
(:mod:`faceverify.evaluation.chunked_embed`) to ``OUT/embeddings.npz`` whose ``paths`` are the
image names: the form ``faceverify eval --ijb --embeddings`` reads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from faceverify.data.alignment import get_template, similarity_transform, warp_face
from faceverify.data.ijb import IJBRelease
from faceverify.data.images import UnreadableImageError, read_rgb
from faceverify.data.transforms import fit_array
from faceverify.errors import MissingInputError
from faceverify.evaluation.chunked_embed import embed_in_chunks, file_stamp
from faceverify.evaluation.embed import EmbedFn, embed_arrays

CropFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (RGB uint8 [H, W, 3], landmarks [5, 2]) -> crop
CropsEmbedder = Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]]  # crops -> (embeddings, mirrors')


def template_aligner(template_name: str, input_size: tuple[int, int]) -> CropFn:
    """The crop faceverify's networks see: the template warp, then the fit to ``input_size``."""
    template = get_template(template_name)

    def align(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        crop = warp_face(image, similarity_transform(landmarks, template.points), template)
        return fit_array(crop, tuple(input_size))

    return align


def network_embedder(embed: EmbedFn, device: torch.device | str, batch_size: int = 128) -> CropsEmbedder:
    """A network (``embed(batch [B, 3, H, W]) -> [B, D]``) as a crops embedder, with mirrors."""

    def run(crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        plain, flipped = embed_arrays(embed, np.stack(crops), batch_size=batch_size, with_flip=True, device=device,
                                      progress=False)
        assert flipped is not None
        return plain, flipped

    return run


def _read_and_align(path: Path, landmarks: np.ndarray, align: CropFn) -> np.ndarray | str:
    try:
        return align(read_rgb(path), landmarks)
    except FileNotFoundError:
        return "missing file"
    except UnreadableImageError as err:
        return f"unreadable: {err.reason}"


def _chunk_embedder(release: IJBRelease, align: CropFn, embed: CropsEmbedder, dim: int, workers: int | None):
    """names of one chunk -> (embeddings [n, D], mirrors' [n, D], status [n]); zeros where not ok."""
    row = {name: i for i, name in enumerate(release.images.tolist())}
    workers = workers or min(8, os.cpu_count() or 1)

    def embed_chunk(names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        with ThreadPoolExecutor(workers) as pool:
            crops = list(pool.map(lambda n: _read_and_align(release.image_dir / n, release.landmarks[row[n]], align),
                                  names))
        status = ["ok" if isinstance(c, np.ndarray) else c for c in crops]
        usable = [i for i, c in enumerate(crops) if isinstance(c, np.ndarray)]
        plain = np.zeros((len(names), dim), np.float32)
        flipped = np.zeros((len(names), dim), np.float32)
        if usable:
            a, b = embed([crops[i] for i in usable])
            plain[usable], flipped[usable] = a, b
        return plain, flipped, status

    return embed_chunk


def _check_images(release: IJBRelease) -> None:
    if not release.image_dir.is_dir():
        raise MissingInputError(f"{release.root}: no loose_crop/ folder with the face images")


def embed_ijb(release: IJBRelease, align: CropFn, embed: CropsEmbedder, dim: int, out: Path, fingerprint: str,
              chunk: int = 1024, workers: int | None = None, progress: bool = True) -> dict:
    """Embed every image of ``release`` into ``out`` (an ``.npz``, resumable); returns the embed summary."""
    _check_images(release)
    embed_chunk = _chunk_embedder(release, align, embed, dim, workers)
    meta = {"model": fingerprint, "src": str(release.root.resolve()), "benchmark": release.prefix}
    return embed_in_chunks(release.images.tolist(), lambda n: file_stamp(release.image_dir / n), embed_chunk, out,
                           meta, chunk, progress, unit="image")


def embed_ijb_in_memory(release: IJBRelease, align: CropFn, embed: CropsEmbedder, dim: int, chunk: int = 1024,
                        workers: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The same embeddings held in memory (the check during training): (embeddings, mirrors', status)."""
    _check_images(release)
    embed_chunk = _chunk_embedder(release, align, embed, dim, workers)
    names = release.images.tolist()
    parts = [embed_chunk(names[start : start + chunk]) for start in range(0, len(names), chunk)]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            [s for p in parts for s in p[2]])
