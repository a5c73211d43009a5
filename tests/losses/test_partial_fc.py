"""Partial FC against the full heads: the same loss and gradients at r = 1 (one process and two
gloo processes), the sample's rules at r < 1, the row-sparse SGD, and the sharded center loss."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from faceverify.config import ConfigError, Replace, merge
from faceverify.losses.center import CenterLoss
from faceverify.losses.objective import LOSSES, LossConfig, Objective
from faceverify.losses.partial_fc import (
    PartialFC,
    RowSGD,
    ShardedCenterLoss,
    block_uniform_rows,
    class_shard,
    class_uniforms,
    gather_batch,
    rule_without_classes,
)

D, C, N = 6, 11, 8  # embedding size, classes (odd: shards of unequal size), global batch
HEADS = ["softmax", "cosface", "arcface", "sphereface", "curricularface", "subcenter_arcface", "adaface", "magface"]
ALL_HEADS = HEADS + ["sphereface2"]  # the softmax heads and the one-vs-all one (its terms summed over the shards)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(N, D, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 3, 3, 7, 10, 1, 7, 5])
    return x, y


def config_for(name: str, rate: float) -> LossConfig:
    return merge(LossConfig(), {"terms": Replace({name: 1.0}), "partial_fc": {"sample_rate": rate},
                                "cosface": {"s": 8.0}, "arcface": {"s": 8.0}, "curricularface": {"s": 8.0},
                                "subcenter_arcface": {"s": 8.0, "sub_centers": 2}, "adaface": {"s": 8.0},
                                "magface": {"s": 8.0, "lower_norm": 1.0, "upper_norm": 5.0, "lambda_g": 2.0}})


def full_head(name: str) -> torch.nn.Module:
    return LOSSES[name](D, C, config_for(name, 0.0), torch.Generator()).double()


def partial_head(name: str, rate: float, world: int = 1, rank: int = 0) -> PartialFC:
    config = config_for(name, rate)
    rule = rule_without_classes(lambda d, c: LOSSES[name](d, c, config, torch.Generator()), D)
    return PartialFC(rule, class_shard(C, world, rank), D, rate, seed=3, bias=name == "softmax").double()


def full_weights(head: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    if hasattr(head, "linear"):
        return head.linear.weight, head.linear.bias
    return head.weight, None


def copy_into_partial(partial: PartialFC, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    shard = partial.shard
    partial.weight.copy_(weight.detach()[shard.start : shard.stop])
    if bias is not None:
        partial.bias.copy_(bias.detach()[shard.start : shard.stop])


def partial_backward(name: str, rate: float) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """A one-process Partial FC head holding the full head's initial weights, after forward and backward
    on the whole batch: (loss, the batch with its gradient, the head's pending (rows, weight, bias))."""
    torch.manual_seed(0)
    weight, bias = full_weights(full_head(name))
    partial = partial_head(name, rate)
    copy_into_partial(partial, weight, bias)
    x, y = batch()
    x.requires_grad_(True)
    loss = partial(x, y)
    loss.backward()
    return loss, x, partial._pending


def reference(name: str) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The full head on the global batch: loss, dL/dx, dL/dW, dL/db."""
    torch.manual_seed(0)
    head = full_head(name)
    x, y = batch()
    x.requires_grad_(True)
    loss = head(x, y)
    loss.backward()
    weight, bias = full_weights(head)
    return float(loss.detach()), x.grad, weight.grad, None if bias is None else bias.grad


def test_shards_cover_the_classes_with_the_remainder_on_the_first_ranks():
    shards = [class_shard(11, 3, r) for r in range(3)]
    assert [(s.start, s.stop) for s in shards] == [(0, 4), (4, 8), (8, 11)]
    assert class_shard(11, 1, 0).size == 11
    with pytest.raises(ConfigError, match="at least one class"):
        class_shard(2, 3, 0)


def test_class_uniforms_do_not_depend_on_the_split_and_are_uniform():
    whole = class_uniforms(7, 12, 0, 100_000)
    parts = torch.cat([class_uniforms(7, 12, 0, 33_333), class_uniforms(7, 12, 33_333, 100_000)])
    assert torch.equal(whole, parts)
    assert float(whole.min()) >= 0.0 and float(whole.max()) < 1.0
    # ten equal bins each hold 10% +- 0.5% (a binomial standard deviation is 0.095%)
    counts = torch.histc(whole, bins=10, min=0.0, max=1.0) / whole.numel()
    assert torch.all((counts - 0.1).abs() < 0.005), counts
    assert not torch.equal(whole, class_uniforms(7, 13, 0, 100_000))
    assert not torch.equal(whole, class_uniforms(8, 12, 0, 100_000))
    # neighbouring classes are not correlated
    assert abs(float(torch.corrcoef(torch.stack([whole[:-1], whole[1:]]))[0, 1])) < 0.01


def test_initial_weights_do_not_depend_on_the_split():
    whole = block_uniform_rows(1, 0, 0, 70_000, 3, 0.5)  # several blocks, split inside one
    split = torch.cat([block_uniform_rows(1, 0, 0, 65_000, 3, 0.5), block_uniform_rows(1, 0, 65_000, 70_000, 3, 0.5)])
    assert torch.equal(whole, split) and float(whole.abs().max()) <= 0.5
    assert not torch.equal(whole, block_uniform_rows(1, 1, 0, 70_000, 3, 0.5))


@pytest.mark.parametrize("name", ALL_HEADS)
def test_one_process_with_every_class_sampled_is_the_full_head(name: str):
    expected_loss, expected_dx, expected_dw, expected_db = reference(name)
    loss, x, (rows, leaf, bias_leaf) = partial_backward(name, 1.0)
    if name == "sphereface2":  # its one learned bias: the full head's initial value and gradient
        torch.manual_seed(0)
        full, partial = full_head(name), partial_head(name, 1.0)
        assert float(partial.rule.bias.detach()) == pytest.approx(float(full.bias.detach()), abs=1e-12)
        full(*batch()).backward()
        copy_into_partial(partial, full.weight, None)
        partial(*batch()).backward()
        torch.testing.assert_close(partial.rule.bias.grad, full.bias.grad, rtol=0, atol=1e-12)
    assert rows is None  # r = 1: no sampling, the shard itself
    torch.testing.assert_close(float(loss.detach()), expected_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.grad, expected_dx, rtol=0, atol=1e-12)
    torch.testing.assert_close(leaf.grad, expected_dw, rtol=0, atol=1e-12)
    if expected_db is not None:
        torch.testing.assert_close(bias_leaf.grad, expected_db, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", HEADS)
def test_a_sample_keeps_every_positive_and_is_the_softmax_over_the_sampled_classes(name: str):
    torch.manual_seed(0)
    head = full_head(name)
    weight, bias = full_weights(head)
    partial = partial_head(name, 0.3)
    copy_into_partial(partial, weight, bias)
    x, y = batch()
    for step in range(20):
        partial.step.fill_(step)
        partial._host_step = None
        rows, targets = partial.sample(y, step)
        assert set(y.tolist()) <= set(rows.tolist())  # every positive, whatever the draw
        assert torch.equal(rows[targets], y)
    # the loss is the full head's cross-entropy restricted to the sampled columns
    partial.eval()
    head.eval()
    rows, targets = partial.sample(y, 0)
    assert rows.numel() < C
    logits, _ = head.margin_logits(x, weight[rows], targets, None if bias is None else bias[rows])
    partial._host_step = 0
    expected = F.cross_entropy(logits, targets)
    if hasattr(head, "regulariser"):  # MagFace: its magnitude term too
        expected = expected + head.lambda_g * head.regulariser(x)
    torch.testing.assert_close(partial(x, y), expected, rtol=0, atol=1e-12)


def test_sphereface2_under_a_sample_weights_the_negatives_it_drew_by_one_over_r():
    """Brute force: the full head's per-class terms on the sampled columns, each sampled class that
    is no label of the batch counted 1 / r times (the sum over every class estimated without bias)."""
    torch.manual_seed(0)
    head = full_head("sphereface2")
    partial = partial_head("sphereface2", 0.3)
    copy_into_partial(partial, head.weight, None)
    x, y = batch()
    partial.eval()
    partial._host_step = 0
    rows, targets = partial.sample(y, 0)
    assert 0 < rows.numel() < C
    cos = F.normalize(x) @ F.normalize(head.weight[rows]).T
    g = 2.0 * ((cos + 1.0) / 2.0) ** head.t - 1.0
    expected = torch.zeros((), dtype=torch.float64)
    for i in range(N):
        for j, cls in enumerate(rows.tolist()):
            if cls == int(y[i]):
                expected += head.lam * torch.log1p(torch.exp(-(head.r * (g[i, j] - head.m) + head.bias)))
            else:
                count = 1.0 if cls in set(y.tolist()) else 1.0 / 0.3
                expected += count * (1 - head.lam) * torch.log1p(torch.exp(head.r * (g[i, j] + head.m) + head.bias))
    torch.testing.assert_close(partial(x, y), expected / N / head.r, rtol=0, atol=1e-12)


def test_the_sample_size_follows_the_rate():
    shard = class_shard(200_000)
    labels = torch.arange(0, 200_000, 1000)  # 200 positives
    rule = rule_without_classes(lambda d, c: LOSSES["cosface"](d, c, LossConfig(), torch.Generator()), 4)
    partial = PartialFC(rule, shard, 4, 0.1, seed=0)
    rows, _ = partial.sample(labels, 0)
    expected = 200 + 0.1 * (200_000 - 200)
    assert abs(rows.numel() - expected) < 5 * (expected * 0.9) ** 0.5


def test_rows_not_sampled_keep_their_weights_and_momentum_and_sampled_rows_follow_torch_sgd():
    partial = partial_head("softmax", 0.3)
    partial.weight_momentum.normal_(generator=torch.Generator().manual_seed(2))
    before_w, before_m = partial.weight.clone(), partial.weight_momentum.clone()
    before_b, before_bm = partial.bias.clone(), partial.bias_momentum.clone()
    x, y = batch()
    loss = partial(x, y)
    loss.backward()
    rows, leaf, bias_leaf = partial._pending
    # torch.optim.SGD on the sampled rows, their momentum buffers given to it
    sub = torch.nn.Parameter(before_w[rows].clone())
    sub.grad = leaf.grad.clone()
    sub_bias = torch.nn.Parameter(before_b[rows].clone())
    sub_bias.grad = bias_leaf.grad.clone()
    sgd = torch.optim.SGD([sub, sub_bias], lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sgd.step()  # first step: torch starts the buffer at the gradient; give it the old buffer instead
    sgd = torch.optim.SGD([sub, sub_bias], lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sub.data.copy_(before_w[rows])
    sub_bias.data.copy_(before_b[rows])
    sgd.state[sub]["momentum_buffer"] = before_m[rows].clone()
    sgd.state[sub_bias]["momentum_buffer"] = before_bm[rows].clone()
    sgd.step()
    partial.apply_update(0.1, RowSGD(momentum=0.9, weight_decay=5e-4, nesterov=True))
    others = torch.ones(C, dtype=torch.bool)
    others[rows] = False
    assert others.any()
    assert torch.equal(partial.weight[others], before_w[others])
    assert torch.equal(partial.weight_momentum[others], before_m[others])
    assert torch.equal(partial.bias[others], before_b[others])
    torch.testing.assert_close(partial.weight[rows], sub.detach(), rtol=0, atol=1e-14)
    torch.testing.assert_close(partial.weight_momentum[rows], sgd.state[sub]["momentum_buffer"], rtol=0, atol=1e-14)
    torch.testing.assert_close(partial.bias[rows], sub_bias.detach(), rtol=0, atol=1e-14)


def test_a_non_finite_gradient_moves_no_row():
    partial = partial_head("cosface", 1.0)
    before = partial.weight.clone()
    x, y = batch()
    partial(x, y).backward()
    partial._pending[1].grad[0, 0] = float("nan")
    partial.apply_update(0.1, RowSGD())
    assert torch.equal(partial.weight, before)


def test_partial_fc_needs_a_term_it_shards_and_the_paper_center_update():
    with pytest.raises(ConfigError, match="no term it shards"):
        Objective(merge(LossConfig(), {"terms": Replace({"triplet": 1.0}), "partial_fc": {"sample_rate": 0.5}}), D, C)
    with pytest.raises(ConfigError, match="update=paper"):
        Objective(merge(LossConfig(), {"terms": Replace({"softmax": 1.0, "center": 0.1}),
                                       "partial_fc": {"sample_rate": 0.5}, "center": {"update": "sgd"}}), D, C)
    with pytest.raises(ConfigError, match="sample_rate"):
        merge(LossConfig(), {"partial_fc": {"sample_rate": 1.5}})


def test_the_sharded_center_loss_of_one_process_is_the_center_loss():
    x, y = batch()
    full = CenterLoss(C, D).double()
    full.centers.normal_(generator=torch.Generator().manual_seed(1))
    sharded = ShardedCenterLoss(class_shard(C), D).double()
    sharded.centers.copy_(full.centers)
    for step in range(3):
        xs = (x + step).requires_grad_(True)
        xr = (x + step).requires_grad_(True)
        torch.testing.assert_close(sharded(xs, y), full(xr, y), rtol=0, atol=1e-12)
        sharded(xs, y).backward()
        full(xr, y).backward()
        torch.testing.assert_close(xs.grad, xr.grad, rtol=0, atol=1e-12)
        sharded.update_centers()
        full.update_centers()
    torch.testing.assert_close(sharded.centers, full.centers, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- two gloo processes

def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x, y = batch()
    share = N // world
    results = {}
    for name in ALL_HEADS:
        for rate in (1.0, 0.4):
            torch.manual_seed(0)
            weight, bias = full_weights(full_head(name))
            partial = partial_head(name, rate, world, rank)
            copy_into_partial(partial, weight, bias)
            local = x[rank * share : (rank + 1) * share].clone().requires_grad_(True)
            xg, yg = gather_batch(local, y[rank * share : (rank + 1) * share], world)
            loss = partial(xg, yg)
            loss.backward()
            rows, leaf, bias_leaf = partial._pending
            results[(name, rate)] = {"loss": loss.detach(), "dx": local.grad, "dw": leaf.grad,
                                     "db": None if bias_leaf is None else bias_leaf.grad, "rows": rows,
                                     "shard": (partial.shard.start, partial.shard.stop),
                                     "predictions": partial.predictions,
                                     "rule_db": partial.rule.bias.grad if partial.one_vs_all else None}
    centers = torch.randn(C, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    center = ShardedCenterLoss(class_shard(C, world, rank), D).double()
    center.centers.copy_(centers[center.shard.start : center.shard.stop])
    center_losses = []
    for step in range(3):
        local = (x[rank * share : (rank + 1) * share] + step).requires_grad_(True)
        xg, yg = gather_batch(local, y[rank * share : (rank + 1) * share], world)
        value = center(xg, yg)
        value.backward()
        center.update_centers()
        center_losses.append((value.detach(), local.grad))
    results["center"] = {"losses": center_losses, "centers": center.centers, "shard": (center.shard.start,
                                                                                       center.shard.stop)}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("pfc")
    mp.spawn(_worker, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name", ALL_HEADS)
def test_two_gloo_processes_of_the_sharded_full_head_equal_one_process_of_the_full_head(name: str, two_ranks):
    expected_loss, expected_dx, expected_dw, expected_db = reference(name)
    share = N // 2
    for rank, results in enumerate(two_ranks):
        got = results[(name, 1.0)]
        start, stop = got["shard"]
        torch.testing.assert_close(float(got["loss"]), expected_loss, rtol=0, atol=1e-10)
        torch.testing.assert_close(got["dx"], expected_dx[rank * share : (rank + 1) * share], rtol=0, atol=1e-10)
        torch.testing.assert_close(got["dw"], expected_dw[start:stop], rtol=0, atol=1e-10)
        if expected_db is not None:
            torch.testing.assert_close(got["db"], expected_db[start:stop], rtol=0, atol=1e-10)
    torch.manual_seed(0)
    head = full_head(name)
    x, y = batch()
    head(x, y).backward()
    if name == "sphereface2":  # the replicated bias: every rank holds the gradient of the whole loss
        for results in two_ranks:
            torch.testing.assert_close(results[(name, 1.0)]["rule_db"], head.bias.grad, rtol=0, atol=1e-10)
    predictions = torch.cat([two_ranks[0][(name, 1.0)]["predictions"], two_ranks[1][(name, 1.0)]["predictions"]])
    assert torch.equal(predictions, head.predictions)


@pytest.mark.parametrize("name", ALL_HEADS)
def test_two_processes_sample_the_classes_one_process_samples(name: str, two_ranks):
    loss, x, (rows, leaf, _) = partial_backward(name, 0.4)
    share = N // 2
    sampled = torch.cat([r[(name, 0.4)]["rows"] + r[(name, 0.4)]["shard"][0] for r in two_ranks])
    assert torch.equal(sampled, rows)
    for rank, results in enumerate(two_ranks):
        got = results[(name, 0.4)]
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(got["dx"], x.grad[rank * share : (rank + 1) * share], rtol=0, atol=1e-10)
        mine = (rows >= got["shard"][0]) & (rows < got["shard"][1])
        torch.testing.assert_close(got["dw"], leaf.grad[mine], rtol=0, atol=1e-10)


def test_two_processes_of_the_sharded_center_loss_equal_the_center_loss(two_ranks):
    x, y = batch()
    full = CenterLoss(C, D).double()
    full.centers.copy_(torch.randn(C, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64))
    share = N // 2
    for step in range(3):
        xr = (x + step).requires_grad_(True)
        value = full(xr, y)
        value.backward()
        full.update_centers()
        for rank, results in enumerate(two_ranks):
            got_value, got_dx = results["center"]["losses"][step]
            torch.testing.assert_close(got_value, value.detach(), rtol=0, atol=1e-10)
            torch.testing.assert_close(got_dx, xr.grad[rank * share : (rank + 1) * share], rtol=0, atol=1e-10)
    for results in two_ranks:
        start, stop = results["center"]["shard"]
        torch.testing.assert_close(results["center"]["centers"], full.centers[start:stop], rtol=0, atol=1e-10)
