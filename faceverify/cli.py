"""``faceverify`` command line: parse arguments, call the library, print where outputs went."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from faceverify.config import ConfigError, load_config, merge


def _parse_folds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        folds = [int(x) - 1 for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--folds expects comma-separated fold numbers 1..10, got {text!r}") from None
    if not folds or min(folds) < 0:
        raise SystemExit(f"--folds expects fold numbers starting at 1, got {text!r}")
    return folds


def _print_metrics(metrics: dict, out: Path) -> None:
    acc, std = 100 * metrics["accuracy"], 100 * metrics["accuracy_std"]
    print(f"LFW accuracy {acc:.2f}% ± {std:.2f} over {metrics['n_folds']} fold(s), "
          f"AUC {metrics['auc']:.4f}, EER {100 * metrics['eer']:.2f}%")
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'roc.png'}")


# ----------------------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="LFW 10-fold verification of an embeddings file or a trained checkpoint",
        description="Evaluate with the LFW protocol. Give --embeddings EMB.npz, or --checkpoint "
        "CKPT with --lfw ALIGNED_LFW_DIR. Extra arguments key=value override EvalConfig fields.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", type=Path, help="npz with paths, embeddings[, embeddings_flip]")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by faceverify train")
    p.add_argument("--lfw", type=Path, help="aligned LFW tree (with --checkpoint)")
    p.add_argument("--pairs", type=Path, help="pairs file (default $FACEVERIFY_DATA/lfw/pairs.txt)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--metric", choices=["cosine", "euclidean"])
    p.add_argument("--flip", choices=["none", "concat", "sum"])
    p.add_argument("--pca", type=int, help="PCA dimension fitted per fold on the training folds")
    p.add_argument("--subtract-mean", action="store_true", default=None, help="subtract the training folds' mean")
    p.add_argument("--folds", help="evaluate only these folds, e.g. 1,2,3")
    p.add_argument("--device", default=None, help="with --checkpoint: cpu, cuda, cuda:1 ...")
    p.add_argument("--config", type=Path, help="YAML with EvalConfig changes")
    p.add_argument("overrides", nargs="*", help="key=value overrides of EvalConfig")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from faceverify.data.lfw import read_pairs
    from faceverify.data.locate import lfw_protocol_dir
    from faceverify.evaluation.lfw_eval import (
        EmbeddingSet,
        EvalConfig,
        evaluate_embeddings,
        write_outputs,
    )

    config = load_config(EvalConfig, args.config, args.overrides)
    flags = {k: v for k, v in {
        "metric": args.metric, "flip": args.flip, "pca": args.pca, "subtract_mean": args.subtract_mean,
    }.items() if v is not None}
    config = merge(config, flags)
    pairs_path = args.pairs or lfw_protocol_dir() / "pairs.txt"
    pairs = read_pairs(pairs_path)
    folds = _parse_folds(args.folds)
    if folds is not None:
        pairs = pairs.subset(folds)
    if args.checkpoint is not None:
        from faceverify.training.evaluate import evaluate_checkpoint

        if args.lfw is None:
            raise SystemExit("--checkpoint needs --lfw ALIGNED_LFW_DIR")
        metrics = evaluate_checkpoint(
            args.checkpoint, args.lfw, pairs_path, args.out, config, device=args.device, pairs=pairs
        )
    else:
        embeddings = EmbeddingSet.load(args.embeddings)
        metrics, result = evaluate_embeddings(embeddings, pairs, config)
        metrics["source"] = {"embeddings": str(args.embeddings), "pairs": str(pairs_path)}
        write_outputs(metrics, result, args.out, config, title=f"LFW {Path(pairs_path).name}")
    _print_metrics(metrics, args.out)
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
    p.add_argument("--folds", help="only the images of these folds, e.g. 1 (a quick subset)")
    p.add_argument("--eval-out", type=Path, help="also evaluate (flip=none, cosine) into this folder")
    p.set_defaults(func=_run_baseline)


def _run_baseline(args: argparse.Namespace) -> int:
    from faceverify.baselines.dlib_resnet import embed_lfw_with_dlib
    from faceverify.data.lfw import read_pairs, resolve_image_paths
    from faceverify.data.locate import lfw_images_dir, lfw_protocol_dir

    lfw = lfw_images_dir(args.lfw)
    pairs_path = args.pairs or lfw_protocol_dir() / "pairs.txt"
    pairs = read_pairs(pairs_path)
    folds = _parse_folds(args.folds)
    if folds is not None:
        pairs = pairs.subset(folds)
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


# ----------------------------------------------------------------------------- main
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_eval, _add_baseline]


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
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"faceverify {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
