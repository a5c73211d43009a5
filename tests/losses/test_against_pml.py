"""Equality with pytorch-metric-learning (test-only oracle) where the definitions coincide."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pml = pytest.importorskip("pytorch_metric_learning", reason="install the dev extra: pip install -e '.[dev]'")
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402
from pytorch_metric_learning import reducers as pml_reducers  # noqa: E402
from pytorch_metric_learning import regularizers as pml_regularizers  # noqa: E402

from faceverify.losses import (  # noqa: E402
    ArcFaceLoss,
    ContrastiveLoss,
    CosFaceLoss,
    MarginLoss,
    MultiSimilarityLoss,
    NPairLoss,
    ProxyNCALoss,
    TripletLoss,
)

B, D, C = 32, 16, 8


@pytest.fixture(params=[0, 1, 2])
def batch(request):
    g = torch.Generator().manual_seed(request.param)
    labels = torch.arange(C).repeat_interleave(B // C)[torch.randperm(B, generator=g)]
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    return x, labels


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.detach().double(), b.detach().double(), rtol=1e-9, atol=1e-10)


def test_contrastive(batch):
    x, y = batch
    theirs = pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.9,
                                         distance=pml_distances.LpDistance(normalize_embeddings=True))
    close(ContrastiveLoss(0.9, squared=False, reduction="avg_nonzero")(x, y), theirs(x, y))


@pytest.mark.parametrize("mining", ["all", "batch_hard", "semi_hard"])
def test_triplet(batch, mining):
    x, y = batch
    distance = pml_distances.LpDistance(normalize_embeddings=True)
    theirs = pml_losses.TripletMarginLoss(margin=0.3, distance=distance)
    if mining == "all":
        expected = theirs(x, y)
    elif mining == "batch_hard":
        expected = theirs(x, y, pml_miners.BatchHardMiner(distance=distance)(x, y))
    else:
        miner = pml_miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard", distance=distance)
        expected = theirs(x, y, miner(x, y))
    ours = TripletLoss(0.3, mining, reduction="avg_nonzero")(x, y)
    close(ours, expected)


def test_npair_with_two_images_per_class():
    g = torch.Generator().manual_seed(5)
    y = torch.arange(C).repeat_interleave(2)[torch.randperm(2 * C, generator=g)]
    x = torch.randn(2 * C, D, generator=g, dtype=torch.float64) * 0.5
    # Sohn uses raw inner products; PML's default similarity normalises first (a documented difference)
    inner = pml_distances.DotProductSimilarity(normalize_embeddings=False)
    theirs = pml_losses.NPairsLoss(distance=inner, embedding_regularizer=pml_regularizers.LpRegularizer(power=2),
                                   embedding_reg_weight=0.01)
    close(NPairLoss(0.01)(x, y), theirs(x, y))
    close(NPairLoss(0.0)(x, y), pml_losses.NPairsLoss(distance=inner)(x, y))


def test_npair_chooses_the_same_pairs_on_larger_batches(batch):
    x, y = batch
    inner = pml_distances.DotProductSimilarity(normalize_embeddings=False)
    close(NPairLoss(0.0)(x * 0.3, y), pml_losses.NPairsLoss(distance=inner)(x * 0.3, y))


def test_proxy_nca(batch):
    x, y = batch
    ours = ProxyNCALoss(C, D, scale=3.0).double()
    theirs = pml_losses.ProxyNCALoss(C, D, softmax_scale=3.0)
    theirs.proxies.data = ours.proxies.data.clone()
    close(ours(x, y), theirs(x, y))


def test_multi_similarity(batch):
    x, y = batch
    theirs = pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    expected = theirs(x, y, pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, y))
    close(MultiSimilarityLoss(2, 50, 0.5, 0.1)(x, y), expected)
    close(MultiSimilarityLoss(2, 50, 0.5, -1)(x, y), theirs(x, y))


def test_cosface(batch):
    x, y = batch
    ours = CosFaceLoss(D, C, s=64, m=0.35).double()
    theirs = pml_losses.CosFaceLoss(C, D, margin=0.35, scale=64)
    theirs.W.data = ours.weight.data.T.clone()
    close(ours(x, y), theirs(x, y))


@pytest.mark.parametrize("margin", [0.5, 2.0])
def test_arcface(batch, margin):
    x, y = batch
    ours = ArcFaceLoss(D, C, s=64, m=margin).double()
    theirs = pml_losses.ArcFaceLoss(C, D, margin=float(np.degrees(margin)), scale=64)
    theirs.W.data = ours.weight.data.T.clone()
    close(ours(x, y), theirs(x, y))


def test_reducers_are_what_we_think():
    # guards the comparisons above: PML's default reducers for these losses
    assert isinstance(pml_losses.TripletMarginLoss().reducer, pml_reducers.AvgNonZeroReducer)
    contrastive = pml_losses.ContrastiveLoss().reducer.reducers
    assert all(isinstance(contrastive[k], pml_reducers.AvgNonZeroReducer) for k in ("pos_loss", "neg_loss"))
    assert isinstance(pml_losses.MultiSimilarityLoss().reducer, pml_reducers.MeanReducer)


@pytest.mark.parametrize("learn_beta,nu", [(False, 0.0), (True, 0.05)])
def test_margin_loss(batch, learn_beta: bool, nu: float):
    x, y = batch
    distance = pml_distances.LpDistance(normalize_embeddings=True)
    theirs = pml_losses.MarginLoss(margin=0.25, nu=nu, beta=1.1, learn_beta=learn_beta, distance=distance)
    ours = MarginLoss(C, margin=0.25, beta=1.1, learn_beta=learn_beta, nu=nu).double()
    close(ours(x, y), theirs(x, y))
    miner = pml_miners.BatchHardMiner(distance=distance)
    triplets = miner(x, y)
    close(ours(x, y, triplets), theirs(x, y, triplets))
