"""Benchmark: forward + backward time of each loss against pytorch-metric-learning, same run.

    python experiments/bench_losses.py [--repeats 7] [--device cpu]

B = 512 embeddings of D = 512 in a PK batch (128 identities x 4 images); losses with class
parameters use C = 10,575 classes (CASIA-WebFace). Each pair is timed interleaved (ours, theirs,
ours, ...) after a warm-up, and the median is reported; the ratio ours / theirs must be <= 1.
Both sides compute the same definition (as checked by tests/losses/test_against_pml.py). Center
loss has no pytorch-metric-learning counterpart; it is compared with the common port that builds
the [B, C] distance matrix to all centers. Peak memory of the center loss forward+backward is
reported for both. Appends to results/benchmarks/losses.csv and regenerates losses.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from faceverify.losses import (
    ArcFaceLoss,
    CenterLoss,
    ContrastiveLoss,
    CosFaceLoss,
    MultiSimilarityLoss,
    NPairLoss,
    ProxyNCALoss,
    TripletLoss,
)
from faceverify.provenance import device_description
from faceverify.results import provenance, record_rows

ROOT = Path(__file__).resolve().parent.parent
B, D, C = 512, 512, 10_575


class MatrixCenterLoss(torch.nn.Module):
    """The widespread PyTorch center-loss port: a [B, C] distance matrix to every center."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.centers = torch.nn.Parameter(torch.zeros(num_classes, dim))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        distmat = (x.pow(2).sum(1, keepdim=True) + self.centers.pow(2).sum(1).unsqueeze(0)
                   - 2 * x @ self.centers.T)
        mask = labels.unsqueeze(1) == torch.arange(self.centers.shape[0], device=x.device).unsqueeze(0)
        return (distmat * mask.float()).clamp(1e-12, 1e12).sum() / x.shape[0]


def pairs(device: torch.device) -> dict[str, tuple[Callable, Callable]]:
    lp = pml_distances.LpDistance(normalize_embeddings=True)
    arc, cos, prox = ArcFaceLoss(D, C).to(device), CosFaceLoss(D, C).to(device), ProxyNCALoss(C, D).to(device)
    pml_arc = pml_losses.ArcFaceLoss(C, D, margin=float(np.degrees(0.5)), scale=64).to(device)
    pml_cos = pml_losses.CosFaceLoss(C, D, margin=0.35, scale=64).to(device)
    pml_prox = pml_losses.ProxyNCALoss(C, D, softmax_scale=9.0).to(device)
    pml_arc.W.data, pml_cos.W.data = arc.weight.data.T.clone(), cos.weight.data.T.clone()
    pml_prox.proxies.data = prox.proxies.data.clone()
    triplet_loss = pml_losses.TripletMarginLoss(margin=0.2, distance=lp)
    hard_miner = pml_miners.BatchHardMiner(distance=lp)
    semi_miner = pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard", distance=lp)
    ms_loss, ms_miner = pml_losses.MultiSimilarityLoss(2, 50, 0.5), pml_miners.MultiSimilarityMiner(0.1)
    inner = pml_distances.DotProductSimilarity(normalize_embeddings=False)
    center = CenterLoss(C, D).to(device)
    matrix_center = MatrixCenterLoss(C, D).to(device)
    return {
        "contrastive": (ContrastiveLoss(1.0, squared=False, reduction="avg_nonzero"),
                        pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=1.0, distance=lp)),
        "triplet_all": (TripletLoss(0.2, "all", reduction="avg_nonzero"), triplet_loss),
        "triplet_batch_hard": (TripletLoss(0.2, "batch_hard", reduction="avg_nonzero"),
                               lambda x, y: triplet_loss(x, y, hard_miner(x, y))),
        "triplet_semi_hard": (TripletLoss(0.2, "semi_hard", reduction="avg_nonzero"),
                              lambda x, y: triplet_loss(x, y, semi_miner(x, y))),
        "npair": (NPairLoss(0.0), pml_losses.NPairsLoss(distance=inner)),
        "multi_similarity": (MultiSimilarityLoss(2, 50, 0.5, 0.1), lambda x, y: ms_loss(x, y, ms_miner(x, y))),
        "proxy_nca": (prox, pml_prox),
        "cosface": (cos, pml_cos),
        "arcface": (arc, pml_arc),
        "center_vs_matrix_port": (center, matrix_center),
    }


def time_step(fn: Callable, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    x = x.detach().clone().requires_grad_(True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(x, y).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_bytes(which: str, device: torch.device) -> int:
    """Peak extra memory of one center-loss forward+backward (``ours`` or ``matrix``).

    CUDA: the allocator's peak. CPU: in a fresh subprocess, after one warm-up step, the kernel's
    resident high-water mark is reset (``/proc/self/clear_refs``) and its growth over one more
    step is read from ``VmHWM`` (Linux).
    """
    if device.type == "cuda":
        module = (CenterLoss(C, D) if which == "ours" else MatrixCenterLoss(C, D)).to(device)
        x = torch.randn(B, D, device=device, requires_grad=True)
        labels = torch.randint(0, C, (B,), device=device)
        module(x, labels).backward()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        module(x, labels).backward()
        return torch.cuda.max_memory_allocated(device) - base
    code = (
        "import torch, sys; sys.path.insert(0, %r);"
        "from bench_losses import CenterLoss, MatrixCenterLoss, B, C, D\n"
        "def status(key):\n"
        "    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key))\n"
        "m = CenterLoss(C, D) if %r == 'ours' else MatrixCenterLoss(C, D)\n"
        "x = torch.randn(B, D, requires_grad=True); y = torch.randint(0, C, (B,))\n"
        "m(x, y).backward(); x.grad = None\n"
        "open('/proc/self/clear_refs', 'w').write('5'); base = status('VmRSS')\n"
        "m(x, y).backward()\n"
        "print(status('VmHWM') - base)"
    ) % (str(Path(__file__).parent), which)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    labels = torch.arange(B // 4).repeat_interleave(4).to(device)
    labels = labels[torch.randperm(B, device=device)]
    x = torch.randn(B, D, device=device)
    rows = []
    where = provenance(device=device_description(device))
    for name, (ours, theirs) in pairs(device).items():
        for _ in range(2):  # warm-up
            time_step(ours, x, labels, device)
            time_step(theirs, x, labels, device)
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):
            ours_t.append(time_step(ours, x, labels, device))
            theirs_t.append(time_step(theirs, x, labels, device))
        row = {
            **where,
            "loss": name,
            "B": B, "D": D,
            "C": C if name in ("proxy_nca", "cosface", "arcface", "center_vs_matrix_port") else "",
            "ours_ms": 1000 * statistics.median(ours_t),
            "baseline_ms": 1000 * statistics.median(theirs_t),
            "ratio": statistics.median(ours_t) / statistics.median(theirs_t),
            "baseline": "matrix center-loss port" if name.startswith("center") else "pytorch-metric-learning",
        }
        if name.startswith("center"):
            row["ours_peak_MB"] = peak_bytes("ours", device) / 2**20
            row["baseline_peak_MB"] = peak_bytes("matrix", device) / 2**20
        rows.append(row)
        print(f"{name:24s} ours {row['ours_ms']:8.2f} ms  baseline {row['baseline_ms']:8.2f} ms  "
              f"ratio {row['ratio']:.3f}")
    csv_path = args.out / "losses.csv"
    record_rows(csv_path, rows, args.out / "losses.md", "Loss forward+backward time vs pytorch-metric-learning",
                note="Produced by `python experiments/bench_losses.py`. Median of interleaved repeats; "
                     "ratio = ours / baseline (<= 1 means ours is no slower).")


if __name__ == "__main__":
    main()
