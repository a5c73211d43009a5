"""Evaluating a trained checkpoint on LFW: rebuild the backbone from the checkpoint's own
config and run the same evaluation as for an embeddings file."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from faceverify.config import from_resolved
from faceverify.data.images import read_rgb
from faceverify.data.lfw import PairsProtocol, list_image_tree
from faceverify.errors import InvalidInputError
from faceverify.evaluation.lfw_eval import EvalConfig, evaluate_embedder
from faceverify.models.backbones import build_backbone
from faceverify.training.checkpoint import load_checkpoint
from faceverify.training.config import TrainConfig, upgrade_saved_config
from faceverify.training.distributed import resolve_device


def load_backbone(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, tuple[int, int], TrainConfig]:
    """(backbone in eval mode, its input size (H, W), the training config) from a checkpoint."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    config = from_resolved(TrainConfig, upgrade_saved_config(state["config"]))
    input_size = tuple(state["input_size"])
    model = build_backbone(config.model.backbone, config.model.embedding_dim, config.model.width,
                           input_size, config.model.batch_norm)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), input_size, config


def check_aligned_tree(root: str | Path, input_size: tuple[int, int]) -> None:
    """Refuse a tree that cannot be aligned crops for a network taking ``input_size`` (H, W).

    A tree written by ``faceverify align`` has a ``manifest.csv`` and passes. Without one, the
    first image decides: an aspect ratio more than 10% off the network's (LFW photos are 250x250,
    a 112x96 network's crops are 7:6) or a size over 2.2x the input on both sides (a 250x250 photo
    for a 112x112 network) means unaligned photos that would be squashed into the input, so this
    raises; anything else passes with a warning that alignment cannot be confirmed.
    """
    root = Path(root)
    if (root / "manifest.csv").is_file():
        return
    images = list_image_tree(root) if root.is_dir() else []
    if not images:
        return  # resolve_image_paths reports the missing images
    height, width = read_rgb(root / images[0]).shape[:2]
    want_h, want_w = input_size
    if abs(height / width - want_h / want_w) > 0.1 * want_h / want_w or (
            height > 2.2 * want_h and width > 2.2 * want_w):
        raise InvalidInputError(
            f"{root} looks unaligned: its images are {width}x{height} (WxH, e.g. {images[0]}) but the network "
            f"takes {want_w}x{want_h} aligned crops, and there is no manifest.csv from faceverify align. "
            f"Align it first: faceverify align {root} ALIGNED_DIR --purpose eval"
        )
    print(f"warning: {root} has no manifest.csv, so faceverify cannot confirm its {width}x{height} images "
          "are aligned crops", file=sys.stderr)


def evaluate_checkpoint(
    checkpoint: str | Path,
    lfw: str | Path,
    pairs_path: str | Path,
    out_dir: str | Path | None,
    config: EvalConfig | None = None,
    device: str | None = None,
    pairs: PairsProtocol | None = None,
    progress: bool = True,
) -> dict:
    """``faceverify eval --checkpoint``: embed the pair images of an aligned LFW tree (resized to
    the network's input size if needed) and write the usual metrics, report and ROC."""
    target = resolve_device(device or "auto")
    model, input_size, _ = load_backbone(checkpoint, target)
    check_aligned_tree(lfw, input_size)
    with torch.no_grad():
        return evaluate_embedder(model, lfw, pairs_path, out_dir, config or EvalConfig(), image_size=input_size,
                                 device=target, progress=progress, pairs=pairs, source={"checkpoint": str(checkpoint)})
