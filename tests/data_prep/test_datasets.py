"""LFW location, verification and download (network replaced by local files); CASIA overlap."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from data_prep.datasets import (
    DatasetError,
    casia_lfw_overlap,
    download_lfw,
    lfw_people_names,
    locate_lfw,
    verify_lfw,
)


def test_locate_and_verify_the_complete_lfw(lfw_dir: Path, monkeypatch):
    monkeypatch.setenv("FACEVERIFY_DATA", str(lfw_dir.parent))
    location = locate_lfw()
    assert location.images.name == "lfw-deepfunneled" and location.pairs.is_file()
    report = verify_lfw(location.images, lfw_dir / "manifests" / "lfw_deepfunneled_sha256.tsv")
    assert report == {"images": 13233, "people": 5749, "checksums_verified": 13233}


def test_incomplete_or_altered_lfw_is_reported(lfw_images: Path, lfw_dir: Path, tmp_path: Path):
    partial = tmp_path / "lfw-deepfunneled"
    for name in sorted(os.listdir(lfw_images))[:3]:
        shutil.copytree(lfw_images / name, partial / name)
    first = sorted(partial.rglob("*.jpg"))[0]
    first.write_bytes(first.read_bytes()[:-10])
    with pytest.raises(DatasetError) as info:
        verify_lfw(partial, lfw_dir / "manifests" / "lfw_deepfunneled_sha256.tsv")
    message = str(info.value)
    assert "people, LFW has 5749" in message and "differ from the manifest" in message
    assert "manifest images missing" in message


def test_locate_explains_where_it_looked(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("FACEVERIFY_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError, match="LFW not found"):
        locate_lfw()


def test_download_flow_with_local_files(lfw_dir: Path, lfw_images: Path, tmp_path: Path, monkeypatch):
    """scikit-learn's fetcher and the people-file request are served from local files: the
    real download code path runs, only the bytes come from disk."""
    import sklearn.datasets._lfw as sk_lfw

    names = ["Aaron_Peirsol", "Abel_Pacheco"]
    archive = tmp_path / "served" / "lfw-funneled.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name in names:
            tar.add(lfw_images / name, arcname=f"lfw_funneled/{name}")
    tiny_pairs = "1\t1\nAaron_Peirsol\t1\t2\nAaron_Peirsol\t1\tAbel_Pacheco\t1\n"

    def fake_fetch(remote, dirname, n_retries=3, delay=1):
        target = Path(dirname) / remote.filename
        if remote.filename.endswith(".tgz"):
            shutil.copy(archive, target)
        else:
            target.write_text(tiny_pairs if remote.filename == "pairs.txt" else "1\nAaron_Peirsol\t1\t2\n")
        return str(target)

    class FakeResponse(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(url, timeout=60):
        return FakeResponse((lfw_dir / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(sk_lfw, "_fetch_remote", fake_fetch)
    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    with pytest.raises(DatasetError, match="incomplete") as info:
        download_lfw(tmp_path / "home")
    assert "2 people" in str(info.value)
    home = tmp_path / "home" / "lfw_home"
    assert (home / "lfw_funneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").is_file()
    assert (home / "people.txt").read_bytes() == (lfw_dir / "people.txt").read_bytes()
    location = locate_lfw(home)
    assert location.images.name == "lfw_funneled"


def test_casia_overlap_matches_names_loosely(tmp_path: Path, lfw_dir: Path):
    names = tmp_path / "names.txt"
    names.write_text("0000045 Aaron_Eckhart\n0000099 Someone Else\n0000107 abel pacheco\n\n")
    overlap = casia_lfw_overlap(names, lfw_people_names(lfw_dir / "people.txt"))
    assert overlap == ["0000045", "0000107"]
    names.write_text("0000045\n")
    with pytest.raises(DatasetError, match="line 1"):
        casia_lfw_overlap(names, ["x"])
