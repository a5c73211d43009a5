"""The report's statistics: bootstrap intervals and the paired verdict."""

from __future__ import annotations

import numpy as np
import pytest

from faceverify.ablation.stats import bootstrap_ci, paired_comparison


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_cells():
    rng = np.random.default_rng(0)
    small = rng.normal(0.8, 0.02, 9)
    large = rng.normal(0.8, 0.02, 900)
    lo, hi = bootstrap_ci(small, seed=1)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(large, seed=1)
    assert (hi2 - lo2) < (hi - lo) / 5
    # the 95% interval of the mean of n normal values is about 2 * 1.96 * sd / sqrt(n) wide
    assert hi2 - lo2 == pytest.approx(2 * 1.96 * 0.02 / np.sqrt(900), rel=0.15)
    assert bootstrap_ci([0.5]) == (0.5, 0.5) and np.isnan(bootstrap_ci([])[0])
    assert bootstrap_ci(small, seed=1) == bootstrap_ci(small, seed=1)  # regenerates identically


def test_paired_verdicts_follow_the_interval():
    better = paired_comparison([0.02, 0.025, 0.018, 0.03, 0.022, 0.027, 0.02, 0.024, 0.021])
    assert better.verdict == "better" and better.low > 0 and better.wins == 9 and better.p_value < 0.01
    worse = paired_comparison([-0.2, -0.18, -0.21, -0.19, -0.22, -0.2, -0.17, -0.2, -0.23])
    assert worse.verdict == "worse" and worse.high < 0
    noise = paired_comparison([0.01, -0.012, 0.004, -0.003, 0.008, -0.01, 0.002, -0.006, 0.001])
    assert noise.verdict == "indistinguishable" and noise.low < 0 < noise.high and noise.p_value > 0.3
    assert paired_comparison([0.0, 0.0, 0.0]).p_value == 1.0
    assert paired_comparison([]).verdict == "no paired cells"
    # one or two cells, however large the difference, carry no interval: no verdict
    assert paired_comparison([27.8]).verdict == "too few cells (1 < 3)"
    assert paired_comparison([27.8, 25.0]).verdict == "too few cells (2 < 3)"
    assert paired_comparison([27.8, 25.0, 26.0]).verdict == "better"


def test_holm_adjusts_step_down_in_the_input_order():
    """Holm 1979 by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04,
    then made monotone (0.04 -> 0.06); a NaN stays NaN and does not count; nothing exceeds 1."""
    from faceverify.ablation.stats import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([float("nan"), 0.5, 0.6])
    assert np.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([1.0, 1.0])
    assert holm([]) == []
