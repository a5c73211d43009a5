"""The one shape every ``faceverify`` command has.

    faceverify CMD [INPUTS ...] [--config FILE] [key=value ...] [--flags]

* **One way to give a config** per command: ``--config FILE`` (a YAML of the command's option
  dataclass) for align, pack and eval, whose inputs are their arguments; ``train`` and ``ablate``
  run what their YAML defines, so that file is their first argument (``faceverify train C.yaml``)
  and ``--config`` there is refused with that form.
* **One way to override**: ``key=value`` anywhere on the line (commands with options: align, pack,
  train, ablate, eval, reproduce); a token is an override when it
  starts with a dotted name and ``=`` (``optim.lr=0.1``, ``arms.softmax+center.loss.terms.center=0.01``)
  — decided by its form, never by whether a file of that name exists.
* **Flags from the dataclasses**: each configurable command lists, in one table next to its
  dataclass (``FLAGS``: field -> help), the fields that also get a ``--flag``; the flag's name,
  type and choices come from the field (``landmarks_file`` -> ``--landmarks-file``, a ``Literal``
  -> choices, a ``bool`` -> ``--x/--no-x``, a ``list[int]`` -> ``1,2,3``).

Precedence: the dataclass defaults, then ``--config``, then ``key=value``, then the flags.
"""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from faceverify.config import from_dict, merge, resolve_tree
from faceverify.errors import FaceverifyError

T = TypeVar("T")
OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_+\-]*(\.[A-Za-z0-9_+\-]+)*=")


class UsageError(FaceverifyError, ValueError):
    """A command-line mistake; reported in one line with exit status 2, like every input error."""


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(other arguments, key=value overrides)``, by each token's form."""
    rest, overrides = [], []
    after_double_dash = False
    for token in argv:
        if token == "--":
            after_double_dash = True
            continue
        if not after_double_dash and OVERRIDE.match(token):
            overrides.append(token)
        else:
            rest.append(token)
    return rest, overrides


def _list_parser(item: type) -> Any:
    def parse(text: str) -> list:
        try:
            return [item(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None

    return parse


def add_config_flags(parser: argparse.ArgumentParser, cls: type, table: dict[str, str]) -> None:
    """``--config`` and one flag per field in ``table`` (see the module docstring)."""
    parser.add_argument("--config", type=Path, help=f"YAML with {cls.__name__} changes")
    hints = get_type_hints(cls)
    for name, help_text in table.items():
        tp = hints[name]
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f"flag_{name}", "default": None, "help": help_text}
        origin = get_origin(tp)
        if origin is typing.Literal:
            kwargs["choices"] = [str(v) for v in get_args(tp)]
        elif tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is list:
            kwargs["type"] = _list_parser(get_args(tp)[0])
            kwargs["metavar"] = "A,B,..."
        elif tp in (int, float, str):
            kwargs["type"] = tp
        else:  # pragma: no cover - a table naming a field no flag can express
            raise TypeError(f"{cls.__name__}.{name}: no flag for type {tp}")
        parser.add_argument(flag, **kwargs)


def config_from_args(cls: type[T], args: argparse.Namespace, table: dict[str, str],
                     config_file: Path | None = None) -> T:
    """Defaults, then ``--config`` (or ``config_file``), then ``key=value``, then the flags."""
    tree = resolve_tree(config_file or getattr(args, "config", None), getattr(args, "overrides", []))
    config = from_dict(cls, tree)
    flags = {name: getattr(args, f"flag_{name}") for name in table if getattr(args, f"flag_{name}", None) is not None}
    return merge(config, flags) if flags else config


