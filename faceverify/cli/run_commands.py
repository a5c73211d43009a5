"""Commands that train: ``train``, ``ablate``, ``demo``, ``reproduce``."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceverify.cli.shape import UsageError


def _run_file(args: argparse.Namespace, what: str) -> Path | None:
    """The YAML a run is defined by: its first argument, the one way to give it (``--config``, the
    other commands' way, is refused with the form to use)."""
    if args.config is not None:
        raise UsageError(f"{args.command} takes its {what} as the first argument: faceverify {args.command} "
                         f"{args.config} (--config is for align, pack and eval)")
    return args.file


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a backbone with the configured loss terms (resumes from OUT/checkpoints/last.pt)",
        description="Train from a packed or RecordIO dataset. CONFIG is a YAML of TrainConfig changes; "
        "key=value arguments override it (e.g. optim.max_iters=1000 loss.terms.center=0.003; "
        "'loss.terms=!replace {triplet: 1}' replaces a mapping). A re-run resumes only the same run: other "
        "settings or data are refused (--restart moves the old run aside). Multi-GPU / multi-process: "
        "torchrun --nproc_per_node N -m faceverify.cli train CONFIG.",
    )
    p.add_argument("file", type=Path, nargs="?", metavar="CONFIG", help="YAML with TrainConfig changes")
    p.add_argument("--config", type=Path, help=argparse.SUPPRESS)  # refused, naming the first-argument form
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (YAML that loads back to it) and exit without training")
    p.add_argument("--restart", action="store_true",
                   help="move an existing run in OUT aside (to OUT.old-<time>, nothing is deleted) and start over")
    p.set_defaults(func=run_train, takes_overrides=True)


def run_train(args: argparse.Namespace) -> int:
    from faceverify.config import dump_yaml, load_config, tagged_dict
    from faceverify.training.config import TrainConfig
    from faceverify.training.trainer import train

    config = load_config(TrainConfig, _run_file(args, "config"), args.overrides)
    if args.print_config:
        print(dump_yaml(tagged_dict(config)), end="")
        return 0
    result = train(config, restart=args.restart)
    state = "stopped by signal; re-run the same command to resume" if result.stopped_by_signal else "finished"
    print(f"{state} at step {result.step} ({result.images_per_second:.0f} images/s); outputs in {result.out_dir}")
    return 0


def add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="train and evaluate a grid of loss arms x seeds x held-out LFW folds (resumable)",
        description="Run an ablation spec (YAML of AblationSpec fields, see experiments/configs/). "
        "Finished cells are skipped; tables and plots are regenerated after each cell.",
    )
    p.add_argument("file", type=Path, nargs="?", metavar="SPEC", help="YAML of AblationSpec fields")
    p.add_argument("--config", type=Path, help=argparse.SUPPRESS)  # refused, naming the first-argument form
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved spec and every arm's resolved loss and optimiser settings, then exit")
    p.set_defaults(func=run_ablate, takes_overrides=True)


def run_ablate(args: argparse.Namespace) -> int:
    from faceverify.ablation.runner import run_ablation
    from faceverify.ablation.spec import load_spec, resolved_arms
    from faceverify.config import dump_yaml, tagged_dict

    spec_file = _run_file(args, "spec")
    if spec_file is None:
        raise UsageError("faceverify ablate needs a spec file (see experiments/configs/ablation_*.yaml)")
    spec = load_spec(spec_file, args.overrides)
    if args.print_config:
        print(dump_yaml({"spec": tagged_dict(spec), "resolved_arms": resolved_arms(spec)}), end="")
        return 0
    csv_path = run_ablation(spec)
    print(f"results: {csv_path} and {csv_path.with_suffix('.md')}")
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end to end: locate LFW, align what is needed, train softmax + center, evaluate a held-out fold, "
             "save a model you can verify photos with",
    )
    p.add_argument("--lfw", help="LFW folder (default: $FACEVERIFY_DATA/lfw or a previous download)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--fold", type=int, default=1, help="held-out View 2 fold (1..10)")
    p.add_argument("--profile", choices=["cpu", "gpu"], help="default: gpu when CUDA is available")
    p.add_argument("--download-to", type=Path, default=Path.home() / "scikit_learn_data",
                   help="where to download LFW if it is not found")
    p.add_argument("--max-iters", type=int, default=0, help="shorter training (0 = the profile's)")
    p.add_argument("--record", type=Path, help="also append the timing row to DIR/demo.csv")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from faceverify.demo import run_demo

    if not 1 <= args.fold <= 10:
        raise UsageError(f"--fold {args.fold}: held-out folds are 1..10")
    if args.max_iters < 0:
        raise UsageError(f"--max-iters must be >= 0 (0 = the profile's), got {args.max_iters}")
    run_demo(args.lfw, args.out, args.fold, args.profile, args.download_to, args.record, args.max_iters)
    return 0


def add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce a published result end to end: prepare the data, train the recipe, evaluate every benchmark",
        description="RECIPE is a name from faceverify/recipes/ (casia_A_softmax, casia_B_contrastive, casia_C_center, "
        "ms1m_iresnet50_center, ms1m_iresnet50_arcface, ...) or a YAML path. --train is a RecordIO folder "
        "(faces_webface_112x112, faces_emore, ...), a packed folder, or an image tree (aligned here unless it "
        "holds faceverify's manifest.csv; with CASIA's names.txt the LFW identities are left out). Benchmarks: "
        "an LFW folder (--lfw) and/or a folder of .bin sets (--bin-dir). Everything goes under --out; re-run "
        "the same command to resume. key=value arguments override the recipe (the result is then marked "
        "complete: false).",
    )
    p.add_argument("recipe")
    p.add_argument("--train", type=Path, required=True, help="training data (RecordIO, packed folder or image tree)")
    p.add_argument("--out", type=Path, required=True, help="run folder: work/, train/, eval/, result.json")
    p.add_argument("--lfw", type=Path, help="LFW folder with pairs.txt and an image tree (only pair images are aligned)")
    p.add_argument("--bin-dir", type=Path,
                   help="folder of .bin verification sets (lfw.bin, cfp_fp.bin, agedb_30.bin, ...)")
    p.add_argument("--ijb", type=Path, metavar="DIR",
                   help="also score an IJB-B/IJB-C folder (TAR at FAR, papers' test mode) into result.json")
    p.add_argument("--names", type=Path, help="CASIA-WebFace names.txt (default: TRAIN/names.txt if present)")
    p.add_argument("--record", type=Path, metavar="DIR",
                   help="append the result to DIR/reproduce.csv (results/reproduce in the checkout)")
    p.add_argument("--restart", action="store_true", help="move an earlier training run in OUT/train aside first")
    p.set_defaults(func=run_reproduce, takes_overrides=True)


def run_reproduce(args: argparse.Namespace) -> int:
    from faceverify.reproduce import run_reproduce

    if args.lfw is None and args.bin_dir is None:
        from faceverify.data.locate import DATA_ENV, DatasetError, locate_lfw

        try:
            args.lfw = locate_lfw(None).protocol  # the one LFW locator: $FACEVERIFY_DATA/lfw, the sklearn folder
        except DatasetError:
            raise UsageError(f"give --lfw LFW_DIR and/or --bin-dir BIN_DIR (or set {DATA_ENV} to a folder with "
                             "lfw/)") from None
    run_reproduce(args.recipe, args.train, args.out, args.lfw, args.bin_dir, args.overrides, args.names,
                  record=args.record, restart=args.restart, ijb=args.ijb)
    return 0
