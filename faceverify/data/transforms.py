"""Pixel normalisation, flips and fitting crops to the network, on whole batches on the device.

Wen et al. (ECCV 2016) feed ``(p - 127.5) / 128`` of each RGB pixel ``p``; doing it on the device
after a uint8 host-to-device copy moves 4x fewer bytes than normalising in the loader.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from faceverify.errors import InvalidInputError


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


def step_flip(images: torch.Tensor, seed: int, step: int, world: int = 1, rank: int = 0) -> torch.Tensor:
    """Mirror each image of this rank's ``[B, C, H, W]`` slice with probability 1/2 (the paper's only
    augmentation): one mask for the global batch from ``(seed, step)`` alone, sliced by rank, so it
    is resumable without saving a generator and identical to what one process draws for the whole
    batch."""
    local = images.shape[0]
    rng = np.random.default_rng([seed, step])
    flips = rng.random(local * world)[rank * local : (rank + 1) * local] < 0.5
    mask = torch.from_numpy(flips).to(images.device)
    return torch.where(mask[:, None, None, None], torch.flip(images, dims=(3,)), images)


# ----------------------------------------------------------------------------- fitting crops to a network
def template_crop(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int] | None:
    """Columns ``(x0, x1)`` that turn an ArcFace-template crop (square, 112x112 scaled) into the
    Wen et al. / SphereFace one (112x96 scaled), or None when no such crop applies.

    The two 5-point templates differ by exactly 8 px in x at 112 px height, so the 112x96 crop is
    columns 8..103 of the 112x112 one (scaled with the image).
    """
    height, width = size
    target_h, target_w = target
    if height == width and abs(target_w / target_h - 96 / 112) < 1e-6:
        x0 = round(8 * height / 112)
        return x0, x0 + round(96 * height / 112)
    return None


MAX_ENLARGEMENT = 2.0  # a crop may be enlarged at most this much to fit the network's input


def check_fit(size: tuple[int, int], target: tuple[int, int]) -> str:
    """How crops of ``size`` reach a network taking ``target`` (both HxW): ``"same"``, ``"crop"``
    (112x112 -> 112x96 template crop, then a resize if needed) or ``"resize"`` (aspect within 10%).
    Raises ValueError for crops that cannot become the network's input without distortion, and for
    crops that would have to be enlarged more than ``MAX_ENLARGEMENT`` times (a 1x1 "image" would
    otherwise become a flat 112x96 input and be scored as a face)."""
    if tuple(size) == tuple(target):
        return "same"
    enlargement = max(target[0] / size[0], target[1] / size[1]) if min(size) > 0 else float("inf")
    if enlargement > MAX_ENLARGEMENT:
        raise InvalidInputError(f"crops of {size[0]}x{size[1]} are too small for a network taking {target[0]}x{target[1]} "
                         f"(they would be enlarged {enlargement:.1f} times; at most {MAX_ENLARGEMENT:g}): not face crops, "
                         "or crops of another resolution")
    if template_crop(size, target) is not None:
        return "crop"
    if abs(size[0] / size[1] - target[0] / target[1]) <= 0.1 * target[0] / target[1]:
        return "resize"  # within 10% of the aspect ratio (e.g. AT&T's 112x92 for a 112x96 network)
    raise InvalidInputError(
        f"crops of {size[0]}x{size[1]} cannot feed a network taking {target[0]}x{target[1]} without distortion "
        "(only 112x112 -> 112x96 template crops and same-aspect resizes are supported); align with the "
        "network's template (faceverify align --template 112x96 or 112x112)"
    )


def fit_to_input(images: torch.Tensor, target: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` batch (on any device) -> ``[B, h, w, 3]`` the network takes (see
    :func:`check_fit`): the template crop is a column slice, the resize an area average."""
    size = (int(images.shape[1]), int(images.shape[2]))
    mode = check_fit(size, target)
    if mode == "same":
        return images
    columns = template_crop(size, target)
    if columns is not None:
        images = images[:, :, columns[0] : columns[1]]
    if (int(images.shape[1]), int(images.shape[2])) == tuple(target):
        return images.contiguous()
    resized = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2).float(), size=target, mode="area")
    return resized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def fit_array(image: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """The same for one uint8 ``[H, W, 3]`` array (evaluation loaders), resizing with cv2's area filter."""
    size = image.shape[:2]
    mode = check_fit(size, target)
    if mode == "same":
        return image
    columns = template_crop(size, target)
    if columns is not None:
        image = image[:, columns[0] : columns[1]]
    if image.shape[:2] != tuple(target):
        image = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)
