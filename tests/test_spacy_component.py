"""The spaCy component: ``doc.ents``, ``doc.spans``, span attributes, batching, token boundaries, displaCy.

Most tests put ``Tagger.load`` on the rule backend of ``test_tagging`` (plus a JNLPBA head that
calls BRCA1 a DNA, so two types share one span), so every entity and score is known; two load a
real saved tiny model by folder path, one of them through spaCy's entry point in a fresh process.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import spacy
import torch
from spacy import displacy
from spacy.tokens import Doc

from mtbioner.errors import ModelFormatError, RequestError
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.tagging import Tagger
from tests.test_tagging import EXAMPLE, REAL_LABELS, RULES, RuleBackend, prob

RULES_DNA = {**RULES, "JNLPBA": {"brca1": ("B-DNA", 3.0)}}
GENE, DNA = round(prob(6, 3), 4), round(prob(3, 3), 4)  # BRCA1 by BC2GM, by JNLPBA
# Entities that end inside spaCy tokens: BRCA1 in BRCA1/2, and both genes of BRCA1,KRAS.
MISALIGNED = "Carriers of BRCA1/2 and BRCA1,KRAS got cisplatin."


@pytest.fixture()
def loaded(monkeypatch: pytest.MonkeyPatch, tiny_encoder: Path) -> list:
    """Make ``Tagger.load`` return the rule backend; the list collects the model names it was given."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    names: list = []

    def load(cls, model_dir=None, batch_size: int = 32) -> Tagger:
        names.append(model_dir)
        return cls(RuleBackend(tokenizer, RULES_DNA), batch_size)

    monkeypatch.setattr(Tagger, "load", classmethod(load))
    return names


def pipeline(**config) -> spacy.language.Language:
    """Every head's own answer unless ``merge_types`` is given (most tests here are about the heads' spans)."""
    nlp = spacy.blank("en")
    nlp.add_pipe("mtbioner", config={"model": "rules", "merge_types": False, **config})
    return nlp


def test_the_default_is_one_merged_answer(loaded: list) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("mtbioner", config={"model": "rules"})
    doc = nlp(EXAMPLE)
    assert [(s.text, s.label_, s._.mtbioner_corpora) for s in doc.spans["mtbioner"]] == [
        ("BRCA1", "Gene", ["BC2GM", "JNLPBA"]),
        ("breast", "Gene", ["BC2GM"]),
        ("breast cancer", "Disease", ["BC5CDR", "NCBI-disease"]),
        ("cisplatin", "Chemical", ["BC5CDR"]),
    ]
    assert ents(doc) == [("BRCA1", "Gene", 2, 3), ("breast cancer", "Disease", 4, 6), ("cisplatin", "Chemical", 7, 8)]
    assert nlp.get_pipe("mtbioner").labels == ("Chemical", "Disease", "Gene")
    # a head's own type asked of the merged answer: its entities come back, and so does their label
    nlp = spacy.blank("en")
    nlp.add_pipe("mtbioner", config={"model": "rules", "types": ["DNA"]})
    assert nlp.get_pipe("mtbioner").labels == ("Gene",)
    doc = nlp(EXAMPLE)
    assert [(s.text, s.label_) for s in doc.spans["mtbioner"]] == [("BRCA1", "Gene")]


def spans(doc: Doc, key: str = "mtbioner") -> list[tuple]:
    """Every span of the group as (text, label, score, corpora, realigned)."""
    return [
        (s.text, s.label_, s._.mtbioner_score, s._.mtbioner_corpora, s._.mtbioner_realigned) for s in doc.spans[key]
    ]


def ents(doc: Doc) -> list[tuple]:
    return [(e.text, e.label_, e.start, e.end) for e in doc.ents]


def test_every_entity_of_every_head_becomes_a_span_with_its_attributes(loaded: list) -> None:
    doc = pipeline()(EXAMPLE)
    assert loaded == ["rules"]
    breast_cancer = round((prob(3, 5) + prob(5, 5)) / 2, 4)
    assert spans(doc) == [
        ("BRCA1", "DNA", DNA, ["JNLPBA"], False),
        ("BRCA1", "GENE", GENE, ["BC2GM"], False),
        ("breast", "GENE", round(prob(1, 3), 4), ["BC2GM"], False),
        ("breast cancer", "Disease", breast_cancer, ["BC5CDR", "NCBI-disease"], False),
        ("cisplatin", "Chemical", round(prob(4, 5), 4), ["BC5CDR"], False),
    ]
    assert doc.spans["mtbioner"].attrs == {"realigned": 0, "dropped": []}
    assert doc.spans["mtbioner"][0]._.mtbioner_entities == [
        {"start": 13, "end": 18, "text": "BRCA1", "type": "DNA", "corpus": ["JNLPBA"], "score": DNA}
    ]


def test_ents_keep_the_best_scored_of_overlapping_entities(loaded: list) -> None:
    nlp = pipeline()
    doc = nlp(EXAMPLE)
    assert ents(doc) == [("BRCA1", "GENE", 2, 3), ("breast cancer", "Disease", 4, 6), ("cisplatin", "Chemical", 7, 8)]
    # The attributes follow the label: the GENE entity gets BC2GM's score, not JNLPBA's DNA one.
    assert [(e._.mtbioner_score, e._.mtbioner_corpora) for e in doc.ents][0] == (GENE, ["BC2GM"])
    # Best score, not longest (spacy.util.filter_spans would keep "sodium chloride").
    doc = nlp("sodium chloride")
    assert ents(doc) == [("chloride", "GENE", 1, 2)]
    assert [s.text for s in doc.spans["mtbioner"]] == ["sodium chloride", "chloride"]


def test_filters_and_spans_key_reach_the_component(loaded: list) -> None:
    doc = pipeline(types=["GENE"], min_score=0.9, spans_key="bio")(EXAMPLE)
    assert "mtbioner" not in doc.spans
    assert spans(doc, "bio") == [("BRCA1", "GENE", GENE, ["BC2GM"], False)]
    doc = pipeline(corpora=["JNLPBA", "NCBI-disease"])(EXAMPLE)
    assert [(s.text, s.label_) for s in doc.spans["mtbioner"]] == [("BRCA1", "DNA"), ("breast cancer", "Disease")]


def test_bad_options_fail_when_the_component_is_added(loaded: list) -> None:
    with pytest.raises(RequestError, match=r"unknown entity types \['Protein'\]"):
        pipeline(types=["Protein"])
    with pytest.raises(RequestError, match=r"unknown corpora \['BC4CHEMD'\]"):
        pipeline(corpora=["BC4CHEMD"])


def test_pipe_tags_docs_in_batches_with_the_same_result_as_one_by_one(loaded: list) -> None:
    texts = [EXAMPLE, "", "sodium chloride", MISALIGNED, "no entities here", "KRAS and BRCA1."] * 4
    nlp = pipeline()
    component = nlp.get_pipe("mtbioner")
    sizes: list[int] = []
    tag_batch = component.tagger.tag_batch

    def spy(texts, **options):
        sizes.append(len(texts))
        return tag_batch(texts, **options)

    component.tagger.tag_batch = spy
    batched = list(nlp.pipe(texts, batch_size=5))
    assert sizes == [5, 5, 5, 5, 4]
    sizes.clear()
    single = [nlp(text) for text in texts]
    assert sizes == [1] * len(texts)
    assert [d.text for d in batched] == texts
    for one, many in zip(single, batched, strict=True):
        assert ents(many) == ents(one)
        assert spans(many) == spans(one)
        assert many.spans["mtbioner"].attrs == one.spans["mtbioner"].attrs
    assert [len(d.ents) for d in batched[:6]] == [3, 0, 1, 3, 0, 2]


def test_entities_inside_spacy_tokens_are_widened_to_them_and_counted(loaded: list) -> None:
    doc = pipeline()(MISALIGNED)
    assert [t.text for t in doc] == ["Carriers", "of", "BRCA1/2", "and", "BRCA1,KRAS", "got", "cisplatin", "."]
    assert spans(doc) == [
        ("BRCA1/2", "DNA", DNA, ["JNLPBA"], True),
        ("BRCA1/2", "GENE", GENE, ["BC2GM"], True),
        ("BRCA1,KRAS", "DNA", DNA, ["JNLPBA"], True),
        ("BRCA1,KRAS", "GENE", GENE, ["BC2GM"], True),  # two genes on one token: one span, the best score
        ("cisplatin", "Chemical", round(prob(4, 5), 4), ["BC5CDR"], False),
    ]
    both = doc.spans["mtbioner"][3]._.mtbioner_entities
    assert [(e["text"], e["start"], e["end"]) for e in both] == [("BRCA1", 24, 29), ("KRAS", 30, 34)]
    assert doc.spans["mtbioner"].attrs == {"realigned": 5, "dropped": []}
    assert ents(doc) == [("BRCA1/2", "GENE", 2, 3), ("BRCA1,KRAS", "GENE", 4, 5), ("cisplatin", "Chemical", 6, 7)]


@pytest.mark.parametrize("mode", ["strict", "contract"])
def test_entities_inside_spacy_tokens_are_listed_and_logged_when_not_widened(
    loaded: list, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mtbioner.apps.spacy_component"):
        doc = pipeline(alignment_mode=mode)(MISALIGNED)
    assert spans(doc) == [("cisplatin", "Chemical", round(prob(4, 5), 4), ["BC5CDR"], False)]
    dropped = doc.spans["mtbioner"].attrs["dropped"]
    assert [(e["text"], e["type"]) for e in dropped] == [
        ("BRCA1", "DNA"),
        ("BRCA1", "GENE"),
        ("BRCA1", "DNA"),
        ("BRCA1", "GENE"),
        ("KRAS", "GENE"),
    ]
    assert doc.spans["mtbioner"].attrs["realigned"] == 0
    assert "5 entities not on spaCy token boundaries dropped" in caplog.text
    assert "'KRAS' [30:34] GENE" in caplog.text


def test_earlier_entities_are_kept_unless_overwrite_ents(loaded: list) -> None:
    def run(overwrite: bool) -> Doc:
        nlp = spacy.blank("en")
        nlp.add_pipe("entity_ruler").add_patterns([{"label": "DRUG", "pattern": "cisplatin"}])
        nlp.add_pipe("mtbioner", config={"model": "rules", "overwrite_ents": overwrite, "merge_types": False})
        return nlp(EXAMPLE)

    kept = run(False)
    assert [(e.text, e.label_) for e in kept.ents] == [
        ("BRCA1", "GENE"),
        ("breast cancer", "Disease"),
        ("cisplatin", "DRUG"),
    ]
    assert kept.ents[2]._.mtbioner_score is None  # not an mtbioner span
    replaced = run(True)
    assert [(e.text, e.label_) for e in replaced.ents][2] == ("cisplatin", "Chemical")
    assert spans(kept) == spans(replaced)


def test_attributes_survive_serialisation(loaded: list) -> None:
    nlp = pipeline()
    doc = nlp(MISALIGNED)
    copy = Doc(nlp.vocab).from_bytes(doc.to_bytes())
    assert spans(copy) == spans(doc)
    assert copy.spans["mtbioner"].attrs == doc.spans["mtbioner"].attrs
    assert [e._.mtbioner_score for e in copy.ents] == [GENE, GENE, round(prob(4, 5), 4)]


def test_displacy_renders_ents_and_overlapping_spans(loaded: list) -> None:
    doc = pipeline()(EXAMPLE)
    html = displacy.render(doc, style="ent", jupyter=False)
    assert "BRCA1" in html and "GENE" in html and "Disease" in html and "DNA" not in html
    html = displacy.render(doc, style="span", options={"spans_key": "mtbioner"}, jupyter=False)
    assert "BRCA1" in html and "DNA" in html and "GENE" in html and "Chemical" in html


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved two-head tiny model whose scaled-up heads find entities on many words."""
    torch.manual_seed(3)
    model = MultiTaskTagger.from_encoder(REAL_LABELS, tiny_encoder)
    with torch.no_grad():
        for name in model.corpora:
            model.head(name).classifier.weight.mul_(10.0)
    folder = tmp_path_factory.mktemp("spacy") / "model"
    model.save_pretrained(folder)
    return folder


PLAIN = "mutations in brca1 cause breast cancer after cisplatin treatment and kras"


def test_model_folder_path(model_dir: Path) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("mtbioner", config={"model": str(model_dir)})
    doc = nlp(PLAIN)
    expected = Tagger.load(model_dir).tag_batch([PLAIN])[0]
    assert expected, "the biased tiny model should find entities"
    # Plain words: every entity lies on spaCy's tokens, so spans and entities match one to one.
    found = [(s.start_char, s.end_char, s.label_, s._.mtbioner_score) for s in doc.spans["mtbioner"]]
    assert sorted(found) == sorted((e["start"], e["end"], e["type"], e["score"]) for e in expected)
    # Each span left out of doc.ents overlaps an entity there that scores at least as high.
    group = list(doc.spans["mtbioner"])
    assert doc.ents and all(e in group for e in doc.ents)
    for span in group:
        if span not in doc.ents:
            rivals = [e for e in doc.ents if e.start < span.end and span.start < e.end]
            assert rivals and max(e._.mtbioner_score for e in rivals) >= span._.mtbioner_score


def test_saved_pipeline_loads_the_model_again_from_its_path(model_dir: Path, tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("mtbioner", config={"model": str(model_dir), "min_score": 0.5})
    nlp.to_disk(tmp_path / "pipeline")
    again = spacy.load(tmp_path / "pipeline")
    assert again.get_pipe_config("mtbioner")["model"] == str(model_dir)
    assert again.pipe_labels["mtbioner"] == ["Chemical", "Disease", "Gene"]  # the merged answer's types
    first, second = nlp(PLAIN), again(PLAIN)
    assert len(first.spans["mtbioner"]) > 0
    assert [(s.text, s.label_, s._.mtbioner_score) for s in second.spans["mtbioner"]] == [
        (s.text, s.label_, s._.mtbioner_score) for s in first.spans["mtbioner"]
    ]


def test_entry_point_finds_the_factory_in_a_fresh_process(model_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        import spacy
        assert "mtbioner.apps.spacy_component" not in sys.modules
        nlp = spacy.blank("en")
        assert "mtbioner.apps.spacy_component" in sys.modules and "mtbioner.runtime.tagging" not in sys.modules
        nlp.add_pipe("mtbioner", config={{"model": {str(model_dir)!r}}})
        doc = nlp({PLAIN!r})
        print(json.dumps([[s.start_char, s.end_char, s.label_] for s in doc.spans["mtbioner"]]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = Tagger.load(model_dir).tag_batch([PLAIN])[0]
    assert sorted(map(tuple, json.loads(done.stdout))) == sorted((e["start"], e["end"], e["type"]) for e in expected)


def test_core_package_does_not_import_spacy() -> None:
    code = "import sys, mtbioner, mtbioner.runtime.tagging, mtbioner.runtime.loading; print('spacy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_no_model_and_no_shipped_model_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(
        "mtbioner.runtime.shipped.SHIPPED_DIR", tmp_path
    )  # whatever is installed, nothing is shipped here
    with pytest.raises(ModelFormatError, match="no model named, and no shipped 'default' model is installed"):
        spacy.blank("en").add_pipe("mtbioner")


def test_no_model_means_the_shipped_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_dir: Path) -> None:
    shutil.copytree(model_dir, tmp_path / "default")
    monkeypatch.setattr("mtbioner.runtime.shipped.SHIPPED_DIR", tmp_path)
    nlp = spacy.blank("en")
    nlp.add_pipe("mtbioner")
    expected = Tagger.load(model_dir).tag_batch([PLAIN])[0]
    assert expected
    doc = nlp(PLAIN)
    found = [(s.start_char, s.end_char, s.label_) for s in doc.spans["mtbioner"]]
    assert sorted(found) == sorted((e["start"], e["end"], e["type"]) for e in expected)
