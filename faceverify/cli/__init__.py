"""``faceverify`` command line: parse arguments, call the library, print where outputs went.

Every command has one shape (see :mod:`faceverify.cli.shape`). What the user can fix is one line
on stderr and exit status 2 (``verify`` also uses 0 and 1 for its decision): a
:class:`~faceverify.errors.FaceverifyError`, or an ``OSError`` the operating system raised (it
carries an errno: a disk full, a permission denied, a file removed under the run).
``FACEVERIFY_TRACEBACK=1`` adds the traceback. Anything else is a bug in faceverify: it prints
with its traceback and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, NoReturn

from faceverify.cli import data_commands, eval_commands, run_commands, use_commands
from faceverify.cli.shape import UsageError, split_overrides
from faceverify.errors import FaceverifyError
from faceverify.training.stop import StoppedBySignal

__all__ = ["main", "build_parser", "UsageError"]


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are UsageErrors: one line, exit status 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    data_commands.add_align, data_commands.add_pack, data_commands.add_rec, run_commands.add_train, run_commands.add_ablate,
    run_commands.add_demo, run_commands.add_reproduce, eval_commands.add_eval, eval_commands.add_baseline,
    use_commands.add_verify, use_commands.add_embed, data_commands.add_export, data_commands.add_lfw,
    data_commands.add_casia_overlap,
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="faceverify",
        description="Face verification: align, pack, train, evaluate (LFW, .bin sets), reproduce papers, run "
        "ablations, and use a trained model (verify, embed, export). Every command: faceverify CMD [INPUTS] "
        "[--config FILE] [key=value ...] [--flags].",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    rest, overrides = split_overrides(argv)
    command = next((token for token in rest if not token.startswith("-")), "faceverify")
    try:
        args = parser.parse_args(rest)
        if overrides and not getattr(args, "takes_overrides", False):
            raise UsageError(f"{args.command} takes no key=value overrides: {' '.join(overrides)}")
        args.overrides = overrides
        return int(args.func(args) or 0)
    except StoppedBySignal as err:
        # Ctrl-C / SIGTERM during an ablation, the demo or a reproduction: saved, nothing scored
        print(f"faceverify {command}: {err}", file=sys.stderr)
        return 130
    except (FaceverifyError, OSError) as err:
        if isinstance(err, OSError) and not isinstance(err, FaceverifyError) and err.errno is None:
            traceback.print_exc()  # an OSError of our own making, not the system's: a bug
            print(f"faceverify {command}: internal error (a bug in faceverify): please report it with the "
                  "traceback above", file=sys.stderr)
            return 1
        # every input or usage error: one message naming the file or option, exit status 2
        if os.environ.get("FACEVERIFY_TRACEBACK"):  # for developers: the whole story
            traceback.print_exc()
        print(f"faceverify {command}: error: {err}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - anything else is ours to fix
        traceback.print_exc()
        print(f"faceverify {command}: internal error (a bug in faceverify, not in your input): please report "
              "it with the traceback above", file=sys.stderr)
        return 1
