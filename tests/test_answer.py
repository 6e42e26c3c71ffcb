"""One clean answer (mtbioner.runtime.answer) and abbreviation definitions (mtbioner.data.abbreviations)."""

from __future__ import annotations

import pytest

from mtbioner.data.abbreviations import best_long_form, find_abbreviations
from mtbioner.errors import MtbionerError
from mtbioner.runtime.answer import AnswerPolicy, answer, type_heads
from mtbioner.runtime.tagging import Entity
from mtbioner.runtime.type_merging import merge_types

HEADS = type_heads({"BC2GM": ["GENE"], "JNLPBA": ["protein", "DNA"], "BioNLP09": ["Protein"], "BC5CDR": ["Chemical"]})


def ent(text: str, piece: str, kind: str, head: str, score: float = 0.9, nth: int = 0) -> Entity:
    start = -1
    for _ in range(nth + 1):
        start = text.index(piece, start + 1)
    return Entity(start, start + len(piece), piece, kind, (head,), score)


def spans(found) -> list[tuple[str, str]]:
    return [(e.text, e.type) for e in found]


def test_default_policy_is_the_merge_types_answer() -> None:
    text = "IL-2 gene and p53 bind aspirin"
    raw = [ent(text, "IL-2 gene", "GENE", "BC2GM"), ent(text, "IL-2", "DNA", "JNLPBA"),
           ent(text, "p53", "Protein", "BioNLP09"),
           ent(text, "aspirin", "Chemical", "BC5CDR")]  # fmt: skip
    assert answer(text, raw, HEADS) == merge_types(raw)
    assert spans(answer(text, raw, HEADS)) == [("IL-2 gene", "Gene"), ("p53", "Gene"), ("aspirin", "Chemical")]


def test_trim_ends_a_gene_at_its_name() -> None:
    text = "p53 protein, VEGF mRNA levels, the PTEN gene promoter and protein"
    raw = [ent(text, "p53 protein", "GENE", "BC2GM"), ent(text, "VEGF mRNA", "GENE", "BC2GM"),
           ent(text, "PTEN gene promoter", "DNA", "JNLPBA"), ent(text, "protein", "GENE", "BC2GM", nth=1)]  # fmt: skip
    found = answer(text, raw, HEADS, AnswerPolicy(trim=True))
    assert spans(found) == [("p53", "Gene"), ("VEGF", "Gene"), ("PTEN", "Gene")]  # a bare "protein" is dropped
    assert found[0].end == 3 and text[found[0].start : found[0].end] == "p53"


def test_generic_drops_lower_case_plural_families_only() -> None:
    text = "growth factors, cytokines, IL-6 receptors, insulin and cyclins"
    raw = [
        ent(text, w, "GENE", "BC2GM") for w in ("growth factors", "cytokines", "IL-6 receptors", "insulin", "cyclins")
    ]
    found = answer(text, raw, HEADS, AnswerPolicy(generic=True))
    assert spans(found) == [("IL-6 receptors", "Gene"), ("insulin", "Gene")]


def test_votes_keep_mentions_enough_heads_found() -> None:
    text = "BRCA1 and ATM and Golgi"
    raw = [ent(text, "BRCA1", "GENE", "BC2GM"), ent(text, "BRCA1", "protein", "JNLPBA"),
           ent(text, "BRCA1", "Protein", "BioNLP09"),
           ent(text, "ATM", "GENE", "BC2GM"), ent(text, "ATM", "Protein", "BioNLP09"),
           ent(text, "Golgi", "protein", "JNLPBA")]  # fmt: skip
    assert spans(answer(text, raw, HEADS, AnswerPolicy(votes=0.5))) == [("BRCA1", "Gene"), ("ATM", "Gene")]
    assert spans(answer(text, raw, HEADS, AnswerPolicy(votes=1.0))) == [("BRCA1", "Gene")]
    # excluding heads shrinks the electorate: BioNLP09 alone decides
    exclude = {"Gene": ("BC2GM", "JNLPBA")}
    assert spans(answer(text, raw, HEADS, AnswerPolicy(votes=1.0, exclude=exclude))) == [
        ("BRCA1", "Gene"),
        ("ATM", "Gene"),
    ]


def test_exclude_ignores_a_heads_answers_of_one_type() -> None:
    text = "Golgi and aspirin and p53"
    raw = [ent(text, "Golgi", "protein", "JNLPBA"), ent(text, "aspirin", "Chemical", "BC5CDR"),
           ent(text, "p53", "protein", "JNLPBA"), ent(text, "p53", "Protein", "BioNLP09")]  # fmt: skip
    found = answer(text, raw, HEADS, AnswerPolicy(exclude={"Gene": ("JNLPBA",), "Species": ("linnaeus",)}))
    assert spans(found) == [("aspirin", "Chemical"), ("p53", "Gene")]
    assert found[1].corpus == ("BioNLP09",)


def test_voted_span_is_the_one_most_heads_gave() -> None:
    text = "the IL-2 gene"
    raw = [ent(text, "IL-2 gene", "GENE", "BC2GM", 0.99), ent(text, "IL-2", "protein", "JNLPBA", 0.8),
           ent(text, "IL-2", "Protein", "BioNLP09", 0.7)]  # fmt: skip
    assert spans(answer(text, raw, HEADS)) == [("IL-2 gene", "Gene")]  # longest by default
    assert spans(answer(text, raw, HEADS, AnswerPolicy(span="voted"))) == [("IL-2", "Gene")]


def test_abbreviations_spread_a_long_forms_type_to_its_short_form_and_back() -> None:
    text = "Tumours called hemangiopericytomas (HPCs) recur. HPCs grow. Growth hormone (GH) rises; GH falls."
    raw = [ent(text, "hemangiopericytomas", "Disease", "NCBI-disease"), ent(text, "GH", "GENE", "BC2GM", nth=1)]
    found = answer(text, raw, HEADS, AnswerPolicy(abbreviations=True))
    assert spans(found) == [("hemangiopericytomas", "Disease"), ("HPCs", "Disease"), ("HPCs", "Disease"),
                            ("Growth hormone", "Gene"), ("GH", "Gene"), ("GH", "Gene")]  # fmt: skip


def test_consistency_tags_other_occurrences_of_a_tagged_string() -> None:
    text = "MYC rises. Later MYC falls, but MYCN does not."
    raw = [ent(text, "MYC", "GENE", "BC2GM")]
    found = answer(text, raw, HEADS, AnswerPolicy(consistency=True))
    assert [(e.start, e.text) for e in found] == [(0, "MYC"), (17, "MYC")]  # whole words only: not MYCN


def test_flat_keeps_the_higher_score_of_overlapping_types() -> None:
    text = "Cr(IV) activates"
    raw = [ent(text, "Cr(IV)", "protein", "JNLPBA", 0.8), ent(text, "Cr", "Chemical", "BC5CDR", 0.95)]
    assert len(answer(text, raw, HEADS)) == 2
    assert spans(answer(text, raw, HEADS, AnswerPolicy(flat=True))) == [("Cr", "Chemical")]


def test_policy_round_trips_and_refuses_bad_values() -> None:
    policy = AnswerPolicy(exclude={"Gene": ("BC2GM",)}, trim=True, votes=0.5)
    assert AnswerPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(MtbionerError, match="votes"):
        AnswerPolicy(votes=2)
    with pytest.raises(MtbionerError, match="unknown answer policy"):
        AnswerPolicy.from_dict({"trimm": True})


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("We studied hemangiopericytomas (HPCs) in mice.", [("hemangiopericytomas", "HPCs")]),
        ("growth hormone ( GH ) levels", [("growth hormone", "GH")]),
        ("tumor necrosis factor alpha (TNF-alpha)", [("tumor necrosis factor alpha", "TNF-alpha")]),
        ("the IL-2 (interleukin 2) gene", [("interleukin 2", "IL-2")]),  # short form first
        ("at 37 degrees (n = 5) and cells (Fig. 1)", []),
        ("a protein (p53) binds", []),  # the letters of p53 are not found in "a protein" from a word start
    ],
)
def test_schwartz_hearst_pairs(text: str, pairs: list[tuple[str, str]]) -> None:
    found = list(find_abbreviations(text))
    assert [(a.long, a.short) for a in found] == pairs
    for a in found:
        assert text[a.long_start : a.long_end] == a.long and text[a.short_start : a.short_end] == a.short


def test_best_long_form_needs_the_first_letter_at_a_word_start() -> None:
    assert best_long_form("BC", "a basic compound") == 2
    assert best_long_form("XY", "nothing here") is None


def test_a_model_folder_keeps_its_policy_and_info_shows_it(tiny_encoder, tmp_path) -> None:
    import json

    from mtbioner.model.model import MultiTaskTagger
    from mtbioner.runtime.loading import describe_model
    from mtbioner.runtime.tagging import Tagger

    labels = {"BC2GM": ["B-GENE", "I-GENE", "O"], "JNLPBA": ["B-protein", "I-protein", "O"]}
    model = MultiTaskTagger.from_encoder(labels, tiny_encoder)
    model.save_pretrained(tmp_path / "m")
    assert "answer       merged by default (the package default policy" in describe_model(tmp_path / "m")
    config_file = tmp_path / "m" / "config.json"
    config = json.loads(config_file.read_text())
    config["extra"]["answer"] = AnswerPolicy(exclude={"Gene": ("JNLPBA",)}, trim=True).to_dict()
    config_file.write_text(json.dumps(config))
    assert "(this model's policy: Gene without JNLPBA; trim)" in describe_model(tmp_path / "m")
    assert Tagger.load(tmp_path / "m").policy == AnswerPolicy(exclude={"Gene": ("JNLPBA",)}, trim=True)
    # excluding both gene heads would leave no gene: info says what the model really does
    config["extra"]["answer"] = AnswerPolicy(exclude={"Gene": ("JNLPBA", "BC2GM")}).to_dict()
    config_file.write_text(json.dumps(config))
    assert "(this model's policy: plain merge of every head)" in describe_model(tmp_path / "m")


def test_excluding_every_head_of_a_type_keeps_them_all() -> None:
    text = "BRCA1 and p53"
    raw = [ent(text, "BRCA1", "GENE", "BC2GM"), ent(text, "p53", "protein", "JNLPBA")]
    two = type_heads({"BC2GM": ["GENE"], "JNLPBA": ["protein"]})
    policy = AnswerPolicy(exclude={"Gene": ("JNLPBA", "BC2GM")})
    assert spans(answer(text, raw, two, policy)) == [("BRCA1", "Gene"), ("p53", "Gene")]  # no other gene head
    assert spans(answer(text, raw, HEADS, policy)) == []  # BioNLP09 can give genes: only its answers count


def test_occurrences_match_the_word_bounded_regular_expression() -> None:
    """The str.find scan finds what ``(?<![^\\W_])needle(?![^\\W_])`` finds, on texts with letters, digits,
    underscores, Greek and superscripts, and needles that overlap themselves."""
    import random
    import re

    from mtbioner.runtime.answer import _occurrences

    alphabet = ["a", "A", "1", "_", " ", "-", "(", "α", "²", "aa", "IL-2", "β"]
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        needle = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
        pattern = re.compile(r"(?<![^\W_])" + re.escape(needle) + r"(?![^\W_])")
        expected = [] if not needle.strip() else [m.span() for m in pattern.finditer(text)]
        assert _occurrences(text, needle) == expected, (text, needle)
    assert _occurrences("IL-2 and IL-22, (IL-2)", "IL-2") == [(0, 4), (17, 21)]
