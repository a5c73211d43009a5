"""Bad input to the smaller commands: one line naming the file or option, exit status 2 (the
same for every input or usage error), and no work done before the check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.datasets import read_checksum_manifest
from faceverify.data.locate import DatasetError, locate_lfw
from faceverify.cli import main


def one_line(capsys, command: str, fragment: str) -> None:
    """The error is one line, the last one written (a progress bar may come before it)."""
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith(f"faceverify {command}: error:") and fragment in last, err
    assert "Traceback" not in err and err.count(f"faceverify {command}: error:") == 1, err


def test_baseline_onto_its_pairs_file_is_refused(tmp_path: Path, mini_lfw, capsys):
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes(mini_lfw.pairs.read_bytes())
    assert main(["baseline", "dlib", "--lfw", str(mini_lfw.images), "--pairs", str(pairs), "--out", str(pairs)]) == 2
    one_line(capsys, "baseline", "an input of this command")
    assert pairs.read_bytes() == mini_lfw.pairs.read_bytes()


def test_demo_with_a_fold_that_does_not_exist_fails_before_any_work(tmp_path: Path, capsys, monkeypatch):
    from faceverify import demo

    def no_work(*args, **kwargs):
        raise AssertionError("the demo started")

    monkeypatch.setattr(demo, "run_demo", no_work)  # what the command would call: it must not
    assert main(["demo", "--fold", "11", "--out", str(tmp_path / "demo")]) == 2
    one_line(capsys, "demo", "--fold 11: held-out folds are 1..10")
    assert not (tmp_path / "demo").exists()


def test_baseline_with_a_fold_that_does_not_exist(tmp_path: Path, lfw_dir: Path, capsys):
    assert main(["baseline", "dlib", "--lfw", str(lfw_dir / "lfw-deepfunneled"), "--pairs",
                 str(lfw_dir / "pairs.txt"), "--out", str(tmp_path / "emb.npz"), "--folds", "11"]) == 2
    one_line(capsys, "baseline", "fold(s) 11 do not exist; the pairs file has folds 1..10")


def test_usage_errors_from_argparse_are_one_line_exit_2_too(capsys):
    assert main(["eval", "--out", "x"]) == 2  # neither --embeddings nor --checkpoint
    one_line(capsys, "eval", "one of the arguments --embeddings --checkpoint --model is required")
    assert main(["align", "only_src"]) == 2
    one_line(capsys, "align", "the following arguments are required: dst")
    assert main(["nosuchcommand"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["lfw", "verify", "x", "a.b=1"]) == 2
    one_line(capsys, "lfw", "lfw takes no key=value overrides: a.b=1")


def test_lfw_not_found_names_the_real_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FACEVERIFY_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError, match="faceverify lfw download DIR") as raised:
        locate_lfw(tmp_path / "nowhere")
    assert "download-lfw" not in str(raised.value)


def test_a_two_field_checksum_line_names_file_and_line(tmp_path: Path, capsys):
    manifest = tmp_path / "sums.tsv"
    manifest.write_text("path\tsha256\tbytes\nA/A_0001.jpg\t" + "0" * 64 + "\t12\nB/B_0001.jpg\t" + "1" * 64 + "\n")
    with pytest.raises(DatasetError, match=r"sums\.tsv line 3: expected 3 tab-separated fields"):
        read_checksum_manifest(manifest)
    lfw = tmp_path / "lfw"
    (lfw / "lfw-deepfunneled" / "A").mkdir(parents=True)
    (lfw / "pairs.txt").write_text("10\t300\n")
    assert main(["lfw", "verify", str(lfw), "--manifest", str(manifest)]) == 2
    one_line(capsys, "lfw", "sums.tsv line 3: expected 3 tab-separated fields (path, sha256, bytes), got 2")


def test_pack_mixed_sizes_names_the_size_option(tmp_path: Path, capsys):
    tree = tmp_path / "aligned"
    for name, size in (("a", (96, 112)), ("b", (100, 100))):
        (tree / name).mkdir(parents=True)
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(tree / name / "1.png")
    assert main(["pack", str(tree), str(tmp_path / "packed")]) == 2
    one_line(capsys, "pack", "faceverify pack --size HxW")
    assert not (tmp_path / "packed").exists() and not (tmp_path / "packed.partial").exists()
    assert main(["pack", str(tree), str(tmp_path / "packed"), "--size", "56x48"]) == 0


@pytest.mark.parametrize("args,fragment", [(["--min-images", "-1"], "min_images must be >= 0, got -1"),
                                           (["--size", "0x5"], "size must be positive"),
                                           (["--size", "big"], "size must look like HxW")])
def test_pack_bad_numbers(tmp_path: Path, capsys, args: list[str], fragment: str):
    (tmp_path / "aligned" / "a").mkdir(parents=True)
    assert main(["pack", str(tmp_path / "aligned"), str(tmp_path / "packed"), *args]) == 2
    one_line(capsys, "pack", fragment)


def test_pack_refuses_an_output_inside_the_aligned_folder(tmp_path: Path, capsys):
    (tmp_path / "aligned" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((112, 96, 3), np.uint8)).save(tmp_path / "aligned" / "a" / "1.png")
    assert main(["pack", str(tmp_path / "aligned"), str(tmp_path / "aligned" / "packed")]) == 2
    one_line(capsys, "pack", "must be separate")
    assert sorted(p.name for p in (tmp_path / "aligned").iterdir()) == ["a"]


def test_pack_refuses_file_names_with_a_line_break(tmp_path: Path, capsys):
    (tmp_path / "aligned" / "a").mkdir(parents=True)
    for name in ("1.png", "two\nlines.png"):
        Image.fromarray(np.zeros((112, 96, 3), np.uint8)).save(tmp_path / "aligned" / "a" / name)
    assert main(["pack", str(tmp_path / "aligned"), str(tmp_path / "packed")]) == 2
    one_line(capsys, "pack", "1 file name(s) contain a line break")
    assert not (tmp_path / "packed").exists() and not (tmp_path / "packed.partial").exists()


@pytest.mark.parametrize("meta, fragment", [
    ("{bad", "not valid JSON (line 1, column 2"),
    ('{"format": "faceverify-packed-v1", "shape": [2, 8]}', "shape must be [N, H, W, 3]"),
    ("[1, 2]", "unknown packed format 'list'"),
])
def test_a_damaged_pack_metadata_is_one_line_naming_it(tmp_path: Path, capsys, meta: str, fragment: str):
    from faceverify.data.packed import FORMAT

    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "meta.json").write_text(meta.replace("faceverify-packed-v1", FORMAT), encoding="utf-8")
    assert main(["train", f"data.source={pack}", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and fragment in err and str(pack) in err, err


def test_a_bug_is_not_reported_as_a_user_error(monkeypatch: pytest.MonkeyPatch, capsys):
    """A ValueError or KeyError of our own code prints its traceback and exit 1; a FaceverifyError and
    an OSError the system raised (with an errno) are one line and exit 2."""
    from faceverify.cli import run_commands
    from faceverify.errors import InvalidInputError

    def raising(error: BaseException):
        def train(args):
            raise error
        return train

    for error, code in [(KeyError("batch_size"), 1), (ValueError("shapes differ"), 1), (OSError("ours"), 1),
                        (InvalidInputError("data.source x is empty"), 2),
                        (FileNotFoundError(2, "No such file or directory", "/x/y"), 2)]:
        monkeypatch.setattr(run_commands, "run_train", raising(error))
        assert main(["train", "data.source=/nowhere"]) == code, error
        err = capsys.readouterr().err
        if code == 1:
            assert "Traceback (most recent call last)" in err and "internal error" in err and "a bug" in err, err
        else:
            assert err.count("\n") == 1 and "Traceback" not in err and "error: " in err, err
