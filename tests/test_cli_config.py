"""The one merge rule as users meet it: ``--print-config`` of ``train`` and ``ablate`` after the
overrides that used to drop the rest of a mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceverify.cli import main
from faceverify.config import read_yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"


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
    resolved = printed(capsys, ["train", str(CONFIGS / "casia_triplet.yaml"), "--print-config"], tmp_path)
    assert resolved["loss"]["terms"] == {"triplet": 1.0}
    resolved = printed(capsys, ["train", str(CONFIGS / "casia_C_center.yaml"), "loss.terms=!replace {center: 1}",
                                "--print-config"], tmp_path)
    assert resolved["loss"]["terms"] == {"center": 1.0}
    resolved = printed(capsys, ["train", str(CONFIGS / "casia_C_center.yaml"), "loss.terms.softmax=0",
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
    assert list(arms) == ["softmax", "softmax+contrastive", "softmax+center", "triplet", "npair", "proxy_nca",
                          "multi_similarity", "arcface"]
    assert arms["softmax+center"]["loss"]["terms"] == {"softmax": 1.0, "center": 0.01}
    assert arms["softmax+contrastive"]["loss"]["terms"] == {"softmax": 1.0, "contrastive": 0.1}
    assert arms["softmax+contrastive"]["loss"]["contrastive"]["reduction"] == "pos_neg_mean"
    assert arms["triplet"]["loss"]["terms"] == {"triplet": 1.0}
    assert arms["triplet"]["loss"]["triplet"]["mining"] == "batch_hard"
    assert arms["arcface"]["loss"]["terms"] == {"arcface": 1.0} and arms["arcface"]["model"]["batch_norm"] is True
