"""Every standard verification benchmark through one protocol: LFW from an aligned tree and
``pairs.txt``, and insightface ``.bin`` sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A :class:`Benchmark` names a set and where it lives. :func:`evaluate_benchmark` embeds its images
with any ``embed(batch) -> features`` callable (a network in eval mode), fitted to the network's
input (``transforms.check_fit``: a 112x96 network gets the template crop of 112x112 crops), and
runs the exact k-fold protocol of :mod:`faceverify.evaluation.verification` — for ``.bin`` sets
on 10 consecutive folds (insightface's split, LFW's official folds for an ``lfw.bin`` built from
``pairs.txt``). :func:`benchmark_table` puts every set's accuracy ± std, AUC and TAR@FAR=1e-3 in
one Markdown table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from faceverify.data.binsets import read_bin
from faceverify.data.lfw import read_pairs
from faceverify.errors import InvalidInputError, IsAFolderError, MissingEntryError, MissingInputError
from faceverify.evaluation.embed import EmbedFn, embed_arrays
from faceverify.evaluation.lfw_eval import (
    EmbeddingSet,
    EvalConfig,
    evaluate_embedder,
    evaluate_embeddings,
    write_outputs,
)
from faceverify.io import write_json, write_text


@dataclass(frozen=True)
class Benchmark:
    """``name`` (``lfw`` for a tree, the file stem for a ``.bin``), ``kind`` and location."""

    name: str
    kind: Literal["tree", "bin"]
    path: Path  # the aligned tree, or the .bin file
    pairs: Path | None = None  # the pairs file of a tree

    def describe(self) -> str:
        return f"{self.name} ({self.path}{', ' + str(self.pairs) if self.pairs else ''})"


def benchmarks_from(lfw_tree: str | Path | None = None, lfw_pairs: str | Path | None = None,
                    bins: Sequence[str | Path] = ()) -> list[Benchmark]:
    """The benchmarks of an aligned LFW tree (named ``lfw``) and ``.bin`` files; names must differ
    (an ``lfw.bin`` beside an LFW tree is named ``lfw_bin``)."""
    out: list[Benchmark] = []
    if lfw_tree:
        if not lfw_pairs:
            raise InvalidInputError("an LFW tree needs its pairs file")
        out.append(Benchmark("lfw", "tree", Path(lfw_tree), Path(lfw_pairs)))
    for path in bins:
        path = Path(path)
        name = path.stem
        if any(b.name == name for b in out):
            name = f"{name}_bin"
        if any(b.name == name for b in out):
            raise InvalidInputError(f"two benchmarks are named {name!r}: {path}")
        out.append(Benchmark(name, "bin", path))
    return out


def check_benchmarks(benchmarks: Sequence[Benchmark]) -> None:
    """Read every benchmark before any is embedded (and, in ``train`` and ``reproduce``, before
    training starts), so that one bad set fails the command before the others cost anything: a
    tree needs its folder and a readable pairs file; a ``.bin`` must be a file (a folder goes to
    ``--bin-dir``) that reads as a verification set."""
    for benchmark in benchmarks:
        if benchmark.kind == "tree":
            if not benchmark.path.is_dir():
                raise MissingInputError(f"LFW tree {benchmark.path} does not exist")
            read_pairs(benchmark.pairs)
        elif benchmark.path.is_dir():
            raise IsAFolderError(f"--bin {benchmark.path} is a folder; give the .bin files in it (--bin "
                                    f"{benchmark.path}/*.bin)")
        else:
            read_bin(benchmark.path)


@torch.no_grad()
def evaluate_benchmark(
    embed: EmbedFn,
    benchmark: Benchmark,
    config: EvalConfig,
    image_size: tuple[int, int],
    device: torch.device | str = "cpu",
    out_dir: str | Path | None = None,
    progress: bool = True,
    source: dict[str, str] | None = None,
) -> dict:
    """Metrics of one benchmark (and its report files in ``out_dir`` if given)."""
    if benchmark.kind == "tree":
        pairs = read_pairs(benchmark.pairs)
        return evaluate_embedder(embed, benchmark.path, benchmark.pairs, out_dir, config, image_size=image_size,
                                 device=device, progress=progress, pairs=pairs,
                                 source={"benchmark": benchmark.name, **(source or {})})
    binset = read_bin(benchmark.path)
    images = binset.decode_all()
    features, flipped = embed_arrays(embed, images, image_size=image_size, batch_size=config.batch_size,
                                     with_flip=config.flip != "none", device=device, progress=progress)
    embeddings = EmbeddingSet(binset.keys(), features, flipped)
    metrics, result = evaluate_embeddings(embeddings, binset.pairs(), config)
    metrics["source"] = {"benchmark": benchmark.name, "bin": str(benchmark.path), **(source or {})}
    metrics["folds_note"] = (f"{binset.n_folds} consecutive folds" if binset.n_pairs >= 10 else
                             f"only {binset.n_pairs} pairs: {binset.n_folds} folds of one pair each")
    metrics["image_size"] = list(images.shape[1:3])
    if out_dir is not None:
        write_outputs(metrics, result, out_dir, config, title=f"{benchmark.name} ({benchmark.path.name})")
    return metrics


def evaluate_benchmarks(embed: EmbedFn, benchmarks: Sequence[Benchmark], config: EvalConfig,
                        image_size: tuple[int, int], device: torch.device | str = "cpu",
                        out_dir: str | Path | None = None, progress: bool = True,
                        source: dict[str, str] | None = None) -> dict[str, dict]:
    """``{name: metrics}`` of every benchmark; with ``out_dir``, each set's report in
    ``out_dir/<name>/`` and the table of all in ``out_dir/benchmarks.md`` / ``benchmarks.json``."""
    check_benchmarks(benchmarks)
    results: dict[str, dict] = {}
    for benchmark in benchmarks:
        target = Path(out_dir) / benchmark.name if out_dir is not None else None
        results[benchmark.name] = evaluate_benchmark(embed, benchmark, config, image_size, device, target,
                                                     progress, source)
    if out_dir is not None:
        write_json(Path(out_dir) / "benchmarks.json", {name: summary(m) for name, m in results.items()})
        write_text(Path(out_dir) / "benchmarks.md", "# Verification benchmarks\n\n" + benchmark_table(results))
    return results


def summary(metrics: dict) -> dict:
    """The numbers a results row keeps of one benchmark."""
    return {
        "accuracy": metrics["accuracy"], "accuracy_std": metrics["accuracy_std"], "auc": metrics["auc"],
        "tar_at_far_1e-3": metrics["tar_at_far"].get(repr(1e-3), float("nan")), "n_pairs": metrics["n_pairs"],
        "n_folds": metrics["n_folds"],
    }


def benchmark_table(results: dict[str, dict], published: dict[str, float] | None = None) -> str:
    """One Markdown row per benchmark: accuracy ± std, AUC, TAR@FAR=1e-3 (and the published accuracy)."""
    published = published or {}
    header = "| benchmark | pairs | folds | accuracy % | ± std | AUC | TAR@FAR=1e-3 % |"
    rule = "|---|---|---|---|---|---|---|"
    if published:
        header += " published % |"
        rule += "---|"
    lines = [header, rule]
    notes = []
    for name, metrics in results.items():
        row = summary(metrics)
        line = (f"| {name} | {row['n_pairs']} | {row['n_folds']} | {100 * row['accuracy']:.2f} | "
                f"{100 * row['accuracy_std']:.2f} | {_shown(row['auc'], 1, 4)} | "
                f"{_shown(row['tar_at_far_1e-3'], 100, 2)} |")
        if metrics.get("undefined"):
            notes.append(f"{name}: {metrics['undefined']}")
        if published:
            value = published.get(name)
            line += f" {100 * value:.2f} |" if value is not None else " |"
        lines.append(line)
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)


def _shown(value: float | None, scale: float, digits: int) -> str:
    """A table cell: the value, or "undefined" (NaN in memory, null once written as JSON)."""
    if value is None or not np.isfinite(value):
        return "undefined"
    return f"{scale * value:.{digits}f}"


def evaluate_embeddings_on_bins(embeddings_path: str | Path, bins: Sequence[str | Path], config: EvalConfig,
                                out_dir: str | Path) -> dict[str, dict]:
    """``.bin`` sets scored from a saved embeddings file whose ``paths`` name the images as
    ``<set>/<index>`` (e.g. ``lfw/000017``), the keys :meth:`BinSet.keys` uses."""
    embeddings = EmbeddingSet.load(embeddings_path)
    row = {key: i for i, key in enumerate(embeddings.keys)}
    benchmarks = benchmarks_from(bins=bins)
    check_benchmarks(benchmarks)
    sets = []
    for benchmark in benchmarks:  # every set is checked against the file before any is scored
        binset = read_bin(benchmark.path)
        keys = binset.keys()
        missing = [k for k in keys if k not in row]
        if missing:
            first = missing[0]
            why = (f"its row there has status {embeddings.excluded[first]!r}" if first in embeddings.excluded else
                   "no row names it")
            raise MissingEntryError(f"{embeddings_path} lacks {len(missing)} image(s) of {benchmark.path} (first: {first}: "
                           f"{why}); name them <set>/<index>, e.g. lfw/000000")
        sets.append((benchmark, binset, keys))
    results: dict[str, dict] = {}
    for benchmark, binset, keys in sets:
        index = np.array([row[k] for k in keys])
        subset = EmbeddingSet(keys, embeddings.embeddings[index],
                              None if embeddings.embeddings_flip is None else embeddings.embeddings_flip[index])
        metrics, result = evaluate_embeddings(subset, binset.pairs(), config)
        metrics["source"] = {"benchmark": benchmark.name, "bin": str(benchmark.path),
                             "embeddings": str(embeddings_path)}
        write_outputs(metrics, result, Path(out_dir) / benchmark.name, config,
                      title=f"{benchmark.name} ({benchmark.path.name})")
        results[benchmark.name] = metrics
    write_json(Path(out_dir) / "benchmarks.json", {name: summary(m) for name, m in results.items()})
    write_text(Path(out_dir) / "benchmarks.md", "# Verification benchmarks\n\n" + benchmark_table(results))
    return results
