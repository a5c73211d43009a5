"""Open-set 1:N identification on IJB-B / IJB-C (Maze et al., "IARPA Janus Benchmark - C", ICB
2018, section on the 1:N protocol; the NIST FRVT definitions).

Each probe template is searched against one gallery (IJB-C: G1 or G2; IJB-B: S1 or S2), scored by
the cosine of the template features. A subject's score is the best score of its gallery
templates. A probe is **mated** when its subject is enrolled in that gallery, **non-mated**
otherwise (``probe_mixed`` holds both kinds: for gallery G1 the probes of G2's subjects are the
non-mated ones).

* **rank-k identification rate** (the CMC), over mated probes: the fraction whose subject is among
  the ``k`` best; rank = 1 + the number of other subjects scoring at least as high (ties count
  against the probe).
* **TPIR at FPIR** f: the threshold is set on the non-mated probes alone: FPIR(t) = the fraction
  of non-mated probes whose best gallery score is above t (an alarm). With ``a`` = the most false alarms f
  allows (the largest a with a / n_nonmated <= f), the threshold lies just above the (a+1)-th
  highest non-mated score; TPIR = the fraction of mated probes whose subject ranks first with a
  score above it. Counting FPIR over all probes, mated ones included (as insightface's first 1:N
  script did), mixes the two populations and is not the protocol's FPIR.
"""

from __future__ import annotations

import numpy as np

from faceverify.errors import InvalidInputError
from faceverify.evaluation.ijb_protocol import far_key

RANKS: tuple[int, ...] = (1, 5, 10)
FPIR_TARGETS: tuple[float, ...] = (1e-2, 1e-1)


def subject_scores(probes: np.ndarray, gallery: np.ndarray, gallery_subjects: np.ndarray,
                   chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Unit probe features ``[Q, D]`` against unit gallery features ``[G, D]`` -> (the gallery's
    sorted subject ids ``[S]``, each probe's best score per subject ``[Q, S]``)."""
    order = np.argsort(gallery_subjects, kind="stable")
    subjects, starts = np.unique(gallery_subjects[order], return_index=True)
    ordered = gallery[order]
    out = np.empty((len(probes), len(subjects)), np.float64)
    for start in range(0, len(probes), chunk):
        scores = probes[start : start + chunk] @ ordered.T
        out[start : start + chunk] = np.maximum.reduceat(scores, starts, axis=1)
    return subjects, out


def identification_metrics(probes: np.ndarray, probe_subjects: np.ndarray, gallery: np.ndarray,
                           gallery_subjects: np.ndarray, ranks: tuple[int, ...] = RANKS,
                           fpirs: tuple[float, ...] = FPIR_TARGETS) -> dict:
    """Rank-k rates and TPIR at FPIR of one gallery (see the module docstring)."""
    subjects, scores = subject_scores(probes, gallery, gallery_subjects)
    column = np.searchsorted(subjects, probe_subjects)
    mated = (column < len(subjects)) & (subjects[np.minimum(column, len(subjects) - 1)] == probe_subjects)
    if not mated.any():
        raise InvalidInputError("no probe's subject is in the gallery: rank-k rates are undefined")
    mate_score = scores[np.flatnonzero(mated), column[mated]]
    rank = (scores[mated] >= mate_score[:, None]).sum(axis=1)  # the mate itself counts once
    result: dict = {f"rank_{k}": float((rank <= k).mean()) for k in ranks}
    nonmated_best = np.sort(scores[~mated].max(axis=1))[::-1] if (~mated).any() else np.zeros(0)
    tpir: dict[str, float | None] = {}
    for fpir in fpirs:
        if len(nonmated_best) == 0:
            tpir[far_key(fpir)] = None  # no non-mated probe: FPIR is undefined
            continue
        n = len(nonmated_best)
        alarms = int(np.floor(fpir * n))
        while alarms + 1 <= n and (alarms + 1) / n <= fpir:  # floor in exact arithmetic
            alarms += 1
        while alarms > 0 and alarms / n > fpir:
            alarms -= 1
        threshold = -np.inf if alarms >= n else nonmated_best[alarms]
        tpir[far_key(fpir)] = float(((rank == 1) & (mate_score > threshold)).mean())
    result["tpir_at_fpir"] = tpir
    result.update(n_mated=int(mated.sum()), n_nonmated=int((~mated).sum()), n_gallery_subjects=len(subjects))
    return result


def mean_over_galleries(per_gallery: dict[str, dict]) -> dict:
    """The mean of each rate over the galleries (the number IJB tables report)."""
    first = next(iter(per_gallery.values()))
    mean: dict = {key: float(np.mean([g[key] for g in per_gallery.values()])) for key in first if key.startswith("rank_")}
    mean["tpir_at_fpir"] = {}
    for key in first["tpir_at_fpir"]:
        values = [g["tpir_at_fpir"][key] for g in per_gallery.values()]
        mean["tpir_at_fpir"][key] = None if any(v is None for v in values) else float(np.mean(values))
    return mean
