"""The IARPA Janus benchmarks IJB-B and IJB-C in the layout insightface distributes them.

IJB-B: Whitelam et al., "IARPA Janus Benchmark-B Face Dataset", CVPR Workshops 2017.
IJB-C: Maze et al., "IARPA Janus Benchmark - C: Face Dataset and Protocol", ICB 2018.

::

    DIR/meta/<p>_face_tid_mid.txt          <image name> <template id> <media id>   one line per face image
    DIR/meta/<p>_template_pair_label.txt   <template id 1> <template id 2> <0|1>    the 1:1 protocol
    DIR/meta/<p>_name_5pts_score.txt       <image name> x1 y1 ... x5 y5 <score>      landmarks in loose-crop pixels
    DIR/meta/<p>_1N_gallery_<G>.csv        TEMPLATE_ID,SUBJECT_ID,...               1:N galleries (optional)
    DIR/meta/<p>_1N_probe_mixed.csv        TEMPLATE_ID,SUBJECT_ID,...               1:N probes (optional)
    DIR/loose_crop/<image name>

``<p>`` is ``ijbb`` (galleries S1, S2) or ``ijbc`` (galleries G1, G2), read from the files
present. The landmarks are joined to the images by name (insightface's script pairs the two files
line by line and assumes the same order). Every defect is an :class:`IJBFormatError` naming the
file and the line; nothing is dropped silently. Full IJB-C: 469,375 face images in 23,124
templates and 15,658,489 template pairs (19,557 genuine); IJB-B: 227,630 images, 12,115
templates, 8,010,270 pairs (10,270 genuine).
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceverify.errors import FaceverifyError, MissingInputError

BENCHMARKS: dict[str, str] = {"ijbb": "IJB-B", "ijbc": "IJB-C"}
META_FILE = re.compile(r"^(ijb[a-z])_(face_tid_mid\.txt|template_pair_label\.txt|name_5pts_score\.txt|"
                       r"1N_gallery_[A-Za-z0-9]+\.csv|1N_probe_mixed\.csv)$")


class IJBFormatError(FaceverifyError, ValueError):
    """An IJB meta file that cannot be read as the protocol defines it (the message names file and line)."""


@dataclass
class TemplateSubjects:
    """The templates of a 1:N gallery or probe set, one subject id each (``[T]`` int64 both)."""

    templates: np.ndarray
    subjects: np.ndarray


@dataclass
class IJBRelease:
    """One IJB benchmark as read from ``DIR`` (see the module docstring); arrays are per face image
    (``[N]``, ``[N, 5, 2]``) or per pair (``[P, 2]``, ``[P]``)."""

    root: Path
    prefix: str  # "ijbb" or "ijbc"
    images: np.ndarray  # [N] image names under loose_crop/
    templates: np.ndarray  # [N] int64 template id of each image
    medias: np.ndarray  # [N] int64 media id of each image
    landmarks: np.ndarray  # [N, 5, 2] float64, loose-crop pixels
    detector_scores: np.ndarray  # [N] float64
    pairs: np.ndarray  # [P, 2] int64 template ids
    labels: np.ndarray  # [P] int64, 1 = same subject
    galleries: dict[str, TemplateSubjects] = field(default_factory=dict)
    probes: TemplateSubjects | None = None
    unused_landmark_lines: int = 0  # landmark lines of images the template file does not list

    @property
    def name(self) -> str:
        return BENCHMARKS[self.prefix]

    @property
    def image_dir(self) -> Path:
        return self.root / "loose_crop"

    def meta(self, suffix: str) -> Path:
        return self.root / "meta" / f"{self.prefix}_{suffix}"


def find_prefix(root: Path) -> str:
    """``ijbb`` or ``ijbc``, from the meta files present; mixed or unknown prefixes are refused."""
    meta = root / "meta"
    if not meta.is_dir():
        raise MissingInputError(f"{root}: no meta/ folder; an IJB folder holds meta/<ijbb|ijbc>_face_tid_mid.txt, "
                                "_template_pair_label.txt, _name_5pts_score.txt and loose_crop/")
    found: dict[str, list[str]] = {}
    for path in sorted(meta.iterdir()):
        match = META_FILE.match(path.name)
        if match:
            found.setdefault(match.group(1), []).append(path.name)
    unknown = sorted(set(found) - set(BENCHMARKS))
    if unknown:
        raise IJBFormatError(f"{meta}: {found[unknown[0]][0]} has prefix {unknown[0]!r}; known: ijbb (IJB-B), "
                             "ijbc (IJB-C)")
    if len(found) > 1:
        raise IJBFormatError(f"{meta}: mixed IJB-B and IJB-C files ({found['ijbb'][0]}, {found['ijbc'][0]}); "
                             "keep one benchmark per folder")
    if not found:
        raise MissingInputError(f"{meta}: no IJB meta files (ijbc_face_tid_mid.txt or ijbb_face_tid_mid.txt, ...)")
    prefix = next(iter(found))
    for suffix in ("face_tid_mid.txt", "template_pair_label.txt", "name_5pts_score.txt"):
        if not (meta / f"{prefix}_{suffix}").is_file():
            raise MissingInputError(f"{meta}: {prefix}_{suffix} is missing (the 1:1 protocol needs it)")
    return prefix


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, whitespace fields) of every non-blank line."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [(number, line.split()) for number, line in enumerate(handle, 1) if line.strip()]


def _int(path: Path, number: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise IJBFormatError(f"{path} line {number}: {what} {text!r} is not an integer") from None


def _named_lines(path: Path, n_fields: int, expected: str):
    """(line number, fields) of each line of a file of ``n_fields`` fields per line, the first an
    image name; a line of another length (``expected`` says the form, ``{got}`` the count found) or
    an image named twice is refused."""
    seen: dict[str, int] = {}
    for number, fields in _lines(path):
        if len(fields) != n_fields:
            raise IJBFormatError(f"{path} line {number}: expected " + expected.format(got=len(fields)))
        name = fields[0]
        if name in seen:
            raise IJBFormatError(f"{path} line {number}: image {name} listed twice (first at line {seen[name]})")
        seen[name] = number
        yield number, fields


def read_template_media(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``<prefix>_face_tid_mid.txt`` -> (names [N], template ids [N], media ids [N])."""
    names, templates, medias = [], [], []
    for number, fields in _named_lines(path, 3, "'<image name> <template id> <media id>', got {got} field(s)"):
        names.append(fields[0])
        templates.append(_int(path, number, fields[1], "template id"))
        medias.append(_int(path, number, fields[2], "media id"))
    if not names:
        raise IJBFormatError(f"{path}: no images listed")
    return np.array(names), np.array(templates, np.int64), np.array(medias, np.int64)


def read_landmarks(path: Path) -> dict[str, tuple[np.ndarray, float]]:
    """``<prefix>_name_5pts_score.txt`` -> {image name: (landmarks [5, 2], detector score)}."""
    out: dict[str, tuple[np.ndarray, float]] = {}
    for number, fields in _named_lines(path, 12, "'<image name> x1 y1 ... x5 y5 <detector score>' (12 fields), got {got}"):
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            bad = next(v for v in fields[1:] if not _is_float(v))
            raise IJBFormatError(f"{path} line {number}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise IJBFormatError(f"{path} line {number}: landmarks and score must be finite numbers")
        out[fields[0]] = (np.array(values[:10], np.float64).reshape(5, 2), values[10])
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_pairs(path: Path, known_templates: np.ndarray, template_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """``<prefix>_template_pair_label.txt`` -> (template pairs [P, 2], labels [P]); every template
    must have an image in the template file. Fast path: numpy's C parser (15.7M lines in ~2 s); on
    any defect a line-by-line pass names the first bad line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty file: refused just below
            table = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
    except ValueError:
        table = None
    if table is None or (table.size and table.shape[1] != 3):
        _raise_first_bad_pair_line(path)
    if table.size == 0:
        raise IJBFormatError(f"{path}: no template pairs (the 1:1 protocol is empty)")
    labels = table[:, 2]
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise IJBFormatError(f"{path} line {_line_of_row(path, int(bad[0]))}: label {int(labels[bad[0]])} is not 0 or 1")
    pairs = np.ascontiguousarray(table[:, :2])
    missing = ~np.isin(pairs, known_templates)
    if missing.any():
        row, col = np.argwhere(missing)[0]
        raise IJBFormatError(f"{path} line {_line_of_row(path, int(row))}: template {int(pairs[row, col])} has no "
                             f"image in {template_file}")
    return pairs, labels.copy()


def _line_of_row(path: Path, row: int) -> int:
    """1-based line number of the ``row``-th (0-based) non-blank line."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        seen = -1
        for number, line in enumerate(handle, 1):
            if line.strip():
                seen += 1
                if seen == row:
                    return number
    return row + 1  # pragma: no cover - the row came from this file


def _raise_first_bad_pair_line(path: Path) -> None:
    for number, fields in _lines(path):
        if len(fields) != 3:
            raise IJBFormatError(f"{path} line {number}: expected '<template id 1> <template id 2> <0|1>', "
                                 f"got {len(fields)} field(s)")
        for text, what in zip(fields, ("template id", "template id", "label")):
            _int(path, number, text, what)
    raise IJBFormatError(f"{path}: cannot be read as '<template id 1> <template id 2> <0|1>' lines")  # pragma: no cover


def read_template_subjects(path: Path, known_templates: np.ndarray, template_file: Path) -> TemplateSubjects:
    """A 1:N csv (one row per image: TEMPLATE_ID, SUBJECT_ID, ...) -> its templates, one subject each."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        rows = [(number, row) for number, row in enumerate(csv.reader(handle), 1) if any(c.strip() for c in row)]
    if not rows:
        raise IJBFormatError(f"{path}: empty")
    header = [c.strip().upper() for c in rows[0][1]]
    if "TEMPLATE_ID" in header and "SUBJECT_ID" in header:
        t_col, s_col = header.index("TEMPLATE_ID"), header.index("SUBJECT_ID")
        rows = rows[1:]
    elif header and header[0].lstrip("-").isdigit():
        t_col, s_col = 0, 1  # no header: the first two columns, as the protocol orders them
    else:
        raise IJBFormatError(f"{path} line 1: the header has no TEMPLATE_ID and SUBJECT_ID columns")
    subject_of: dict[int, tuple[int, int]] = {}
    for number, row in rows:
        if len(row) <= max(t_col, s_col):
            raise IJBFormatError(f"{path} line {number}: {len(row)} column(s), TEMPLATE_ID and SUBJECT_ID need "
                                 f"{max(t_col, s_col) + 1}")
        template = _int(path, number, row[t_col].strip(), "TEMPLATE_ID")
        subject = _int(path, number, row[s_col].strip(), "SUBJECT_ID")
        first = subject_of.setdefault(template, (subject, number))
        if first[0] != subject:
            raise IJBFormatError(f"{path} line {number}: template {template} has subject {subject}, but "
                                 f"{first[0]} at line {first[1]}")
    if not subject_of:
        raise IJBFormatError(f"{path}: no templates listed")
    templates = np.array(sorted(subject_of), np.int64)
    missing = templates[~np.isin(templates, known_templates)]
    if missing.size:
        template = int(missing[0])
        raise IJBFormatError(f"{path} line {subject_of[template][1]}: template {template} has no image in "
                             f"{template_file}")
    return TemplateSubjects(templates, np.array([subject_of[int(t)][0] for t in templates], np.int64))


def read_ijb(root: str | Path) -> IJBRelease:
    """Read and check an IJB-B or IJB-C folder (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"IJB folder {root} does not exist")
    prefix = find_prefix(root)
    meta = root / "meta"
    tid_mid = meta / f"{prefix}_face_tid_mid.txt"
    names, templates, medias = read_template_media(tid_mid)
    marks_path = meta / f"{prefix}_name_5pts_score.txt"
    marks = read_landmarks(marks_path)
    absent = [name for name in names if name not in marks]
    if absent:
        raise IJBFormatError(f"{marks_path}: no landmarks for {len(absent)} image(s) of {tid_mid.name}, e.g. {absent[0]}")
    landmarks = np.stack([marks[name][0] for name in names])
    scores = np.array([marks[name][1] for name in names], np.float64)
    known = np.unique(templates)
    pairs, labels = read_pairs(meta / f"{prefix}_template_pair_label.txt", known, tid_mid)
    release = IJBRelease(root, prefix, names, templates, medias, landmarks, scores, pairs, labels,
                         unused_landmark_lines=len(marks) - len(names))
    galleries = sorted(meta.glob(f"{prefix}_1N_gallery_*.csv"))
    probe_path = meta / f"{prefix}_1N_probe_mixed.csv"
    if galleries and not probe_path.is_file():
        raise MissingInputError(f"{meta}: 1:N galleries ({galleries[0].name}) without {probe_path.name}")
    if probe_path.is_file():
        if not galleries:
            raise MissingInputError(f"{meta}: {probe_path.name} without a gallery ({prefix}_1N_gallery_*.csv)")
        release.probes = read_template_subjects(probe_path, known, tid_mid)
        for path in galleries:
            label = path.stem.split("_")[-1]
            release.galleries[label] = read_template_subjects(path, known, tid_mid)
    return release
