"""BioC XML and JSON: round trips, passage offsets both ways, BioC corpora, and located errors.

Offsets are checked three ways so that a mistake made the same way in reader and writer
cannot hide: records -> BioC -> records, our writer's file read by the ``bioc`` library
itself, and hand-written BioC (PubTator3 style) read by us.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import bioc
import pytest
from bioc import biocjson, biocxml

from mtbioner.data.bioc_format import read_bioc, read_bioc_sentences, write_bioc_json, write_bioc_xml
from mtbioner.data.corpus import read_corpus, resolve_corpus
from mtbioner.data.formats import write_pubtator
from mtbioner.errors import CorpusFormatError, RequestError

WRITERS = {".bioc.xml": write_bioc_xml, ".bioc.json": write_bioc_json}
TITLE = "BRCA1 und Tamoxifen: Déjà-vu 😀 in café"
ABSTRACT = "Naïve T cells lacking IL-2Rα grew.\r\nHER2 was not seen."
TWO_PASSAGES = f"{TITLE}\n{ABSTRACT}"
SECOND = len(TITLE) + 1  # the abstract's document offset


def _entity(text: str, mention: str, type_: str, nth: int = 0, **extra: Any) -> dict[str, Any]:
    start = -1
    for _ in range(nth + 1):
        start = text.index(mention, start + 1)
    return {"start": start, "end": start + len(mention), "text": mention, "type": type_, **extra}


RECORDS: list[dict[str, Any]] = [
    {
        "id": "doc-1",
        "text": "Ägyptische Patienten: TNF-α stieg 😀 an.",
        "entities": [
            _entity(
                "Ägyptische Patienten: TNF-α stieg 😀 an.", "TNF-α", "Gene", score=0.75, corpus=["BC2GM", "JNLPBA"]
            ),
            _entity("Ägyptische Patienten: TNF-α stieg 😀 an.", "Ägyptische", "Species", identifier="9606"),
        ],
    },
    {
        "id": "doc-2",
        "text": TWO_PASSAGES,
        "passages": [
            {"offset": 0, "length": len(TITLE), "infons": {"type": "title"}},
            {"offset": SECOND, "length": len(ABSTRACT), "infons": {"type": "abstract"}},
        ],
        "entities": [
            _entity(TWO_PASSAGES, "BRCA1", "Gene", score=0.5, corpus=["BC2GM"]),
            _entity(TWO_PASSAGES, "Tamoxifen", "Chemical", identifier="MESH:D013629"),
            _entity(TWO_PASSAGES, "IL-2Rα", "Gene", score=0.25),
            _entity(TWO_PASSAGES, "HER2", "Gene"),
        ],
    },
    {"id": "7", "text": "No entity here.", "entities": []},
]
KEYS = ("start", "end", "text", "type", "score", "corpus", "identifier")


def _core(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: e[k] for k in KEYS if k in e} for e in sorted(entities, key=lambda e: e["start"])]


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_records_survive_a_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    assert WRITERS[suffix](RECORDS, path) == 3
    back = read_bioc(path)
    assert [r["id"] for r in back] == ["doc-1", "doc-2", "7"]
    for record, read in zip(RECORDS, back, strict=True):
        assert read["text"] == record["text"]
        assert _core(read["entities"]) == _core(record["entities"])
        for entity in read["entities"]:
            assert read["text"][entity["start"] : entity["end"]] == entity["text"]
    assert back[0]["passages"] == [{"offset": 0, "length": len(RECORDS[0]["text"]), "infons": {}}]
    assert back[1]["passages"] == RECORDS[1]["passages"]
    # what was read writes back to the same file, ids included
    again = tmp_path / f"again{suffix}"
    WRITERS[suffix](back, again)
    assert read_bioc(again) == back


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_the_library_sees_passage_offsets_and_infons(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    WRITERS[suffix](RECORDS, path)
    with path.open("rb") as handle:
        collection = biocxml.load(handle) if suffix == ".bioc.xml" else biocjson.load(handle)
    title, abstract = collection.documents[1].passages
    assert (title.offset, title.text, abstract.offset, abstract.text) == (0, TITLE, SECOND, ABSTRACT)
    assert [a.text for a in abstract.annotations] == ["IL-2Rα", "HER2"]
    for annotation in abstract.annotations:  # document offsets: minus the passage offset indexes its text
        (location,) = annotation.locations
        assert abstract.text[location.offset - SECOND : location.end - SECOND] == annotation.text
    assert title.annotations[0].infons == {"type": "Gene", "score": "0.5", "corpus": "BC2GM"}
    assert title.annotations[1].infons == {"type": "Chemical", "identifier": "MESH:D013629"}
    first = collection.documents[0].passages[0].annotations
    assert first[1].infons == {"type": "Gene", "score": "0.75", "corpus": "BC2GM,JNLPBA"}
    assert [d.id for d in collection.documents] == ["doc-1", "doc-2", "7"]


# PubTator3 style: title and abstract passages, document offsets, an annotation given at
# document level, a second document whose passage gives sentences instead of text.
HAND_WRITTEN = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE collection SYSTEM "BioC.dtd">
<collection><source>PubTator</source><date>2024</date><key>BioC.key</key>
<document><id>123</id>
  <passage><infon key="type">title</infon><offset>0</offset><text>{TITLE}</text>
    <annotation id="1"><infon key="type">Gene</infon><infon key="identifier">672</infon>
      <location offset="0" length="5"/><text>BRCA1</text></annotation>
  </passage>
  <passage><infon key="type">abstract</infon><offset>{SECOND}</offset><text>Naïve T cells lacking IL-2Rα grew.</text>
    <annotation id="2"><infon key="type">Gene</infon>
      <location offset="{SECOND + 22}" length="6"/><text>IL-2Rα</text></annotation>
  </passage>
  <annotation id="3"><infon key="type">Chemical</infon>
    <location offset="{TITLE.index("Tamoxifen")}" length="9"/><text>Tamoxifen</text></annotation>
</document>
<document><id>124</id>
  <passage><offset>5</offset>
    <sentence><offset>5</offset><text>KRAS rose.</text>
      <annotation id="9"><infon key="type">Gene</infon><location offset="5" length="4"/><text>KRAS</text></annotation>
    </sentence>
    <sentence><offset>16</offset><text>It fell.</text></sentence>
  </passage>
</document>
</collection>
"""


def test_hand_written_bioc_reads_like_pubtator(tmp_path: Path) -> None:
    path = tmp_path / "pubtator3.xml"
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    first, second = read_bioc(path)
    assert first["text"] == f"{TITLE}\nNaïve T cells lacking IL-2Rα grew."  # as read_pubtator builds it
    assert [(e["id"], e["start"], e["end"], e["text"], e["type"]) for e in first["entities"]] == [
        ("1", 0, 5, "BRCA1", "Gene"),
        ("3", 10, 19, "Tamoxifen", "Chemical"),
        ("2", SECOND + 22, SECOND + 28, "IL-2Rα", "Gene"),
    ]
    assert first["entities"][0]["identifier"] == "672"
    assert [p["infons"] for p in first["passages"]] == [{"type": "title"}, {"type": "abstract"}]
    # a passage made of sentences: laid at their offsets, the document's start filled with line breaks
    assert second["text"] == "\n" * 5 + "KRAS rose. It fell."
    assert second["entities"] == [{"id": "9", "start": 5, "end": 9, "text": "KRAS", "type": "Gene"}]


def test_passages_that_touch_never_share_a_word(tmp_path: Path) -> None:
    record = {
        "id": "d",
        "text": "ABCdef",
        "passages": [{"offset": 0, "length": 3}, {"offset": 3, "length": 3}],
        "entities": [{"start": 3, "end": 6, "type": "Gene"}],
    }
    write_bioc_json([record], tmp_path / "touch.json")
    sentences, warnings = read_bioc_sentences(tmp_path / "touch.json")
    assert [(s.tokens, s.tags) for s in sentences] == [(("ABC",), ("O",)), (("def",), ("B-Gene",))]
    assert warnings == []


def _build_twins(tmp_path: Path) -> tuple[Path, Path]:
    """The same annotated documents as a PubTator corpus and as a BioC one (XML and JSON splits)."""
    title2, abstract2 = "Aspirin and ERBB2.", "The HER2 gene (ERBB2) binds TNF-α in 😀 cells. Cisplatin failed."
    text2 = f"{title2}\n{abstract2}"
    documents = [
        dict(RECORDS[1], entities=[e for e in RECORDS[1]["entities"] if e["text"] != "HER2"]),
        {
            "id": "55",
            "text": text2,
            "entities": [
                _entity(text2, "Aspirin", "Chemical"),
                _entity(text2, "HER", "Gene"),  # off word boundaries: widened, with a warning
                _entity(text2, "ERBB2", "Gene", nth=1),
                _entity(text2, "TNF-α", "Gene"),
                _entity(text2, "Cisplatin", "Chemical"),
            ],
        },
    ]
    pubtator, bioc_corpus = tmp_path / "pubtator", tmp_path / "bioc"
    for split, suffix in (("train", ".bioc.xml"), ("devel", ".bioc.json"), ("test", ".bioc.xml")):
        write_pubtator(documents, pubtator / f"{split}.pubtator")
        with_passages = [dict(d, passages=_title_and_abstract(d["text"])) for d in documents]
        WRITERS[suffix](with_passages, bioc_corpus / f"{split}{suffix}")
    return pubtator, bioc_corpus


def _title_and_abstract(text: str) -> list[dict[str, Any]]:
    title, _, abstract = text.partition("\n")
    return [{"offset": 0, "length": len(title)}, {"offset": len(title) + 1, "length": len(abstract)}]


def test_a_bioc_corpus_gives_the_sentences_of_its_pubtator_twin(tmp_path: Path) -> None:
    pubtator, bioc_corpus = _build_twins(tmp_path)
    expected, corpus = read_corpus(pubtator), read_corpus(bioc_corpus)
    assert corpus.name == "bioc"
    for name in ("train", "devel", "test"):
        want, got = expected.splits[name], corpus.splits[name]
        assert got.format == "bioc"
        assert got.path.name == f"{name}.bioc.{'json' if name == 'devel' else 'xml'}"
        assert [(s.tokens, s.tags, s.document) for s in got.sentences] == [
            (s.tokens, s.tags, s.document) for s in want.sentences
        ]
        assert (got.documents, got.skipped, len(got.warnings)) == (want.documents, want.skipped, 1)
    train = corpus.splits["train"]
    assert train.warnings == [
        f"{train.path}: document 55 annotation T2 (23..26): 'HER' is not on word boundaries; widened to 'HER2'"
    ]
    assert ("HER2", "B-Gene") in zip(train.sentences[-2].tokens, train.sentences[-2].tags, strict=True)


def test_one_bioc_file_is_a_one_split_corpus(tmp_path: Path) -> None:
    _, bioc_corpus = _build_twins(tmp_path)
    single = bioc_corpus / "devel.bioc.json"
    assert resolve_corpus(str(single)) == single
    corpus = read_corpus(single, splits=["test"])
    assert corpus.name == "devel" and list(corpus.splits) == ["test"]
    assert corpus.splits["test"].format == "bioc" and corpus.entity_types == ["Chemical", "Gene"]


def test_a_split_given_as_bioc_and_pubtator_is_refused(tmp_path: Path) -> None:
    pubtator, _ = _build_twins(tmp_path)
    write_bioc_xml(RECORDS, pubtator / "test.bioc.xml")
    with pytest.raises(CorpusFormatError, match=r"split 'test' is given twice \(test.pubtator and test.bioc.xml\)"):
        read_corpus(pubtator)


def test_discontinuous_and_empty_annotations_are_left_out_with_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "train.bioc.xml"
    path.write_text(
        """<collection><source/><date/><key/><document><id>d1</id>
        <passage><offset>0</offset><text>IL 2 receptor and TP53 rose.</text>
          <annotation id="A"><infon key="type">Gene</infon>
            <location offset="0" length="4"/><location offset="5" length="8"/><text>IL 2 receptor</text></annotation>
          <annotation id="B"><infon key="type">Gene</infon><text>nowhere</text></annotation>
          <annotation id="C"><infon key="type">Gene</infon>
            <location offset="18" length="4"/><text>TP53</text></annotation>
        </passage></document></collection>""",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING):
        (record,) = read_bioc(path)
    assert [e["id"] for e in record["entities"]] == ["A", "C"]
    assert record["entities"][0]["fragments"] == [[0, 4], [5, 13]]
    assert "annotation 'B': no location of any length; left out" in caplog.text
    split = read_corpus(tmp_path, splits=["train"]).splits["train"]
    assert split.skipped == 2 and len(split.warnings) == 2
    assert split.warnings[1].endswith(
        "document d1 annotation A (0..13): discontinuous annotation [[0, 4], [5, 13]] left out"
    )
    assert split.sentences[0].tags == ("O", "O", "O", "O", "B-Gene", "O", "O")


def _collection(passages: str, document_id: str = "d9") -> str:
    return f"<collection><source/><date/><key/><document><id>{document_id}</id>{passages}</document></collection>"


GOOD_PASSAGE = "<passage><offset>10</offset><text>TP53 rose.</text>{}</passage>"
ANNOTATION = '<annotation id="a7">{infons}<location offset="{offset}" length="4"/><text>{text}</text></annotation>'
TYPED = '<infon key="type">Gene</infon>'
BROKEN = {
    "truncated.xml": ("<collection><document><id>1</id>\n<passage>", r":2: invalid XML: .*"),
    "outside.xml": (
        _collection(GOOD_PASSAGE.format(ANNOTATION.format(infons=TYPED, offset=2, text="TP53"))),
        r": document 'd9' annotation 'a7': 2..6 is outside its passage \(10..20\)",
    ),
    "mismatch.xml": (
        _collection(GOOD_PASSAGE.format(ANNOTATION.format(infons=TYPED, offset=10, text="KRAS"))),
        r": document 'd9' annotation 'a7': text 'KRAS' is not the passage text 'TP53'",
    ),
    "untyped.xml": (
        _collection(GOOD_PASSAGE.format(ANNOTATION.format(infons="", offset=10, text="TP53"))),
        r": document 'd9' annotation 'a7': no 'type' infon",
    ),
    "overlap.xml": (
        _collection(GOOD_PASSAGE.format("") + "<passage><offset>15</offset><text>x</text></passage>"),
        r": document 'd9': text at offset 15 overlaps the text before it",
    ),
    "no_offset.xml": (_collection("<passage><text>x</text></passage>"), r": not a BioC XML collection: "),
    "not_bioc.xml": ("<html><body/></html>", r": no BioC documents"),
    "truncated.json": ('{"source": "", "date": "",\n"key": ', r":2: invalid JSON: Expecting value"),
    "list.json": ("[]", r": not a BioC JSON collection: "),
    "missing.json": (
        '{"source": "", "date": "", "key": "", "infons": {}}',
        r": not a BioC JSON collection: missing 'documents'",
    ),
    "string_offset.json": (
        '{"source": "", "date": "", "key": "", "infons": {}, "documents": [{"id": "d9", "infons": {}, "relations": [],'
        ' "passages": [{"offset": "0", "infons": {}, "text": "x", "sentences": [], "annotations": [],'
        ' "relations": []}]}]}',
        r": document 'd9': passage offset must be a non-negative integer, got '0'",
    ),
    "latin1.json": (b'{"source": "\xe9"}', r":1: not UTF-8"),
    "wrong.txt": ("", r": unknown BioC suffix '.txt'"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_malformed_bioc_names_file_document_and_annotation(tmp_path: Path, name: str) -> None:
    content, message = BROKEN[name]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(CorpusFormatError, match=message) as caught:
        read_bioc(path)
    assert caught.value.path == path and str(caught.value).startswith(str(path))


def test_a_broken_bioc_split_stops_read_corpus_with_the_located_error(tmp_path: Path) -> None:
    content, message = BROKEN["mismatch.xml"]
    (tmp_path / "train.bioc.xml").write_text(content, encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=message) as caught:
        read_corpus(tmp_path, splits=["train"])
    assert caught.value.path == tmp_path / "train.bioc.xml"


def test_characters_xml_cannot_hold_are_replaced_one_for_one(tmp_path: Path) -> None:
    text = "TP53\x0bvery\x01 high"
    record = {"id": "x", "text": text, "entities": [{"start": 11, "end": 15, "type": "Level"}]}
    write_bioc_xml([record], tmp_path / "x.xml")
    (back,) = read_bioc(tmp_path / "x.xml")
    assert back["text"] == "TP53 very\ufffd high"
    assert (back["entities"][0]["start"], back["entities"][0]["text"]) == (11, "high")
    write_bioc_json([record], tmp_path / "x.json")  # JSON holds them as they are
    assert read_bioc(tmp_path / "x.json")[0]["text"] == text
    surrogate = record | {"text": "TP53\ud800very\x01 high"}  # which no UTF-8 file can hold
    write_bioc_json([surrogate], tmp_path / "s.json")
    write_bioc_xml([surrogate], tmp_path / "s.xml")
    assert read_bioc(tmp_path / "s.json")[0]["text"] == "TP53\ufffdvery\x01 high"
    assert read_bioc(tmp_path / "s.xml")[0]["text"] == "TP53\ufffdvery\ufffd high"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"entities": [{"start": 3, "end": 8, "type": "Gene"}]}, r"entity 3..8 is not in one passage"),
        ({"passages": [{"offset": 0, "length": 4}, {"offset": 2, "length": 4}]}, r"overlaps the one before"),
        ({"passages": [{"offset": 0, "length": 4}]}, r"text after the last passage would be lost"),
        ({"passages": [{"offset": 0, "length": "4"}]}, r'needs integer "offset" and "length"'),
        ({"infons": ["title"]}, r'"infons" must be an object'),
        ({"entities": [{"start": 0, "end": 99, "type": "Gene"}]}, r"outside the text"),
    ],
)
def test_records_the_writer_cannot_express_are_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    record = {"id": "r1", "text": "abcd efgh", "passages": [{"offset": 0, "length": 4}, {"offset": 5, "length": 4}]}
    with pytest.raises(RequestError, match=f"document r1: .*{message}"):
        write_bioc_xml([record | change], tmp_path / "out.xml")
    assert not (tmp_path / "out.xml").exists()  # atomic: nothing half-written


def test_an_empty_passage_list_still_reads(tmp_path: Path) -> None:
    document = bioc.BioCDocument()
    document.id = "empty"
    collection = bioc.BioCCollection()
    collection.add_document(document)
    (tmp_path / "e.xml").write_text(biocxml.dumps(collection), encoding="utf-8")
    assert read_bioc(tmp_path / "e.xml") == [{"id": "empty", "text": "", "entities": [], "passages": [], "infons": {}}]


def test_passages_are_placed_by_offset_not_by_file_order(tmp_path: Path) -> None:
    path = tmp_path / "unordered.xml"
    path.write_text(
        _collection(
            "<passage><offset>6</offset><text>TP53 fell.</text></passage>"
            '<passage><offset>0</offset><text>KRAS.</text><annotation id="k"><infon key="type">Gene</infon>'
            '<location offset="0" length="4"/><text>KRAS</text></annotation></passage>'
            "<passage><offset>0</offset></passage>"  # empty, at the same offset as the title
        ),
        encoding="utf-8",
    )
    (record,) = read_bioc(path)
    assert record["text"] == "KRAS.\nTP53 fell."
    assert [(p["offset"], p["length"]) for p in record["passages"]] == [(0, 0), (0, 5), (6, 10)]
    sentences, warnings = read_bioc_sentences(path)
    assert [(s.tokens, s.tags) for s in sentences] == [
        (("KRAS", "."), ("B-Gene", "O")),
        (("TP53", "fell", "."), ("O", "O", "O")),
    ]
    assert warnings == []
