"""Evaluating a trained checkpoint on LFW: rebuild the backbone from the checkpoint's own
config and run the same evaluation as for an embeddings file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from faceverify.config import from_dict
from faceverify.data.lfw import PairsProtocol
from faceverify.evaluation.lfw_eval import EvalConfig, evaluate_embedder
from faceverify.models.backbones import build_backbone
from faceverify.training.checkpoint import load_checkpoint
from faceverify.training.config import TrainConfig
from faceverify.training.distributed import resolve_device


def load_backbone(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, tuple[int, int], TrainConfig]:
    """(backbone in eval mode, its input size (H, W), the training config) from a checkpoint."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    config = from_dict(TrainConfig, state["config"])
    input_size = tuple(state["input_size"])
    model = build_backbone(config.model.backbone, config.model.embedding_dim, config.model.width,
                           input_size, config.model.batch_norm)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), input_size, config


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
    with torch.no_grad():
        return evaluate_embedder(model, lfw, pairs_path, out_dir, config or EvalConfig(), image_size=input_size,
                                 device=target, progress=progress, pairs=pairs, source={"checkpoint": str(checkpoint)})
