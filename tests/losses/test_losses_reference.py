"""Every loss against its brute-force reference loop, on random data and on edge cases, plus
gradcheck and NaN-free gradients."""

from __future__ import annotations

import zlib
import pytest
import torch

from faceverify.losses import (
    ArcFaceLoss,
    CenterLoss,
    ContrastiveLoss,
    CosFaceLoss,
    MarginLoss,
    MultiSimilarityLoss,
    NPairLoss,
    ProxyNCALoss,
    SoftmaxLoss,
    SphereFaceLoss,
    TripletLoss,
)
from tests.losses import reference as ref

DIM, CLASSES = 5, 4


def case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings [B, DIM] float64, labels [B]) for each edge case."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()) % 1000)  # hash() is salted per process
    x = torch.randn(8, DIM, generator=g, dtype=torch.float64)
    if name == "random":
        labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    elif name == "singleton_class":
        labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])  # class 3 has one sample
    elif name == "no_positive":
        x, labels = x[:4], torch.tensor([0, 1, 2, 3])
    elif name == "one_class":
        labels = torch.zeros(8, dtype=torch.long)
    elif name == "identical":
        x = x[:1].repeat(8, 1)
        labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    elif name == "large_norm":
        x = x * 1e3
        labels = torch.tensor([0, 1, 0, 1, 2, 3, 2, 3])
    else:
        raise ValueError(name)
    return x, labels


CASES = ["random", "singleton_class", "no_positive", "one_class", "identical", "large_norm"]


def reference_and_module(kind: str):
    """(ours, reference function) with matching parameters."""
    torch.manual_seed(1)
    if kind == "contrastive_sq":
        return ContrastiveLoss(0.8), lambda x, y: ref.contrastive(x, y, 0.8)
    if kind == "contrastive_plain_pn":
        return (ContrastiveLoss(1.2, squared=False, normalize=False, reduction="pos_neg_mean"),
                lambda x, y: ref.contrastive(x, y, 1.2, False, False, "pos_neg_mean"))
    if kind == "contrastive_nonzero":
        return (ContrastiveLoss(1.0, reduction="avg_nonzero"),
                lambda x, y: ref.contrastive(x, y, 1.0, True, True, "avg_nonzero"))
    if kind == "triplet_all":
        return TripletLoss(0.3, "all"), lambda x, y: ref.triplet(x, y, 0.3, "all", reduction="avg_nonzero")
    if kind == "triplet_batch_hard":
        return TripletLoss(0.3, "batch_hard"), lambda x, y: ref.triplet(x, y, 0.3, "batch_hard")
    if kind == "triplet_semi_hard":
        return (TripletLoss(0.5, "semi_hard", normalize=False),
                lambda x, y: ref.triplet(x, y, 0.5, "semi_hard", normalize=False))
    if kind == "triplet_cosine":
        return (TripletLoss(0.2, "all", distance="cosine_similarity", reduction="mean"),
                lambda x, y: ref.triplet(x, y, 0.2, "all", "cosine_similarity"))
    if kind == "triplet_squared":
        return (TripletLoss(0.4, "batch_hard", distance="squared_euclidean"),
                lambda x, y: ref.triplet(x, y, 0.4, "batch_hard", "squared_euclidean"))
    if kind == "npair":
        return NPairLoss(0.002), lambda x, y: ref.npair(x, y, 0.002)
    if kind == "multi_similarity":
        return MultiSimilarityLoss(2.0, 10.0, 0.5, 0.1), lambda x, y: ref.multi_similarity(x, y, 2.0, 10.0, 0.5, 0.1)
    if kind == "multi_similarity_unmined":
        return MultiSimilarityLoss(2.0, 10.0, 0.5, -1.0), lambda x, y: ref.multi_similarity(x, y, 2.0, 10.0, 0.5, -1.0)
    if kind == "margin":
        module = MarginLoss(CLASSES, margin=0.2, beta=1.2).double()
        with torch.no_grad():
            module.beta.fill_(1.2)  # exactly 1.2 in float64 (the float32 initial value is 1.2000000477)
        return module, lambda x, y: ref.margin_loss(x, y, 0.2, 1.2)
    if kind == "margin_class_beta":
        module = MarginLoss(CLASSES, margin=0.3, beta=1.0, class_beta=True, nu=0.1).double()
        with torch.no_grad():
            module.beta.copy_(torch.tensor([0.9, 1.1, 1.3, 0.7], dtype=torch.float64))
        return module, lambda x, y: ref.margin_loss(x, y, 0.3, module.beta.detach().tolist(), nu=0.1)
    if kind in ("proxy_nca", "proxy_nca_paper"):
        include = kind == "proxy_nca"
        module = ProxyNCALoss(CLASSES, DIM, scale=3.0, include_positive_in_denominator=include).double()
        return module, lambda x, y: ref.proxy_nca(x, y, module.proxies, 3.0, include)
    if kind == "center":
        module = CenterLoss(CLASSES, DIM).double()
        module.centers.copy_(torch.randn(CLASSES, DIM, dtype=torch.float64))
        return module, lambda x, y: ref.center(x, y, module.centers)
    if kind == "softmax":
        module = SoftmaxLoss(DIM, CLASSES).double()
        return module, lambda x, y: ref.softmax(x, y, module.linear.weight, module.linear.bias)
    if kind == "cosface":
        module = CosFaceLoss(DIM, CLASSES, s=8.0, m=0.35).double()
        return module, lambda x, y: ref.margin_head(x, y, module.weight, "cosface", s=8.0, m=0.35)
    if kind == "arcface":
        module = ArcFaceLoss(DIM, CLASSES, s=8.0, m=0.5).double()
        return module, lambda x, y: ref.margin_head(x, y, module.weight, "arcface", s=8.0, m=0.5)
    if kind == "arcface_wide_margin":  # m = 2.5 rad: many samples take the theta + m > pi branch
        module = ArcFaceLoss(DIM, CLASSES, s=4.0, m=2.5).double()
        return module, lambda x, y: ref.margin_head(x, y, module.weight, "arcface", s=4.0, m=2.5)
    if kind == "sphereface":
        module = SphereFaceLoss(DIM, CLASSES, m=4).double()
        module.iteration.fill_(10_000)  # lambda at its floor, 5
        return module, lambda x, y: ref.margin_head(x, y, module.weight, "sphereface", m=4, lam=module.current_lambda())
    raise ValueError(kind)


KINDS = ["contrastive_sq", "contrastive_plain_pn", "contrastive_nonzero", "triplet_all", "triplet_batch_hard",
         "triplet_semi_hard", "triplet_cosine", "triplet_squared", "npair", "multi_similarity",
         "multi_similarity_unmined", "margin", "margin_class_beta", "proxy_nca", "proxy_nca_paper", "center", "softmax", "cosface", "arcface",
         "arcface_wide_margin", "sphereface"]
CLASS_BASED = {"proxy_nca", "proxy_nca_paper", "center", "softmax", "cosface", "arcface", "arcface_wide_margin",
               "sphereface"}


@pytest.mark.parametrize("edge", CASES)
@pytest.mark.parametrize("kind", KINDS)
def test_loss_equals_brute_force_reference(kind: str, edge: str):
    module, reference = reference_and_module(kind)
    x, labels = case(edge)
    x = x.clone().requires_grad_(True)
    ours = module(x, labels)
    expected = reference(x.detach(), labels)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours.detach(), torch.as_tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    ours.backward()
    assert torch.isfinite(x.grad).all(), "non-finite gradient"


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind: str):
    module, _ = reference_and_module(kind)
    if kind == "sphereface":
        module.train(False)  # keep lambda fixed across gradcheck's evaluations
    x, labels = case("random")
    x = (x * 0.7).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inp: module(inp, labels), (x,), eps=1e-6, atol=1e-5)


def test_large_norm_npair_and_softmax_stay_finite_in_float32():
    x, labels = case("large_norm")
    for module in (NPairLoss(0.002), SoftmaxLoss(DIM, CLASSES)):
        x32 = x.float().requires_grad_(True)
        value = module.float()(x32, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(x32.grad).all()


def test_center_update_equals_the_paper_rule_and_skips_in_eval():
    torch.manual_seed(0)
    module = CenterLoss(CLASSES, DIM, alpha=0.5).double()
    module.centers.copy_(torch.randn(CLASSES, DIM, dtype=torch.float64))
    x, labels = case("singleton_class")
    before = module.centers.clone()
    module(x, labels)
    module.update_centers()
    torch.testing.assert_close(module.centers, ref.center_update(before, x, labels, 0.5))
    # class 3 -> one sample: c <- c - 0.5 (c - x)/2
    torch.testing.assert_close(module.centers[3], before[3] - 0.25 * (before[3] - x[7]))
    module.eval()
    snapshot = module.centers.clone()
    module(x, labels)
    module.update_centers()
    torch.testing.assert_close(module.centers, snapshot)


def test_center_loss_gradient_matches_the_paper_and_sgd_mode_trains_centers():
    module = CenterLoss(CLASSES, DIM).double()
    module.centers.copy_(torch.randn(CLASSES, DIM, dtype=torch.float64))
    x, labels = case("random")
    x.requires_grad_(True)
    module(x, labels).backward()
    torch.testing.assert_close(x.grad, (x.detach() - module.centers[labels]) / x.shape[0])  # Eq. 3
    sgd = CenterLoss(CLASSES, DIM, update="sgd").double()
    assert isinstance(sgd.centers, torch.nn.Parameter)
    sgd(x.detach(), labels).backward()
    assert sgd.centers.grad is not None and sgd.centers.grad.abs().sum() > 0


def test_center_loss_never_builds_a_batch_by_class_matrix():
    module = CenterLoss(200_000, 512)  # 200k classes x 512 = 400 MB of centers...
    x = torch.randn(64, 512)
    labels = torch.randint(0, 200_000, (64,))
    # ...but a forward touches only the 64 gathered rows: a [64, 200000] matrix would need 51 MB
    import tracemalloc

    tracemalloc.start()
    module(x, labels)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000


def test_sphereface_lambda_anneals_per_training_step():
    module = SphereFaceLoss(DIM, CLASSES)
    assert module.current_lambda() == 1000.0
    x, labels = case("random")
    for _ in range(10):
        module(x.float(), labels)
    assert module.current_lambda() == pytest.approx(1000.0 / (1 + 0.12 * 10))
    module.iteration.fill_(100_000)
    assert module.current_lambda() == 5.0


def test_identical_embeddings_give_zero_distance_and_zero_gradient_not_nan():
    x, labels = case("identical")
    x.requires_grad_(True)
    loss = ContrastiveLoss(1.0, normalize=False)(x, labels) + TripletLoss(0.2, "batch_hard", normalize=False)(x, labels)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_arcface_margin_warms_up_linearly_then_stays():
    module = ArcFaceLoss(DIM, CLASSES, s=8.0, m=0.5, margin_warmup_iters=4).double()
    x, labels = case("random")
    seen = []
    for _ in range(6):
        seen.append(float(module.current_margin()))
        module(x, labels)
    assert seen == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5])
    # at a given iteration the loss is the reference with that margin
    module.iteration.fill_(2)
    module.eval()
    torch.testing.assert_close(module(x, labels), torch.as_tensor(
        ref.margin_head(x, labels, module.weight, "arcface", s=8.0, m=0.25), dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_margin_loss_on_mined_triplets_uses_only_them():
    from faceverify.losses.miners import BatchHardMiner

    x, labels = case("random")
    module = MarginLoss(CLASSES).double()
    a, p, n = BatchHardMiner()(torch.nn.functional.normalize(x, dim=1), labels)
    f = torch.nn.functional.normalize(x, dim=1)
    d_ap, d_an = (f[a] - f[p]).norm(dim=1), (f[a] - f[n]).norm(dim=1)
    values = torch.cat([torch.relu(d_ap - 1.2 + 0.2), torch.relu(1.2 - d_an + 0.2)])
    expected = values.sum() / (values > 0).sum().clamp_min(1)
    torch.testing.assert_close(module(x, labels, (a, p, n)), expected)
