"""Config system: defaults, YAML differences, dotted overrides, strict keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from faceverify.config import (
    ConfigError,
    config_hash,
    differences,
    load_config,
    parse_override,
    save_config,
)


@dataclass
class Optim:
    lr: float = 0.1
    milestones: list[int] = field(default_factory=lambda: [16000, 24000])
    nesterov: bool = False


@dataclass
class Demo:
    name: str = "run"
    mode: Literal["a", "b"] = "a"
    optim: Optim = field(default_factory=Optim)
    terms: dict[str, float] = field(default_factory=lambda: {"softmax": 1.0})
    pca: int = 0


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.05\nmode: b\n")
    cfg = load_config(Demo, path, ["optim.lr=0.2", "terms={softmax: 1.0, center: 0.003}", "pca=128"])
    assert cfg.optim.lr == 0.2 and cfg.mode == "b" and cfg.pca == 128
    assert cfg.optim.milestones == [16000, 24000]
    assert cfg.terms == {"softmax": 1.0, "center": 0.003}


def test_unknown_keys_are_errors_listing_valid_keys(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"optim\.lrr.*valid keys here: optim\.lr, optim\.milestones"):
        load_config(Demo, None, ["optim.lrr=1"])
    path = tmp_path / "c.yaml"
    path.write_text("optimm: {lr: 1}\n")
    with pytest.raises(ConfigError, match="unknown config key.*optimm"):
        load_config(Demo, path)


@pytest.mark.parametrize(
    "override,fragment",
    [("mode=c", "not one of"), ("pca=1.5", "integer"), ("optim.nesterov=3", "true/false"),
     ("optim.lr=abc", "number"), ("optim=3", "mapping"), ("noequals", "section.key=value")],
)
def test_bad_values_are_explained(override: str, fragment: str):
    with pytest.raises(ConfigError, match=fragment):
        load_config(Demo, None, [override])


def test_scientific_notation_and_ints_become_floats():
    cfg = load_config(Demo, None, ["optim.lr=1e-3"])
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert load_config(Demo, None, ["optim.lr=1"]).optim.lr == 1.0


def test_resolved_config_saved_and_differences_round_trip(tmp_path: Path):
    cfg = load_config(Demo, None, ["optim.lr=0.3", "name=x"])
    saved = save_config(cfg, tmp_path / "run" / "config.yaml")
    data = yaml.safe_load(saved.read_text())
    assert data["optim"] == {"lr": 0.3, "milestones": [16000, 24000], "nesterov": False}
    assert differences(cfg) == {"optim": {"lr": 0.3}, "name": "x"}
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(differences(cfg)))
    assert load_config(Demo, again) == cfg
    assert config_hash(cfg) == config_hash(load_config(Demo, again))
    assert config_hash(cfg) != config_hash(Demo())


def test_parse_override_nests():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
