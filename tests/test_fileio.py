"""Crash-safe writes: a failed write leaves the old file (or nothing), a finished one normal permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mtbioner.fileio import atomic_dir, atomic_write


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_finished_files_and_folders_get_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt") as handle:
            handle.write("x")
        with atomic_dir(tmp_path / "model") as folder:
            (folder / "config.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # mkstemp alone would give 0600
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "model" / "config.json").read_text() == "{}"


def test_failed_folder_write_keeps_the_old_folder(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "model") as folder:
        (folder / "config.json").write_text("new")
        raise KeyboardInterrupt
    assert (tmp_path / "model" / "config.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
