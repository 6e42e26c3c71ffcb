"""Tests for mtbioner.data.formats: readers, writers against hand-made files, and round trips."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtbioner.data.formats import (
    TaggedSentence,
    read_brat_ann,
    read_brat_folder,
    read_documents,
    read_jsonl_entities,
    read_pubtator,
    read_pubtator_sentences,
    write_brat,
    write_conll,
    write_jsonl,
    write_pubtator,
)
from mtbioner.data.text import annotations_to_sentences, tokenize_words
from mtbioner.errors import CorpusFormatError, RequestError

DATA = Path(__file__).parent / "data" / "formats"
BROKEN = DATA / "broken"
KEYS = ("start", "end", "text", "type")


@pytest.fixture
def records() -> list[dict]:
    return [record for _, record in read_documents(DATA / "records.jsonl")]


def entity_keys(entities: list[dict]) -> list[tuple]:
    return sorted(tuple(e[k] for k in KEYS) for e in entities)


# --- reading documents ---------------------------------------------------------------------


def test_read_txt_skips_blank_lines_but_keeps_line_numbers() -> None:
    got = list(read_documents(DATA / "documents.txt"))
    assert got == [
        (1, {"text": "First doc.", "id": "1"}),
        (3, {"text": "Third line doc.", "id": "3"}),
        (5, {"text": "Fifth", "id": "5"}),
    ]


def test_read_jsonl_keeps_other_fields(records: list[dict]) -> None:
    assert [r["id"] for r in records] == ["d1", "d2", 7]
    assert records[0]["source"] == "kept as is"


def test_read_jsonl_defaults_id_to_line_number(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('\n{"text": "no id"}\n', encoding="utf-8")
    assert list(read_documents(path)) == [(2, {"text": "no id", "id": "2"})]


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        ("invalid_json.jsonl", 2, "invalid JSON"),
        ("text_not_string.jsonl", 1, '"text" must be a string, got int'),
        ("missing_text.jsonl", 2, '"text" must be a string, got nothing'),
        ("not_object.jsonl", 1, "expected a JSON object, got list"),
        ("bad_id.jsonl", 1, '"id" must be a string or an integer'),
        ("not_utf8.jsonl", 1, "not UTF-8 (byte 0xe9)"),
        ("not_utf8.txt", 2, "not UTF-8 (byte 0xff)"),
        ("surrogate.jsonl", 1, "unpaired surrogate"),
    ],
)
def test_bad_input_lines_name_file_and_line(name: str, line: int, message: str) -> None:
    with pytest.raises(RequestError) as info:
        list(read_documents(BROKEN / name))
    assert f"{BROKEN / name}:{line}: " in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["input.csv", "missing.txt"])
def test_unusable_input_paths(tmp_path: Path, name: str) -> None:
    (tmp_path / "input.csv").write_text("x", encoding="utf-8")
    with pytest.raises(RequestError, match=name):
        list(read_documents(tmp_path / name))


# --- writers against hand-made files, and back -----------------------------------------------


def test_write_jsonl_round_trip(records: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert write_jsonl(records, out) == 3
    assert out.read_bytes() == (DATA / "records.jsonl").read_bytes()
    assert read_jsonl_entities(out) == records


def test_read_jsonl_entities_checks_offsets(records: list[dict], tmp_path: Path) -> None:
    records[1]["entities"][0]["start"] += 1
    write_jsonl(records, tmp_path / "bad.jsonl")
    with pytest.raises(RequestError, match=r"bad.jsonl:2: entity text 'clonidine' is not text\[50:58\]"):
        read_jsonl_entities(tmp_path / "bad.jsonl")


def test_write_conll(records: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "out.conll"
    assert write_conll(records, out) == 3
    assert out.read_text(encoding="utf-8") == (DATA / "expected.conll").read_text(encoding="utf-8")


def test_write_conll_never_starts_a_sentence_with_inside(tmp_path: Path) -> None:
    record = {
        "id": "x",
        "text": "It binds p53. Mdm2 does too.",
        "entities": [{"start": 9, "end": 18, "type": "P"}],
    }
    write_conll([record], tmp_path / "x.conll")
    lines = (tmp_path / "x.conll").read_text(encoding="utf-8").splitlines()
    assert lines[4:8] == ["p53\tB-P", ".\tI-P", "", "Mdm2\tB-P"]


def test_write_pubtator_round_trip(records: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "out.pubtator"
    assert write_pubtator(records, out) == 3
    assert out.read_text(encoding="utf-8") == (DATA / "expected.pubtator").read_text(encoding="utf-8")
    back = read_pubtator(out)
    assert [d["id"] for d in back] == ["d1", "d2", "7"]
    for original, document in zip(records, back, strict=True):
        # Tabs become spaces in PubTator fields; nothing else changes, offsets included.
        assert document["text"] == original["text"].replace("\t", " ")
        assert entity_keys(document["entities"]) == entity_keys(original["entities"])


def test_write_brat_round_trip(records: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "brat"
    assert write_brat(records, out) == 3
    expected = DATA / "expected_brat"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected.iterdir())
    for path in expected.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    for record in records:
        entities = read_brat_ann(out / f"{record['id']}.ann")
        assert (out / f"{record['id']}.txt").read_text(encoding="utf-8") == record["text"]
        assert entity_keys(entities) == entity_keys(record["entities"])
        by_start = sorted(record["entities"], key=lambda e: (e["start"], e["end"]))
        for entity, original in zip(entities, by_start, strict=True):
            corpus = original["corpus"]
            assert entity["corpus"] == (corpus if isinstance(corpus, list) else [corpus])
            assert entity["score"] == original["score"]


def test_write_brat_replaces_its_own_folder_but_refuses_others(records: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "brat"
    write_brat(records, out)
    write_brat(records[:1], out)
    assert sorted(p.name for p in out.iterdir()) == ["annotation.conf", "d1.ann", "d1.txt"]
    (out / "notes.md").write_text("mine", encoding="utf-8")
    with pytest.raises(RequestError, match="refusing to replace"):
        write_brat(records, out)
    assert (out / "notes.md").read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize("doc_id", ["", "..", "a/b", "dup"])
def test_write_brat_rejects_unsafe_ids(tmp_path: Path, doc_id: str) -> None:
    records = [{"id": "dup", "text": "x"}, {"id": doc_id, "text": "y"}]
    with pytest.raises(RequestError, match="cannot name a brat file"):
        write_brat(records, tmp_path / "brat")
    assert not (tmp_path / "brat").exists()


@pytest.mark.parametrize(
    ("entity", "message"),
    [
        ({"start": 0, "end": 9, "type": "X"}, "outside the text"),
        ({"start": 1, "end": 1, "type": "X"}, "outside the text"),
        ({"start": 0, "end": 1, "type": "two words"}, "holds whitespace"),
    ],
)
def test_writers_reject_bad_entities(tmp_path: Path, entity: dict, message: str) -> None:
    record = {"id": "1", "text": "abc", "entities": [entity]}
    for write, name in [(write_pubtator, "x.pubtator"), (write_conll, "x.conll"), (write_brat, "brat")]:
        with pytest.raises(RequestError, match=message):
            write(iter([record]), tmp_path / name)
        assert not (tmp_path / name).exists()


@pytest.mark.parametrize("doc_id", ["", "a|b", "a\tb"])
def test_write_pubtator_rejects_bad_ids(tmp_path: Path, doc_id: str) -> None:
    with pytest.raises(RequestError, match="cannot be a PubTator id"):
        write_pubtator([{"id": doc_id, "text": "x"}], tmp_path / "x.pubtator")


# --- corpora: brat and PubTator to IOB2 sentences ----------------------------------------------


def test_read_brat_folder() -> None:
    sentences, warnings = read_brat_folder(DATA / "brat_sample")
    assert sentences == [
        TaggedSentence(
            ("The", "IL2R", "gene", "and", "NF", "-", "kappa", "B", "bind", "."),
            ("O", "B-protein", "O", "O", "B-protein", "I-protein", "I-protein", "I-protein", "O", "O"),
            0,
        ),
        TaggedSentence(
            ("Breast", "and", "ovarian", "cancer", "recur", "."),
            ("O", "O", "B-Disease", "I-Disease", "O", "O"),
            0,
        ),
        TaggedSentence(("Dr", ".", "Smith", "saw", "it", "."), ("O", "O", "B-Person", "O", "O", "O"), 0),
        TaggedSentence(("Unannotated", "text", "."), ("O", "O", "O"), 1),
        # The annotation "p53. Mdm2" crosses the sentence boundary, so the two are merged.
        TaggedSentence(
            ("It", "binds", "p53", ".", "Mdm2", "does", "too", "."),
            ("O", "O", "B-protein", "I-protein", "I-protein", "O", "O", "O"),
            2,
        ),
    ]
    folder = DATA / "brat_sample"
    a = folder / "a.ann"
    assert warnings == [
        f"{folder / 'c.ann'}: no c.txt; ignored",
        f"{a}: T1: 'IL2' is not on word boundaries; widened to 'IL2R'",
        f"{a}: T3: discontinuous annotation [[35, 41], [54, 60]] left out",
        f"{a}: T6: text 'Smyth' differs from 'Smith' at its offsets",
        f"{a}: T5 overlaps T4, which is longer (or as long and earlier); left out",
        f"{folder / 'b.txt'}: no b.ann; read as a document without entities",
    ]


def test_read_brat_ann_ignores_relations_and_foreign_notes() -> None:
    entities = read_brat_ann(DATA / "brat_sample" / "a.ann")
    assert [e["id"] for e in entities] == ["T1", "T2", "T3", "T4", "T5", "T6"]
    assert entities[2] == {
        "id": "T3",
        "type": "Disease",
        "start": 35,
        "end": 60,
        "text": "Breast cancer",
        "fragments": [[35, 41], [54, 60]],
    }
    assert "corpus" not in entities[1]


def test_read_pubtator() -> None:
    documents = read_pubtator(DATA / "sample.pubtator")
    assert [d["id"] for d in documents] == ["1001", "1002"]
    text = documents[0]["text"]
    assert text.startswith("Naloxone reverses clonidine\nClonidine induced")
    for entity in documents[0]["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
    assert documents[0]["entities"][0]["identifier"] == "D009270"
    assert documents[1] == {
        "id": "1002",
        "entities": [{"start": 4, "end": 7, "text": "IL2", "type": "protein", "identifier": "-"}],
        "text": "The IL2R chain.",
    }


def test_read_pubtator_sentences() -> None:
    path = DATA / "sample.pubtator"
    sentences, warnings = read_pubtator_sentences(path)
    assert sentences == [
        # The title has no full stop, yet it is its own sentence.
        TaggedSentence(("Naloxone", "reverses", "clonidine"), ("B-Chemical", "O", "B-Chemical"), 0),
        TaggedSentence(("Clonidine", "induced", "hypotension", "."), ("B-Chemical", "O", "B-Disease", "O"), 0),
        TaggedSentence(("In", "rats", ",", "naloxone", "did", "not", "."), ("O",) * 7, 0),
        TaggedSentence(("The", "IL2R", "chain", "."), ("O", "B-protein", "O", "O"), 1),
    ]
    assert warnings == [
        f"{path}: 1001:50-57: 'tension' is not on word boundaries; widened to 'hypotension'",
        f"{path}: 1001:50-57 overlaps 1001:46-57, which is longer (or as long and earlier); left out",
        f"{path}: 1002:4-7: 'IL2' is not on word boundaries; widened to 'IL2R'",
    ]


@pytest.mark.parametrize(
    ("reader", "name", "line"),
    [
        (read_brat_ann, "bad_offsets.ann", 1),
        (read_brat_ann, "reversed.ann", 1),
        (read_pubtator, "bad_line.pubtator", 1),
        (read_pubtator, "foreign_mention.pubtator", 2),
    ],
)
def test_malformed_corpus_files(reader: Callable[[Path], object], name: str, line: int) -> None:
    with pytest.raises(CorpusFormatError) as info:
        reader(BROKEN / name)
    assert info.value.line == line
    assert str(BROKEN / name) in str(info.value)


def test_corpus_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "x.pubtator"
    path.write_bytes(b"1|t|ok\n1|a|caf\xe9\n")
    with pytest.raises(CorpusFormatError, match="x.pubtator:2: not UTF-8"):
        read_pubtator(path)


def test_read_brat_folder_needs_documents(tmp_path: Path) -> None:
    with pytest.raises(CorpusFormatError, match="no .txt files"):
        read_brat_folder(tmp_path)
    with pytest.raises(CorpusFormatError, match="not a folder"):
        read_brat_folder(tmp_path / "missing")


@pytest.mark.parametrize(
    ("annotation", "warning"),
    [
        (
            {"id": "A", "start": 3, "end": 4, "type": "X"},
            "A: offsets 3..4 hold no word of the text; left out",
        ),
        (
            {"id": "B", "start": 0, "end": 99, "type": "X"},
            "B: offsets 0..99 hold no word of the text; left out",
        ),
    ],
)
def test_annotations_outside_words_are_reported(annotation: dict, warning: str) -> None:
    sentences, warnings = annotations_to_sentences("abc def", [annotation], source="s")
    assert sentences == [TaggedSentence(("abc", "def"), ("O", "O"), 0)]
    assert warnings == [f"s: {warning}"]


def test_surrounding_whitespace_is_not_a_misalignment() -> None:
    sentences, warnings = annotations_to_sentences("say IL-2 now", [{"start": 3, "end": 9, "type": "P"}], source="s")
    assert sentences[0].tags == ("O", "B-P", "I-P", "I-P", "O")
    assert warnings == []


def test_jsonl_written_by_writer_is_valid_json_per_line(records: list[dict], tmp_path: Path) -> None:
    write_jsonl(records, tmp_path / "o.jsonl")
    lines = (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["d1", "d2", 7]


_UNICODE = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60)


@st.composite
def tagged_records(draw: st.DrawFn) -> dict:
    """A record whose entities sit on random word ranges of random (UTF-8-encodable) text."""
    text = draw(_UNICODE)
    words = tokenize_words(text)
    entities = []
    for _ in range(draw(st.integers(0, 3)) if words else 0):
        i = draw(st.integers(0, len(words) - 1))
        j = draw(st.integers(i, min(i + 2, len(words) - 1)))
        start, end = words[i].start, words[j].end
        entities.append({"start": start, "end": end, "text": text[start:end], "type": "T", "score": 0.5})
    return {"id": "doc", "text": text, "entities": entities}


def flat(text: str) -> str:
    """What the brat and PubTator writers do to tabs and line breaks inside a field."""
    return "".join(" " if ch in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" else ch for ch in text)


@settings(max_examples=150, deadline=None)
@given(tagged_records())
def test_writers_round_trip_offsets_on_any_unicode(tmp_path_factory: pytest.TempPathFactory, record: dict) -> None:
    tmp = tmp_path_factory.mktemp("round_trip")
    text = record["text"]
    expected = [(e["start"], e["end"], flat(e["text"]), "T") for e in record["entities"]]

    write_jsonl([record], tmp / "out.jsonl")
    assert read_jsonl_entities(tmp / "out.jsonl") == [record]

    write_brat([record], tmp / "brat")
    assert (tmp / "brat" / "doc.txt").read_bytes() == text.encode("utf-8")
    assert entity_keys(read_brat_ann(tmp / "brat" / "doc.ann")) == sorted(expected)

    write_pubtator([record], tmp / "out.pubtator")
    (document,) = read_pubtator(tmp / "out.pubtator")
    title, _, abstract = text.partition("\n")
    assert document["text"] == flat(title) + ("\n" + flat(abstract) if abstract else "")
    assert entity_keys(document["entities"]) == sorted(expected)


def test_write_jsonl_accepts_numpy_scores(tmp_path: Path) -> None:
    import numpy as np  # a hard dependency (torch, decoding): this test must run, never skip

    record = {
        "id": "1",
        "text": "abc",
        "entities": [{"start": 0, "end": 3, "type": "X", "score": np.float32(0.5)}],
    }
    write_jsonl([record], tmp_path / "o.jsonl")
    assert read_jsonl_entities(tmp_path / "o.jsonl")[0]["entities"][0]["score"] == 0.5
    with pytest.raises(TypeError, match="cannot write set"):
        write_jsonl([{"text": "x", "bad": {1}}], tmp_path / "p.jsonl")
    assert not (tmp_path / "p.jsonl").exists()
