"""The one merge rule as users meet it: ``--print-config`` of ``train`` and ``ablate`` after the
overrides that used to drop the rest of a mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceverify.cli import main
from faceverify.config import read_yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"  # ablation specs
RECIPES = REPO / "faceverify" / "recipes"  # training recipes, shipped with the package


def printed(capsys: pytest.CaptureFixture, argv: list[str], tmp_path: Path) -> dict:
    assert main(argv) == 0
    out = tmp_path / "printed.yaml"
    out.write_text(capsys.readouterr().out)
    return read_yaml(out)


def test_train_dotted_override_adds_a_term_and_keeps_softmax(capsys, tmp_path: Path):
    config = tmp_path / "C.yaml"
    config.write_text("data: {source: x}\nloss:\n  terms: {softmax: 1.0}\n")
    resolved = printed(capsys, ["train", str(config), "loss.terms.center=0.003", "--print-config"], tmp_path)
    assert resolved["loss"]["terms"] == {"softmax": 1.0, "center": 0.003}
    assert resolved["loss"]["center"] == {"alpha": 0.5, "update": "paper", "lr": 0.5}
    assert not (tmp_path / "runs").exists()  # printed, not trained


def test_train_replace_form_and_the_recipes_that_use_it(capsys, tmp_path: Path):
    resolved = printed(capsys, ["train", str(RECIPES / "casia_triplet.yaml"), "--print-config"], tmp_path)
    assert resolved["loss"]["terms"] == {"triplet": 1.0}
    resolved = printed(capsys, ["train", str(RECIPES / "casia_C_center.yaml"), "loss.terms=!replace {center: 1}",
                                "--print-config"], tmp_path)
    assert resolved["loss"]["terms"] == {"center": 1.0}
    resolved = printed(capsys, ["train", str(RECIPES / "casia_C_center.yaml"), "loss.terms.softmax=0",
                                "--print-config"], tmp_path)
    assert resolved["loss"]["terms"] == {"softmax": 0.0, "center": 0.003}  # weight 0 switches a term off


def test_ablate_base_override_keeps_the_rest_of_base(capsys, tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nbase:\n  data: {k: 2, flip: false}\n  optim: {lr: 0.02}\n"
                    "arms:\n  softmax: {loss: {terms: {softmax: 1.0}}}\n")
    resolved = printed(capsys, ["ablate", str(spec), "base.data.batch_size=16", "--print-config"], tmp_path)
    assert resolved["spec"]["base"] == {"data": {"k": 2, "flip": False, "batch_size": 16}, "optim": {"lr": 0.02}}
    arm = resolved["resolved_arms"]["softmax"]
    assert arm["data"] == {"sampler": "pk", "batch_size": 16, "k": 2, "flip": False}
    assert arm["optim"]["lr"] == 0.02 and arm["optim"]["max_iters"] == 1500  # the cpu profile's


def test_ablate_arm_override_keeps_every_other_arm_and_key(capsys, tmp_path: Path):
    spec = CONFIGS / "ablation_lfw_cpu.yaml"
    resolved = printed(capsys, ["ablate", str(spec), "arms.softmax+center.loss.terms.center=0.01",
                                "--print-config"], tmp_path)
    arms = resolved["resolved_arms"]
    assert list(arms) == ["softmax", "softmax+contrastive", "softmax+center", "triplet", "margin", "npair",
                          "proxy_nca", "multi_similarity", "arcface"]
    assert arms["softmax+center"]["loss"]["terms"] == {"softmax": 1.0, "center": 0.01}
    assert arms["softmax+contrastive"]["loss"]["terms"] == {"softmax": 1.0, "contrastive": 0.1}
    assert arms["softmax+contrastive"]["loss"]["contrastive"]["reduction"] == "pos_neg_mean"
    assert arms["triplet"]["loss"]["terms"] == {"triplet": 1.0}
    assert arms["triplet"]["loss"]["triplet"]["mining"] == "semi_hard"
    assert arms["arcface"]["loss"]["terms"] == {"arcface": 1.0} and arms["arcface"]["model"]["batch_norm"] is True
    assert all(arm["model"]["batch_norm"] is True for arm in arms.values())  # one network for every arm
    assert all(len(arm["trials_on_first_fold"]) == 3 for arm in arms.values())  # the same budget


# ----------------------------------------------------------------------------- one command shape
def test_flags_are_generated_from_the_dataclasses():
    from faceverify.cli import build_parser

    import contextlib
    import io

    help_text = {}
    for name in ("align", "pack", "eval"):  # what a user sees: `faceverify CMD --help`
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        help_text[name] = printed.getvalue()
    from data_prep.pack import PACK_FLAGS
    from data_prep.prepare import ALIGN_FLAGS
    from faceverify.evaluation.lfw_eval import EVAL_FLAGS

    for command, table in (("align", ALIGN_FLAGS), ("pack", PACK_FLAGS), ("eval", EVAL_FLAGS)):
        for field_name in table:
            assert "--" + field_name.replace("_", "-") in help_text[command], (command, field_name)
        assert "--config" in help_text[command]
    assert "--landmarks-file" in help_text["align"] and "{112x96,112x112}" in help_text["align"]
    assert "--subtract-mean, --no-subtract-mean" in help_text["eval"]


def test_defaults_then_config_then_overrides_then_flags():
    import argparse

    from data_prep.prepare import ALIGN_FLAGS, AlignConfig
    from faceverify.cli.shape import add_config_flags, config_from_args, split_overrides

    parser = argparse.ArgumentParser()
    add_config_flags(parser, AlignConfig, ALIGN_FLAGS)
    rest, overrides = split_overrides(["--batch-size", "3", "workers=5", "scale=1.5", "--ext", "jpg",
                                       "path/with=sign", "--", "ext=png"])
    assert overrides == ["workers=5", "scale=1.5"] and rest == ["--batch-size", "3", "--ext", "jpg", "path/with=sign",
                                                                "ext=png"]
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write("batch_size: 11\nworkers: 1\nscale: 2.0\ntemplate: 112x112\n")
    args = parser.parse_args(["--config", handle.name, "--batch-size", "3", "--ext", "jpg"])
    args.overrides = overrides
    config = config_from_args(AlignConfig, args, ALIGN_FLAGS)
    # file < key=value < flag; untouched keys keep the file's values, then the defaults
    assert (config.batch_size, config.workers, config.scale, config.ext, config.template, config.purpose) == (
        3, 5, 1.5, "jpg", "112x112", "train")


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_a_run_config_is_given_one_way_as_the_first_argument(tmp_path: Path, capsys, command: str):
    config = tmp_path / "C.yaml"
    config.write_text("optim: {lr: 0.02}\n" if command == "train" else "name: c\narms: {a: {}}\n")
    if command == "train":
        first = printed(capsys, ["train", str(config), "--print-config"], tmp_path)
        assert first["optim"]["lr"] == 0.02
    for argv in ([command, "--config", str(config), "--print-config"],
                 [command, str(config), "--config", str(config), "--print-config"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"takes its {'config' if command == 'train' else 'spec'} as the first argument: faceverify " \
               f"{command} {config}" in err, err


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")) + sorted(RECIPES.glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_committed_config_loads(path: Path):
    from faceverify.ablation.spec import load_spec
    from faceverify.config import load_config
    from faceverify.training.config import TrainConfig

    if path.stem == "recipes":
        from faceverify.reproduce import load_recipe

        for name in read_yaml(path):
            recipe = load_recipe(name)
            assert recipe.published or recipe.published_ijb, name  # every recipe has a target to meet
    elif path.stem.startswith("ablation"):
        overrides = ["train_source=/data/casia"] if "casia" in path.stem else []
        spec = load_spec(path, overrides)
        assert spec.arms
    else:
        assert load_config(TrainConfig, path).loss.terms
