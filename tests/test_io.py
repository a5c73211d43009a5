"""``faceverify.io``: atomic writes leave the old file or the new one, never a mix or a temp file; an
output that names an input is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceverify.io import (atomic_write, check_not_an_input, folder_overlap, move_aside, temporary_path, write_json,
                           write_text)


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path: Path):
    target = tmp_path / "out" / "result.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write('{"a": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert not temporary_path(target).exists() and sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_binary_and_durable_writes(tmp_path: Path):
    target = tmp_path / "blob.bin"
    with atomic_write(target, "wb", durable=True) as handle:
        handle.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    write_text(target, "text")
    assert target.read_text() == "text"


def test_move_aside_never_overwrites(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "a").write_text("1")
    first = move_aside(run)
    run.mkdir()
    second = move_aside(run)
    assert first != second and (first / "a").read_text() == "1" and not run.exists()
    assert first.name.startswith("run.old-") and second.name.startswith("run.old-")


def test_an_output_that_names_an_input_is_refused_in_any_spelling(tmp_path: Path):
    source = tmp_path / "in.csv"
    source.write_text("a,b\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to(source)
    for spelling in (source, tmp_path / "sub" / ".." / "in.csv", tmp_path / "link.csv"):
        with pytest.raises(ValueError, match="an input of this command"):
            check_not_an_input(spelling, [tmp_path / "other.txt", source])
    check_not_an_input(tmp_path / "out.csv", [source])  # another file, and a missing input, are fine
    check_not_an_input(source, [])
    assert source.read_text() == "a,b\n"


def test_folder_overlap_names_the_relation_in_any_spelling(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert folder_overlap(tmp_path / "a", tmp_path / "c" / ".." / "a") == "same"
    assert folder_overlap(tmp_path / "link", tmp_path / "a") == "same"
    assert folder_overlap(tmp_path / "a", tmp_path / "a" / "b" / "new") == "inside"
    assert folder_overlap(tmp_path / "a" / "b", tmp_path / "link") == "contains"
    assert folder_overlap(tmp_path / "a", tmp_path / "c") == ""
    assert folder_overlap(tmp_path / "a", tmp_path / "ab") == ""  # a shared prefix is not nesting
