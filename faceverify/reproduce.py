"""``faceverify reproduce RECIPE --train DATA --out DIR``: a published result, end to end, in one command.

1. **Recipe**: a name from ``faceverify/recipes/`` (e.g. ``casia_C_center``) or a YAML path, with
   its published targets and final evaluation protocol from ``faceverify/recipes/recipes.yaml``.
   On CUDA the defaults become bf16, channels_last and a periodic check of every benchmark; the
   ``key=value`` overrides come last.
2. **Training data** (:func:`prepare_training_data`), whatever form the researcher holds:

   * a RecordIO folder (``train.rec``: insightface's ``faces_webface_112x112``, ``faces_emore``,
     ...), trained on directly;
   * a packed folder (``faceverify pack``), used as it is;
   * an image tree: aligned with MTCNN into ``DIR/work`` unless it is one already (it holds the
     ``manifest.csv`` of ``faceverify align``), then packed; with a ``names.txt`` (CASIA-WebFace's,
     in the tree or given with ``--names``) the identities also in LFW are left out, by name.

   Derived data is keyed by what it was made from: the alignment refuses other settings and
   re-aligns changed photos, and the pack's folder name is a hash of the aligned manifest, the
   excluded identities and the pack settings, so a changed ``names.txt`` makes a new pack.
3. **Benchmarks** (:func:`prepare_benchmarks`): LFW from an image tree (only the pair images are
   aligned; ``lfw-deepfunneled``, ``lfw_funneled`` or ``lfw`` folders) and every ``.bin`` set in
   ``--bin-dir`` (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).
4. **Train** (resumable: re-run the same command), then **evaluate** the final checkpoint on every
   benchmark with the recipe's protocol, and write ``DIR/result.json`` and ``DIR/report.md``.
   ``complete`` is true only when the recipe ran as published: every iteration, no override
   that changes the result. ``--record DIR`` appends the row to ``DIR/reproduce.csv``.

Relative paths are taken from the working directory; everything is written under ``DIR``.
"""

from __future__ import annotations

from importlib import resources
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data_prep.datasets import casia_lfw_overlap, lfw_people_names
from faceverify.data.locate import locate_lfw
from data_prep.pack import PackConfig, pack_aligned
from data_prep.prepare import AlignConfig, align_tree
from faceverify.config import (
    ConfigError,
    changed_keys,
    from_dict,
    merge,
    merge_tree,
    parse_override,
    read_yaml,
    to_dict,
)
from faceverify.data.binsets import find_bins
from faceverify.data.ijb import read_ijb
from faceverify.data.lfw import read_pairs
from faceverify.data.packed import PackedFaces
from faceverify.data.recordio import is_recordio_folder
from faceverify.data.sources import open_training_data
from faceverify.config import parse_hw
from faceverify.errors import InvalidInputError, MissingInputError
from faceverify.evaluation.benchmarks import (
    Benchmark,
    benchmark_table,
    benchmarks_from,
    check_benchmarks,
    evaluate_benchmarks,
    summary,
)
from faceverify.evaluation.ijb_protocol import TestMode
from faceverify.evaluation.lfw_eval import EvalConfig
from faceverify.io import folder_overlap, read_json, write_json, write_text
from faceverify.provenance import device_description
from faceverify.results import provenance, record_rows
from faceverify.training.config import RESUME_NEUTRAL, TrainConfig
from faceverify.training.distributed import resolve_device
from faceverify.training.checkpoint_eval import load_backbone
from faceverify.training.stop import raise_if_stopped
from faceverify.training.trainer import train
from faceverify.use.ijb import evaluate_on_ijb
from faceverify.use.model import load_model
from faceverify.locks import lock_output

# the recipes ship inside the package (package data), so a non-editable `pip install .` has them
CONFIGS = Path(str(resources.files("faceverify") / "recipes"))
# Training images/s of the whole Trainer step on one H200 that issue 13 sets as targets; used for
# time estimates until results/gpu/train.csv holds measured figures.
H200_TARGET_IMAGES_PER_S = {"face_resnet27": 10_000, "sphere20": 10_000, "iresnet50": 5_000}
# Backbones without a target of their own: the iresnet50 target scaled by multiply-adds at 112x112
# (iresnet100 12.09 G against iresnet50 6.32 G: tests/models/test_backbones.py checks both).
H200_SCALED_TARGET = {"iresnet100": ("iresnet50", 6.32 / 12.09)}
# Keys that may differ from the recipe in a complete run: speed and monitoring only.
COMPLETE_NEUTRAL = RESUME_NEUTRAL + ("amp", "eval", "seed")


@dataclass
class Recipe:
    name: str
    config_path: Path
    reference: str = ""
    data: str = ""
    template: str = "112x96"
    published: dict[str, float] = field(default_factory=dict)
    published_ijb: dict[str, dict[str, float]] = field(default_factory=dict)  # ijbc -> {"1e-04": TAR, ...}
    eval: dict[str, Any] = field(default_factory=lambda: {"flip": "concat", "pca": 0})


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe by name (``faceverify/recipes/<name>.yaml``, shipped with the package) or by path,
    with its registry entry."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIGS / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "recipes" and not p.stem.startswith("ablation"))
        raise MissingInputError(f"no recipe {name_or_path!r}; known: {', '.join(known)} (or give a YAML path)")
    registry = read_yaml(CONFIGS / "recipes.yaml") if (CONFIGS / "recipes.yaml").is_file() else {}
    entry = registry.get(path.stem, {})
    unknown = set(entry) - {"reference", "data", "template", "published", "published_ijb", "eval"}
    if unknown:
        raise ConfigError(f"recipes.yaml entry {path.stem}: unknown keys {sorted(unknown)}")
    recipe = Recipe(path.stem, path.resolve(), **entry)
    if recipe.template not in ("112x96", "112x112"):
        raise ConfigError(f"recipes.yaml entry {path.stem}: template must be 112x96 or 112x112")
    return recipe


# ----------------------------------------------------------------------------- training data
@dataclass
class PreparedData:
    kind: str  # recordio, packed, tree (aligned here), aligned-tree
    source: Path  # what data.source points at
    images: int
    identities: int
    fingerprint: str
    lfw_identities_excluded: bool | None  # None: not applicable / could not be done
    notes: list[str] = field(default_factory=list)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def prepare_training_data(data: Path, work: Path, template: str, names: Path | None = None,
                          lfw_people: Path | None = None, device: str = "auto", progress: bool = True) -> PreparedData:
    """Make ``data`` trainable (see the module docstring) under ``work``; returns what was used."""
    data = data.resolve()
    if not data.is_dir():
        raise MissingInputError(f"--train {data} is not a folder")
    if is_recordio_folder(data) or (data / "meta.json").is_file():  # a stored form: opened as train opens it
        source = open_training_data(data, progress=progress)
        if isinstance(source, PackedFaces):
            return PreparedData("packed", data, len(source), source.num_classes, source.fingerprint,
                                source.meta.get("excluded_identities", 0) > 0 or None,
                                ["a packed folder is used as it is"])
        notes = ["LFW identities cannot be left out of a RecordIO set by name (it carries none); "
                 "insightface's packs are used as they circulate"]
        return PreparedData("recordio", data, len(source), source.num_classes, source.fingerprint, None, notes)
    notes: list[str] = []
    if (data / "manifest.csv").is_file():
        aligned, kind = data, "aligned-tree"
        summary_file = data / "summary.json"
        if summary_file.is_file():
            aligned_template = read_json(summary_file, "alignment summary").get("template")
            if aligned_template and aligned_template != template:
                raise ConfigError(f"{data} is aligned to {aligned_template}, the recipe needs {template}: align the "
                                  "photos again with --template " + template)
    else:
        aligned, kind = work / f"train-aligned-{template}", "tree"
        align_tree(data, aligned, AlignConfig(template=template, purpose="train", device=device), progress=progress)
    names = names if names is not None else (data / "names.txt" if (data / "names.txt").is_file() else None)
    excluded_file: Path | None = None
    excluded_ids: list[str] = []
    if names is not None:
        if lfw_people is None:
            raise MissingInputError("a names.txt was found but no LFW people.txt to compare it with: give --lfw "
                                    "(a folder with people.txt) or set FACEVERIFY_DATA")
        excluded_ids = casia_lfw_overlap(names, lfw_people_names(lfw_people))
        excluded_file = work / f"lfw-overlap-{_digest(*excluded_ids)}.txt"
        write_text(excluded_file, "".join(f"{i}\n" for i in excluded_ids))
        notes.append(f"{len(excluded_ids)} identities also in LFW left out (by name, from {names})")
    else:
        notes.append("no names.txt: identities also in LFW could not be left out by name")
    config = PackConfig(min_images=2, exclude_identities=str(excluded_file or ""))
    key = _digest((aligned / "manifest.csv").read_bytes(), *excluded_ids, json.dumps(to_dict(config), sort_keys=True)
                  .replace(str(excluded_file or ""), ""))
    pack = work / f"train-packed-{key}"
    if not (pack / "meta.json").is_file():
        pack_aligned(aligned, pack, config, progress=progress)
    packed = PackedFaces(pack)
    return PreparedData(kind, pack, len(packed), packed.num_classes, packed.fingerprint,
                        bool(excluded_ids) if names is not None else None, notes)


# ----------------------------------------------------------------------------- benchmarks
def prepare_benchmarks(lfw: Path | None, bin_dir: Path | None, template: str, work: Path, device: str = "auto",
                       progress: bool = True) -> tuple[list[Benchmark], Path | None]:
    """The benchmarks and LFW's people.txt (for the CASIA overlap), if an LFW folder was given."""
    lfw_tree = lfw_pairs = people = None
    bins = find_bins(bin_dir.resolve()) if bin_dir is not None else []
    check_benchmarks(benchmarks_from(bins=bins))  # every .bin read before LFW is aligned or anything trains
    if lfw is not None:
        location = locate_lfw(lfw.resolve())
        pairs = read_pairs(location.pairs)
        aligned = work / f"lfw-aligned-{template}"
        from faceverify.data.lfw import resolve_image_paths

        paths = resolve_image_paths(location.images, pairs.keys)
        needed = {str(paths[k].relative_to(location.images)) for k in pairs.keys}
        align_tree(location.images, aligned, AlignConfig(template=template, purpose="eval", device=device),
                   progress=progress, only=needed)
        lfw_tree, lfw_pairs = aligned, location.pairs
        people = location.people if location.people.is_file() else None
    benchmarks = benchmarks_from(lfw_tree, lfw_pairs, bins)
    if not benchmarks:
        raise ConfigError("no benchmark to evaluate on: give --lfw (an LFW folder) and/or --bin-dir (a folder of "
                          ".bin sets such as lfw.bin, cfp_fp.bin)")
    return benchmarks, people


# ----------------------------------------------------------------------------- time estimates
def measured_images_per_s(measured: Path, backbone: str) -> tuple[float, str] | None:
    """The best Trainer images/s of ``backbone`` in a GPU throughput CSV (``experiments/gpu_proof.py``'s
    ``train.csv``: ``model``, ``status``, ``trainer_images_per_s``; older rows: ``backbone``,
    ``images_per_s``), with the device that measured it, or None."""
    from faceverify.results import read_rows

    speeds = []
    for row in read_rows(measured):
        if (row.get("model") or row.get("backbone")) != backbone or row.get("status", "done") != "done":
            continue
        if not row.get("device", "cuda").startswith("cuda"):  # a CPU check of the script is no GPU figure
            continue
        value = row.get("trainer_images_per_s") or row.get("images_per_s")
        if value:
            speeds.append((float(value), row.get("device", "GPU")))
    return max(speeds) if speeds else None


def h200_estimate_hours(config: TrainConfig, measured: Path | None = None) -> tuple[float | None, str]:
    """Hours for the schedule on one H200, from a recorded GPU throughput CSV if given
    (``results/gpu/train.csv``, which only the checkout's scripts read: the library reads no
    repository folder), else the target throughput (said so), and the basis of the figure. A
    backbone without a figure of its own (iresnet100) is scaled by multiply-adds from its base's,
    measured or targeted."""
    images = config.optim.max_iters * config.data.batch_size
    backbone = config.model.backbone
    base, factor = H200_SCALED_TARGET.get(backbone, (backbone, 1.0))
    if measured is not None and measured.is_file():
        own = measured_images_per_s(measured, backbone)
        if own is not None:
            return images / own[0] / 3600, f"measured {own[0]:.0f} images/s ({own[1]})"
        from_base = measured_images_per_s(measured, base) if base != backbone else None
        if from_base is not None:
            speed = from_base[0] * factor
            return images / speed / 3600, (f"scaled by multiply-adds from the {base} speed measured on "
                                           f"{from_base[1]} ({speed:.0f} images/s)")
    target = H200_TARGET_IMAGES_PER_S.get(backbone)
    if target is None and backbone in H200_SCALED_TARGET:
        target = round(H200_TARGET_IMAGES_PER_S[base] * factor)
        return images / target / 3600, (f"estimate from the {base} target scaled by multiply-adds ({target} "
                                        "images/s), not measured")
    if target is None:
        return None, "no GPU throughput recorded or targeted for this backbone"
    return images / target / 3600, f"estimate from the {target} images/s target, not measured"


# ----------------------------------------------------------------------------- the command
def recipe_config(recipe: Recipe, overrides: list[str], cuda: bool) -> tuple[TrainConfig, TrainConfig]:
    """``(as published (+ CUDA defaults), as run with the overrides)``."""
    tree = read_yaml(recipe.config_path)
    if cuda:
        tree = merge_tree(tree, {"amp": "bf16", "channels_last": True})
    published = from_dict(TrainConfig, tree)
    for text in overrides:
        tree = merge_tree(tree, parse_override(text))
    return published, from_dict(TrainConfig, tree)


def run_reproduce(recipe_name: str | Path, train_data: Path, out: Path, lfw: Path | None = None,
                  bin_dir: Path | None = None, overrides: list[str] | None = None, names: Path | None = None,
                  record: Path | None = None, progress: bool = True, restart: bool = False,
                  ijb: Path | None = None) -> dict:
    """Prepare, train, evaluate and report one recipe into ``out`` (one reproduction per ``out``:
    a second one is refused while the first runs)."""
    out = Path(out).resolve()
    if folder_overlap(train_data, out) in ("same", "inside"):
        raise InvalidInputError(f"--out {out} lies in the training data {train_data}: the run would write among the data; "
                         "choose an --out outside it")
    with lock_output(out, "reproduce"):
        return _run_reproduce(recipe_name, train_data, out, lfw, bin_dir, overrides, names, record, progress, restart,
                              ijb)


def _run_reproduce(recipe_name: str | Path, train_data: Path, out: Path, lfw: Path | None, bin_dir: Path | None,
                   overrides: list[str] | None, names: Path | None, record: Path | None, progress: bool,
                   restart: bool, ijb: Path | None) -> dict:
    started = time.perf_counter()
    work = out / "work"
    recipe = load_recipe(recipe_name)
    published, config = recipe_config(recipe, overrides or [], torch.cuda.is_available())
    device = str(resolve_device(config.device))
    input_size = parse_hw(config.model.input) if config.model.input else parse_hw(recipe.template)
    print(f"recipe {recipe.name}: {recipe.reference or recipe.config_path}")
    release = read_ijb(ijb) if ijb is not None else None  # a damaged release fails before anything trains
    benchmarks, lfw_people = prepare_benchmarks(lfw, bin_dir, recipe.template, work, config.device, progress)
    data = prepare_training_data(Path(train_data), work, recipe.template, names, lfw_people, config.device, progress)
    print(f"training data: {data.kind}, {data.images} images of {data.identities} identities ({data.source})")
    print("benchmarks: " + ", ".join(b.name for b in benchmarks))
    run_changes: dict[str, Any] = {"out": str(out / "train"), "data": {"source": str(data.source)}}
    if torch.cuda.is_available() and not any(o.startswith("eval") for o in overrides or []):
        tree_set = next((b for b in benchmarks if b.kind == "tree"), None)
        run_changes["eval"] = {"every": min(2000, config.optim.max_iters),
                               "lfw": str(tree_set.path) if tree_set else "",
                               "pairs": str(tree_set.pairs) if tree_set else "",
                               "bins": [str(b.path) for b in benchmarks if b.kind == "bin"],
                               "best": "lfw" if tree_set else "mean"}
    config = merge(config, run_changes)
    published = merge(published, {"out": config.out, "data": {"source": config.data.source}})
    result = train(config, restart=restart)
    raise_if_stopped(result, config.optim.max_iters)  # stopped by the user: no evaluation, no report
    checkpoint = out / "train" / "checkpoints" / "last.pt"
    model, network_input, _ = load_backbone(checkpoint, device)
    if tuple(network_input) != tuple(input_size) and config.model.input:
        raise RuntimeError(f"the checkpoint takes {network_input}, the recipe {input_size}")
    # the recipe's protocol; PCA is lowered to what a small benchmark's training folds allow
    eval_config = merge(EvalConfig(), {**recipe.eval, "pca_clip": True})
    results = evaluate_benchmarks(model, benchmarks, eval_config, tuple(network_input), device, out / "eval",
                                  progress=progress, source={"checkpoint": str(checkpoint)})
    ijb_results = {}
    if release is not None:  # the papers' test mode, aligned from the release's landmarks
        metrics = evaluate_on_ijb(release, out / "eval" / release.prefix, TestMode(),
                                  model=load_model(checkpoint, device=device), progress=progress)
        ijb_results[release.prefix] = {key: metrics[key] for key in ("tar_at_far", "tar_at_far_insightface",
                                                                     "n_templates", "n_pairs", "test_mode")}
        ijb_results[release.prefix]["published"] = recipe.published_ijb.get(release.prefix, {})
    differences = changed_keys(to_dict(published), to_dict(config), ignore=COMPLETE_NEUTRAL)
    complete = result.step >= published.optim.max_iters and not differences
    hours, basis = h200_estimate_hours(published)
    report = {
        "recipe": recipe.name, "config": str(recipe.config_path), "reference": recipe.reference,
        "template": recipe.template, "complete": complete,
        "incomplete_because": ([f"ran {result.step} of {published.optim.max_iters} iterations"]
                               if result.step < published.optim.max_iters else []) + differences,
        "iterations": result.step, "recipe_iterations": published.optim.max_iters,
        "data": {"kind": data.kind, "source": str(data.source), "images": data.images,
                 "identities": data.identities, "fingerprint": data.fingerprint,
                 "lfw_identities_excluded": data.lfw_identities_excluded, "notes": data.notes},
        "benchmarks": {name: summary(metrics) for name, metrics in results.items()},
        "ijb": ijb_results, "published": recipe.published, "eval": to_dict(eval_config),
        "train_seconds": result.total_seconds, "total_seconds_this_run": time.perf_counter() - started,
        "h200_estimate_hours": hours, "h200_estimate_basis": basis,
        "overrides": list(overrides or []), "device": device_description(device), **provenance(device_description(device)),
    }
    write_json(out / "result.json", report)
    write_text(out / "report.md", render_report(report, results))
    print(benchmark_table(results, recipe.published), end="")
    print(f"{'complete' if complete else 'NOT complete (a smoke or altered run)'}: {out / 'result.json'}, "
          f"{out / 'report.md'}")
    if record is not None:
        record_row(report, Path(record))
    return report


def render_report(report: dict, results: dict[str, dict]) -> str:
    status = "complete (the recipe as published)" if report["complete"] else (
        "**not complete**: " + "; ".join(report["incomplete_because"]))
    lines = [f"# Reproduction: `{report['recipe']}`", "", f"{report['reference']}", "",
             f"Run: {status}. {report['iterations']} of {report['recipe_iterations']} iterations; training data "
             f"{report['data']['kind']} ({report['data']['images']} images of {report['data']['identities']} "
             f"identities); commit {report['commit']}, {report['device']}.", "",
             benchmark_table(results, report["published"]), ""]
    for prefix, ijb in report.get("ijb", {}).items():
        lines += [f"{prefix.upper()} 1:1, papers' test mode ({ijb['n_templates']} templates, {ijb['n_pairs']} pairs):", "",
                  "| FAR | TAR strict | TAR insightface rule | published |", "|---|---|---|---|"]
        for key, tar in ijb["tar_at_far"].items():
            paper = ijb["published"].get(key)
            lines.append(f"| {key} | {100 * tar:.2f}% | {100 * ijb['tar_at_far_insightface'][key]:.2f}% | "
                         f"{'' if paper is None else f'{100 * paper:.2f}%'} |")
        lines.append("")
    lines += [f"- {note}" for note in report["data"]["notes"]]
    return "\n".join(lines) + "\n"


def record_row(report: dict, results_dir: Path) -> Path:
    """Append the run to ``results_dir/reproduce.csv`` and regenerate ``reproduce.md`` (``--record DIR``;
    the checkout's ``results/reproduce`` for a result of this project)."""
    row: dict[str, Any] = {
        "recipe": report["recipe"], "complete": report["complete"], "iterations": report["iterations"],
        "recipe_iterations": report["recipe_iterations"], "data_kind": report["data"]["kind"],
        "train_images": report["data"]["images"], "train_identities": report["data"]["identities"],
        "data_fingerprint": report["data"]["fingerprint"],
        "lfw_identities_excluded": report["data"]["lfw_identities_excluded"],
        "train_hours": report["train_seconds"] / 3600, "overrides": " ".join(report["overrides"]),
    }
    for name, values in report["benchmarks"].items():
        row[f"{name}_accuracy"] = values["accuracy"]
        row[f"{name}_accuracy_std"] = values["accuracy_std"]
        row[f"{name}_auc"] = values["auc"]
    for prefix, ijb in report.get("ijb", {}).items():
        for key in ("1e-04", "1e-05"):
            row[f"{prefix}_tar_at_far_{key}"] = ijb["tar_at_far"][key]
    for name, value in report["published"].items():
        row[f"published_{name}"] = value
    row.update(commit=report["commit"], device=report["device"], time_utc=report["time_utc"])
    csv_path = results_dir / "reproduce.csv"
    record_rows(csv_path, [row], results_dir / "reproduce.md", "Reproductions",
                note="Rows appended by `faceverify reproduce ... --record`; `complete` is false for runs "
                     "shortened or changed by overrides (smoke runs), which are not results of the recipe.")
    return csv_path
