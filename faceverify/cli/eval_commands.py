"""Evaluation commands: ``eval`` (LFW pairs, .bin sets, IJB-B/IJB-C) and ``baseline`` (dlib)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faceverify.cli.shape import UsageError, add_config_flags, config_from_args


def check_folds(folds: list[int] | None, n_folds: int) -> list[int] | None:
    """Each fold exists in the pairs file and appears once (1-based), or a UsageError says which."""
    if not folds:
        return None
    text = ",".join(map(str, folds))
    outside = [f for f in folds if not 1 <= f <= n_folds]
    if outside:
        raise UsageError(f"--folds {text}: fold(s) {', '.join(map(str, outside))} do not exist; "
                         f"the pairs file has folds 1..{n_folds}")
    repeated = sorted({f for f in folds if folds.count(f) > 1})
    if repeated:
        raise UsageError(f"--folds {text}: fold(s) {', '.join(map(str, repeated))} given more than once")
    return folds


def print_metrics(metrics: dict, out: Path) -> None:
    acc, std = 100 * metrics["accuracy"], 100 * metrics["accuracy_std"]
    print(f"LFW accuracy {acc:.2f}% ± {std:.2f} over {metrics['n_folds']} fold(s), "
          f"AUC {metrics['auc']:.4f}, EER {100 * metrics['eer']:.2f}%")
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'roc.png'}")


def add_eval(sub: argparse._SubParsersAction) -> None:
    from faceverify.evaluation.options import EVAL_FLAGS, EvalConfig

    p = sub.add_parser(
        "eval",
        help="verification of an embeddings file or a model: LFW 10-fold, .bin sets, IJB-B/IJB-C TAR@FAR",
        description="Evaluate with the k-fold protocol. Give --embeddings EMB.npz, or --checkpoint CKPT; the "
        "benchmarks are an aligned LFW tree (--lfw, with --checkpoint) with its --pairs, and/or insightface "
        ".bin sets (--bin lfw.bin cfp_fp.bin ...). With --checkpoint, a cosine evaluation without PCA on all "
        "folds also calibrates the model's decision threshold (CKPT.calibration.json, used by verify). "
        "--ijb DIR scores IJB-B or IJB-C (1:1 TAR at FAR under the strict and insightface rules; 1:N where "
        "the release has its csv files) from --embeddings, --checkpoint or --model; the default test mode is "
        "the papers' (flip sum, feature norm kept, times the detector score).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", type=Path, help="npz with paths, embeddings[, embeddings_flip, status]")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by faceverify train")
    source.add_argument("--model", help="with --ijb: a checkpoint, an exported model (.ts/.onnx) or dlib")
    p.add_argument("--ijb", type=Path, metavar="DIR",
                   help="an IJB-B or IJB-C folder (meta/ijbc_*.txt or meta/ijbb_*.txt, loose_crop/)")
    p.add_argument("--no-detector-score", action="store_true",
                   help="with --ijb: do not multiply image features by the detector score")
    p.add_argument("--unit-norm", action="store_true",
                   help="with --ijb: L2-normalise each image feature before pooling (default: its norm is kept)")
    p.add_argument("--chunk", type=int, default=1024, help="with --ijb and a model: images per resumable chunk")
    p.add_argument("--lfw", type=Path, help="aligned LFW tree (with --checkpoint)")
    p.add_argument("--bin", type=Path, nargs="+", metavar="FILE",
                   help=".bin verification sets (10 consecutive folds each); with --embeddings the npz names "
                   "their images <set>/<index>")
    p.add_argument("--pairs", type=Path, help="pairs file (default $FACEVERIFY_DATA/lfw/pairs.txt)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--device", default=None, help="with --checkpoint: auto, cpu, cuda, cuda:1 ...")
    add_config_flags(p, EvalConfig, EVAL_FLAGS)
    p.set_defaults(func=run_eval, takes_overrides=True)


def run_eval(args: argparse.Namespace) -> int:
    from faceverify.data.lfw import read_pairs
    from faceverify.data.locate import lfw_protocol_dir
    from faceverify.evaluation.lfw_eval import EVAL_FLAGS, EvalConfig, evaluate_embeddings_file
    from faceverify.io import check_writable_dir

    if args.ijb is not None:
        return _run_eval_ijb(args)
    for flag, given in (("--model", args.model is not None), ("--no-detector-score", args.no_detector_score),
                        ("--unit-norm", args.unit_norm)):
        if given:
            raise UsageError(f"{flag} goes with --ijb DIR")
    config = config_from_args(EvalConfig, args, EVAL_FLAGS)
    check_writable_dir(args.out, "--out")
    if args.bin:
        return _run_eval_bins(args, config)
    pairs_path = args.pairs or lfw_protocol_dir() / "pairs.txt"
    pairs = read_pairs(pairs_path)
    check_folds(config.folds, pairs.n_folds)
    if args.checkpoint is not None:
        from faceverify.training.checkpoint_eval import evaluate_checkpoint

        if args.lfw is None:
            raise UsageError("--checkpoint needs --lfw ALIGNED_LFW_DIR")
        metrics = evaluate_checkpoint(
            args.checkpoint, args.lfw, pairs_path, args.out, config, device=args.device, pairs=pairs
        )
        _calibrate(args.checkpoint, metrics, config, pairs_path)
    else:
        metrics = evaluate_embeddings_file(args.embeddings, pairs_path, args.out, config, pairs=pairs)
    print_metrics(metrics, args.out)
    return 0


def _run_eval_ijb(args: argparse.Namespace) -> int:
    """``eval --ijb DIR``: the IJB protocol of :mod:`faceverify.use.ijb`."""
    from faceverify.evaluation.ijb_protocol import TestMode
    from faceverify.io import check_writable_dir
    from faceverify.use.ijb import evaluate_on_ijb

    others = [flag for flag, given in (("--lfw", args.lfw), ("--bin", args.bin), ("--pairs", args.pairs),
                                       ("--config", args.config), ("key=value", args.overrides)) if given]
    others += ["--" + name.replace("_", "-") for name in ("metric", "pca", "subtract_mean", "folds", "batch_size")
               if getattr(args, f"flag_{name}", None) is not None]
    if others:
        raise UsageError(f"--ijb runs the IJB protocol alone; {', '.join(others)} belong to the LFW/.bin evaluation")
    if args.chunk < 1:
        raise UsageError(f"--chunk must be at least 1, got {args.chunk}")
    mode = TestMode(flip=args.flag_flip or "sum", detector_score=not args.no_detector_score, unit_norm=args.unit_norm)
    check_writable_dir(args.out, "--out")
    model = None
    if args.embeddings is None:
        from faceverify.use.model import load_model

        model = load_model(args.checkpoint if args.checkpoint is not None else args.model, device=args.device or "auto")
    metrics = evaluate_on_ijb(args.ijb, args.out, mode, model=model, embeddings=args.embeddings, chunk=args.chunk)
    tars = metrics["tar_at_far"]
    print(f"{metrics['benchmark']}: TAR @ FAR 1e-4 {100 * tars['1e-04']:.2f}% (strict), "
          f"{100 * metrics['tar_at_far_insightface']['1e-04']:.2f}% (insightface rule); "
          f"{metrics['n_templates']} templates, {metrics['n_pairs']} pairs")
    if "identification" in metrics:
        mean = metrics["identification"]["mean"]
        print(f"1:N mean over galleries: rank-1 {100 * mean['rank_1']:.2f}%")
    if metrics["images_left_out"]:
        print(f"{len(metrics['images_left_out'])} image(s) left out (named in metrics.json)")
    print(f"wrote {args.out / 'metrics.json'}, {args.out / 'report.md'}, {args.out / 'roc.png'}")
    return 0


def _calibrate(checkpoint: Path, metrics: dict, config, pairs_path: Path) -> None:
    """Keep the evaluation's threshold beside the checkpoint when verify would score the same way."""
    from faceverify.use.model import calibration_from_metrics, write_calibration

    if config.metric != "cosine" or config.pca or config.subtract_mean or config.folds:
        print("no threshold calibrated: verify scores by cosine on all folds without PCA or mean subtraction")
        return
    calibration = calibration_from_metrics(metrics, config.flip, f"{pairs_path}")
    path = write_calibration(checkpoint, calibration)
    print(f"calibrated threshold {calibration.threshold:.4f} (accuracy {100 * calibration.accuracy:.2f}%, "
          f"flip {config.flip}) -> {path}")


def _run_eval_bins(args: argparse.Namespace, config) -> int:
    """``eval --bin ...``: every set (and the LFW tree, if given) in one table."""
    from faceverify.evaluation.benchmarks import (
        benchmark_table,
        benchmarks_from,
        evaluate_benchmarks,
        evaluate_embeddings_on_bins,
    )

    if config.folds:
        raise UsageError("--folds applies to a pairs file; .bin sets are always scored on all their folds")
    if args.checkpoint is not None:
        from faceverify.training.distributed import resolve_device
        from faceverify.training.checkpoint_eval import check_aligned_tree, load_backbone

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


def add_baseline(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run_baseline)


def run_baseline(args: argparse.Namespace) -> int:
    from faceverify.baselines.dlib_resnet import embed_lfw_with_dlib
    from faceverify.data.lfw import read_pairs, resolve_image_paths
    from faceverify.data.locate import lfw_images_dir, lfw_protocol_dir
    from faceverify.io import check_not_an_input

    lfw = lfw_images_dir(args.lfw)
    pairs_path = args.pairs or lfw_protocol_dir() / "pairs.txt"
    pairs = read_pairs(pairs_path)
    if args.folds:
        try:
            wanted = [int(x) for x in args.folds.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--folds expects comma-separated fold numbers, got {args.folds!r}") from None
        folds = check_folds(wanted, pairs.n_folds)
        pairs = pairs.subset([f - 1 for f in folds])
    paths = resolve_image_paths(lfw, pairs.keys)
    relpaths = [str(paths[k].relative_to(lfw)) for k in pairs.keys]
    check_not_an_input(args.out, [pairs_path, *paths.values()], "--out")
    summary = embed_lfw_with_dlib(lfw, relpaths, args.out)
    print(json.dumps(summary, indent=2))
    if args.eval_out is not None:
        from faceverify.evaluation.lfw_eval import EmbeddingSet, EvalConfig, evaluate_embeddings, write_outputs

        config = EvalConfig()
        metrics, result = evaluate_embeddings(EmbeddingSet.load(args.out), pairs, config)
        metrics["source"] = {"embeddings": str(args.out), "pairs": str(pairs_path), "baseline": "dlib"}
        metrics["baseline_summary"] = summary
        write_outputs(metrics, result, args.eval_out, config, title="dlib ResNet on LFW")
        print_metrics(metrics, args.eval_out)
    return 0
