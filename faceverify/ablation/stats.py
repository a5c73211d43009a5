"""The statistics an ablation report states: bootstrap confidence intervals and paired tests.

* :func:`bootstrap_ci`: the percentile interval of the mean over ``n`` resamples of the cells
  (Efron & Tibshirani 1993), seeded so a report regenerates identically.
* :func:`paired_comparison`: an arm against the reference on the same (fold, seed) cells — the
  mean difference, its bootstrap interval, the Wilcoxon signed-rank test's p-value, and a verdict
  that says "indistinguishable" whenever the interval covers 0, and "too few cells" below three
  pairs: a ranking the data cannot carry is never stated.
* :func:`holm`: Holm's step-down adjustment of a table's p-values (Holm 1979), so a reader sees
  which rank tests survive the number of comparisons the table makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import wilcoxon

# Fewer paired cells than this carry no usable interval (one or two differences bootstrap to their
# own range): the verdict says so instead of calling an arm better or worse.
MIN_PAIRS_FOR_VERDICT = 3


def bootstrap_ci(values: Sequence[float], resamples: int = 10_000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (NaNs dropped); ``(nan, nan)`` for none."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float
    low: float
    high: float
    p_value: float
    wins: int

    @property
    def verdict(self) -> str:
        if self.n == 0 or not np.isfinite(self.low):
            return "no paired cells"
        if self.n < MIN_PAIRS_FOR_VERDICT:
            return f"too few cells ({self.n} < {MIN_PAIRS_FOR_VERDICT})"
        if self.low <= 0.0 <= self.high:
            return "indistinguishable"
        return "better" if self.mean > 0 else "worse"


def paired_comparison(differences: Sequence[float], resamples: int = 10_000, seed: int = 0) -> Paired:
    """Statistics of per-cell differences (arm minus reference)."""
    d = np.asarray([v for v in differences if np.isfinite(v)], dtype=np.float64)
    if d.size == 0:
        return Paired(0, float("nan"), float("nan"), float("nan"), float("nan"), 0)
    low, high = bootstrap_ci(d, resamples, seed=seed)
    if np.all(d == 0):
        p = 1.0
    elif d.size < 2:
        p = float("nan")
    else:
        p = float(wilcoxon(d, zero_method="zsplit").pvalue)
    return Paired(int(d.size), float(d.mean()), low, high, p, int((d > 0).sum()))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm, Scand. J. Statist. 1979), in the input order.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the
    i-th is ``min(1, max_{j <= i} (m - j + 1) p_(j))``; rejecting where it is <= alpha controls the
    family-wise error rate at alpha. NaNs stay NaN and do not count in m."""
    values = np.asarray(p_values, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(values))
    adjusted = np.full(values.shape, np.nan)
    order = finite[np.argsort(values[finite], kind="stable")]
    m = order.size
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return [float(v) for v in adjusted]
