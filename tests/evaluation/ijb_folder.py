"""Writing IJB-format folders for tests, in the layout insightface distributes (see
:mod:`faceverify.data.ijb`): the same files, spelled the way the release spells them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class IJBSpec:
    """What a test release holds: ``images`` = (name, template, media); ``landmarks`` = name ->
    ([5, 2], detector score); ``pairs`` = (t1, t2, label); 1:N sets = [(template, subject, image)]."""

    images: list[tuple[str, int, int]]
    landmarks: dict[str, tuple[np.ndarray, float]]
    pairs: list[tuple[int, int, int]]
    galleries: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    probes: list[tuple[int, int, str]] | None = None


def write_ijb(root: Path, spec: IJBSpec, prefix: str = "ijbc") -> Path:
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (root / "loose_crop").mkdir(exist_ok=True)
    (meta / f"{prefix}_face_tid_mid.txt").write_text("".join(f"{n} {t} {m}\n" for n, t, m in spec.images))
    lines = []
    for name, (points, score) in spec.landmarks.items():
        lines.append(" ".join([name] + [f"{v:.3f}" for v in np.asarray(points).reshape(-1)] + [f"{score:.6f}"]))
    (meta / f"{prefix}_name_5pts_score.txt").write_text("\n".join(lines) + "\n")
    (meta / f"{prefix}_template_pair_label.txt").write_text("".join(f"{a} {b} {l}\n" for a, b, l in spec.pairs))
    header = "TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID\n"
    for name, rows in spec.galleries.items():
        (meta / f"{prefix}_1N_gallery_{name}.csv").write_text(
            header + "".join(f"{t},{s},img/{f},{i}\n" for i, (t, s, f) in enumerate(rows)))
    if spec.probes is not None:
        (meta / f"{prefix}_1N_probe_mixed.csv").write_text(
            header + "".join(f"{t},{s},img/{f},{i}\n" for i, (t, s, f) in enumerate(spec.probes)))
    return root


def toy_spec(n_subjects: int = 3, per_subject: int = 2) -> IJBSpec:
    """A tiny protocol: one image per template, every template pair."""
    images, landmarks = [], {}
    template_subject = {}
    for s in range(n_subjects):
        for k in range(per_subject):
            t = 10 * s + k + 1
            name = f"{len(images) + 1}.jpg"
            images.append((name, t, 100 + t))
            landmarks[name] = (np.array([[38, 52], [74, 52], [56, 72], [41, 92], [71, 92]], float), 0.99)
            template_subject[t] = s
    ids = sorted(template_subject)
    pairs = [(a, b, int(template_subject[a] == template_subject[b])) for i, a in enumerate(ids) for b in ids[i + 1:]]
    return IJBSpec(images, landmarks, pairs)
