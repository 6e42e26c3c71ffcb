"""Cross-corpus scoring (mtbioner.study.cross_corpus): gold in the merged scheme, exact and lenient matching."""

from __future__ import annotations

import pytest

from mtbioner.runtime.type_merging import MERGED_TYPES
from mtbioner.study.cross_corpus import Span, build_documents, match_exact, match_lenient, score


def _counts(result, kind):
    c = result[kind]
    return c.tp, c.fp, c.fn


def test_exact_counts_same_start_end_and_type_only() -> None:
    gold = [Span(0, 0, 11, "Gene"), Span(0, 20, 25, "Disease")]
    pred = [Span(0, 0, 11, "Gene"), Span(0, 20, 25, "Chemical"), Span(0, 30, 33, "Gene")]
    result = match_exact(pred, gold)
    assert _counts(result, "Gene") == (1, 1, 0)
    assert _counts(result, "Chemical") == (0, 1, 0)
    assert _counts(result, "Disease") == (0, 0, 1)


def test_lenient_hand_worked_cases_as_hunflairs_evaluate_ann() -> None:
    # text: "p53 protein binds (MDM2) and  BRCA1"
    #        0123456789012345678901234567890123456
    gold = [
        Span(0, 0, 11, "Gene"),  # "p53 protein"
        Span(0, 19, 23, "Gene"),  # "MDM2"
        Span(0, 30, 35, "Gene"),  # "BRCA1"
    ]
    pred = [
        Span(0, 0, 3, "Gene"),  # "p53": inside gold "p53 protein" -> TP; that gold is not inside it -> also FN
        Span(0, 18, 23, "Gene"),  # "(MDM2": starts one character before the gold -> TP, and gold inside it
        Span(0, 30, 36, "Gene"),  # one character past the end of "BRCA1" -> TP, gold inside it
    ]
    result = match_lenient(pred, gold)
    assert _counts(result, "Gene") == (3, 0, 1)
    # two characters off is too far, in either direction
    far = match_lenient([Span(0, 17, 23, "Gene"), Span(0, 30, 37, "Gene")], gold)
    assert _counts(far, "Gene") == (0, 2, 1)  # "p53 protein" unfound; MDM2 and BRCA1 lie inside the predictions
    # another type or another document never matches
    other = match_lenient([Span(0, 0, 3, "Chemical"), Span(1, 0, 3, "Gene")], gold)
    assert other["Chemical"].fp == 1 and other["Gene"].fp == 1 and other["Gene"].fn == 3


def test_lenient_uses_each_gold_entity_once() -> None:
    gold = [Span(0, 0, 10, "Gene")]
    pred = [Span(0, 0, 3, "Gene"), Span(0, 5, 10, "Gene")]  # two pieces inside one gold entity
    assert _counts(match_lenient(pred, gold), "Gene") == (1, 1, 1)


def test_score_counts_only_the_given_types_and_reports_both_modes() -> None:
    gold = [Span(0, 0, 5, "Gene")]
    pred = [Span(0, 0, 3, "Gene"), Span(0, 10, 15, "Chemical")]  # two characters short: gold not inside it
    result = score(pred, gold, ["Gene"])
    assert result["exact"]["overall"]["f1"] == 0.0
    assert result["lenient"]["types"]["Gene"] == {
        "precision": 100.0, "recall": 50.0, "f1": 66.67, "tp": 1, "fp": 0, "fn": 1, "support": 1
    }  # fmt: skip
    assert "Chemical" not in result["lenient"]["types"]


def test_documents_join_tokens_and_map_gold_types() -> None:
    sentences = [
        (("IL", "-", "2", "binds", "p53"), ("B-protein", "I-protein", "I-protein", "O", "B-DNA"), 1),
        (("in", "T", "cells"), ("O", "B-cell_type", "I-cell_type"), 1),
        (("new", "doc"), ("O", "O"), 2),
    ]
    docs = build_documents(sentences, {"protein": "Gene", "DNA": "Gene"})
    assert [d.text for d in docs] == ["IL - 2 binds p53 in T cells", "new doc"]
    assert [(docs[0].text[g.start : g.end], g.type) for g in docs[0].gold] == [("IL - 2", "Gene"), ("p53", "Gene")]
    # without document markers every sentence is a document of its own
    unmarked = build_documents([(s[0], s[1], 0) for s in sentences], MERGED_TYPES)
    assert len(unmarked) == 3 and [g.type for g in unmarked[1].gold] == ["CellType"]
    grouped = build_documents([(s[0], s[1], 0) for s in sentences], MERGED_TYPES, group=2)
    assert [d.text for d in grouped] == ["IL - 2 binds p53 in T cells", "new doc"]
    assert [(grouped[0].text[g.start : g.end], g.doc) for g in grouped[0].gold][-1] == ("T cells", 0)
    # marked documents win over grouping
    assert [d.text for d in build_documents(sentences, MERGED_TYPES, group=3)] == [d.text for d in docs]


@pytest.mark.parametrize("mode", ["exact", "lenient"])
def test_perfect_prediction_scores_100_in_both_modes(mode: str) -> None:
    gold = [Span(0, 0, 5, "Gene"), Span(1, 3, 9, "Disease")]
    assert score(gold, gold, ["Gene", "Disease"])[mode]["overall"]["f1"] == 100.0
