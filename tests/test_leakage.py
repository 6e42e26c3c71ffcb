"""No sentence of a scored split is trained or selected on (mtbioner.data.leakage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtbioner.data.corpus import read_corpus
from mtbioner.data.leakage import remove_leaks, scored_texts, sentence_key
from mtbioner.errors import MtbionerError


def _write(folder: Path, splits: dict[str, list[list[tuple[str, str]]]]) -> Path:
    folder.mkdir(parents=True)
    for split, sentences in splits.items():
        text = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences)
        (folder / f"{split}.tsv").write_text(text + "\n", encoding="utf-8")
    return folder


SHARED = [("IL-2", "B-GENE"), ("binds", "O"), ("IL-2R", "B-GENE"), (".", "O")]
SHARED_OTHER_TOKENS = [("il", "B-protein"), ("-", "I-protein"), ("2", "I-protein"), ("binds", "O"),
                       ("IL", "B-protein"), ("-", "I-protein"), ("2R", "I-protein"), (".", "O")]  # fmt: skip
PLAIN = [("cells", "O"), ("grew", "O"), (".", "O")]
OTHER = [("aspirin", "B-Chemical"), ("helps", "O"), (".", "O")]
MYC = [("MYC", "B-GENE"), ("rises", "O"), (".", "O")]


@pytest.fixture
def corpora(tmp_path: Path) -> dict[str, Path]:
    return {
        # A trains on a sentence that is B's test sentence, tokenised and cased differently
        "A": _write(tmp_path / "A", {"train": [SHARED_OTHER_TOKENS, PLAIN], "devel": [PLAIN, OTHER], "test": [PLAIN]}),
        "B": _write(tmp_path / "B", {"train": [OTHER], "devel": [OTHER], "test": [SHARED]}),
        "C": _write(tmp_path / "C", {"train": [SHARED, MYC], "devel": [OTHER, MYC], "test": [[("x", "O")]]}),
    }


def test_sentence_key_ignores_tokenisation_and_case() -> None:
    assert sentence_key([w for w, _ in SHARED]) == sentence_key([w for w, _ in SHARED_OTHER_TOKENS])
    assert sentence_key(["IL-2"]) != sentence_key(["IL-3"])


def test_a_sentence_of_a_trained_corpus_test_split_is_removed_from_train_and_devel(corpora) -> None:
    loaded = [read_corpus(corpora[n]) for n in ("A", "B")]
    kept, counts = remove_leaks(loaded, scored_texts({c.name: c.path for c in loaded}))
    a, b = kept
    # A's train held B's test sentence and A's own test sentence (PLAIN): both gone
    assert a.sentences("train") == []
    assert counts["A"]["train"] == {"removed": 2, "kept": 0, "found_in": {"A/test": 1, "B/test": 1}}
    assert [s.tokens for s in a.sentences("devel")] == [tuple(w for w, _ in OTHER)]
    assert counts["A"]["devel"]["found_in"] == {"A/test": 1}
    # test splits are scored, never filtered
    assert len(a.sentences("test")) == 1 and len(b.sentences("test")) == 1
    assert counts["B"]["train"]["removed"] == 0 and "test" not in counts["B"]


def test_held_out_corpora_devel_and_test_are_kept_out_too(corpora) -> None:
    a = read_corpus(corpora["A"])
    _, counts = remove_leaks([a], scored_texts({"A": a.path}, [corpora["B"]]))
    assert counts["A"]["devel"]["found_in"] == {"A/test": 1, "B/devel": 1}  # OTHER is B's devel sentence
    assert counts["A"]["devel"]["kept"] == 0
    with pytest.raises(MtbionerError, match="no devel or test split"):
        scored_texts({}, [corpora["A"] / "train.tsv"])


def test_training_records_what_it_removed_and_never_trains_on_it(tiny_encoder: Path, corpora, tmp_path) -> None:
    from mtbioner.learn.training import TrainingConfig, train

    config = TrainingConfig(
        encoder=str(tiny_encoder), epochs=1, batch_size=2, max_length=32, held_out=[str(corpora["B"])]
    )
    c = read_corpus(corpora["C"])
    train([c], tmp_path / "m", config, progress=False)
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["leakage"]["C"]["train"] == {"removed": 1, "kept": 1, "found_in": {"B/test": 1}}
    assert info["leakage"]["C"]["devel"] == {"removed": 1, "kept": 1, "found_in": {"B/devel": 1}}
    assert info["training_sentences"] == {"C": 1}


def test_a_corpus_cannot_be_trained_on_and_held_out(tiny_encoder: Path, corpora, tmp_path) -> None:
    from mtbioner.learn.training import TrainingConfig, train

    config = TrainingConfig(encoder=str(tiny_encoder), epochs=1, held_out=[str(corpora["C"])])
    with pytest.raises(MtbionerError, match="also trained on"):
        train([read_corpus(corpora["C"])], tmp_path / "m", config, progress=False)


def test_inspect_shows_what_a_run_would_remove(corpora, tiny_encoder: Path, monkeypatch, capsys) -> None:
    from tests.conftest import run_cli

    code, out = run_cli(
        monkeypatch, capsys, "inspect", corpora["A"], corpora["B"], "--encoder", tiny_encoder, "--json"
    )
    assert code == 0, out
    stats = json.loads(out)
    assert stats["A"]["train"]["in_scored_splits"] == {"removed": 2, "A/test": 1, "B/test": 1}
    assert "in_scored_splits" not in stats["A"]["test"]
    code, out = run_cli(
        monkeypatch, capsys, "inspect", corpora["C"], "--held-out", corpora["B"], "--encoder", tiny_encoder
    )
    assert code == 0 and "in scored splits (removed by train): 1 (B/test 1)" in out, out


def test_train_cli_refuses_a_held_out_corpus_it_trains_on(corpora, tiny_encoder: Path, tmp_path, monkeypatch, capsys):
    from tests.conftest import run_cli

    args = ["train", corpora["C"], "--held-out", corpora["C"], "--encoder", tiny_encoder, "--no-progress"]
    code, out = run_cli(monkeypatch, capsys, *args, "--output", tmp_path / "m")
    assert code == 2 and "error: held-out corpus" in out and "also trained on" in out and "Traceback" not in out
    args = ["train", corpora["C"], "--held-out", "Nope", "--encoder", tiny_encoder, "--no-progress"]
    code, out = run_cli(monkeypatch, capsys, *args, "--output", tmp_path / "m")
    assert code == 2 and "corpus 'Nope' not found" in out
    assert not (tmp_path / "m").exists()
