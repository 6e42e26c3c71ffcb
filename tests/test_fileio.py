"""Crash-safe writes: a failed write leaves the old file (or nothing), a finished one normal permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mtbioner.errors import MtbionerError
from mtbioner.fileio import atomic_dir, atomic_write, check_output_file, check_output_folder, read_json_record


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


def test_outputs_the_os_refuses_are_user_errors_and_nothing_is_lost(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    with pytest.raises(MtbionerError, match="is a folder; give a file name"), atomic_write(tmp_path) as handle:
        handle.write("x")
    with pytest.raises(MtbionerError, match="notes.txt/out.jsonl: cannot write"), atomic_write(notes / "out.jsonl"):
        pass
    # a folder written where a file is would have hidden the file as a dot-file: refused
    with pytest.raises(MtbionerError, match="notes.txt: is a file; give a folder"), atomic_dir(notes):
        pass
    assert notes.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_output_checks_refuse_what_a_write_would_destroy(tmp_path: Path) -> None:
    corpus = tmp_path / "BC5CDR"
    corpus.mkdir()
    (corpus / "train.tsv").write_text("a\tO\n")
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for folder, message in [
        (corpus, "exists and is not a model folder"),
        (corpus / "train.tsv", "is a file; give a folder"),
        (model, "must differ from the input"),
    ]:
        with pytest.raises(MtbionerError, match=message):
            check_output_folder(folder, sources=(model,))
    check_output_folder(model)  # an earlier output of the same kind is replaced
    check_output_folder(tmp_path / "new" / "m2")  # a new one may be made, parents included
    with pytest.raises(MtbionerError, match="is a folder"):
        check_output_file(corpus)
    with pytest.raises(MtbionerError, match="would replace the input"):
        check_output_file(corpus / "train.tsv", sources=(corpus / "train.tsv",))
    with pytest.raises(MtbionerError, match="cannot create the output folder's parent"):
        check_output_file(corpus / "train.tsv" / "x.json")
    assert (corpus / "train.tsv").read_text() == "a\tO\n"


def test_a_run_never_starts_over_a_corpus_or_its_teacher(tmp_path: Path) -> None:
    from mtbioner.learn.training import check_resumable

    corpus = tmp_path / "toy"
    corpus.mkdir()
    (corpus / "train.tsv").write_text("a\tO\n")
    with pytest.raises(MtbionerError, match="exists and is not a model folder"):
        check_resumable(corpus, resume=False)
    with pytest.raises(MtbionerError, match="must differ from the input"):
        check_resumable(tmp_path / "toy", resume=False, sources=(corpus,))


def test_a_damaged_run_record_is_named_not_a_traceback(monkeypatch, capsys, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    run = tmp_path / "m"
    (run / "checkpoint").mkdir(parents=True)
    (run / "training.json").write_text('{"config": {"lr": 0.1', encoding="utf-8")  # cut short by a full disk
    with pytest.raises(MtbionerError, match="training.json: damaged, not readable as JSON"):
        read_json_record(run / "training.json")
    assert read_json_record(tmp_path / "absent.json") == {}
    code, printed = run_cli(monkeypatch, capsys, "train", "--resume", "--output", run)
    assert code == 2 and printed.startswith("error: ") and "training.json: damaged" in printed, printed
    assert printed.count("\n") == 1 and "Traceback" not in printed
    (run / "training.json").write_text('{"config": {"no_such_field": 1}, "corpora": {}}', encoding="utf-8")
    code, printed = run_cli(monkeypatch, capsys, "train", "--resume", "--output", run)
    assert code == 2 and "training.json: damaged or from another version" in printed, printed
