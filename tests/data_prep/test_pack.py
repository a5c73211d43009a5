"""Packing aligned crops: selection, exclusion, exact contents, batched memmap reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.pack import PackConfig, pack_aligned
from faceverify.cli import main
from faceverify.data.images import read_rgb
from faceverify.data.packed import PackedFaces


@pytest.fixture()
def aligned_tree(tmp_path: Path, faces_dir: Path) -> Path:
    """AT&T faces as an 'aligned' tree (no manifest): s1..s4, with s4 given only 2 images."""
    root = tmp_path / "aligned"
    for subject, count in (("s1", 5), ("s2", 5), ("s3", 5), ("s4", 2)):
        (root / subject).mkdir(parents=True)
        for i in range(1, count + 1):
            shutil.copy(faces_dir / "att_faces" / subject / f"{i}.pgm", root / subject / f"{i}.pgm")
    return root


def test_pack_selects_and_stores_exact_pixels(aligned_tree: Path, tmp_path: Path):
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# people also in the test set\ns2\n")
    out = tmp_path / "packed"
    meta = pack_aligned(aligned_tree, out, PackConfig(min_images=3, exclude_identities=str(exclude)),
                        progress=False)
    assert meta["n_images"] == 10 and meta["n_identities"] == 2
    assert meta["left_out_images"] == {"images_of_excluded_identities": 5,
                                       "images_of_identities_below_min_images": 2}
    data = PackedFaces(out)
    assert len(data) == 10 and data.num_classes == 2 and data.identities == ["s1", "s3"]
    assert data.image_size == (112, 92)
    image, label = data[7]
    assert label == 1 and image.dtype == torch.uint8 and image.shape == (112, 92, 3)
    paths = (out / "paths.txt").read_text().splitlines()
    assert paths[7] == "s3/3.pgm"
    np.testing.assert_array_equal(image.numpy(), read_rgb(aligned_tree / paths[7]))
    batch, labels, skipped = data.__getitems__([9, 0, 4, 9])
    assert skipped == []
    assert batch.shape == (4, 112, 92, 3) and labels.tolist() == [1, 0, 0, 1]
    for row, index in enumerate([9, 0, 4, 9]):
        np.testing.assert_array_equal(batch[row].numpy(), data[index][0].numpy())
    assert json.loads((out / "meta.json").read_text())["excluded_identities"] == 1


def test_pack_resizes_uses_the_manifest_and_never_overwrites(aligned_tree: Path, tmp_path: Path):
    manifest = aligned_tree / "manifest.csv"
    header = "src,dst,identity,status,reason,score,n_faces,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5,width,height,residual\n"
    rows = ["s1/1.jpg,s1/1.pgm,s1,ok" + ",," * 8,
            "s1/2.jpg,s1/2.pgm,s1,fallback" + ",," * 8,
            "s1/3.jpg,,s1,no_face" + ",," * 8,
            "s2/1.jpg,s2/1.pgm,s2,ok" + ",," * 8]
    manifest.write_text(header + "\n".join(r + "" for r in rows) + "\n")
    out = tmp_path / "small"
    meta = pack_aligned(aligned_tree, out, PackConfig(size="56x46", only_detected=True), progress=False)
    assert meta["n_images"] == 2 and meta["left_out_images"] == {"status_fallback": 1, "status_no_face": 1}
    assert PackedFaces(out).image_size == (56, 46)
    with pytest.raises(FileExistsError, match="already exists"):
        pack_aligned(aligned_tree, out, progress=False)
    assert not (tmp_path / "small.partial").exists()


def test_truncated_pack_is_detected(aligned_tree: Path, tmp_path: Path):
    out = tmp_path / "p"
    assert main(["pack", str(aligned_tree), str(out), "--min-images", "1"]) == 0
    with open(out / "images.u8", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(ValueError, match="truncated"):
        PackedFaces(out)
    with pytest.raises(FileNotFoundError, match="not a packed dataset"):
        PackedFaces(tmp_path)


def test_nothing_left_is_an_error(aligned_tree: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="nothing to pack"):
        pack_aligned(aligned_tree, tmp_path / "p", PackConfig(min_images=50), progress=False)
