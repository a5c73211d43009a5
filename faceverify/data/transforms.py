"""Pixel normalisation and flips, applied to whole batches on the training device.

Wen et al. (ECCV 2016) feed ``(p - 127.5) / 128`` of each RGB pixel ``p``; doing it on the device
after a uint8 host-to-device copy moves 4x fewer bytes than normalising in the loader.
"""

from __future__ import annotations

import torch

PIXEL_MEAN = 127.5
PIXEL_SCALE = 128.0


def to_network_input(
    images: torch.Tensor,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` (HWC, as stored) -> normalised float ``[B, 3, H, W]`` on ``device``.

    ``(p - 127.5) / 128`` maps 0..255 to about -1..1.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected [B, H, W, 3] images, got shape {tuple(images.shape)}")
    x = images.to(device, non_blocking=True) if device is not None else images
    x = x.permute(0, 3, 1, 2).to(dtype).sub_(PIXEL_MEAN).div_(PIXEL_SCALE)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)


def horizontal_flip(batch: torch.Tensor) -> torch.Tensor:
    """Mirror ``[B, C, H, W]`` images left-right."""
    return torch.flip(batch, dims=(3,))


def random_horizontal_flip(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of ``[B, C, H, W]`` with probability 1/2 (the paper's only augmentation)."""
    flip = torch.rand(batch.shape[0], generator=generator, device="cpu") < 0.5
    flip = flip.to(batch.device)
    return torch.where(flip[:, None, None, None], torch.flip(batch, dims=(3,)), batch)
