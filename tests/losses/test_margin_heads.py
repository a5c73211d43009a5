"""The 2020-2022 margin heads against brute-force float64 references written from the papers'
equations (loops over samples and classes), gradcheck, pytorch-metric-learning where it has the
head, bf16 autocast, and the batch statistics over 2 gloo processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from faceverify.losses.margin_heads import (
    AdaFaceLoss,
    CurricularFaceLoss,
    MagFaceLoss,
    SphereFace2Loss,
    SubCenterArcFaceLoss,
)

B, D, C = 7, 5, 6


def inputs(seed: int = 0, norm_spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    x = x * (1.0 + norm_spread * torch.rand(B, 1, generator=g, dtype=torch.float64) * 4.0)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 1])
    return x, y


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def cosines(x: torch.Tensor, rows: torch.Tensor) -> list[list[float]]:
    return [[sum(a * b for a, b in zip(unit(xi), unit(wj))) for wj in rows.tolist()] for xi in x.tolist()]


def cross_entropy(logits: list[float], y: int) -> float:
    top = max(logits)
    return -(logits[y] - top - math.log(sum(math.exp(v - top) for v in logits)))


def arc(c: float, m: float) -> float:
    theta = math.acos(max(-1.0, min(1.0, c)))
    return math.cos(theta + m) if theta + m <= math.pi else c - m * math.sin(m)


def head(cls, **options):
    torch.manual_seed(1)
    return cls(D, C, **options).double()


# ------------------------------------------------------------------ CurricularFace
def curricular_reference(x, y, weight, s, m, t_before, momentum):
    cos = cosines(x, weight)
    t = (1 - momentum) * t_before + momentum * sum(cos[i][y[i]] for i in range(B)) / B
    total = 0.0
    for i in range(B):
        yi = int(y[i])
        threshold = math.cos(math.acos(cos[i][yi]) + m)
        logits = []
        for j in range(C):
            c = cos[i][j]
            if j == yi:
                logits.append(s * arc(c, m))
            else:
                logits.append(s * (c * (t + c) if c > threshold else c))
        total += cross_entropy(logits, yi)
    return total / B, t


def test_curricular_face_equals_its_equations_and_updates_t():
    loss = head(CurricularFaceLoss, s=16.0, m=0.5, momentum=0.2)
    loss.t.fill_(0.4)
    x, y = inputs()
    expected, t = curricular_reference(x, y, loss.weight.detach(), 16.0, 0.5, 0.4, 0.2)
    value = loss(x, y)
    assert float(value.detach()) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert float(loss.t) == pytest.approx(t, rel=1e-12)
    cos = cosines(x, loss.weight.detach())
    assert any(cos[i][j] > math.cos(math.acos(cos[i][int(y[i])]) + 0.5) for i in range(B) for j in range(C)
               if j != int(y[i])), "the test batch has no hard negative to modulate"


# ------------------------------------------------------------------ sub-center ArcFace
def test_sub_center_arcface_takes_the_nearest_center_then_the_arcface_margin():
    loss = head(SubCenterArcFaceLoss, s=16.0, m=0.5, sub_centers=3)
    assert loss.weight.shape == (C, 3 * D)
    x, y = inputs()
    centers = loss.weight.detach().reshape(C * 3, D)
    per_center = cosines(x, centers)
    total = 0.0
    for i in range(B):
        cos = [max(per_center[i][3 * j + k] for k in range(3)) for j in range(C)]
        logits = [16.0 * (arc(c, 0.5) if j == int(y[i]) else c) for j, c in enumerate(cos)]
        total += cross_entropy(logits, int(y[i]))
    assert float(loss(x, y)) == pytest.approx(total / B, rel=1e-12)


def test_sub_center_arcface_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses", reason="install the dev extra: pip install -e '.[dev]'")
    ours = head(SubCenterArcFaceLoss, s=64.0, m=0.5, sub_centers=3)
    theirs = pml.SubCenterArcFaceLoss(num_classes=C, embedding_size=D, margin=math.degrees(0.5), scale=64.0,
                                      sub_centers=3).double()
    with torch.no_grad():  # theirs: W [D, C K], column c K + k
        theirs.W.copy_(ours.weight.detach().reshape(C * 3, D).T)
    x, y = inputs(3)
    assert float(ours(x, y)) == pytest.approx(float(theirs(x, y)), rel=1e-9)


# ------------------------------------------------------------------ AdaFace
def test_adaface_equals_its_equations_and_keeps_running_norm_statistics():
    loss = head(AdaFaceLoss, s=16.0, m=0.4, h=0.333, momentum=0.3)
    loss.batch_mean.fill_(9.0)
    loss.batch_std.fill_(3.0)
    x, y = inputs(norm_spread=2.0)
    norms = [min(100.0, max(0.001, math.sqrt(sum(a * a for a in row)))) for row in x.tolist()]
    mean = sum(norms) / B
    std = math.sqrt(sum((n - mean) ** 2 for n in norms) / (B - 1))
    batch_mean, batch_std = 0.7 * 9.0 + 0.3 * mean, 0.7 * 3.0 + 0.3 * std
    cos = cosines(x, loss.weight.detach())
    eps, total, scalers = 1e-3, 0.0, []
    for i in range(B):
        z = max(-1.0, min(1.0, 0.333 * (norms[i] - batch_mean) / (batch_std + eps)))
        scalers.append(z)
        yi = int(y[i])
        theta = math.acos(max(-1 + eps, min(1 - eps, cos[i][yi])))
        target = math.cos(max(eps, min(math.pi - eps, theta - 0.4 * z))) - (0.4 + 0.4 * z)
        logits = [16.0 * (target if j == yi else c) for j, c in enumerate(cos[i])]
        total += cross_entropy(logits, yi)
    assert min(scalers) < -0.05 and max(scalers) > 0.05  # the margins really differ by norm
    assert float(loss(x, y)) == pytest.approx(total / B, rel=1e-12)
    assert float(loss.batch_mean) == pytest.approx(batch_mean, rel=1e-12)
    assert float(loss.batch_std) == pytest.approx(batch_std, rel=1e-12)
    assert {"batch_mean", "batch_std"} <= set(loss.state_dict())  # saved with the head
    loss.eval()
    loss(x, y)
    assert float(loss.batch_mean) == pytest.approx(batch_mean, rel=1e-12)  # evaluation does not move them


# ------------------------------------------------------------------ MagFace
def test_magface_equals_its_equations_with_the_magnitude_regulariser():
    options = dict(s=16.0, lower_norm=1.5, upper_norm=6.0, lower_margin=0.45, upper_margin=0.8, lambda_g=3.0)
    loss = head(MagFaceLoss, **options)
    x, y = inputs(norm_spread=1.0)
    cos = cosines(x, loss.weight.detach())
    ce, g = 0.0, 0.0
    for i in range(B):
        a = min(6.0, max(1.5, math.sqrt(sum(v * v for v in x[i].tolist()))))
        margin = 0.45 + (0.8 - 0.45) * (a - 1.5) / (6.0 - 1.5)
        yi = int(y[i])
        logits = [16.0 * (arc(c, margin) if j == yi else c) for j, c in enumerate(cos[i])]
        ce += cross_entropy(logits, yi)
        g += a / 36.0 + 1.0 / a
    assert float(loss(x, y)) == pytest.approx(ce / B + 3.0 * g / B, rel=1e-12)
    torch.testing.assert_close(MagFaceLoss.quality(x), x.norm(dim=1))


# ------------------------------------------------------------------ SphereFace2
def test_sphereface2_equals_its_binary_one_vs_all_equation():
    loss = head(SphereFace2Loss, lam=0.7, r=8.0, m=0.4, t=3.0)
    with torch.no_grad():
        loss.bias.fill_(-2.5)
    x, y = inputs()
    cos = cosines(x, loss.weight.detach())

    def softplus(v: float) -> float:
        return math.log1p(math.exp(-abs(v))) + max(v, 0.0)

    total = 0.0
    for i in range(B):
        for j in range(C):
            g = 2.0 * ((cos[i][j] + 1.0) / 2.0) ** 3 - 1.0
            if j == int(y[i]):
                total += 0.7 / 8.0 * softplus(-(8.0 * (g - 0.4) - 2.5))
            else:
                total += 0.3 / 8.0 * softplus(8.0 * (g + 0.4) - 2.5)
    assert float(loss(x, y)) == pytest.approx(total / B, rel=1e-12)


def test_sphereface2_starts_with_a_bias_whose_gradient_vanishes_for_orthogonal_features():
    for classes in (10, 10_575):
        b = SphereFace2Loss.initial_bias(classes, 0.7, 30.0, 0.4, 3.0)
        g0 = 2.0 * 0.5**3 - 1.0
        a_y, a_i = 30.0 * (g0 - 0.4), 30.0 * (g0 + 0.4)
        positive = 0.7 / (1.0 + math.exp(a_y + b))  # lambda sigma(-(a_y + b))
        negative = 0.3 * (classes - 1) / (1.0 + math.exp(-(a_i + b)))  # (1 - lambda)(C - 1) sigma(a_i + b)
        assert positive == pytest.approx(negative, rel=1e-9)


# ------------------------------------------------------------------ all heads
HEADS = [
    (CurricularFaceLoss, dict(s=8.0, m=0.5)),
    (SubCenterArcFaceLoss, dict(s=8.0, m=0.5, sub_centers=2)),
    (AdaFaceLoss, dict(s=8.0, m=0.4)),
    (MagFaceLoss, dict(s=8.0, lower_norm=1.0, upper_norm=8.0, lambda_g=2.0)),
    (SphereFace2Loss, dict(r=8.0)),
]


@pytest.mark.parametrize("cls,options", HEADS, ids=[h[0].__name__ for h in HEADS])
def test_gradients_are_those_of_the_equations(cls, options):
    loss = head(cls, **options)
    if isinstance(loss, CurricularFaceLoss):
        loss.t.fill_(0.3)
    if isinstance(loss, AdaFaceLoss):
        loss.batch_mean.fill_(3.0)
        loss.batch_std.fill_(1.0)
    loss.eval()  # fixed batch statistics: the function gradcheck differentiates must not move
    x, y = inputs(5)
    if isinstance(loss, AdaFaceLoss):  # the norm's scaler is not differentiated (the paper's stop-gradient)
        fixed = loss.norm_scaler(x)
        loss.norm_scaler = lambda embeddings: fixed
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (x,), eps=1e-6, atol=1e-5)
    weight = loss.weight.detach().clone().requires_grad_(True)

    def of_weight(w: torch.Tensor) -> torch.Tensor:
        saved = loss.weight
        del loss.weight
        loss.weight = w
        try:
            return loss(x.detach(), y)
        finally:
            del loss.weight
            loss.weight = saved

    assert torch.autograd.gradcheck(of_weight, (weight,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("cls,options", HEADS, ids=[h[0].__name__ for h in HEADS])
def test_each_head_trains_under_bf16_autocast(cls, options):
    torch.manual_seed(2)
    network = torch.nn.Linear(12, D)
    loss = cls(D, C, **options)
    x = torch.randn(16, 12)
    y = torch.arange(16) % C
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embeddings = network(x)
    assert embeddings.dtype == torch.bfloat16
    value = loss(embeddings.float(), y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(network.weight.grad).all()
    assert loss.predictions.shape == (16,)


# ------------------------------------------------------------------ batch statistics over 2 processes
def _stats_worker(rank: int, init_file: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    x, y = inputs(7, norm_spread=2.0)
    x, y = torch.cat([x, x.flip(0)]), torch.cat([y, y.flip(0)])
    mine = slice(rank * B, (rank + 1) * B)
    curricular = head(CurricularFaceLoss, s=16.0, momentum=0.5)
    adaface = head(AdaFaceLoss, s=16.0, momentum=0.5)
    curricular(x[mine], y[mine])
    adaface(x[mine], y[mine])
    queue.put((rank, float(curricular.t), float(adaface.batch_mean), float(adaface.batch_std)))
    dist.destroy_process_group()


def test_batch_statistics_are_those_of_the_global_batch_on_every_rank(tmp_path):
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    processes = [context.Process(target=_stats_worker, args=(r, str(tmp_path / "init"), queue)) for r in (0, 1)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
        assert p.exitcode == 0
    results = sorted(queue.get() for _ in range(2))
    x, y = inputs(7, norm_spread=2.0)
    x, y = torch.cat([x, x.flip(0)]), torch.cat([y, y.flip(0)])
    curricular = head(CurricularFaceLoss, s=16.0, momentum=0.5)
    adaface = head(AdaFaceLoss, s=16.0, momentum=0.5)
    curricular(x, y)
    adaface(x, y)
    for _, t, mean, std in results:
        assert t == pytest.approx(float(curricular.t), rel=1e-12)
        assert mean == pytest.approx(float(adaface.batch_mean), rel=1e-12)
        assert std == pytest.approx(float(adaface.batch_std), rel=1e-12)


def test_partial_fc_shards_every_new_head():
    from faceverify.config import Replace, merge
    from faceverify.losses.objective import LossConfig, Objective
    from faceverify.losses.partial_fc import PartialFC

    config = merge(LossConfig(), {"terms": Replace({"sphereface2": 1.0}), "partial_fc": {"sample_rate": 0.5}})
    objective = Objective(config, D, C)  # one-vs-all: its bias is the one trained parameter of the term
    assert [n for n, p in objective.named_parameters() if p.requires_grad] == ["losses.sphereface2.rule.bias"]
    for name in ("curricularface", "subcenter_arcface", "adaface", "magface"):
        config = merge(LossConfig(), {"terms": Replace({name: 1.0}), "partial_fc": {"sample_rate": 0.5}})
        objective = Objective(config, D, C)
        assert isinstance(objective.losses[name], PartialFC) and objective.sharded == (name,)
    sub = Objective(merge(LossConfig(), {"terms": Replace({"subcenter_arcface": 1.0}),
                                         "partial_fc": {"sample_rate": 1.0}}), D, C)
    assert sub.losses["subcenter_arcface"].weight.shape == (C, 3 * D)  # a class's row holds its K centers
