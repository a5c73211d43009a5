"""Face embedding backbones: image ``[B, 3, H, W]`` -> embedding ``[B, D]``.

* ``face_resnet27`` — the "Face-ResNet" released with Wen et al. (ECCV 2016, caffe-face):
  conv1a (32) / conv1b (64) 3x3, then four stages, each a max-pool 2x2/2 followed by residual
  blocks of two 3x3 convs (1, 2, 5 and 3 blocks at 64, 128, 256, 512 channels) with an unpadded
  3x3 conv raising the width between stages; PReLU everywhere; fc5 = 512. 27 conv layers:
  2 + 2 x (1 + 2 + 5 + 3) + 3. On 112x96 input the last map is 5x4.
* ``sphere20`` / ``sphere36`` / ``sphere64`` — SphereFace residual nets (Liu et al., CVPR 2017):
  four stages, each a stride-2 3x3 conv (64, 128, 256, 512) then (1, 2, 4, 1), (2, 4, 8, 2)
  or (3, 8, 16, 3) residual units, PReLU, fc5 = 512 (7x6 final map on 112x96).
* ``iresnet18`` / ``iresnet34`` / ``iresnet50`` / ``iresnet100`` — ArcFace's improved residual units
  (Deng et al., CVPR 2019; Duta et al. "IR"): BN-conv-BN-PReLU-conv(stride)-BN with a
  projection shortcut when the shape changes; (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 14, 3), (3, 13, 30, 3) units;
  output BN-Dropout-FC-BN (512-d), 7x7 final map on 112x112.

``width`` scales every channel count and ``input_size`` (H, W) fixes the final FC, so small
variants train on a CPU. Registry: ``BACKBONES[name](embedding_dim=512, width=1.0,
input_size=(112, 96))``.

**Gradient checkpointing** (``model.gradient_checkpointing``, :func:`set_gradient_checkpointing`):
every backbone keeps its convolutions in one ``features`` sequence and records where its stages
end (``stage_bounds``); in training each stage then runs under ``torch.utils.checkpoint`` (the
non-reentrant form), so only the stage inputs are kept and each stage's activations are recomputed
in the backward pass. Loss and gradients are those of the plain forward. The recomputation would
move the BatchNorm running statistics a second time; the recompute context restores them, so the
running statistics also equal a plain run's.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from faceverify.errors import InvalidInputError


def _ch(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def _prelu(channels: int) -> nn.PReLU:
    return nn.PReLU(channels, init=0.25)


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@contextmanager
def _running_stats_kept(segment: nn.Module) -> Iterator[None]:
    """Around a checkpointed segment's recomputation: put its BatchNorm running statistics (and
    counters) back as they were, so the recomputed forward does not update them twice."""
    saved = [(buf, buf.clone()) for m in segment.modules() if isinstance(m, _NORMS)
             for buf in m.buffers() if buf is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _contexts(segment: nn.Module) -> tuple[object, object]:
    return nullcontext(), _running_stats_kept(segment)


class StagedFeatures(nn.Module):
    """Base of the backbones: ``features`` (an ``nn.Sequential``) whose stages end at the indices
    ``stage_bounds``, run whole or stage by stage under gradient checkpointing."""

    features: nn.Sequential
    stage_bounds: list[int]
    gradient_checkpointing: bool = False

    def run_features(self, x: torch.Tensor) -> torch.Tensor:
        """``features(x)``; with gradient checkpointing in training, each stage recomputed in backward."""
        if not (self.gradient_checkpointing and self.training and torch.is_grad_enabled()):
            return self.features(x)
        start = 0
        for stop in self.stage_bounds:
            segment = self.features[start:stop]
            x = checkpoint(segment, x, use_reentrant=False, context_fn=partial(_contexts, segment))
            start = stop
        return x


def set_gradient_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch gradient checkpointing of a faceverify backbone on or off (returns the model)."""
    if not isinstance(model, StagedFeatures):
        raise InvalidInputError(f"{type(model).__name__} has no stages to checkpoint")
    model.gradient_checkpointing = enabled
    return model


class PlainResidual(nn.Module):
    """x + PReLU(conv(PReLU(conv(x)))) with 3x3, padding 1 convs (caffe-face / SphereFace)."""

    def __init__(self, channels: int, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2):
            layers.append(nn.Conv2d(channels, channels, 3, 1, 1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(_prelu(channels))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _conv_prelu(cin: int, cout: int, stride: int, padding: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(_prelu(cout))
    return layers


def _flat_size(features: nn.Module, input_size: tuple[int, int]) -> int:
    """Size of the flattened feature map, from one forward in eval mode (a training-mode forward
    would move the BatchNorm running statistics, and fail where the last map is 1x1)."""
    features.eval()
    with torch.no_grad():
        size = int(features(torch.zeros(1, 3, *input_size)).numel())
    features.train()
    return size


def _init_plain(module: nn.Module) -> None:
    """Xavier for stage convs and fc5; N(0, 0.01^2) for the convs inside residual units, as in
    the released SphereFace / caffe-face prototxts: the residual branches start near zero, so
    a deep plain network (no BatchNorm) does not blow its activations up at initialisation."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for unit in module.modules():
        if isinstance(unit, PlainResidual):
            for m in unit.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.01)


class FaceResNet27(StagedFeatures):
    """Wen et al.'s released Face-ResNet (see the module docstring)."""

    def __init__(self, embedding_dim: int = 512, width: float = 1.0, input_size: tuple[int, int] = (112, 96),
                 batch_norm: bool = False):
        super().__init__()
        c = [_ch(n, width) for n in (32, 64, 128, 256, 512)]
        blocks = (1, 2, 5, 3)
        layers: list[nn.Module] = [
            *_conv_prelu(3, c[0], 1, 0, batch_norm),  # conv1a
            *_conv_prelu(c[0], c[1], 1, 0, batch_norm),  # conv1b
            nn.MaxPool2d(2, 2),
        ]
        self.stage_bounds = [len(layers)]
        for stage, count in enumerate(blocks):
            width_here = c[stage + 1]
            layers += [PlainResidual(width_here, batch_norm) for _ in range(count)]
            if stage < 3:
                layers += [*_conv_prelu(width_here, c[stage + 2], 1, 0, batch_norm), nn.MaxPool2d(2, 2)]
            self.stage_bounds.append(len(layers))
        self.features = nn.Sequential(*layers)
        self.fc5 = nn.Linear(_flat_size(self.features, input_size), embedding_dim)
        _init_plain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc5(torch.flatten(self.run_features(x), 1))


class SphereNet(StagedFeatures):
    """SphereFace residual network with ``units`` residual units per stage."""

    def __init__(self, units: tuple[int, int, int, int], embedding_dim: int = 512, width: float = 1.0,
                 input_size: tuple[int, int] = (112, 96), batch_norm: bool = False):
        super().__init__()
        channels = [_ch(n, width) for n in (64, 128, 256, 512)]
        layers: list[nn.Module] = []
        cin = 3
        self.stage_bounds = []
        for cout, count in zip(channels, units):
            layers += _conv_prelu(cin, cout, 2, 1, batch_norm)
            layers += [PlainResidual(cout, batch_norm) for _ in range(count)]
            self.stage_bounds.append(len(layers))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc5 = nn.Linear(_flat_size(self.features, input_size), embedding_dim)
        _init_plain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc5(torch.flatten(self.run_features(x), 1))


class IRBlock(nn.Module):
    """Improved residual unit: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, eps=1e-5),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5),
            _prelu(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet(StagedFeatures):
    """ArcFace's IResNet with the BN-Dropout-FC-BN embedding head."""

    def __init__(self, units: tuple[int, int, int, int], embedding_dim: int = 512, width: float = 1.0,
                 input_size: tuple[int, int] = (112, 112), dropout: float = 0.0):
        super().__init__()
        channels = [_ch(n, width) for n in (64, 128, 256, 512)]
        stem = _ch(64, width)
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), _prelu(stem)]
        cin = stem
        self.stage_bounds = [len(layers)]
        for cout, count in zip(channels, units):
            for i in range(count):
                layers.append(IRBlock(cin, cout, 2 if i == 0 else 1))
                cin = cout
            self.stage_bounds.append(len(layers))
        layers.append(nn.BatchNorm2d(cin, eps=1e-5))
        self.stage_bounds[-1] = len(layers)  # the last BN runs with the last stage
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(_flat_size(self.features, input_size), embedding_dim)
        self.embedding_bn = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        nn.init.constant_(self.embedding_bn.weight, 1.0)
        self.embedding_bn.weight.requires_grad = False  # as in ArcFace: a fixed-scale final BN
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.run_features(x), 1))
        return self.embedding_bn(self.fc(x))


BackboneFactory = Callable[..., nn.Module]

BACKBONES: dict[str, BackboneFactory] = {
    "face_resnet27": lambda embedding_dim=512, width=1.0, input_size=(112, 96), batch_norm=False: FaceResNet27(
        embedding_dim, width, tuple(input_size), batch_norm),
    "sphere20": lambda embedding_dim=512, width=1.0, input_size=(112, 96), batch_norm=False: SphereNet(
        (1, 2, 4, 1), embedding_dim, width, tuple(input_size), batch_norm),
    "sphere36": lambda embedding_dim=512, width=1.0, input_size=(112, 96), batch_norm=False: SphereNet(
        (2, 4, 8, 2), embedding_dim, width, tuple(input_size), batch_norm),
    "sphere64": lambda embedding_dim=512, width=1.0, input_size=(112, 96), batch_norm=False: SphereNet(
        (3, 8, 16, 3), embedding_dim, width, tuple(input_size), batch_norm),
    "iresnet18": lambda embedding_dim=512, width=1.0, input_size=(112, 112), batch_norm=True: IResNet(
        (2, 2, 2, 2), embedding_dim, width, tuple(input_size)),
    "iresnet34": lambda embedding_dim=512, width=1.0, input_size=(112, 112), batch_norm=True: IResNet(
        (3, 4, 6, 3), embedding_dim, width, tuple(input_size)),
    "iresnet50": lambda embedding_dim=512, width=1.0, input_size=(112, 112), batch_norm=True: IResNet(
        (3, 4, 14, 3), embedding_dim, width, tuple(input_size)),
    "iresnet100": lambda embedding_dim=512, width=1.0, input_size=(112, 112), batch_norm=True: IResNet(
        (3, 13, 30, 3), embedding_dim, width, tuple(input_size)),
}
DEFAULT_INPUT = {name: ((112, 112) if name.startswith("iresnet") else (112, 96)) for name in BACKBONES}


def build_backbone(name: str, embedding_dim: int = 512, width: float = 1.0,
                   input_size: tuple[int, int] | None = None, batch_norm: bool | None = None) -> nn.Module:
    """Build a registered backbone; unknown names list the valid ones."""
    if name not in BACKBONES:
        raise InvalidInputError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    kwargs: dict = {"embedding_dim": embedding_dim, "width": width,
                    "input_size": tuple(input_size or DEFAULT_INPUT[name])}
    if batch_norm is not None and not name.startswith("iresnet"):
        kwargs["batch_norm"] = batch_norm
    return BACKBONES[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass on one image (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, *input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2
