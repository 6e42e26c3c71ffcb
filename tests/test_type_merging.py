"""One coherent entity set (``--merge-types``): the corpora's types mapped into one scheme, overlaps resolved."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from mtbioner.cli import main
from mtbioner.errors import RequestError
from mtbioner.runtime.tagging import Entity, Tagger
from mtbioner.runtime.type_merging import MERGED_TYPES, merge_types
from tests.test_tagging import EXAMPLE, RULES, RuleBackend, prob


def e(start: int, end: int, text: str, kind: str, corpus: str, score: float) -> Entity:
    return Entity(start, end, text, kind, (corpus,), score)


def test_same_span_of_one_merged_type_is_one_entity_with_every_source() -> None:
    [gene] = merge_types([e(0, 5, "BRCA1", "GENE", "BC2GM", 0.9), e(0, 5, "BRCA1", "DNA", "JNLPBA", 0.8)])
    assert (gene.type, gene.corpus, gene.score) == ("Gene", ("BC2GM", "JNLPBA"), 0.9)
    assert gene.sources == (("BC2GM", "GENE"), ("JNLPBA", "DNA"))
    assert gene.to_dict()["sources"] == [{"corpus": "BC2GM", "type": "GENE"}, {"corpus": "JNLPBA", "type": "DNA"}]


def test_nested_spans_of_one_merged_type_fold_into_the_longer() -> None:
    text = "IL-2 gene"
    [gene] = merge_types([e(0, 4, "IL-2", "protein", "JNLPBA", 0.95), e(0, 9, text, "DNA", "JNLPBA", 0.6)])
    assert (gene.start, gene.end, gene.type, gene.score) == (0, 9, "Gene", 0.6)
    assert [(n.start, n.end, n.sources) for n in gene.nested] == [(0, 4, (("JNLPBA", "protein"),))]
    assert gene.to_dict()["nested"][0]["text"] == "IL-2"


def test_crossing_spans_of_one_merged_type_keep_the_higher_score() -> None:
    kept = merge_types([e(0, 8, "TNF alpha", "GENE", "BC2GM", 0.7), e(4, 14, "alpha chain", "protein", "JNLPBA", 0.9)])
    assert [(k.start, k.end, k.score) for k in kept] == [(4, 14, 0.9)]


def test_different_merged_types_same_span_best_score_nested_both_kept() -> None:
    kept = merge_types([e(0, 3, "ALS", "Disease", "NCBI-disease", 0.7), e(0, 3, "ALS", "Chemical", "BC5CDR", 0.9)])
    assert [(k.type, k.score) for k in kept] == [("Chemical", 0.9)]
    nested = merge_types(
        [e(0, 3, "CD4", "protein", "JNLPBA", 0.8), e(0, 12, "CD4+ T cells", "cell_type", "JNLPBA", 0.9)]
    )
    assert [(k.start, k.end, k.type) for k in nested] == [(0, 3, "Gene"), (0, 12, "CellType")]


def test_merging_again_changes_nothing_and_a_type_named_alike_still_gets_its_source() -> None:
    """The merged answer merges its own output again (after abbreviations); that must be a no-op."""
    raw = [
        e(0, 5, "BRCA1", "GENE", "BC2GM", 0.9),
        e(0, 5, "BRCA1", "DNA", "JNLPBA", 0.8),
        e(0, 10, "BRCA1 gene", "DNA", "JNLPBA", 0.7),
        e(14, 21, "aspirin", "Chemical", "BC5CDR", 0.95),  # a corpus type that is already a merged type's name
    ]
    once = merge_types(raw)
    assert merge_types(once) == once
    chemical = next(x for x in once if x.type == "Chemical")
    assert chemical.sources == (("BC5CDR", "Chemical"),)


def test_merging_a_merged_set_is_a_no_op_on_random_overlapping_spans() -> None:
    """The answer skips the second merge when no step adds a mention; that is only right if a merge of a
    merged set returns it unchanged, for any mix of nesting, crossing and shared spans of any types."""
    rng = random.Random(7)
    kinds = [
        ("GENE", "BC2GM"),
        ("DNA", "JNLPBA"),
        ("protein", "BioNLP09"),
        ("Chemical", "BC5CDR"),
        ("Disease", "BC5CDR"),
    ]
    for _ in range(500):
        raw = []
        for _ in range(rng.randint(1, 8)):
            start = rng.randint(0, 12)
            kind, corpus = rng.choice(kinds)
            raw.append(e(start, start + rng.randint(1, 6), "x", kind, corpus, rng.choice([0.5, 0.6, 0.7, 0.8, 0.9])))
        once = merge_types(raw)
        assert merge_types(once) == once, raw


def test_every_corpus_type_has_a_merged_type() -> None:
    corpora_types = {"GENE", "Chemical", "Disease", "protein", "DNA", "RNA", "cell_line", "cell_type", "Protein",
                     "Species", "Anatomy"}  # fmt: skip
    assert corpora_types <= set(MERGED_TYPES)
    merged = {"Gene", "Chemical", "Disease", "CellLine", "CellType", "Species", "Anatomy"}
    assert set(MERGED_TYPES.values()) == merged


@pytest.fixture()
def tagger(tiny_encoder: Path) -> Tagger:
    from transformers import AutoTokenizer

    rules = {**RULES, "JNLPBA": {"brca1": ("B-DNA", 3.0)}}
    return Tagger(RuleBackend(AutoTokenizer.from_pretrained(str(tiny_encoder)), rules))


def test_tagger_merges_types_and_filters_by_merged_or_original_type(tagger: Tagger) -> None:
    plain = tagger(EXAMPLE, merge_types=False)
    assert {(x["text"], x["type"]) for x in plain} >= {("BRCA1", "GENE"), ("BRCA1", "DNA")}
    assert all("sources" not in x for x in plain)  # the per-corpus output is unchanged
    assert tagger(EXAMPLE) == tagger(EXAMPLE, merge_types=True)  # merged is the default
    merged = tagger(EXAMPLE, merge_types=True)
    brca1 = [x for x in merged if x["text"] == "BRCA1"]
    assert len(brca1) == 1 and brca1[0]["type"] == "Gene"
    assert sorted(brca1[0]["corpus"]) == ["BC2GM", "JNLPBA"] and brca1[0]["score"] == pytest.approx(
        prob(6, 3), abs=1e-4
    )
    assert {x["type"] for x in merged} == {"Gene", "Disease", "Chemical"}
    assert [x["text"] for x in tagger(EXAMPLE, merge_types=True, types=["Gene"])] == ["BRCA1", "breast"]
    assert [x["text"] for x in tagger(EXAMPLE, merge_types=True, types=["DNA"])] == ["BRCA1"]
    with pytest.raises(RequestError, match="unknown entity types"):
        tagger(EXAMPLE, merge_types=True, types=["Anatomy"])


def test_cli_and_server_take_merge_types(tagger: Tagger, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import httpx

    from mtbioner.apps.serving import create_app, running

    monkeypatch.setattr(Tagger, "load", classmethod(lambda cls, model=None, batch_size=32, link=None: tagger))
    monkeypatch.setattr(sys, "argv", ["mtbioner", "tag", EXAMPLE, "--merge-types"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["entities"] == tagger(EXAMPLE, merge_types=True)
    with running(create_app(tagger)) as url:
        answer = httpx.post(f"{url}/v1/tag", json={"text": EXAMPLE, "merge_types": True}).json()
        default = httpx.post(f"{url}/v1/tag", json={"text": EXAMPLE}).json()
        heads = httpx.post(f"{url}/v1/tag", json={"text": EXAMPLE, "merge_types": False}).json()
    assert default == answer
    assert [(x["text"], x["type"]) for x in heads["entities"]] == [
        (x["text"], x["type"]) for x in tagger(EXAMPLE, merge_types=False)
    ]
    assert [(x["text"], x["type"]) for x in answer["entities"]] == [
        (x["text"], x["type"]) for x in tagger(EXAMPLE, merge_types=True)
    ]
    sources = answer["entities"][0]["sources"]
    assert sorted((x["corpus"], x["type"]) for x in sources) == [("BC2GM", "GENE"), ("JNLPBA", "DNA")]
