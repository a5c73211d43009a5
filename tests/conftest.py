"""Shared fixtures. Data-dependent tests read ``$FACEVERIFY_DATA``.

On a developer machine without the data they skip with a message saying how to enable them.
CI sets ``FACEVERIFY_REQUIRE_DATA=1`` (see ``.ci/run``): then missing data is a failure, and
any skipped test at all turns the run red, because a green run that skipped tests is not green.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.pack import PackConfig, pack_aligned

REQUIRE_DATA = os.environ.get("FACEVERIFY_REQUIRE_DATA") == "1"
ENABLE_HINT = "set FACEVERIFY_DATA to the shared data folder (e.g. FACEVERIFY_DATA=../shared/data) to run it"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        message = f"{what} not found at {path}; {ENABLE_HINT}"
        if REQUIRE_DATA:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    value = os.environ.get("FACEVERIFY_DATA")
    if not value:
        message = f"this test needs real data; {ENABLE_HINT}"
        if REQUIRE_DATA:
            pytest.fail(message)
        pytest.skip(message)
    return _need(Path(value).resolve(), "FACEVERIFY_DATA folder")


@pytest.fixture(scope="session")
def lfw_dir(data_root: Path) -> Path:
    return _need(data_root / "lfw", "LFW protocol folder")


@pytest.fixture(scope="session")
def lfw_images(lfw_dir: Path) -> Path:
    return _need(lfw_dir / "lfw-deepfunneled", "LFW deep-funneled images")


@pytest.fixture(scope="session")
def faces_dir(data_root: Path) -> Path:
    return _need(data_root / "faces", "small face sets")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The user cache (RecordIO labels and indexes) in a folder of the test session, not in ~/.cache;
    subprocesses inherit it."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not REQUIRE_DATA:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        if reporter:
            reporter.write_line(f"FACEVERIFY_REQUIRE_DATA=1: {skipped} test(s) skipped; failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@dataclass(frozen=True)
class MiniLFW:
    """A small real LFW: 40 View 2 pairs (2 matched + 2 mismatched from each of the 10 folds, so
    the folds are LFW's), their photos, people.txt; and a training tree of 12 other LFW people
    (6 photos each, none in the pairs)."""

    root: Path  # pairs.txt, people.txt, lfw-deepfunneled/
    train_tree: Path  # <Name>/<Name>_NNNN.jpg, unaligned
    train_people: tuple[str, ...]

    @property
    def images(self) -> Path:
        return self.root / "lfw-deepfunneled"

    @property
    def pairs(self) -> Path:
        return self.root / "pairs.txt"


@pytest.fixture(scope="session")
def mini_lfw(lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> MiniLFW:
    from faceverify.data.lfw import read_pairs, read_people

    base = tmp_path_factory.mktemp("mini_lfw")
    root = base / "lfw"
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()
    chosen = ["10\t2"]
    for fold in range(10):
        start = 1 + 600 * fold
        chosen += lines[start : start + 2] + lines[start + 300 : start + 302]
    root.mkdir()
    (root / "pairs.txt").write_text("\n".join(chosen) + "\n")
    shutil.copy(lfw_dir / "people.txt", root / "people.txt")
    pairs = read_pairs(root / "pairs.txt")
    for key in pairs.keys:
        (root / "lfw-deepfunneled" / key.split("/")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(lfw_dir / "lfw-deepfunneled" / f"{key}.jpg", root / "lfw-deepfunneled" / f"{key}.jpg")
    in_pairs = {k.split("/")[0] for k in pairs.keys}
    people = read_people(lfw_dir / "people.txt")
    names = tuple(n for n, c in people[9].items() if c >= 6 and n not in in_pairs)[:12]
    tree = base / "train"
    for name in names:
        (tree / name).mkdir(parents=True)
        for i in range(1, 7):
            shutil.copy(lfw_dir / "lfw-deepfunneled" / name / f"{name}_{i:04d}.jpg", tree / name)
    return MiniLFW(root, tree, names)


# AT&T faces packed small, and an LFW-style tree + pairs file made from them (so checkpoint
# evaluation runs the real protocol code)
@pytest.fixture(scope="session")
def att_packed(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "att"
    pack_aligned(faces_dir / "att_faces", out, PackConfig(size="56x48"), progress=False)
    return out


@pytest.fixture(scope="session")
def att_as_lfw(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """AT&T subjects as an LFW-style tree ``sN/sN_000i.pgm`` and a 2-fold pairs file."""
    root = tmp_path_factory.mktemp("attlfw")
    tree = root / "images"
    for subject in sorted(os.listdir(faces_dir / "att_faces")):
        folder = faces_dir / "att_faces" / subject
        if not folder.is_dir():
            continue
        (tree / subject).mkdir(parents=True)
        for i in range(1, 11):
            shutil.copy(folder / f"{i}.pgm", tree / subject / f"{subject}_{i:04d}.pgm")
    lines = ["2\t20"]
    for fold in range(2):
        subjects = [f"s{n}" for n in range(1 + 20 * fold, 21 + 20 * fold)]
        lines += [f"{s}\t{1 + fold}\t{6 + fold}" for s in subjects]
        lines += [f"{s}\t{3}\t{subjects[(i + 1) % 20]}\t{8}" for i, s in enumerate(subjects)]
    pairs = root / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return tree, pairs


@pytest.fixture(scope="session")
def ijb_release(mini_lfw, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small IJB-C-format release from real LFW photos: 12 people, 36 templates of 1-3 photos (two
    of a 3-photo template share a media), MTCNN landmarks and scores, every template pair, 1:N
    galleries G1/G2 (one template per subject) and the other templates as mixed probes."""
    root = tmp_path_factory.mktemp("ijb") / "IJBC"
    (root / "loose_crop").mkdir(parents=True)
    from data_prep.detect import FaceDetector, choose_face
    from faceverify.data.images import read_rgb
    from tests.evaluation.ijb_folder import IJBSpec, write_ijb

    photos = [(s, p) for s, name in enumerate(mini_lfw.train_people) for p in sorted((mini_lfw.train_tree / name).iterdir())]
    detector = FaceDetector("cpu")
    images, landmarks, template_of = [], {}, {}
    found = detector.detect([read_rgb(p) for _, p in photos])
    for index, ((subject, path), detections) in enumerate(zip(photos, found)):
        name = f"{index + 1}.jpg"
        shutil.copy(path, root / "loose_crop" / name)
        chosen = choose_face(detections, (250, 250), "center")
        landmarks[name] = (detections.landmarks[chosen], float(detections.scores[chosen]))
        k = index % 6  # a subject's photos 0 | 1 2 | 3 4 5 -> templates of 1, 2 and 3 photos
        slot = 0 if k == 0 else (1 if k < 3 else 2)
        template = 100 * subject + slot + 1
        media = 1000 * template + (0 if k in (3, 4) else k)  # photos 3 and 4: one media (frames of a video)
        images.append((name, template, media))
        template_of[template] = subject
    ids = sorted(template_of)
    pairs = [(a, b, int(template_of[a] == template_of[b])) for i, a in enumerate(ids) for b in ids[i + 1:]]
    first = [t for t in ids if t % 100 == 1]
    galleries = {"G1": [(t, template_of[t], "x.jpg") for t in first if template_of[t] < 6],
                 "G2": [(t, template_of[t], "x.jpg") for t in first if template_of[t] >= 6]}
    probes = [(t, template_of[t], "x.jpg") for t in ids if t % 100 != 1]
    return write_ijb(root, IJBSpec(images, landmarks, pairs, galleries, probes))
