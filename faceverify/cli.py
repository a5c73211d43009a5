"""``faceverify`` command line: parse arguments, call the library, print where outputs went."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from faceverify.config import ConfigError, dump_yaml, load_config, merge, tagged_dict


class UsageError(ValueError):
    """A command-line mistake; reported in one line with exit status 2, like every input error."""


def _parse_folds(text: str | None, n_folds: int) -> list[int] | None:
    """``"1,2,3"`` -> ``[1, 2, 3]`` (1-based), each fold of the pairs file, none twice."""
    if not text:
        return None
    try:
        folds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--folds expects comma-separated fold numbers 1..{n_folds}, got {text!r}") from None
    if not folds:
        raise UsageError(f"--folds expects fold numbers 1..{n_folds}, got {text!r}")
    outside = [f for f in folds if not 1 <= f <= n_folds]
    if outside:
        raise UsageError(f"--folds {text}: fold(s) {', '.join(map(str, outside))} do not exist; "
                         f"the pairs file has folds 1..{n_folds}")
    repeated = sorted({f for f in folds if folds.count(f) > 1})
    if repeated:
        raise UsageError(f"--folds {text}: fold(s) {', '.join(map(str, repeated))} given more than once")
    return folds


def _print_metrics(metrics: dict, out: Path) -> None:
    acc, std = 100 * metrics["accuracy"], 100 * metrics["accuracy_std"]
    print(f"LFW accuracy {acc:.2f}% ± {std:.2f} over {metrics['n_folds']} fold(s), "
          f"AUC {metrics['auc']:.4f}, EER {100 * metrics['eer']:.2f}%")
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'roc.png'}")


# ----------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a backbone with the configured loss terms (resumes from OUT/checkpoints/last.pt)",
        description="Train from a packed dataset. CONFIG is a YAML of TrainConfig changes; key=value "
        "arguments override it (e.g. optim.max_iters=1000 loss.terms='{softmax: 1, center: 0.003}'). "
        "Multi-GPU / multi-process: torchrun --nproc_per_node N -m faceverify.cli train CONFIG.",
    )
    p.add_argument("config", type=Path, nargs="?", help="YAML with TrainConfig changes")
    p.add_argument("overrides", nargs="*", help="key=value overrides of TrainConfig")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (YAML that loads back to it) and exit without training")
    p.add_argument("--restart", action="store_true",
                   help="move an existing run in OUT aside (to OUT.old-<time>, nothing is deleted) and start over")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from faceverify.training.config import TrainConfig
    from faceverify.training.trainer import train

    overrides = list(args.overrides)
    if args.config is not None and "=" in str(args.config) and not args.config.is_file():
        overrides.insert(0, str(args.config))  # only overrides were given
        args.config = None
    config = load_config(TrainConfig, args.config, overrides)
    if args.print_config:
        print(dump_yaml(tagged_dict(config)), end="")
        return 0
    result = train(config, restart=args.restart)
    state = "stopped by signal; re-run the same command to resume" if result.stopped_by_signal else "finished"
    print(f"{state} at step {result.step} ({result.images_per_second:.0f} images/s); outputs in {result.out_dir}")
    return 0


# ----------------------------------------------------------------------------- ablate
def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="train and evaluate a grid of loss arms x seeds x held-out LFW folds (resumable)",
        description="Run an ablation spec (YAML of AblationSpec fields, see experiments/configs/). "
        "Finished cells are skipped; tables and plots are regenerated after each cell.",
    )
    p.add_argument("spec", type=Path)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the spec, e.g. folds=[1]")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved spec and every arm's resolved loss and optimiser settings, then exit")
    p.set_defaults(func=_run_ablate)


def _run_ablate(args: argparse.Namespace) -> int:
    from faceverify.ablation.runner import run_ablation
    from faceverify.ablation.spec import load_spec, resolved_arms

    spec = load_spec(args.spec, args.overrides)
    if args.print_config:
        print(dump_yaml({"spec": tagged_dict(spec), "resolved_arms": resolved_arms(spec)}), end="")
        return 0
    csv_path = run_ablation(spec)
    print(f"results: {csv_path} and {csv_path.with_suffix('.md')}")
    return 0


# ----------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end to end: locate LFW, align what is needed, train softmax + center, evaluate a held-out fold",
    )
    p.add_argument("--lfw", help="LFW folder (default: $FACEVERIFY_DATA/lfw or a previous download)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--fold", type=int, default=1, help="held-out View 2 fold (1..10)")
    p.add_argument("--profile", choices=["cpu", "gpu"], help="default: gpu when CUDA is available")
    p.add_argument("--download-to", type=Path, default=Path.home() / "scikit_learn_data",
                   help="where to download LFW if it is not found")
    p.add_argument("--max-iters", type=int, default=0, help="shorter training (0 = the profile's)")
    p.add_argument("--record", type=Path, help="also append the timing row to DIR/demo.csv")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from faceverify.demo import run_demo

    if not 1 <= args.fold <= 10:
        raise UsageError(f"--fold {args.fold}: held-out folds are 1..10")
    if args.max_iters < 0:
        raise UsageError(f"--max-iters must be >= 0 (0 = the profile's), got {args.max_iters}")

    run_demo(args.lfw, args.out, args.fold, args.profile, args.download_to, args.record, args.max_iters)
    return 0


# ----------------------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="10-fold verification (LFW tree and/or .bin sets) of an embeddings file or a trained checkpoint",
        description="Evaluate with the k-fold protocol. Give --embeddings EMB.npz, or --checkpoint CKPT; "
        "the benchmarks are an aligned LFW tree (--lfw, with --checkpoint) with its --pairs, and/or "
        "insightface .bin sets (--bin lfw.bin cfp_fp.bin ...). Extra arguments key=value override "
        "EvalConfig fields.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", type=Path, help="npz with paths, embeddings[, embeddings_flip]")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by faceverify train")
    p.add_argument("--lfw", type=Path, help="aligned LFW tree (with --checkpoint)")
    p.add_argument("--bin", type=Path, nargs="+", metavar="FILE",
                   help=".bin verification sets (10 consecutive folds each); with --embeddings the npz names "
                   "their images <set>/<index>")
    p.add_argument("--pairs", type=Path, help="pairs file (default $FACEVERIFY_DATA/lfw/pairs.txt)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--metric", choices=["cosine", "euclidean"])
    p.add_argument("--flip", choices=["none", "concat", "sum"])
    p.add_argument("--pca", type=int, help="PCA dimension fitted per fold on the training folds")
    p.add_argument("--subtract-mean", action="store_true", default=None, help="subtract the training folds' mean")
    p.add_argument("--folds", help="report only these held-out folds, e.g. 1,2,3 (each fold's threshold "
                   "still comes from all the other folds of the file)")
    p.add_argument("--device", default=None, help="with --checkpoint: cpu, cuda, cuda:1 ...")
    p.add_argument("--config", type=Path, help="YAML with EvalConfig changes")
    p.add_argument("overrides", nargs="*", help="key=value overrides of EvalConfig")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from faceverify.data.lfw import read_pairs
    from faceverify.data.locate import lfw_protocol_dir
    from faceverify.evaluation.lfw_eval import EvalConfig, evaluate_embeddings_file
    from faceverify.io import check_writable_dir

    config = load_config(EvalConfig, args.config, args.overrides)
    check_writable_dir(args.out, "--out")
    flags = {k: v for k, v in {
        "metric": args.metric, "flip": args.flip, "pca": args.pca, "subtract_mean": args.subtract_mean,
    }.items() if v is not None}
    config = merge(config, flags)
    if args.bin:
        return _run_eval_bins(args, config)
    pairs_path = args.pairs or lfw_protocol_dir() / "pairs.txt"
    pairs = read_pairs(pairs_path)
    folds = _parse_folds(args.folds, pairs.n_folds)
    if folds is not None:
        config = merge(config, {"folds": folds})
    if args.checkpoint is not None:
        from faceverify.training.evaluate import evaluate_checkpoint

        if args.lfw is None:
            raise UsageError("--checkpoint needs --lfw ALIGNED_LFW_DIR")
        metrics = evaluate_checkpoint(
            args.checkpoint, args.lfw, pairs_path, args.out, config, device=args.device, pairs=pairs
        )
    else:
        metrics = evaluate_embeddings_file(args.embeddings, pairs_path, args.out, config, pairs=pairs)
    _print_metrics(metrics, args.out)
    return 0


def _run_eval_bins(args: argparse.Namespace, config) -> int:
    """``eval --bin ...``: every set (and the LFW tree, if given) in one table."""
    from faceverify.evaluation.benchmarks import (
        benchmark_table,
        benchmarks_from,
        evaluate_benchmarks,
        evaluate_embeddings_on_bins,
    )

    if args.folds:
        raise UsageError("--folds applies to a pairs file; .bin sets are always scored on all their folds")
    if args.checkpoint is not None:
        from faceverify.training.distributed import resolve_device
        from faceverify.training.evaluate import check_aligned_tree, load_backbone

        device = resolve_device(args.device or "auto")
        model, input_size, _ = load_backbone(args.checkpoint, device)
        pairs = None
        if args.lfw is not None:
            from faceverify.data.locate import lfw_protocol_dir

            check_aligned_tree(args.lfw, input_size)
            pairs = args.pairs or lfw_protocol_dir() / "pairs.txt"
        benchmarks = benchmarks_from(args.lfw, pairs, args.bin)
        results = evaluate_benchmarks(model, benchmarks, config, input_size, device, args.out,
                                      source={"checkpoint": str(args.checkpoint)})
    else:
        if args.lfw is not None:
            raise UsageError("--lfw goes with --checkpoint; with --embeddings give the LFW pairs as --pairs "
                             "in a separate eval")
        results = evaluate_embeddings_on_bins(args.embeddings, args.bin, config, args.out)
    print(benchmark_table(results), end="")
    print(f"wrote {args.out / 'benchmarks.md'}, {args.out / 'benchmarks.json'} and one folder per set")
    return 0


# ----------------------------------------------------------------------------- baseline
def _add_baseline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="embed LFW pair images with an external model (dlib ResNet)",
        description="Embed the images of a pairs file with dlib's ResNet face model (packaged in "
        "face_recognition_models; nothing is downloaded). Resumable through a cache beside --out.",
    )
    p.add_argument("model", choices=["dlib"])
    p.add_argument("--lfw", type=Path, help="LFW image tree (default $FACEVERIFY_DATA/lfw/lfw-deepfunneled)")
    p.add_argument("--pairs", type=Path, help="pairs file (default $FACEVERIFY_DATA/lfw/pairs.txt)")
    p.add_argument("--out", type=Path, required=True, help="EMB.npz to write")
    p.add_argument("--folds", help="only the images of these folds, e.g. 1,2 (a quick subset; with --eval-out "
                   "the protocol then runs within these folds)")
    p.add_argument("--eval-out", type=Path, help="also evaluate (flip=none, cosine) into this folder")
    p.set_defaults(func=_run_baseline)


def _run_baseline(args: argparse.Namespace) -> int:
    from faceverify.baselines.dlib_resnet import embed_lfw_with_dlib
    from faceverify.data.lfw import read_pairs, resolve_image_paths
    from faceverify.data.locate import lfw_images_dir, lfw_protocol_dir

    lfw = lfw_images_dir(args.lfw)
    pairs_path = args.pairs or lfw_protocol_dir() / "pairs.txt"
    pairs = read_pairs(pairs_path)
    folds = _parse_folds(args.folds, pairs.n_folds)
    if folds is not None:
        pairs = pairs.subset([f - 1 for f in folds])
    paths = resolve_image_paths(lfw, pairs.keys)
    relpaths = [str(paths[k].relative_to(lfw)) for k in pairs.keys]
    summary = embed_lfw_with_dlib(lfw, relpaths, args.out)
    print(json.dumps(summary, indent=2))
    if args.eval_out is not None:
        from faceverify.evaluation.lfw_eval import EmbeddingSet, EvalConfig, evaluate_embeddings, write_outputs

        config = EvalConfig()
        metrics, result = evaluate_embeddings(EmbeddingSet.load(args.out), pairs, config)
        metrics["source"] = {"embeddings": str(args.out), "pairs": str(pairs_path), "baseline": "dlib"}
        metrics["baseline_summary"] = summary
        write_outputs(metrics, result, args.eval_out, config, title="dlib ResNet on LFW")
        _print_metrics(metrics, args.eval_out)
    return 0


# ----------------------------------------------------------------------------- align / pack
def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align",
        help="detect (MTCNN) and align faces of SRC/<identity>/<image> into DST",
        description="Detect faces with MTCNN, align five landmarks onto a template with a similarity "
        "transform, write DST/<identity>/<stem>.<ext>, DST/manifest.csv and DST/summary.json. "
        "Resumable: re-run the same command after an interruption.",
    )
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--template", choices=["112x96", "112x112"])
    p.add_argument("--scale", type=float, help="output scale factor (2 gives 224x192 for 112x96)")
    p.add_argument("--purpose", choices=["train", "eval"],
                   help="train: faces not found are skipped; eval: they get the centre fallback")
    p.add_argument("--on-fail", choices=["skip", "center"], help="override the purpose's default")
    p.add_argument("--landmarks", help="file of 'relpath x1 y1 ... x5 y5' lines")
    p.add_argument("--landmarks-for", choices=["failures", "all"])
    p.add_argument("--policy", choices=["center", "largest", "most-confident"])
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, help="decode/write threads")
    p.add_argument("--ext", choices=["png", "jpg"])
    p.add_argument("--min-face-size", type=int)
    p.add_argument("--limit", type=int, help="only the first N images (sorted)")
    p.add_argument("--restart", action="store_true",
                   help="move an existing DST aside (to DST.old-<time>, nothing is deleted) and start over")
    p.add_argument("--config", type=Path, help="YAML with AlignConfig changes")
    p.add_argument("overrides", nargs="*", help="key=value overrides of AlignConfig")
    p.set_defaults(func=_run_align)


def _run_align(args: argparse.Namespace) -> int:
    from data_prep.prepare import AlignConfig, align_tree

    config = load_config(AlignConfig, args.config, args.overrides)
    flags = {
        "template": args.template, "scale": args.scale, "purpose": args.purpose, "on_fail": args.on_fail,
        "landmarks_file": args.landmarks, "landmarks_for": args.landmarks_for, "policy": args.policy,
        "device": args.device, "batch_size": args.batch_size, "workers": args.workers, "ext": args.ext,
        "min_face_size": args.min_face_size, "limit": args.limit,
    }
    config = merge(config, {k: v for k, v in flags.items() if v is not None})
    summary = align_tree(args.src, args.dst, config, restart=args.restart)
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    speed = summary["images_per_second"]
    print(f"aligned {summary['sources']} images: {counts}"
          + (f"; {speed:.1f} images/s this run" if speed else "; nothing left to do"))
    print(f"wrote {args.dst / 'manifest.csv'} and {args.dst / 'summary.json'}")
    return 0


def _add_pack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack",
        help="pack aligned crops into one memory-mapped uint8 array for training",
        description="Write OUT/images.u8 [N, H, W, 3], labels.npy, paths.txt and meta.json from an "
        "aligned folder (its manifest.csv decides which crops are usable).",
    )
    p.add_argument("aligned", type=Path, nargs="?", help="aligned folder (or give --from-rec)")
    p.add_argument("out", type=Path, nargs="?")
    p.add_argument("--from-rec", type=Path, metavar="REC_DIR",
                   help="convert an insightface RecordIO folder (train.rec, train.idx, property) instead")
    p.add_argument("--min-images", type=int, help="leave out identities with fewer images")
    p.add_argument("--exclude-identities", help="file of identity folder names to leave out")
    p.add_argument("--only-detected", action="store_true", default=None, help="leave out fallback crops")
    p.add_argument("--size", help="resize to HxW, e.g. 56x48")
    p.add_argument("--workers", type=int)
    p.set_defaults(func=_run_pack)


def _run_pack(args: argparse.Namespace) -> int:
    from data_prep.pack import PackConfig, pack_aligned

    flags = {"min_images": args.min_images, "exclude_identities": args.exclude_identities,
             "only_detected": args.only_detected, "size": args.size, "workers": args.workers}
    config = merge(PackConfig(), {k: v for k, v in flags.items() if v is not None})
    if args.from_rec is not None:
        from data_prep.pack import pack_recordio

        out = args.out or args.aligned  # `pack --from-rec REC OUT`: the one positional is OUT
        if out is None or (args.out is not None and args.aligned is not None):
            raise UsageError("usage: faceverify pack --from-rec REC_DIR OUT")
        meta = pack_recordio(args.from_rec, out, config, cache_dir=Path(out).parent / ".recordio-cache")
        print(f"packed {meta['n_images']} images of {meta['n_identities']} identities from {args.from_rec} "
              f"({meta['recordio_layout']} layout) into {out}")
        return 0
    if args.aligned is None or args.out is None:
        raise UsageError("usage: faceverify pack ALIGNED_DIR OUT (or --from-rec REC_DIR OUT)")
    meta = pack_aligned(args.aligned, args.out, config)
    print(f"packed {meta['n_images']} images of {meta['n_identities']} identities into {args.out}; "
          f"left out: {meta['left_out_images'] or 'nothing'}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write aligned data as insightface RecordIO (rec) or a .bin verification set (bin)",
        description="faceverify export rec ALIGNED_TREE OUT [--layout legacy|builder] writes train.rec, "
        "train.idx and property; faceverify export bin ALIGNED_LFW PAIRS OUT.bin writes the pairs' images "
        "(in file order, so the 10 consecutive folds are the pairs file's folds).",
    )
    p.add_argument("what", choices=["rec", "bin"])
    p.add_argument("paths", nargs="+", type=Path, help="rec: ALIGNED_TREE OUT; bin: ALIGNED_LFW PAIRS OUT.bin")
    p.add_argument("--layout", choices=["legacy", "builder"], default="legacy", help="rec: record layout")
    p.add_argument("--encoding", choices=["jpg", "png"], default="jpg",
                   help="image encoding (jpg: quality 95 like insightface's packs; png keeps pixels exact)")
    p.add_argument("--min-images", type=int, default=1, help="rec: leave out identities with fewer images")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from data_prep.export import export_bin, export_recordio

    if args.what == "rec":
        if len(args.paths) != 2:
            raise UsageError("usage: faceverify export rec ALIGNED_TREE OUT")
        if args.min_images < 1:
            raise UsageError(f"--min-images must be >= 1, got {args.min_images}")
        summary = export_recordio(args.paths[0], args.paths[1], args.layout, args.encoding, args.min_images)
        print(f"wrote {summary['images']} images of {summary['identities']} identities ({args.layout} layout) "
              f"to {args.paths[1]}/train.rec, train.idx, property")
    else:
        if len(args.paths) != 3:
            raise UsageError("usage: faceverify export bin ALIGNED_LFW PAIRS OUT.bin")
        summary = export_bin(args.paths[0], args.paths[1], args.paths[2], args.encoding)
        print(f"wrote {summary['pairs']} pairs ({summary['images']} images, {summary['folds']} fold(s) in the "
              f"pairs file) to {args.paths[2]}")
    return 0


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce a published result end to end: prepare the data, train the recipe, evaluate every benchmark",
        description="RECIPE is a name from experiments/configs/ (casia_A_softmax, casia_B_contrastive, casia_C_center, "
        "ms1m_iresnet50_center, ms1m_iresnet50_arcface, ...) or a YAML path. --train is a RecordIO folder "
        "(faces_webface_112x112, faces_emore, ...), a packed folder, or an image tree (aligned here unless it "
        "holds faceverify's manifest.csv; with CASIA's names.txt the LFW identities are left out). Benchmarks: "
        "an LFW folder (--lfw) and/or a folder of .bin sets (--bin-dir). Everything goes under --out; re-run "
        "the same command to resume. key=value arguments override the recipe (the result is then marked "
        "complete: false).",
    )
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe's TrainConfig")
    p.add_argument("--train", type=Path, required=True, help="training data (RecordIO, packed folder or image tree)")
    p.add_argument("--out", type=Path, required=True, help="run folder: work/, train/, eval/, result.json")
    p.add_argument("--lfw", type=Path, help="LFW folder with pairs.txt and an image tree (only pair images are aligned)")
    p.add_argument("--bin-dir", type=Path, help="folder of .bin verification sets (lfw.bin, cfp_fp.bin, agedb_30.bin, ...)")
    p.add_argument("--names", type=Path, help="CASIA-WebFace names.txt (default: TRAIN/names.txt if present)")
    p.add_argument("--record", action="store_true", help="append the result to results/reproduce/reproduce.csv")
    p.add_argument("--restart", action="store_true", help="move an earlier training run in OUT/train aside first")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from faceverify.reproduce import run_reproduce

    if args.lfw is None and args.bin_dir is None:
        from faceverify.data.locate import DATA_ENV, data_root

        root = data_root(required=False)
        if root is None or not (root / "lfw" / "pairs.txt").is_file():
            raise UsageError(f"give --lfw LFW_DIR and/or --bin-dir BIN_DIR (or set {DATA_ENV} to a folder with lfw/)")
        args.lfw = root / "lfw"
    run_reproduce(args.recipe, args.train, args.out, args.lfw, args.bin_dir, args.overrides, args.names,
                  record=args.record, restart=args.restart)
    return 0


def _add_lfw(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lfw", help="locate, verify or download LFW")
    p.add_argument("action", choices=["verify", "download"])
    p.add_argument("path", nargs="?", type=Path,
                   help="verify: LFW folder (default: located); download: data home folder")
    p.add_argument("--manifest", type=Path, help="verify: TSV of path, sha256, bytes to check every file")
    p.add_argument("--original", action="store_true", help="download: the original (not funneled) images")
    p.set_defaults(func=_run_lfw)


def _run_lfw(args: argparse.Namespace) -> int:
    from data_prep.datasets import download_lfw, locate_lfw, verify_lfw

    if args.action == "download":
        if args.path is None:
            raise UsageError("faceverify lfw download needs a target folder")
        location = download_lfw(args.path, funneled=not args.original)
    else:
        location = locate_lfw(args.path)
    report = verify_lfw(location.images, args.manifest)
    print(f"LFW images {location.images}, protocol files {location.protocol}: {report}")
    return 0


def _add_casia_overlap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("casia-overlap", help="list CASIA-WebFace identities that are also in LFW")
    p.add_argument("names", type=Path, help="CASIA-WebFace names.txt ('<id> <name>' per line)")
    p.add_argument("--lfw-people", type=Path, help="LFW people.txt (default $FACEVERIFY_DATA/lfw/people.txt)")
    p.add_argument("--out", type=Path, required=True, help="identity list for pack --exclude-identities")
    p.set_defaults(func=_run_casia_overlap)


def _run_casia_overlap(args: argparse.Namespace) -> int:
    from data_prep.datasets import casia_lfw_overlap, lfw_people_names
    from faceverify.data.locate import lfw_protocol_dir
    from faceverify.io import write_text

    people = args.lfw_people or lfw_protocol_dir() / "people.txt"
    overlap = casia_lfw_overlap(args.names, lfw_people_names(people))
    write_text(args.out, "".join(f"{i}\n" for i in overlap))
    print(f"{len(overlap)} CASIA-WebFace identities also in LFW; wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------- main
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_align, _add_pack, _add_train, _add_ablate, _add_demo, _add_lfw, _add_casia_overlap, _add_eval,
    _add_baseline, _add_export, _add_reproduce,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceverify",
        description="Face verification: align, pack, train, evaluate on LFW, run ablations.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come anywhere, also after options (argparse stops taking
    # positionals once options begin), so unknown "a.b=value" tokens are overrides too
    args, extra = parser.parse_known_args(argv)
    stray = [token for token in extra if token.startswith("-") or "=" not in token]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"{args.command} takes no key=value overrides: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, KeyError, FloatingPointError, OSError) as err:
        # every input or usage error: one message naming the file or option, exit status 2
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"faceverify {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
