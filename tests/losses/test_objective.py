"""The Objective: weighted sum, ownership of loss parameters, every registered loss, DDP centers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from faceverify.config import Replace, merge
from faceverify.losses import LOSSES, CenterLoss, LossConfig, Objective
from faceverify.losses.objective import CLASSIFIERS
from tests.losses import reference as ref

D, C = 8, 6


def pk_batch(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(4)
    return torch.randn(labels.numel(), D, generator=g, dtype=dtype), labels


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_trains_in_the_objective(name: str):
    objective = Objective(LossConfig(terms={name: 1.0}), D, C)
    x, y = pk_batch()
    x.requires_grad_(True)
    out = objective(x, y)
    out.total.backward()
    assert torch.isfinite(out.total) and set(out.values) == {name, "total"}
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if name in CLASSIFIERS:
        # the prediction is the argmax of the margin-free logits, computed inside the loss
        assert out.predictions is not None and out.predictions.shape == (x.shape[0],)
        expected = objective.losses[name].logits(x.detach()).argmax(1)
        assert torch.equal(out.predictions, expected)
    else:
        assert out.predictions is None


def test_weighted_sum_and_term_values():
    config = merge(LossConfig(), {"terms": {"softmax": 1.0, "center": 0.003, "triplet": 0.5}})
    objective = Objective(config, D, C).double()
    x, y = pk_batch(1, torch.float64)
    objective.losses["center"].centers.normal_()
    out = objective(x, y)
    expected = (objective.losses["softmax"](x, y) + 0.003 * objective.losses["center"](x, y)
                + 0.5 * objective.losses["triplet"](x, y))
    torch.testing.assert_close(out.total, expected)
    assert out.values["center"] == pytest.approx(float(ref.center(x, y, objective.losses["center"].centers)))


def test_unknown_and_zero_weight_terms():
    with pytest.raises(ValueError, match="unknown loss term.*valid: softmax, center"):
        Objective(LossConfig(terms={"softmaxx": 1.0}), D, C)
    objective = Objective(LossConfig(terms={"softmax": 1.0, "center": 0.0}), D, C)
    assert list(objective.losses) == ["softmax"]
    with pytest.raises(ValueError, match="non-zero"):
        Objective(LossConfig(terms={"center": 0.0}), D, C)


def test_objective_owns_loss_parameters_with_the_right_groups():
    config = merge(LossConfig(), {"terms": Replace({"arcface": 1.0, "center": 0.01, "proxy_nca": 1.0}),
                                  "center": {"update": "sgd", "lr": 0.7}})
    objective = Objective(config, D, C)
    names = {n for n, _ in objective.named_parameters()}
    assert {"losses.arcface.weight", "losses.center.centers", "losses.proxy_nca.proxies"} <= names
    groups = {g["name"]: g for g in objective.parameter_groups(weight_decay=5e-4)}
    assert groups["arcface"]["weight_decay"] == 5e-4
    assert groups["center"]["weight_decay"] == 0.0 and groups["center"]["lr"] == 0.7
    assert groups["proxy_nca"]["weight_decay"] == 0.0
    paper = Objective(LossConfig(terms={"softmax": 1.0, "center": 0.01}), D, C)
    assert "losses.center.centers" in dict(paper.named_buffers())  # not an optimiser parameter


def test_after_step_applies_the_paper_center_update():
    objective = Objective(LossConfig(terms={"softmax": 1.0, "center": 0.003}), D, C).double()
    x, y = pk_batch(2, torch.float64)
    before = objective.losses["center"].centers.clone()
    objective(x, y)
    objective.after_step()
    torch.testing.assert_close(objective.losses["center"].centers, ref.center_update(before, x, y, 0.5))


def _ddp_center_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x, y = pk_batch(3, torch.float64)
    loss = CenterLoss(C, D, alpha=0.5).double()
    loss.centers.copy_(torch.randn(C, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64))
    share = x.shape[0] // world
    for step in range(3):  # several steps so that updated centers feed the next update
        xs = x[rank * share : (rank + 1) * share] + step
        loss(xs, y[rank * share : (rank + 1) * share])
        loss.update_centers()
    torch.save(loss.centers, os.path.join(out_dir, f"centers_{rank}.pt"))
    dist.destroy_process_group()


def test_two_process_gloo_center_updates_equal_one_process_on_the_concatenated_batch(tmp_path: Path):
    mp.spawn(_ddp_center_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    x, y = pk_batch(3, torch.float64)
    single = CenterLoss(C, D, alpha=0.5).double()
    single.centers.copy_(torch.randn(C, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64))
    for step in range(3):
        single(x + step, y)
        single.update_centers()
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"centers_{rank}.pt"), single.centers, rtol=0, atol=1e-12)


@pytest.mark.parametrize("term", ["triplet", "npair", "multi_similarity", "margin", "contrastive"])
def test_the_multi_similarity_miner_attaches_to_any_pair_loss(term: str):
    from faceverify.losses.miners import MultiSimilarityMiner

    config = merge(LossConfig(), {"terms": Replace({term: 1.0}), term: {"miner": "multi_similarity"}})
    objective = Objective(config, D, C).double()
    assert isinstance(objective.miners[term], MultiSimilarityMiner)
    x, y = pk_batch(1, torch.float64)
    mined = MultiSimilarityMiner()(x, y)
    expected = objective.losses[term](x, y, mined)
    torch.testing.assert_close(objective(x, y).total, expected)


def test_learning_rate_multipliers_of_proxies_and_margin_boundaries(tmp_path):
    config = merge(LossConfig(), {"terms": Replace({"proxy_nca": 1.0, "margin": 1.0}),
                                  "proxy_nca": {"lr_multiplier": 10.0}, "margin": {"beta_lr_multiplier": 0.5}})
    groups = {g["name"]: g for g in Objective(config, D, C).parameter_groups(5e-4)}
    assert groups["proxy_nca"]["lr_multiplier"] == 10.0 and groups["proxy_nca"]["weight_decay"] == 0.0
    assert groups["margin"]["lr_multiplier"] == 0.5 and groups["margin"]["weight_decay"] == 0.0
