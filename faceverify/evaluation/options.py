"""The options of ``faceverify eval`` (:class:`EvalConfig`), apart from the code that runs them, so
that the command line builds ``eval``'s flags without loading torch, scikit-learn or matplotlib."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from faceverify.config import check_range


@dataclass
class EvalConfig:
    """Options of the LFW evaluation (``faceverify eval``)."""

    metric: Literal["cosine", "euclidean"] = "cosine"
    flip: Literal["none", "concat", "sum"] = "none"
    pca: int = 0  # 0 = no PCA; else the dimension, fitted per fold on the nine training folds
    pca_clip: bool = False  # lower pca to min(training images, feature dim) instead of refusing
    subtract_mean: bool = False  # subtract the training folds' mean feature (per fold)
    folds: list[int] = field(default_factory=list)  # 1-based held-out folds to report; [] = all
    far_targets: list[float] = field(default_factory=lambda: [1e-3, 1e-2])
    recall_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    erc_fmr: float = 1e-3  # the false match rate the error-versus-reject curve holds fixed (quality scores)
    batch_size: int = 128  # network mode only
    num_workers: int = 0  # network mode only: image-decoding workers

    def __post_init__(self) -> None:
        check_range("pca", self.pca, 0)
        check_range("batch_size", self.batch_size, 1)
        check_range("num_workers", self.num_workers, 0)
        for far in self.far_targets:
            check_range("far_targets", far, 0, 1, strict_min=True, strict_max=True)
        for k in self.recall_ks:
            check_range("recall_ks", k, 1)
        check_range("erc_fmr", self.erc_fmr, 0, 1, strict_min=True, strict_max=True)


# `faceverify eval` flags: the EvalConfig fields that get one.
EVAL_FLAGS: dict[str, str] = {
    "metric": "cosine similarity or euclidean distance",
    "flip": "mirror features: none, concat (Wen et al.) or sum",
    "pca": "PCA dimension fitted per fold on the training folds (0 = none)",
    "subtract_mean": "subtract the training folds' mean feature",
    "folds": "report only these held-out folds, e.g. 1,2,3 (each fold's threshold still comes from all the other "
             "folds of the file)",
    "batch_size": "images per network batch (with --checkpoint)",
}
