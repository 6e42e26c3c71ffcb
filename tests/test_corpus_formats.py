"""brat folders and PubTator files as corpora: reading, problems reported, inspect, train, evaluate.

The hand-made corpora under ``tests/data/corpus_formats`` hold one annotation off word
boundaries (``HER`` in ``HER2``) and one discontinuous annotation each where it matters, so
the warnings and counts can be checked exactly.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from mtbioner.cli import main
from mtbioner.data.corpus import corpus_stats, read_corpus, read_split, resolve_corpus
from mtbioner.errors import CorpusFormatError, MtbionerError

DATA = Path(__file__).parent / "data" / "corpus_formats"
BRAT = DATA / "brat_corpus"
PUBTATOR = DATA / "pubtator_corpus"
SINGLE = DATA / "brat_single"
MIXED = DATA / "mixed_corpus"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _rows(split) -> list[list[tuple[str, str]]]:
    return [list(zip(s.tokens, s.tags, strict=True)) for s in split.sentences]


def test_brat_corpus_reads_every_split() -> None:
    corpus = read_corpus(BRAT)
    assert corpus.name == "brat_corpus"
    assert {name: split.format for name, split in corpus.splits.items()} == dict.fromkeys(
        ("train", "devel", "test"), "brat"
    )
    assert corpus.entity_types == ["CHEM", "GENE"]
    assert corpus.labels == ["B-CHEM", "B-GENE", "I-CHEM", "I-GENE", "O"]
    test = corpus.splits["test"]
    assert _rows(test) == [
        [("TP53", "B-GENE"), ("activates", "O"), ("the", "O"), ("JAK2", "B-GENE")]
        + [("promoter", "O"), ("in", "O"), ("vitro", "O"), (".", "O")],
        [("Ibuprofen", "B-CHEM"), ("lowered", "O"), ("VEGF", "B-GENE"), ("levels", "O"), (".", "O")],
    ]
    assert (test.documents, test.repaired, test.scheme, test.skipped, test.warnings) == (1, 0, "IOB2", 0, [])
    # a line break ends a sentence; documents are numbered in file order
    assert [s.tokens[0] for s in corpus.splits["train"].sentences] == [
        "MYC",
        "Aspirin",
        "KRAS",
        "Tamoxifen",
    ] + [
        "We",
        "Cisplatin",
    ]
    assert [s.document for s in corpus.splits["train"].sentences] == [0, 0, 0, 1, 1, 2]


def test_misaligned_and_discontinuous_annotations_are_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="mtbioner.data.corpus"):
        train = read_split(BRAT / "train", "train")
    assert train.warnings == [
        f"{BRAT / 'train' / 'd2.ann'}: T2: 'HER' is not on word boundaries; widened to 'HER2'",
        f"{BRAT / 'train' / 'd3.ann'}: T2: discontinuous annotation [[14, 19], [29, 35]] left out",
    ]
    assert train.skipped == 1  # the discontinuous one; the misaligned one is kept, widened
    logged = _warnings(caplog)
    assert logged[:2] == train.warnings
    assert logged[2] == f"{BRAT / 'train'}: 2 annotation problems, 1 left out"
    rows = _rows(train)
    assert ("HER2", "B-GENE") in rows[3]
    assert rows[5][:5] == [
        ("Cisplatin", "B-CHEM"),
        ("and", "O"),
        ("tumor", "O"),
        ("necrosis", "O"),
        ("factor", "O"),
    ]
    stats = corpus_stats(read_corpus(BRAT, splits=["train"]))["train"]
    assert (stats["format"], stats["skipped"], stats["warnings"], stats["documents"]) == ("brat", 1, 2, 3)
    assert stats["entities"] == {"CHEM": 3, "GENE": 7}


def test_pubtator_corpus(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mtbioner.data.corpus"):
        corpus = read_corpus(PUBTATOR)
    assert corpus.name == "pubtator_corpus"
    train = corpus.splits["train"]
    assert train.format == "pubtator"
    assert train.path == PUBTATOR / "train.pubtator"
    assert train.warnings == [
        f"{PUBTATOR / 'train.pubtator'}: 102:14-17: 'HER' is not on word boundaries; widened to 'HER2'"
    ]
    assert train.warnings[0] in _warnings(caplog)
    assert (train.skipped, train.documents) == (0, 2)
    # the title is a sentence of its own; offsets count one character between title and abstract
    assert _rows(train)[:2] == [
        [("Aspirin", "B-CHEM"), ("inhibits", "O"), ("COX2", "B-GENE"), (".", "O")],
        [("MYC", "B-GENE"), ("expression", "O"), ("was", "O"), ("increased", "O"), ("in", "O")]
        + [("breast", "O"), ("cancer", "O"), ("cells", "O"), (".", "O")],
    ]
    assert [sum(t == "B-CHEM" for t in s.tags) for s in corpus.splits["devel"].sentences] == [1, 1]


def test_splits_may_mix_formats() -> None:
    corpus = read_corpus(MIXED)
    assert {name: split.format for name, split in corpus.splits.items()} == {
        "train": "tsv",
        "devel": "brat",
        "test": "pubtator",
    }
    assert corpus.entity_types == ["CHEM", "GENE"]
    assert _rows(corpus.splits["test"]) == _rows(read_corpus(PUBTATOR, splits=["test"]).splits["test"])


def test_limit_keeps_the_first_sentences_but_counts_every_problem() -> None:
    train = read_split(BRAT / "train", limit=2)
    assert [s.tokens[0] for s in train.sentences] == ["MYC", "Aspirin"]
    assert (train.documents, train.skipped, len(train.warnings)) == (1, 1, 2)


@pytest.mark.parametrize(
    ("splits", "served", "logged"),
    [
        (["test"], "test", None),
        (["devel", "train"], "train", "read as its 'train' split; it has no devel"),
        (["train", "devel", "test"], "train", "read as its 'train' split; it has no devel, test"),
        (["devel", "test"], "devel", "read as its 'devel' split; it has no test"),
    ],
)
def test_folder_of_ann_files_is_a_one_split_corpus(
    splits: list[str], served: str, logged: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mtbioner.data.corpus"):
        corpus = read_corpus(SINGLE, splits=splits)
    assert corpus.name == "brat_single"
    assert list(corpus.splits) == [served]
    split = corpus.splits[served]
    assert split.format == "brat" and split.skipped == 1 and len(split.warnings) == 2
    assert any("T4: discontinuous annotation" in w for w in split.warnings)
    assert any("T2: 'COX' is not on word boundaries; widened to 'COX2'" in w for w in split.warnings)
    messages = [r.getMessage() for r in caplog.records if "a brat folder without train/devel/test" in r.getMessage()]
    assert len(messages) == 1
    if logged:
        assert logged in messages[0]
        assert any(r.levelno == logging.WARNING and logged in r.getMessage() for r in caplog.records)


def test_pubtator_file_is_a_one_split_corpus(tmp_path: Path) -> None:
    path = tmp_path / "cdr_sample.pubtator"
    shutil.copy(PUBTATOR / "test.pubtator", path)
    assert resolve_corpus(str(path)) == path
    assert resolve_corpus("cdr_sample.pubtator", tmp_path) == path
    corpus = read_corpus(path, splits=["test"])
    assert corpus.name == "cdr_sample"
    assert corpus.splits["test"].format == "pubtator"


def test_name_lookup_lists_brat_and_pubtator_corpora(tmp_path: Path) -> None:
    shutil.copy(PUBTATOR / "test.pubtator", tmp_path / "x.pubtator")
    shutil.copytree(SINGLE, tmp_path / "annotated")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(MtbionerError, match=r"corpora in .*: annotated, x.pubtator$"):
        resolve_corpus("nope", tmp_path)
    with pytest.raises(MtbionerError, match=r": brat_corpus, brat_single, mixed_corpus, pubtator_corpus$"):
        resolve_corpus("nope", DATA)


def test_split_given_twice_is_refused(tmp_path: Path) -> None:
    shutil.copytree(BRAT, tmp_path / "c")
    shutil.copy(PUBTATOR / "test.pubtator", tmp_path / "c" / "test.pubtator")
    with pytest.raises(CorpusFormatError, match=r"split 'test' is given twice \(test and test.pubtator\)"):
        read_corpus(tmp_path / "c")
    assert list(read_corpus(tmp_path / "c", splits=["train"]).splits) == ["train"]


def test_missing_split_in_a_brat_corpus(tmp_path: Path) -> None:
    shutil.copytree(BRAT / "train", tmp_path / "c" / "train")
    with pytest.raises(
        CorpusFormatError,
        match="missing split 'devel': no devel.tsv, devel/, devel.pubtator, devel.bioc.xml or devel.bioc.json",
    ):
        read_corpus(tmp_path / "c")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.txt": " \n\n", "a.ann": ""}, "no sentences: the documents hold no words"),
        ({"a.txt": "BRCA1 rises.", "a.ann": "T1\tGENE 0 x\tBRCA1\n"}, "a.ann:1: expected 'T<n><TAB>Type"),
        ({"a.txt": "BRCA1 rises.", "a.ann": b"T1\tGENE 0 5\tBRCA\xe91\n"}, "a.ann:1: not UTF-8"),
        ({"notes.md": "no brat here"}, "no .txt files"),
    ],
)
def test_bad_brat_split_names_the_file(tmp_path: Path, files: dict[str, str | bytes], message: str) -> None:
    folder = tmp_path / "c" / "train"
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(CorpusFormatError, match=message):
        read_corpus(tmp_path / "c", splits=["train"])


@pytest.mark.parametrize(
    ("mention", "message"),
    [
        ("1\t0\t5\tBRCA1\t GENE\t-", r"entity type ' GENE' is empty or has spaces"),
        ("1\t0\t5\tBRCA1\t\t-", r"entity type '' is empty"),
        ("2\t0\t5\tBRCA1\tGENE\t-", r"x.pubtator:3: mention of '2' outside its document"),
    ],
)
def test_bad_pubtator_split_names_the_file(tmp_path: Path, mention: str, message: str) -> None:
    path = tmp_path / "x.pubtator"
    path.write_text(f"1|t|BRCA1 rises.\n1|a|\n{mention}\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=message):
        read_corpus(path, splits=["test"])


# --- through the command line ------------------------------------------------------------


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["mtbioner", *[str(a) for a in args]])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_inspect_brat_and_pubtator_corpora(tiny_encoder: Path, monkeypatch, capsys) -> None:
    names = ["brat_corpus", "pubtator_corpus", "brat_single", "mixed_corpus"]
    args = ["inspect", *names, "--data-dir", DATA, "--encoder", tiny_encoder, "--json"]
    code, out, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0
    result = json.loads(out)
    assert list(result) == names
    assert {split: row["format"] for split, row in result["mixed_corpus"].items()} == {
        "train": "tsv",
        "devel": "brat",
        "test": "pubtator",
    }
    assert [result["brat_corpus"]["train"][k] for k in ("skipped", "warnings")] == [1, 2]
    assert [result["pubtator_corpus"]["train"][k] for k in ("skipped", "warnings")] == [0, 1]
    assert list(result["brat_single"]) == ["train"]  # a one-split corpus, shown as train
    assert result["brat_single"]["train"]["skipped"] == 1
    assert all(row["longest_subtokens"] > 2 for rows in result.values() for row in rows.values())
    code, out, _ = run_cli(args[:-1], monkeypatch, capsys)
    assert code == 0 and "brat_corpus" in out and "entities: CHEM 3, GENE 7" in out


def test_train_on_brat_and_pubtator_then_evaluate_a_brat_folder(
    tiny_encoder: Path, tmp_path: Path, monkeypatch, capsys, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "model"
    common = ["--encoder", tiny_encoder, "--batch-size", "4", "--max-length", "32", "--no-progress"]
    with caplog.at_level(logging.INFO):
        code, out, err = run_cli(
            ["train", BRAT, PUBTATOR, SINGLE, "--output", model, "--epochs", "2", "--lr", "3e-3", *common],
            monkeypatch,
            capsys,
        )
    assert code == 0, err
    assert f"saved model to {model}" in out
    logged = [r.getMessage() for r in caplog.records]
    assert any("brat_single is a brat folder without train/devel/test: read as its 'train'" in m for m in logged)
    assert any("d3.ann: T2: discontinuous annotation" in m for m in logged)
    info = json.loads((model / "training.json").read_text())
    assert set(info["corpora"]) == {"brat_corpus", "pubtator_corpus", "brat_single"}
    log = [json.loads(line) for line in (model / "log.jsonl").read_text().splitlines()]
    assert set(log[-1]["devel"]) == {"brat_corpus", "pubtator_corpus"}  # the one-split corpus has no devel

    scores, predictions = tmp_path / "scores.json", tmp_path / "predictions"
    code, out, err = run_cli(
        ["evaluate", model, f"brat_corpus={SINGLE}", "--split", "test", "--json", scores]
        + ["--predictions", predictions, "--no-progress"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    report = json.loads(scores.read_text())["corpora"]["brat_single"]
    assert (report["head"], report["split"], report["sentences"], report["support"]) == (
        "brat_corpus",
        "test",
        3,
        5,
    )
    assert 0.0 <= report["f1"] <= 100.0
    lines = (predictions / "brat_single.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0].split(" ")[:2] == ["Aspirin", "B-CHEM"]

    code, out, err = run_cli(["evaluate", model, "--data-dir", DATA, "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    for name in ("brat_corpus", "pubtator_corpus", "brat_single"):
        assert name in out


def test_every_kind_of_left_out_annotation_is_counted(tmp_path: Path) -> None:
    """``skipped`` relies on the wording of the warnings in mtbioner.data.text; this pins it."""
    folder = tmp_path / "annotated"
    folder.mkdir()
    (folder / "a.txt").write_text("Breast and ovarian cancer recur .", encoding="utf-8")
    (folder / "a.ann").write_text(
        "T1\tDisease 0 6;19 25\tBreast cancer\n"  # discontinuous
        "T2\tDisease 11 25\tovarian cancer\n"
        "T3\tDisease 19 25\tcancer\n"  # overlaps the longer T2
        "T4\tDisease 6 7\t \n"  # no word at its offsets
        "T5\tDisease 0 3\tBre\n",  # off word boundaries: widened, kept
        encoding="utf-8",
    )
    split = read_split(folder)
    assert split.skipped == 3
    assert len(split.warnings) == 4
    assert split.sentences[0].tags == ("B-Disease", "O", "B-Disease", "I-Disease", "O", "O")
