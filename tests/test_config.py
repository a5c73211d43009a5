"""Config system: defaults, YAML differences, dotted overrides, strict keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from faceverify.config import (
    ConfigError,
    Replace,
    changed_keys,
    config_hash,
    differences,
    from_dict,
    dump_yaml,
    load_config,
    merge_tree,
    parse_override,
    read_yaml,
    resolve_tree,
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
    data = read_yaml(saved)
    assert data["optim"] == {"lr": 0.3, "milestones": [16000, 24000], "nesterov": False}
    assert differences(cfg) == {"optim": {"lr": 0.3}, "name": "x"}
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(differences(cfg)))
    assert load_config(Demo, again) == cfg
    assert config_hash(cfg) == config_hash(load_config(Demo, again))
    assert config_hash(cfg) != config_hash(Demo())


def test_parse_override_nests():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


# ----------------------------------------------------------------------------- the one merge rule
def test_a_dotted_override_sets_one_leaf_of_a_mapping_and_keeps_the_rest():
    cfg = load_config(Demo, None, ["terms.center=0.003"])
    assert cfg.terms == {"softmax": 1.0, "center": 0.003}  # the old rule dropped softmax


def test_a_yaml_mapping_merges_key_by_key_at_every_layer(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("terms: {center: 0.003}\noptim: {lr: 0.05}\n")
    cfg = load_config(Demo, path, ["terms={triplet: 0.5}", "optim={nesterov: true}"])
    assert cfg.terms == {"softmax": 1.0, "center": 0.003, "triplet": 0.5}
    assert cfg.optim == Optim(lr=0.05, nesterov=True)


def test_replace_drops_the_mapping_below_in_files_and_overrides(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("terms: !replace {triplet: 1.0}\n")
    assert load_config(Demo, path).terms == {"triplet": 1.0}
    # a later leaf override into a replaced mapping keeps it replaced
    assert load_config(Demo, path, ["terms.center=0.5"]).terms == {"triplet": 1.0, "center": 0.5}
    assert load_config(Demo, None, ["terms=!replace {npair: 1}"]).terms == {"npair": 1.0}
    # a replaced section starts from that section's defaults
    assert load_config(Demo, None, ["optim.lr=0.5", "optim=!replace {nesterov: true}"]).optim == Optim(nesterov=True)


def test_merge_tree_never_modifies_its_inputs():
    base = {"a": {"b": 1, "c": {"d": 2}}, "t": Replace({"x": 1})}
    changes = {"a": {"c": {"e": 3}}, "t": {"y": 2}}
    merged = merge_tree(base, changes)
    assert merged == {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "t": {"x": 1, "y": 2}}
    assert isinstance(merged["t"], Replace)
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "t": {"x": 1}} and changes == {"a": {"c": {"e": 3}}, "t": {"y": 2}}


def test_a_saved_config_loads_back_unchanged_even_with_replaced_mappings(tmp_path: Path):
    cfg = load_config(Demo, None, ["terms=!replace {triplet: 1.0}", "optim.lr=0.2"])
    saved = save_config(cfg, tmp_path / "config.yaml")
    assert "!replace" in saved.read_text()
    assert load_config(Demo, saved) == cfg
    assert not (tmp_path / ".config.yaml.tmp").exists()


def test_changed_keys_names_old_and_new_values_and_skips_ignored():
    old = {"optim": {"lr": 0.01, "max_iters": 60}, "log_every": 5, "terms": {"softmax": 1.0}}
    new = {"optim": {"lr": 0.5, "max_iters": 70}, "log_every": 1, "terms": {"softmax": 1.0, "center": 0.1}}
    assert changed_keys(old, new, ignore=("log_every", "optim.max_iters")) == [
        "optim.lr: 0.01 -> 0.5", "terms.center: (absent) -> 0.1"]


def test_a_resolved_mapping_is_rebuilt_without_merging_dicts_with_defaults():
    from faceverify.config import from_resolved, to_dict

    cfg = load_config(Demo, None, ["terms=!replace {triplet: 1.0}"])
    assert from_resolved(Demo, to_dict(cfg)) == cfg
    assert load_config(Demo, None, []).terms == {"softmax": 1.0}


@pytest.mark.parametrize("text,line", [
    ("optim:\n  lr: 0.1\n  max_iters: 5\noptim:\n  lr: 0.2\n", "key 'optim' appears twice in one mapping "
                                                              r"\(first on line 1\)"),
    ("optim:\n  lr: 0.1\n  lr: 0.2\n", r"key 'lr' appears twice in one mapping \(first on line 2\)"),
    ("loss: {terms: !replace {softmax: 1, softmax: 2}}\n", "key 'softmax' appears twice"),
])
def test_a_key_given_twice_in_a_yaml_is_refused(tmp_path: Path, text: str, line: str):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=line) as caught:
        resolve_tree(path)
    assert "\n" not in str(caught.value)  # one line for the command line
    with pytest.raises(ConfigError, match="appears twice"):
        resolve_tree(None, ["optim={lr: 1, lr: 2}"])


@pytest.mark.parametrize("weight", ["-1", "-0.003", ".nan", ".inf", "true", "abc"])
def test_a_loss_weight_that_is_negative_or_not_a_number_is_refused(weight: str):
    from faceverify.training.config import TrainConfig

    with pytest.raises(ConfigError, match=r"loss.terms.center"):
        from_dict(TrainConfig, resolve_tree(None, [f"loss.terms.center={weight}"]))
    assert from_dict(TrainConfig, resolve_tree(None, ["loss.terms.center=0"])).loss.terms["center"] == 0


@pytest.mark.parametrize("overrides,fragment", [
    (["eval.lfw=/x"], "eval.lfw and eval.pairs go together"),
    (["eval.every=10"], "eval.every is set but no benchmark is"),
])
def test_the_eval_section_checks_its_fields_together_when_loaded(overrides: list[str], fragment: str):
    from faceverify.training.config import TrainConfig

    with pytest.raises(ConfigError, match=fragment):
        from_dict(TrainConfig, resolve_tree(None, overrides))
    assert from_dict(TrainConfig, resolve_tree(None, ["eval.every=10", "eval.bins=[a.bin]"])).eval.every == 10


def test_a_run_length_changes_by_one_rule():
    from faceverify.training.config import OptimConfig

    optim = OptimConfig(max_iters=1500, milestones=[1000, 1300], warmup_iters=100)
    assert optim.with_length(1500) is optim
    short = optim.with_length(300)
    # m' = floor(m * 300 / 1500), w' = min(100, 300 // 4)
    assert (short.max_iters, short.milestones, short.warmup_iters) == (300, [200, 260], 75)
    assert optim.with_length(3).milestones == [2, 2] and optim.with_length(3).warmup_iters == 0
    longer = optim.with_length(3000)
    assert (longer.milestones, longer.warmup_iters) == ([2000, 2600], 100)
    with pytest.raises(ConfigError, match="max_iters"):
        optim.with_length(0)


def test_an_ablation_layer_gives_milestones_with_their_length(tmp_path):
    from faceverify.ablation.spec import load_spec, train_config, cells
    from faceverify.errors import InvalidInputError

    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("name: s\nmax_iters: 100\nbase: {optim: {milestones: [50]}}\narms: {a: {}}\n")
    with pytest.raises(InvalidInputError, match="without the optim.max_iters they are written for"):
        load_spec(spec_file)
    spec_file.write_text("name: s\nmax_iters: 100\nbase: {optim: {milestones: [500], max_iters: 1000}}\n"
                         "arms: {a: {}}\n")
    spec = load_spec(spec_file)
    optim = train_config(spec, cells(spec)[0], tmp_path / "x", tmp_path / "y").optim
    assert (optim.max_iters, optim.milestones) == (100, [50])  # the base's milestones, stretched
