"""dlib baseline on a handful of real LFW pairs: separates them, caches and resumes.

The full run (all 7,701 pair images) is recorded in results/baselines/; here a subset keeps CI fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceverify.data.lfw import read_pairs, resolve_image_paths

pytest.importorskip("dlib", reason="install the baselines extra: pip install -e '.[baselines]'")

from faceverify.baselines.dlib_resnet import embed_lfw_with_dlib  # noqa: E402


def test_dlib_separates_real_pairs_and_resumes_from_cache(tmp_path: Path, lfw_dir: Path, lfw_images: Path):
    pairs = read_pairs(lfw_dir / "pairs.txt")
    chosen = list(range(0, 6)) + list(range(300, 306))  # 6 matched + 6 mismatched of fold 1
    keys = list(dict.fromkeys([pairs.keys_a[i] for i in chosen] + [pairs.keys_b[i] for i in chosen]))
    paths = resolve_image_paths(lfw_images, keys)
    rel = [str(paths[k].relative_to(lfw_images)) for k in keys]
    out = tmp_path / "emb.npz"
    first = embed_lfw_with_dlib(lfw_images, rel[:10], out, save_every=4, progress=False)
    assert first["embedded_this_run"] == 10
    summary = embed_lfw_with_dlib(lfw_images, rel, out, progress=False)
    assert summary["embedded_this_run"] == len(rel) - 10  # the first ten came from the cache
    with np.load(out) as data:
        emb = {p.rsplit(".", 1)[0]: e for p, e in zip(data["paths"], data["embeddings"])}
        assert data["embeddings_flip"].shape == data["embeddings"].shape == (len(rel), 128)
    distances = np.array([np.linalg.norm(emb[pairs.keys_a[i]] - emb[pairs.keys_b[i]]) for i in chosen])
    same = pairs.same[chosen]
    # dlib's documented decision rule: same person iff distance < 0.6
    assert np.mean((distances < 0.6) == same) >= 11 / 12
    assert distances[same].max() < distances[~same].min() + 0.1
