"""Tag-scheme conversions and spans, checked against seqeval on random tag sequences."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from mtbioner.data import schemes
from mtbioner.data.schemes import (
    detect_scheme,
    iobes_to_iob2,
    is_iob2,
    parse_tag,
    repair_iob2,
    spans_to_tags,
    tags_to_spans,
    to_iob2,
)

TYPES = ["GENE", "CHEM", "Gene-Or-Protein", "cell_line"]


def test_doctests() -> None:
    result = doctest.testmod(schemes)
    assert result.attempted > 10
    assert result.failed == 0


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("O", ("O", None)),
        ("B-GENE", ("B", "GENE")),
        ("I-GENE", ("I", "GENE")),
        ("E-CHEM", ("E", "CHEM")),
        ("S-CHEM", ("S", "CHEM")),
        ("B-cell_line", ("B", "cell_line")),
        ("B-Gene-Or-Protein", ("B", "Gene-Or-Protein")),
        ("I-B-cell", ("I", "B-cell")),
    ],
)
def test_parse_tag(tag: str, expected: tuple[str, str | None]) -> None:
    assert parse_tag(tag) == expected


@pytest.mark.parametrize("tag", ["", "o", "B-", "B", "X-GENE", "B_GENE", "O-GENE", "b-GENE", "B- GENE", "B-GENE "])
def test_parse_tag_rejects_malformed(tag: str) -> None:
    with pytest.raises(ValueError, match="malformed tag") as info:
        parse_tag(tag)
    assert repr(tag) in str(info.value)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], []),
        (["S-GENE", "O"], ["B-GENE", "O"]),
        (["B-CHEM", "I-CHEM", "E-CHEM"], ["B-CHEM", "I-CHEM", "I-CHEM"]),
        (["B-GENE", "E-GENE", "S-GENE"], ["B-GENE", "I-GENE", "B-GENE"]),
        (["O", "B-X", "I-X"], ["O", "B-X", "I-X"]),
    ],
)
def test_iobes_to_iob2(tags: list[str], expected: list[str]) -> None:
    assert iobes_to_iob2(tags) == expected


@pytest.mark.parametrize(
    ("tags", "expected", "repaired"),
    [
        ([], [], 0),
        (["B-GENE", "I-GENE", "O"], ["B-GENE", "I-GENE", "O"], 0),
        (["I-GENE"], ["B-GENE"], 1),
        (["O", "I-GENE", "I-GENE"], ["O", "B-GENE", "I-GENE"], 1),
        (["B-CHEM", "I-GENE"], ["B-CHEM", "B-GENE"], 1),
        (["I-GENE", "B-GENE", "I-GENE"], ["B-GENE", "B-GENE", "I-GENE"], 1),
        (["I-A", "I-B", "I-A"], ["B-A", "B-B", "B-A"], 3),
    ],
)
def test_repair_iob2(tags: list[str], expected: list[str], repaired: int) -> None:
    assert repair_iob2(tags) == (expected, repaired)


@pytest.mark.parametrize("tags", [["B-GENE", "E-GENE"], ["S-GENE"], ["B-GENE", "X"]])
def test_repair_iob2_rejects_non_iob_tags(tags: list[str]) -> None:
    with pytest.raises(ValueError, match=repr(tags[-1])):
        repair_iob2(tags)


@pytest.mark.parametrize(
    ("sequences", "scheme"),
    [
        ([], "IOB2"),
        ([["O", "O"]], "IOB2"),
        ([["B-GENE", "I-GENE", "O"]], "IOB2"),
        ([["I-GENE", "O"], ["O", "I-CHEM", "B-CHEM"]], "IOB1"),
        ([["I-GENE", "I-GENE"]], "IOB1"),
        # B-GENE after O: B starts chunks, so the stray I- are IOB2 errors, not IOB1
        ([["I-GENE", "O"], ["O", "B-GENE"]], "IOB2"),
        ([["I-CHEM", "B-GENE"]], "IOB2"),  # B after a different type
        ([["B-GENE", "E-GENE"]], "IOBES"),
        ([["O"], ["S-CHEM"]], "IOBES"),
    ],
)
def test_detect_scheme(sequences: list[list[str]], scheme: str) -> None:
    assert detect_scheme(sequences) == scheme


@pytest.mark.parametrize(
    ("tags", "scheme", "expected", "repaired"),
    [
        (["I-GENE", "I-GENE", "B-GENE", "O"], "IOB1", ["B-GENE", "I-GENE", "B-GENE", "O"], 0),
        (["O", "I-GENE", "I-CHEM"], "IOB1", ["O", "B-GENE", "B-CHEM"], 0),
        (["O", "I-GENE", "B-CHEM"], "IOB2", ["O", "B-GENE", "B-CHEM"], 1),
        (["B-GENE", "I-GENE"], "IOB2", ["B-GENE", "I-GENE"], 0),
        (["S-GENE", "B-CHEM", "I-CHEM", "E-CHEM"], "IOBES", ["B-GENE", "B-CHEM", "I-CHEM", "I-CHEM"], 0),
        (["I-GENE", "E-GENE", "O"], "IOBES", ["B-GENE", "I-GENE", "O"], 1),
        (["E-GENE"], "IOBES", ["B-GENE"], 1),
        (["S-GENE", "E-GENE"], "IOBES", ["B-GENE", "B-GENE"], 1),
        (["B-GENE", "E-GENE", "I-GENE"], "IOBES", ["B-GENE", "I-GENE", "B-GENE"], 1),
        (["B-GENE", "I-CHEM", "E-CHEM"], "IOBES", ["B-GENE", "B-CHEM", "I-CHEM"], 1),
    ],
)
def test_to_iob2(tags: list[str], scheme: schemes.Scheme, expected: list[str], repaired: int) -> None:
    assert to_iob2(tags, scheme) == (expected, repaired)


def test_to_iob2_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="'BILOU'"):
        to_iob2(["O"], "BILOU")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sequences", "expected"),
    [
        ([], True),
        ([["O"], ["B-GENE", "I-GENE"], ["B-A", "B-B", "I-B"]], True),
        ([["B-GENE"], ["I-GENE"]], False),
        ([["B-CHEM", "I-GENE"]], False),
        ([["S-GENE"]], False),
    ],
)
def test_is_iob2(sequences: list[list[str]], expected: bool) -> None:
    assert is_iob2(sequences) is expected


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        ([], []),
        (["O", "O"], []),
        (["B-GENE", "I-GENE", "O", "B-CHEM"], [("GENE", 0, 2), ("CHEM", 3, 4)]),
        (["I-GENE", "I-GENE"], [("GENE", 0, 2)]),  # conlleval: an I- after the start opens a chunk
        (["O", "I-GENE", "B-GENE"], [("GENE", 1, 2), ("GENE", 2, 3)]),
        (["B-GENE", "I-CHEM"], [("GENE", 0, 1), ("CHEM", 1, 2)]),
        (["B-Gene-Or-Protein", "I-Gene-Or-Protein"], [("Gene-Or-Protein", 0, 2)]),
        (["S-GENE", "B-CHEM", "E-CHEM", "E-CHEM"], [("GENE", 0, 1), ("CHEM", 1, 3), ("CHEM", 3, 4)]),
    ],
)
def test_tags_to_spans(tags: list[str], spans: list[tuple[str, int, int]]) -> None:
    assert tags_to_spans(tags) == spans


@pytest.mark.parametrize(
    ("spans", "length", "tags"),
    [
        ([], 2, ["O", "O"]),
        ([("GENE", 0, 2), ("CHEM", 2, 3)], 4, ["B-GENE", "I-GENE", "B-CHEM", "O"]),
        ([("CHEM", 3, 4), ("GENE", 0, 1)], 4, ["B-GENE", "O", "O", "B-CHEM"]),
    ],
)
def test_spans_to_tags(spans: list[tuple[str, int, int]], length: int, tags: list[str]) -> None:
    assert spans_to_tags(spans, length) == tags


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        ([("GENE", 1, 1)], "empty or outside"),
        ([("GENE", -1, 1)], "empty or outside"),
        ([("GENE", 2, 4)], "empty or outside"),
        ([("GENE", 0, 2), ("CHEM", 1, 3)], "overlaps"),
    ],
)
def test_spans_to_tags_rejects_bad_spans(spans: list[tuple[str, int, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spans_to_tags(spans, 3)


def _tags(prefixes: str) -> st.SearchStrategy[list[str]]:
    tag = st.one_of(
        st.just("O"), st.builds(lambda p, t: f"{p}-{t}", st.sampled_from(prefixes), st.sampled_from(TYPES))
    )
    return st.lists(tag, max_size=12)


@settings(max_examples=400, deadline=None)
@given(_tags("BIES"))
def test_tags_to_spans_matches_seqeval(tags: list[str]) -> None:
    expected = [(type_, start, end + 1) for type_, start, end in get_entities(list(tags))]
    assert tags_to_spans(tags) == expected


@settings(max_examples=300, deadline=None)
@given(_tags("BI"))
def test_repair_keeps_spans_and_round_trips(tags: list[str]) -> None:
    repaired, _ = repair_iob2(tags)
    spans = tags_to_spans(tags)
    assert tags_to_spans(repaired) == spans
    assert spans_to_tags(spans, len(tags)) == repaired
    assert repair_iob2(repaired) == (repaired, 0)
    assert is_iob2([repaired])


@settings(max_examples=300, deadline=None)
@given(_tags("BIES"))
def test_iobes_conversion_keeps_conlleval_spans(tags: list[str]) -> None:
    converted, repaired = to_iob2(tags, "IOBES")
    assert tags_to_spans(converted) == tags_to_spans(tags)
    assert is_iob2([converted])
    assert repaired <= len(tags)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TYPES), st.integers(1, 3), st.integers(0, 2)), max_size=5))
def test_spans_round_trip(pieces: list[tuple[str, int, int]]) -> None:
    spans, position = [], 0
    for type_, size, gap in pieces:  # non-overlapping spans separated by `gap` O tags
        spans.append((type_, position + gap, position + gap + size))
        position += gap + size
    assert tags_to_spans(spans_to_tags(spans, position + 1)) == spans
