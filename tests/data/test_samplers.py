"""PK and shuffled batch samplers: composition, determinism, DDP sharding, resume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from faceverify.data.samplers import PKSampler, ShuffledBatchSampler

LABELS = np.repeat(np.arange(10), [5, 5, 5, 1, 2, 8, 3, 4, 6, 2])


def test_pk_batches_hold_p_identities_of_k_images():
    sampler = PKSampler(LABELS, p=4, k=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    seen = set()
    for batch in batches:
        counts = Counter(LABELS[batch].tolist())
        assert len(counts) == 4 and set(counts.values()) == {3}
        for identity in counts:
            ids = [i for i in batch if LABELS[i] == identity]
            pool = int((LABELS == identity).sum())
            if pool >= 3:
                assert len(set(ids)) == 3  # distinct images when there are enough
            seen.add(identity)
    assert len(seen) == 8  # every identity at most once per epoch


def test_pk_is_deterministic_and_changes_with_epoch():
    a = list(PKSampler(LABELS, 4, 3, seed=7))
    b = list(PKSampler(LABELS, 4, 3, seed=7))
    assert a == b
    s = PKSampler(LABELS, 4, 3, seed=7)
    s.set_epoch(1)
    assert list(s) != a


def test_pk_ranks_split_the_global_batch_by_identity():
    full = list(PKSampler(LABELS, 4, 2, seed=3))
    parts = [list(PKSampler(LABELS, 4, 2, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    for g, (r0, r1) in zip(full, zip(*parts)):
        assert r0 + r1 == g
        assert not set(LABELS[r0]) & set(LABELS[r1])
    with pytest.raises(ValueError, match="divide evenly"):
        PKSampler(LABELS, 3, 2, num_replicas=2)


def test_pk_resume_skips_trained_batches():
    s = PKSampler(LABELS, 2, 2, seed=0)
    s.set_epoch(2)
    whole = list(s)
    s.set_epoch(2, start_batch=3)
    assert list(s) == whole[3:]


def test_shuffled_sampler_shards_and_resumes():
    full = list(ShuffledBatchSampler(50, 10, seed=1))
    assert sorted(i for b in full for i in b) == list(range(50))
    r0 = list(ShuffledBatchSampler(50, 10, seed=1, num_replicas=2, rank=0))
    r1 = list(ShuffledBatchSampler(50, 10, seed=1, num_replicas=2, rank=1))
    assert [a + b for a, b in zip(r0, r1)] == full
    s = ShuffledBatchSampler(50, 10, seed=1)
    s.set_epoch(0, start_batch=2)
    assert list(s) == full[2:]
