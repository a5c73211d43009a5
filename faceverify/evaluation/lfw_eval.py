"""LFW evaluation end to end: features (from a file or a network) -> protocol -> report files.

Two entry points share everything after feature extraction:

* :func:`evaluate_embeddings_file` reads ``EMB.npz`` (``paths``, ``embeddings`` and optionally
  ``embeddings_flip``), as written by ``faceverify baseline`` or any external tool;
* :func:`evaluate_embedder` embeds the pair images of an (aligned) LFW tree with any callable
  ``embed(batch) -> features``, e.g. a trained network.
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from faceverify.config import save_config
from faceverify.data.lfw import (
    PairsProtocol,
    identity_of_key,
    key_of_path,
    read_pairs,
    resolve_image_paths,
)
from faceverify.errors import InvalidInputError, MissingEntryError, MissingInputError
from faceverify.evaluation.embed import EmbedFn, combine_flip, embed_images
from faceverify.evaluation.quality import error_versus_reject, pair_quality
from faceverify.evaluation.report import markdown_report, plot_erc, plot_roc, write_json
from faceverify.evaluation.retrieval import recall_at_k
from faceverify.evaluation.verification import VerificationResult, evaluate_features
from faceverify.io import atomic_write, write_text
from faceverify.evaluation.options import EVAL_FLAGS, EvalConfig  # noqa: F401 - the options live there


@dataclass
class EmbeddingSet:
    """Features of images identified by LFW keys (``Name/Name_0001``)."""

    keys: list[str]
    embeddings: np.ndarray
    embeddings_flip: np.ndarray | None = None
    excluded: dict[str, str] = field(default_factory=dict)  # key -> status of rows left out (faceverify embed)
    quality: np.ndarray | None = None  # [N] a quality score per image (faceverify embed: the feature norm)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.keys):
            raise InvalidInputError(
                f"embeddings must be [N, D] with N = {len(self.keys)} paths, got {self.embeddings.shape}"
            )
        if self.embeddings_flip is not None and self.embeddings_flip.shape != self.embeddings.shape:
            raise InvalidInputError(
                f"embeddings_flip {self.embeddings_flip.shape} must match embeddings {self.embeddings.shape}"
            )
        for name, array in (("embeddings", self.embeddings), ("embeddings_flip", self.embeddings_flip)):
            if array is None:
                continue
            if not np.issubdtype(array.dtype, np.number):
                raise InvalidInputError(f"{name} must be numbers, got dtype {array.dtype}")
            bad = ~np.isfinite(array).all(axis=1)
            if bad.any():
                rows = np.flatnonzero(bad)
                raise InvalidInputError(f"{int(bad.sum())} {name} row(s) contain NaN or inf "
                                 f"(first: row {rows[0]}, {self.keys[rows[0]]})")
        seen: dict[str, int] = {}
        for row, key in enumerate(self.keys):
            if key in seen:
                raise InvalidInputError(f"two rows are the same image {key!r} (rows {seen[key]} and {row}, e.g. "
                                 "X.jpg and X.png); keep one embedding per image")
            seen[key] = row

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingSet":
        """Read ``paths`` (strings; UTF-8 bytes are decoded), ``embeddings`` and optionally
        ``embeddings_flip`` from an ``.npz``; anything else is a ValueError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(f"embeddings file {path} does not exist")
        if path.stat().st_size == 0:
            raise InvalidInputError(f"embeddings file {path} is empty (0 bytes)")
        try:
            with np.load(path, allow_pickle=False) as data:
                for required in ("paths", "embeddings"):
                    if required not in data:
                        raise InvalidInputError(f"{path} lacks the array {required!r} (has {sorted(data.files)})")
                raw_paths = data["paths"]
                embeddings = np.asarray(data["embeddings"])
                flip = np.asarray(data["embeddings_flip"]) if "embeddings_flip" in data else None
                status = np.asarray(data["status"]).astype(str) if "status" in data else None
                quality = np.asarray(data["quality"], dtype=np.float64) if "quality" in data else None
        except ValueError as err:
            if str(path) in str(err):
                raise
            raise InvalidInputError(f"cannot read embeddings file {path}: {err}") from None
        except (OSError, EOFError, KeyError, zipfile.BadZipFile) as err:  # zip damage, truncation
            raise InvalidInputError(f"cannot read embeddings file {path} (not a complete .npz): {err}") from None
        keys = _path_keys(raw_paths, path)
        if status is not None and status.shape != (len(keys),):
            raise InvalidInputError(f"{path}: status has {status.size} entries for {len(keys)} paths")
        if quality is not None and (quality.shape != (len(keys),) or not np.isfinite(quality).all()):
            raise InvalidInputError(f"{path}: quality must be {len(keys)} finite numbers, one per path, got shape "
                                    f"{quality.shape}")
        return cls.from_rows(keys, embeddings, flip, status, quality)

    @classmethod
    def from_rows(cls, keys: list[str], embeddings: np.ndarray, embeddings_flip: np.ndarray | None = None,
                  status: np.ndarray | list[str] | None = None,
                  quality: np.ndarray | None = None) -> "EmbeddingSet":
        """Rows of features with, optionally, each row's status: the rows not ``ok`` (the photos
        ``faceverify embed`` could not embed) are left out and kept in ``excluded`` with their status."""
        if status is None:
            return cls(keys, embeddings, embeddings_flip, quality=quality)
        keep = np.asarray(status) == "ok"
        excluded = {k: str(s) for k, s, ok in zip(keys, status, keep) if not ok}
        return cls([k for k, ok in zip(keys, keep) if ok], embeddings[keep],
                   None if embeddings_flip is None else embeddings_flip[keep], excluded,
                   None if quality is None else quality[keep])

    def save(self, path: str | Path, paths: list[str] | None = None) -> Path:
        """Write ``paths`` (default: the keys + ``.jpg``), ``embeddings`` and ``embeddings_flip``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "paths": np.array(paths if paths is not None else [k + ".jpg" for k in self.keys]),
            "embeddings": self.embeddings,
        }
        if self.embeddings_flip is not None:
            arrays["embeddings_flip"] = self.embeddings_flip
        if self.quality is not None:
            arrays["quality"] = self.quality
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **arrays)
        return path


def _path_keys(raw: np.ndarray, source: Path) -> list[str]:
    """Image keys of the ``paths`` array: strings, or bytes decoded as UTF-8."""
    if raw.ndim != 1:
        raise InvalidInputError(f"{source}: paths must be a 1-D array, got shape {raw.shape}")
    keys = []
    for i, item in enumerate(raw.tolist()):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInputError(f"{source}: paths[{i}] is bytes that are not UTF-8 text") from None
        if not isinstance(item, str) or not item:
            raise InvalidInputError(f"{source}: paths[{i}] must be a relative image path, got {item!r}")
        keys.append(key_of_path(item))
    return keys


def _pair_indices(keys: list[str], pairs: PairsProtocol,
                  excluded: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    row = {key: i for i, key in enumerate(keys)}
    missing = [k for k in pairs.keys if k not in row]
    if missing:
        excluded = excluded or {}
        shown = ", ".join(f"{k} ({excluded[k]})" if k in excluded else k for k in missing[:10])
        raise MissingEntryError(
            f"{len(missing)} image(s) of {pairs.source} have no embedding (first: {shown}); "
            "embed every image the pairs file references"
        )
    return (
        np.array([row[k] for k in pairs.keys_a], dtype=np.int64),
        np.array([row[k] for k in pairs.keys_b], dtype=np.int64),
    )


def evaluate_embeddings(
    embeddings: EmbeddingSet, pairs: PairsProtocol, config: EvalConfig
) -> tuple[dict, VerificationResult]:
    """Run the protocol and retrieval on a feature set -> ``(metrics dict, VerificationResult)``."""
    started = time.perf_counter()
    features = combine_flip(embeddings.embeddings, embeddings.embeddings_flip, config.flip)
    index_a, index_b = _pair_indices(embeddings.keys, pairs, embeddings.excluded)
    result = evaluate_features(
        features,
        index_a,
        index_b,
        pairs.same,
        pairs.fold,
        metric=config.metric,
        pca_dim=config.pca,
        subtract_mean=config.subtract_mean,
        far_targets=tuple(config.far_targets),
        test_folds=[f - 1 for f in config.folds] if config.folds else None,
        clip_pca=config.pca_clip,
    )
    labels = [identity_of_key(k) for k in embeddings.keys]
    # Recall@K needs identities: a .bin set's keys carry none (every key is "<set>/<index>")
    recall = (recall_at_k(features, labels, config.recall_ks, metric=config.metric)
              if config.recall_ks and len(set(labels)) > 1 else {})
    metrics = result.to_dict()
    if embeddings.quality is not None:  # how the errors fall as the lowest-quality pairs are set aside
        unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        cosine = np.einsum("ij,ij->i", unit[index_a], unit[index_b])
        metrics["erc"] = {**error_versus_reject(cosine, pairs.same, pair_quality(embeddings.quality, index_a, index_b),
                                                config.erc_fmr),
                          "quality": "feature norm", "score": "cosine"}
    metrics.update(
        recall_at_k=recall,
        flip=config.flip,
        pca=config.pca,
        subtract_mean=config.subtract_mean,
        n_images=len(embeddings.keys),
        feature_dim=int(features.shape[1]),
        seconds=time.perf_counter() - started,
    )
    return metrics, result


def write_outputs(
    metrics: dict, result: VerificationResult, out_dir: str | Path, config: EvalConfig, title: str
) -> Path:
    """``metrics.json``, ``report.md``, ``roc.png`` and the resolved ``config.yaml`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(metrics, out / "metrics.json")
    write_text(out / "report.md", markdown_report(metrics, title))
    far, tar = result.roc()
    plot_roc({f"{title} (AUC {result.auc:.4f})": (far, tar)}, out / "roc.png", title=title)
    if "erc" in metrics:
        plot_erc(metrics["erc"], out / "erc.png", title=f"{title}: error versus reject")
    save_config(config, out / "config.yaml")
    return out


def evaluate_embeddings_file(
    embeddings_path: str | Path,
    pairs_path: str | Path,
    out_dir: str | Path,
    config: EvalConfig | None = None,
    pairs: PairsProtocol | None = None,
) -> dict:
    """``faceverify eval --embeddings``: evaluate a saved feature file and write the report.
    ``pairs`` may be passed pre-read (e.g. a subset of folds of ``pairs_path``)."""
    config = config or EvalConfig()
    pairs = pairs if pairs is not None else read_pairs(pairs_path)
    embeddings = EmbeddingSet.load(embeddings_path)
    metrics, result = evaluate_embeddings(embeddings, pairs, config)
    metrics["source"] = {"embeddings": str(embeddings_path), "pairs": str(pairs_path)}
    write_outputs(metrics, result, out_dir, config, title=f"LFW {Path(pairs_path).name}")
    return metrics


def evaluate_embedder(
    embed: EmbedFn,
    lfw_root: str | Path,
    pairs_path: str | Path,
    out_dir: str | Path | None = None,
    config: EvalConfig | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    pairs: PairsProtocol | None = None,
    source: dict[str, str] | None = None,
) -> dict:
    """Embed the pair images of ``lfw_root`` with ``embed`` and evaluate (writes files if
    ``out_dir`` is given). ``pairs`` may be passed pre-read (e.g. a subset of folds); ``source``
    adds entries to the record of where the features came from (e.g. the checkpoint)."""
    config = config or EvalConfig()
    pairs = pairs if pairs is not None else read_pairs(pairs_path)
    keys = pairs.keys
    paths = resolve_image_paths(lfw_root, keys)
    features, features_flip = embed_images(
        embed,
        [paths[k] for k in keys],
        image_size=image_size,
        batch_size=config.batch_size,
        with_flip=config.flip != "none",
        device=device,
        num_workers=config.num_workers,
        progress=progress,
    )
    embeddings = EmbeddingSet(keys, features, features_flip, quality=np.linalg.norm(features, axis=1))
    metrics, result = evaluate_embeddings(embeddings, pairs, config)
    metrics["source"] = {"lfw": str(lfw_root), "pairs": str(pairs_path), **(source or {})}
    if out_dir is not None:
        write_outputs(metrics, result, out_dir, config, title=f"LFW {Path(pairs_path).name}")
        embeddings.save(Path(out_dir) / "embeddings.npz", [str(paths[k].relative_to(lfw_root)) for k in keys])
    return metrics
