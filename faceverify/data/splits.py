"""Identity splits of a training set: the identities held out for validation, and the pairs drawn
among them. Pure functions over labels, so that ``train`` (``data.holdout_fraction``) and the
ablation's trials (``tuning.holdout_fraction``) hold out exactly the same people from one seed.
"""

from __future__ import annotations

import numpy as np

from faceverify.errors import InvalidInputError


def holdout_identities(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted label values of the identities (with two or more images) set aside for validation."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    eligible = values[counts >= 2]
    count = max(2, int(round(fraction * eligible.size)))
    if eligible.size < 3:
        raise InvalidInputError("a validation hold-out needs at least three identities with two or more images")
    rng = np.random.default_rng([seed, 7919])
    return np.sort(rng.choice(eligible, size=min(count, eligible.size - 1), replace=False))


def validation_pairs(labels: np.ndarray, identities: np.ndarray, per_class: int = 300,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(index_a, index_b, same)`` of ``per_class`` matched and as many mismatched pairs of dataset
    rows among ``identities`` (at most what they allow), drawn from one seed."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 104729])
    members = {int(c): np.flatnonzero(labels == c) for c in identities}
    classes = [c for c, rows in members.items() if rows.size >= 2]
    matched = [tuple(rng.choice(members[c], 2, replace=False)) for c in rng.choice(classes, per_class)]
    mismatched = []
    for _ in range(per_class):
        c1, c2 = rng.choice(classes, 2, replace=False)
        mismatched.append((rng.choice(members[c1]), rng.choice(members[c2])))
    pairs = np.array(matched + mismatched, dtype=np.int64)
    return pairs[:, 0], pairs[:, 1], np.array([True] * len(matched) + [False] * len(mismatched))
