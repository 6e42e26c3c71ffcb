"""``mtbioner evaluate`` with the shipped model: each head and (``--merged``) cross-corpus scoring from the command
line, and the user mistakes it must answer with one ``error:`` line (issue 40: unknown corpus, a type mapping naming
no known type) before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import one_error_line, run_cli, shared_data_dir


def _merged(monkeypatch, capsys, *args: object) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, "evaluate", "default", *args, "--data-dir", shared_data_dir(), "--no-progress")


def test_merged_scores_both_modes_on_a_slice(monkeypatch, capsys, tmp_path: Path) -> None:
    out = tmp_path / "merged.json"
    code, printed = _merged(monkeypatch, capsys, "BC5CDR", "--merged", "--limit", 40, "--json", out)
    assert code == 0, printed
    result = json.loads(out.read_text(encoding="utf-8"))["merged"]["BC5CDR"]
    assert result["types"] == ["Chemical", "Disease"] and result["split"] == "test"
    for mode in ("exact", "lenient"):
        overall = result[mode]["overall"]
        assert overall["support"] > 0 and 50 < overall["f1"] <= 100, (mode, overall)
    # lenient boundaries only ever add matches: never below exact
    assert result["lenient"]["overall"]["f1"] >= result["exact"]["overall"]["f1"]
    assert "Chemical" in printed and "lenient" in printed


def test_a_mapping_drops_nothing_it_is_not_told_to(monkeypatch, capsys, tmp_path: Path) -> None:
    # Chemical mapped onto Disease: the gold chemicals are now scored as diseases, so support is all of both
    out = tmp_path / "merged.json"
    code, printed = _merged(
        monkeypatch, capsys, "BC5CDR", "--merged", "--limit", 40, "--map", "Chemical=Disease", "--json", out
    )
    assert code == 0, printed
    saved = json.loads(out.read_text(encoding="utf-8"))
    result = saved["merged"]["BC5CDR"]
    assert result["types"] == ["Disease"] and saved["type_map"]["Chemical"] == "Disease"


def _one_error_line(code: int, printed: str) -> str:
    assert code != 0, printed
    return one_error_line(printed)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["NOPE", "--merged"], "corpus 'NOPE' not found"),
        (["BC5CDR", "--merged", "--map", "Foo=Disease"], "no corpus scored has type 'Foo'"),
        (["BC5CDR", "--merged", "--map", "Chemical=Bar"], "the model gives no merged type 'Bar'"),
        (["BC5CDR", "--merged", "--map", "Chemical"], "expected CORPUS_TYPE=MERGED_TYPE"),
        (["BC5CDR", "--map", "Chemical=Disease"], "--map applies to --merged scoring"),
        (["--merged"], "name the corpora to score"),
        (["BC5CDR", "--batch-size", "-1"], "--batch-size must be at least 1, not -1"),
        (["BC5CDR", "--merged", "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
    ],
)
def test_user_mistakes_are_one_error_line(monkeypatch, capsys, tmp_path: Path, args: list[str], says: str) -> None:
    out = tmp_path / "merged.json"
    line = _one_error_line(*_merged(monkeypatch, capsys, *args, "--limit", 5, "--json", out))
    assert says in line, line
    assert not out.exists()  # nothing half-written


def test_a_bad_corpus_late_in_the_list_writes_no_predictions(monkeypatch, capsys, tmp_path: Path) -> None:
    predictions, scores = tmp_path / "preds", tmp_path / "scores.json"
    args = ["BC5CDR", "NOPE", "--predictions", predictions, "--json", scores, "--limit", 5]
    line = _one_error_line(*_merged(monkeypatch, capsys, *args))
    assert "corpus 'NOPE' not found" in line and not predictions.exists() and not scores.exists()
    line = _one_error_line(*_merged(monkeypatch, capsys, "BC5CDR", "--json", tmp_path, "--limit", 5))
    assert "is a folder; give a file name" in line
