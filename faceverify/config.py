"""Dataclass configs: YAML files hold only differences, ``a.b=value`` overrides, strict keys.

Every run resolves its configuration in three layers, later layers winning:

1. the dataclass defaults (the single source of truth for every option),
2. a YAML file that holds only the keys that differ from the defaults,
3. command-line overrides ``section.key=value`` (values parsed as YAML, so ``optim.lr=0.1``,
   ``loss.terms={softmax: 1.0}`` and ``data.flip=false`` all work).

**One merge rule** (:func:`merge_tree`, used for every layer, for ablation specs' ``base`` and
arms, and for dict-valued options such as ``loss.terms``): a mapping merges into the mapping
below it key by key; a dotted override ``a.b.c=v`` sets exactly that one leaf; anything else
(a number, a list) replaces what was there. Replacing a whole mapping needs the explicit YAML
tag ``!replace``::

    loss.terms.center=0.003                   # softmax (the default) + center
    loss.terms={center: 0.003}                # the same: mappings merge
    'loss.terms=!replace {triplet: 1.0}'      # triplet alone: the old mapping is dropped

A term weight of 0 also switches a loss term off. Saved configurations (``config.yaml`` of a
run) write every dict-valued option with ``!replace``, so they load back unchanged.

Unknown keys are errors that list the valid keys, so a typo never silently falls back to a
default. Range checks live in each dataclass's ``__post_init__`` and raise :class:`ConfigError`
naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from faceverify.errors import FaceverifyError

T = TypeVar("T")


class ConfigError(FaceverifyError, ValueError):
    """A configuration key or value that cannot be used; the message says which and why."""


class Replace(dict):
    """A mapping that replaces the mapping it is merged onto instead of merging into it.

    Written ``!replace {...}`` in YAML files and in ``key=value`` overrides.
    """


def parse_hw(text: str, what: str = "a size") -> tuple[int, int]:
    """``"112x96"`` -> ``(112, 96)`` (height, width): the one parser of every ``HxW`` in the package
    (network inputs, ``pack --size``, profiles). Raises ConfigError naming ``what``."""
    try:
        height, width = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"{what} must look like HxW (e.g. 112x96), got {text!r}") from None
    if height <= 0 or width <= 0:
        raise ConfigError(f"{what} must be positive, got {text!r}")
    return height, width


class ConfigLoader(yaml.SafeLoader):
    """YAML safe loader that understands ``!replace`` and refuses a key given twice in one mapping
    (plain YAML keeps the last one silently: ``optim:`` twice would lose the first ``max_iters``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key == "<<":  # a YAML merge key may repeat
                    continue
                if key in seen:
                    first = seen[key]
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice in one mapping (first on line {first.line + 1}); "
                        "the first would be lost silently: give it once", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


class ConfigDumper(yaml.SafeDumper):
    """YAML safe dumper that writes :class:`Replace` mappings with their ``!replace`` tag."""


ConfigLoader.add_constructor(
    "!replace", lambda loader, node: Replace(loader.construct_mapping(node, deep=True)))
ConfigDumper.add_representer(
    Replace, lambda dumper, data: dumper.represent_mapping("!replace", dict(data)))


def merge_tree(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The one merge rule: ``changes`` merged onto ``base`` key by key (neither is modified).

    A mapping merges into a mapping recursively; a :class:`Replace` mapping replaces what was
    there; any other value replaces. Merging into a :class:`Replace` keeps it a ``Replace`` (so
    ``!replace {triplet: 1}`` followed by ``loss.terms.triplet=0.5`` still drops the defaults).
    """
    out = Replace(copy.deepcopy(dict(base))) if isinstance(base, Replace) else copy.deepcopy(dict(base))
    for key, value in changes.items():
        current = out.get(key)
        if isinstance(value, dict) and not isinstance(value, Replace) and isinstance(current, dict):
            out[key] = merge_tree(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a ConfigError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} does not match {tp}: " + "; ".join(errors))
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-3" as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (partial) mapping; missing keys keep their defaults."""
    return merge(cls(), data, prefix)


def from_resolved(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild ``cls`` from a complete, resolved mapping (``to_dict`` of a saved config, a
    checkpoint's config): dict-valued options are taken as they are, never merged with defaults."""
    return merge(cls(), data, resolved=True)


def merge(cfg: T, changes: dict[str, Any], prefix: str = "", resolved: bool = False) -> T:
    """Return a copy of ``cfg`` with the nested ``changes`` applied by the one merge rule
    (see :func:`merge_tree`; strict keys). ``resolved=True`` replaces dict-valued options whole."""
    hints = get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys here: {', '.join(prefix + n for n in names)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in changes.items():
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            if isinstance(value, Replace):  # a whole section from its defaults
                current = type(current)()
            kwargs[name] = merge(current, value, prefix=f"{prefix}{name}.", resolved=resolved)
        elif isinstance(value, dict) and not isinstance(value, Replace) and isinstance(current, dict) \
                and not resolved:
            kwargs[name] = _coerce(merge_tree(current, value), hints[name], prefix + name)
        else:
            kwargs[name] = _coerce(dict(value) if isinstance(value, Replace) else value, hints[name], prefix + name)
    try:
        return dataclasses.replace(cfg, **kwargs)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}" if prefix and not str(err).startswith(prefix) else str(err)) from None


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"optim.lr=0.1"`` into ``{"optim": {"lr": 0.1}}``; the value is parsed as YAML
    (``!replace {...}`` included)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    keys = [k.strip() for k in dotted.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.load(raw, Loader=ConfigLoader) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({' '.join(str(err).split())})") from err
    return leaf(".".join(keys), value)


def leaf(dotted: str, value: Any) -> dict[str, Any]:
    """``leaf("a.b", 1) == {"a": {"b": 1}}``: a tree that sets exactly one key when merged."""
    keys = dotted.split(".")
    nested: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        nested = {key: nested}
    return nested


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (``!replace`` understood); an empty file is an empty mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=ConfigLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def resolve_tree(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The YAML file's mapping with every ``a.b=value`` override merged on, by the one rule."""
    tree: dict[str, Any] = read_yaml(path) if path is not None else {}
    for text in overrides or []:
        tree = merge_tree(tree, parse_override(text))
    return tree


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Defaults of ``cls``, then the YAML file's changes, then the ``a.b=value`` overrides."""
    return from_dict(cls, resolve_tree(path, overrides))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (for YAML / JSON)."""
    return dataclasses.asdict(cfg)


def tagged_dict(cfg: Any) -> dict[str, Any]:
    """Like :func:`to_dict`, with every dict-valued option wrapped in :class:`Replace`, so that
    the YAML it becomes loads back to exactly ``cfg`` under the merge rule."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = tagged_dict(value)
        elif isinstance(value, dict):
            out[f.name] = Replace(copy.deepcopy(value))
        else:
            out[f.name] = copy.deepcopy(value)
    return out


def differences(cfg: Any) -> dict[str, Any]:
    """Only the keys whose values differ from the dataclass defaults (what a YAML file holds);
    a dict-valued option that differs is given whole, as a :class:`Replace`."""

    def diff(current: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in current.items():
            if isinstance(value, dict) and not isinstance(value, Replace) and isinstance(default.get(key), dict):
                sub = diff(value, default[key])
                if sub:
                    out[key] = sub
            elif default.get(key, object()) != value:
                out[key] = value
        return out

    return diff(tagged_dict(cfg), tagged_dict(type(cfg)()))


def dump_yaml(data: dict[str, Any]) -> str:
    """YAML text of a config mapping (``!replace`` tags kept, keys in their given order)."""
    return yaml.dump(data, Dumper=ConfigDumper, sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved configuration as YAML (all keys, defaults included), atomically."""
    from faceverify.io import write_text

    return write_text(path, dump_yaml(tagged_dict(cfg)))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; dict-valued options are flattened too."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: old -> new`` for every leaf that differs between two resolved configs, except keys
    equal to or under an ``ignore`` prefix (e.g. ``"log_every"``, ``"data.workers"``)."""
    flat_old, flat_new = flatten(old), flatten(new)
    lines = []
    for key in sorted(set(flat_old) | set(flat_new)):
        if any(key == p or key.startswith(p + ".") for p in ignore):
            continue
        missing = "(absent)"
        a, b = flat_old.get(key, missing), flat_new.get(key, missing)
        if a != b:
            lines.append(f"{key}: {a!r} -> {b!r}" if missing not in (a, b) else f"{key}: {a} -> {b}")
    return lines


def config_hash(cfg: Any) -> str:
    """Short stable hash of the resolved configuration (names a run in result tables)."""
    text = json.dumps(to_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


# ----------------------------------------------------------------------------- value checks
DEVICE_HELP = "auto, cpu, cuda, cuda:N (N = GPU index) or mps"


def check_device(value: str, key: str = "device") -> str:
    """Accept ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; anything else is a ConfigError
    (``gpu`` gets a hint to say ``cuda``)."""
    text = value.strip().lower()
    if text in ("auto", "", "cpu", "cuda", "mps"):
        return value
    if text.startswith("cuda:") and text[5:].isdigit():
        return value
    hint = " (say cuda, or cuda:N, for an NVIDIA GPU)" if text.startswith("gpu") else ""
    raise ConfigError(f"{key}: unknown device {value!r}{hint}; valid: {DEVICE_HELP}")


def check_range(key: str, value: float, minimum: float | None = None, maximum: float | None = None,
                strict_min: bool = False, strict_max: bool = False) -> None:
    """Raise a ConfigError naming ``key`` unless ``value`` lies in the given (half-)open range."""
    low_ok = minimum is None or (value > minimum if strict_min else value >= minimum)
    high_ok = maximum is None or (value < maximum if strict_max else value <= maximum)
    if low_ok and high_ok:
        return
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if strict_min else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if strict_max else '<='} {maximum:g}")
    raise ConfigError(f"{key} must be {' and '.join(parts)}, got {value!r}")
