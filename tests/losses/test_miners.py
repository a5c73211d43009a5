"""Miners against brute-force loops; losses accept mined tuples."""

from __future__ import annotations

import torch

from faceverify.losses import (
    BatchHardMiner,
    ContrastiveLoss,
    DistanceWeightedMiner,
    MultiSimilarityMiner,
    SemiHardMiner,
    TripletLoss,
)
from faceverify.losses.distances import cosine_similarity, euclidean, squared_euclidean
from faceverify.losses.miners import all_pairs, all_triplets
from tests.losses import reference as ref


def data(seed: int = 0, b: int = 12, d: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (b,), generator=g)
    return x, labels


def test_distances_equal_loops_and_are_safe_at_zero():
    x, _ = data()
    for i in range(4):
        for j in range(4):
            d = float(ref.dist(x[i], x[j]))
            assert abs(float(euclidean(x)[i, j]) - d) < 1e-9
            assert abs(float(squared_euclidean(x)[i, j]) - d * d) < 1e-9
            c = float(ref.dot(x[i], x[j]) / (ref.norm(x[i]) * ref.norm(x[j])))
            assert abs(float(cosine_similarity(x)[i, j]) - c) < 1e-9
    same = x[:1].repeat(3, 1).requires_grad_(True)
    euclidean(same).sum().backward()
    assert torch.isfinite(same.grad).all()
    assert torch.equal(torch.diagonal(squared_euclidean(x * 1e4)), torch.zeros(12, dtype=torch.float64))


def test_all_pairs_and_triplets_enumerate_exactly_the_valid_ones():
    _, labels = data(1)
    y = labels.tolist()
    a1, p, a2, n = all_pairs(labels)
    assert set(zip(a1.tolist(), p.tolist())) == {(i, j) for i in range(12) for j in range(12) if i != j and y[i] == y[j]}
    assert set(zip(a2.tolist(), n.tolist())) == {(i, j) for i in range(12) for j in range(12) if y[i] != y[j]}
    a, pp, nn = all_triplets(labels)
    expected = {(i, j, k) for i in range(12) for j in range(12) for k in range(12)
                if i != j and y[i] == y[j] and y[k] != y[i]}
    assert set(zip(a.tolist(), pp.tolist(), nn.tolist())) == expected


def test_batch_hard_picks_the_hardest_distances():
    for seed in range(5):
        x, labels = data(seed)
        a, p, n = BatchHardMiner()(x, labels)
        d = euclidean(x)
        got = [(int(i), float(d[i, j]), float(d[i, k])) for i, j, k in zip(a, p, n)]
        expected = ref.batch_hard_distances(x, labels)
        assert [g[0] for g in got] == [e[0] for e in expected]
        for g, e in zip(got, expected):
            assert abs(g[1] - e[1]) < 1e-9 and abs(g[2] - e[2]) < 1e-9


def test_semi_hard_returns_exactly_the_semi_hard_triplets():
    for seed in range(5):
        x, labels = data(seed)
        a, p, n = SemiHardMiner(margin=1.0)(x, labels)
        assert set(zip(a.tolist(), p.tolist(), n.tolist())) == ref.semi_hard_triplets(x, labels, 1.0)


def test_multi_similarity_miner_equals_the_rule():
    for seed in range(5):
        x, labels = data(seed)
        a1, p, a2, n = MultiSimilarityMiner(0.1)(x, labels)
        pos, neg = ref.multi_similarity_pairs(x, labels, 0.1)
        assert set(zip(a1.tolist(), p.tolist())) == pos
        assert set(zip(a2.tolist(), n.tolist())) == neg


def test_distance_weighted_probabilities_and_samples():
    x, labels = data(3, b=10, d=16)
    miner = DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4, generator=torch.Generator().manual_seed(0))
    probs = miner.negative_probabilities(x, labels)
    expected = ref.distance_weighted_probabilities(x, labels, 0.5, 1.4)
    torch.testing.assert_close(probs, expected, rtol=1e-7, atol=1e-9)
    # sampled negatives follow those probabilities (many draws, one anchor-positive pair)
    counts = torch.zeros(10, dtype=torch.float64)
    draws = 1500
    for _ in range(draws):
        a, p, n = miner(x, labels)
        assert (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all()
        counts[n[0]] += 1
    anchor = int(all_pairs(labels)[0][0])
    assert torch.allclose(counts / draws, probs[anchor], atol=0.045)  # ~3.5 sigma


def test_losses_accept_mined_tuples():
    x, labels = data(4)
    x.requires_grad_(True)
    triplets = SemiHardMiner(1.0)(x, labels)
    loss = TripletLoss(1.0, "all", normalize=False, reduction="mean")(x, labels, triplets)
    expected = ref.triplet(x.detach(), labels, 1.0, "semi_hard", normalize=False)
    torch.testing.assert_close(loss, torch.as_tensor(expected, dtype=torch.float64))
    pairs = MultiSimilarityMiner(0.1)(x, labels)
    value = ContrastiveLoss(1.0)(x, labels, pairs)
    value.backward()
    assert torch.isfinite(x.grad).all()
    empty = tuple(torch.zeros(0, dtype=torch.long) for _ in range(3))
    assert float(TripletLoss(0.2)(x, labels, empty).detach()) == 0.0
