"""Tagging raw text: offsets, merged heads, filters, scores and long documents.

Two kinds of model are used. ``RuleBackend`` scores chosen words with chosen logits, so the
expected entities and scores can be written by hand; it goes through the ``run`` path that
exported ONNX models take. A tiny random BERT whose heads are scaled up (so that entities
appear on many words) goes through the torch path, for properties that must hold for any
model: offsets, non-overlap, scores in [0, 1], windows stitched back exactly.
"""

from __future__ import annotations

import gc
import math
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mtbioner.data.text import split_sentences
from mtbioner.errors import RequestError
from mtbioner.model.decoding import Decoder, crf_marginals
from mtbioner.model.encoding import encode
from mtbioner.model.model import HeadConfig, MultiTaskTagger, TaggerConfig
from mtbioner.runtime.inference import sentence_emissions
from mtbioner.runtime.tagging import Entity, Tagger, collector_paused, flatten, merge_entities

KEYS = {"start", "end", "text", "type", "corpus", "score"}


class RuleBackend:
    """A stand-in model: each head gives its rule words a label with a set logit, all else ``O``.

    Args:
        tokenizer: A tokenizer in which every rule word is one sub-token.
        rules: ``{head: {word: (label, logit)}}``; the other labels of a rule word get 0,
            and a word without a rule gets ``O`` with logit 4.
        max_length: Window size, small to force long sentences into several windows.
    """

    def __init__(self, tokenizer, rules: dict[str, dict[str, tuple[str, float]]], max_length: int = 128) -> None:
        corpora: dict[str, HeadConfig] = {}
        self.table: dict[str, tuple[list[str], dict[int, tuple[int, float]]]] = {}
        for head, words in rules.items():
            types = sorted({label[2:] for label, _ in words.values()})
            labels = sorted([f"{p}-{t}" for t in types for p in "BI"] + ["O"])
            corpora[head] = HeadConfig(labels)
            by_id = {}
            for word, (label, logit) in words.items():
                pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
                assert len(pieces) == 1, f"rule word {word!r} must be one sub-token, got {pieces}"
                by_id[pieces[0]] = (labels.index(label), logit)
            self.table[head] = (labels, by_id)
        self.config = TaggerConfig("rules", {}, corpora, max_length=max_length)
        self.tokenizer = tokenizer
        self.calls = 0

    def decoders(self) -> dict[str, Decoder]:
        return {head: Decoder(tuple(spec.labels)) for head, spec in self.config.corpora.items()}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, corpora: list[str]) -> dict[str, np.ndarray]:
        self.calls += 1
        out = {}
        for head in corpora:
            labels, by_id = self.table[head]
            scores = np.zeros((*input_ids.shape, len(labels)), dtype=np.float32)
            scores[..., labels.index("O")] = 4.0
            for token, (index, logit) in by_id.items():
                hit = input_ids == token
                scores[hit] = 0.0
                scores[hit, index] = logit
            out[head] = scores
        return out


RULES = {
    "BC2GM": {
        "brca1": ("B-GENE", 6.0),
        "kras": ("B-GENE", 5.0),
        "breast": ("B-GENE", 1.0),
        "chloride": ("B-GENE", 6.0),
    },
    "BC5CDR": {
        "breast": ("B-Disease", 3.0),
        "cancer": ("I-Disease", 5.0),
        "cisplatin": ("B-Chemical", 4.0),
        "sodium": ("B-Chemical", 2.0),
        "chloride": ("I-Chemical", 2.0),
    },
    "NCBI-disease": {"breast": ("B-Disease", 2.0), "cancer": ("I-Disease", 2.0)},
}
EXAMPLE = "Mutations in BRCA1 cause breast cancer after cisplatin treatment."


def prob(logit: float, n_labels: int) -> float:
    """Softmax probability of a rule word's label (its logit against n_labels - 1 zeros)."""
    return math.exp(logit) / (math.exp(logit) + n_labels - 1)


def entity(start: int, end: int, text: str, type_: str, corpus: list[str], score: float) -> dict:
    return {"start": start, "end": end, "text": text, "type": type_, "corpus": corpus, "score": score}


# Worked out by hand from RULES (BC2GM has 3 labels, BC5CDR 5, NCBI-disease 3).
BRCA1 = entity(13, 18, "BRCA1", "GENE", ["BC2GM"], prob(6, 3))
BREAST_GENE = entity(25, 31, "breast", "GENE", ["BC2GM"], prob(1, 3))
BREAST_CANCER = entity(25, 38, "breast cancer", "Disease", ["BC5CDR", "NCBI-disease"], (prob(3, 5) + prob(5, 5)) / 2)
CISPLATIN = entity(45, 54, "cisplatin", "Chemical", ["BC5CDR"], prob(4, 5))


def approx(entities: list[dict]) -> list[dict]:
    """Expected entities with scores compared to the 4 decimals the tagger reports."""
    return [{**e, "score": pytest.approx(e["score"], abs=6e-5)} for e in entities]


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_encoder))


class HeadsTagger(Tagger):
    """Every head's own answer (``merge_types=False``), which most tests here are about; the merged default
    answer has tests of its own below (and in test_answer.py)."""

    def tag_batch(self, texts, **options):  # type: ignore[override]
        options.setdefault("merge_types", False)
        return super().tag_batch(texts, **options)


@pytest.fixture()
def rules(tokenizer) -> Tagger:
    return HeadsTagger(RuleBackend(tokenizer, RULES))


REAL_LABELS = {
    "BC2GM": ["B-GENE", "I-GENE", "O"],
    "BC5CDR": ["B-Chemical", "B-Disease", "I-Chemical", "I-Disease", "O"],
}


def biased_model(encoder: Path, head: str, scale: float = 10.0) -> MultiTaskTagger:
    """A random tiny model whose scaled-up heads put entities on many words (16 sub-token windows)."""
    torch.manual_seed(3)
    model = MultiTaskTagger.from_encoder(REAL_LABELS, encoder, head=head, max_length=16)  # type: ignore[arg-type]
    with torch.no_grad():
        for name in model.corpora:
            model.head(name).classifier.weight.mul_(scale)
    return model.eval()


@pytest.fixture(scope="module", params=["linear", "crf"])
def real(request, tiny_encoder: Path) -> Tagger:
    return HeadsTagger(biased_model(tiny_encoder, request.param))


@pytest.fixture(scope="module")
def linear(tiny_encoder: Path) -> Tagger:
    return HeadsTagger(biased_model(tiny_encoder, "linear"))


# --- API shape, merging, flat, filters (exact, with the rule backend) -----------------------------


def test_every_type_of_every_head_with_merged_duplicates(rules: Tagger) -> None:
    found = rules(EXAMPLE)
    assert found == approx([BRCA1, BREAST_GENE, BREAST_CANCER, CISPLATIN])
    assert all(set(e) == KEYS for e in found)
    assert all(EXAMPLE[e["start"] : e["end"]] == e["text"] for e in found)


def test_the_default_answer_is_one_merged_answer(tokenizer) -> None:
    tagger = Tagger(RuleBackend(tokenizer, RULES))
    found = tagger(EXAMPLE)
    # BRCA1 and breast are genes (BC2GM's GENE), breast cancer a disease two heads agree on: one entity
    # listing both; a gene inside a disease is another type, so both are kept
    assert [(e["text"], e["type"]) for e in found] == [
        ("BRCA1", "Gene"), ("breast", "Gene"), ("breast cancer", "Disease"), ("cisplatin", "Chemical")
    ]  # fmt: skip
    sources = [{"corpus": "BC5CDR", "type": "Disease"}, {"corpus": "NCBI-disease", "type": "Disease"}]
    assert found[2]["sources"] == sources
    assert found == tagger(EXAMPLE, merge_types=True)
    assert tagger(EXAMPLE, merge_types=False) == HeadsTagger(tagger.backend)(EXAMPLE)
    assert tagger.merged_types == ["Chemical", "Disease", "Gene"]


def test_flat_keeps_the_best_of_overlapping_entities(rules: Tagger) -> None:
    assert rules(EXAMPLE, flat=True) == approx([BRCA1, BREAST_CANCER, CISPLATIN])
    # A shorter entity wins when it is more confident: chloride GENE (6) over sodium chloride Chemical (2, 2).
    text = "sodium chloride"
    chemical = entity(0, 15, text, "Chemical", ["BC5CDR"], prob(2, 5))
    gene = entity(7, 15, "chloride", "GENE", ["BC2GM"], prob(6, 3))
    assert rules(text) == approx([chemical, gene])
    assert rules(text, flat=True) == approx([gene])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"types": ["Disease"]}, [BREAST_CANCER]),
        ({"types": ["GENE", "Chemical"]}, [BRCA1, BREAST_GENE, CISPLATIN]),
        ({"corpora": ["NCBI-disease"]}, [{**BREAST_CANCER, "corpus": ["NCBI-disease"], "score": prob(2, 3)}]),
        ({"corpora": ["BC2GM", "BC5CDR"]}, [BRCA1, BREAST_GENE, {**BREAST_CANCER, "corpus": ["BC5CDR"]}, CISPLATIN]),
        ({"min_score": 0.92}, [BRCA1, CISPLATIN]),
        ({"min_score": 0.0}, [BRCA1, BREAST_GENE, BREAST_CANCER, CISPLATIN]),
        ({"min_score": 1.0}, []),
        ({"types": ["GENE"], "flat": True}, [BRCA1, BREAST_GENE]),  # filter first: no Disease to lose to
    ],
)
def test_filters(rules: Tagger, options: dict, expected: list[dict]) -> None:
    assert rules(EXAMPLE, **options) == approx(expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.tag_batch([EXAMPLE], types=["Protein"]), r"unknown entity types \['Protein'\]; this model knows"),
        (lambda t: t.tag_batch([EXAMPLE], corpora=["JNLPBA"]), r"unknown corpora \['JNLPBA'\]; this model's heads"),
        (lambda t: t.tag_batch([EXAMPLE], min_score=1.5), "min_score must be between 0 and 1, not 1.5"),
        (lambda t: t.tag_batch([EXAMPLE], min_score=-0.1), "min_score must be between 0 and 1"),
        (lambda t: t.tag_batch(EXAMPLE), "texts must be a list of strings, not one string"),
        (lambda t: t.tag_batch([EXAMPLE, None]), "text 1 is NoneType, not a string"),
        (lambda t: Tagger(t.backend, batch_size=0), "batch_size must be at least 1"),
        (lambda t: Tagger(t.backend, batch_size=2.5), "batch_size must be a whole number of windows, not 2.5"),
        (lambda t: Tagger.load(5), "model_dir must be a folder or a shipped model's name, not 5"),
        (lambda t: t.tag_batch([EXAMPLE], link_threshold=0.5), "link_threshold needs a tagger that links"),
        (lambda t: t.tag_batch([EXAMPLE], min_score="0.5"), "min_score must be between 0 and 1, not '0.5'"),
        (lambda t: t.tag_batch([EXAMPLE], min_score=True), "min_score must be between 0 and 1, not True"),
        (lambda t: t.tag_batch([EXAMPLE], types="GENE"), "types must be a list of strings, not 'GENE'"),
        (lambda t: t.tag_batch([EXAMPLE], corpora=[["BC2GM"]]), "corpora must be a list of strings"),
        (lambda t: t.tag_batch(None), "texts must be a list of strings, not NoneType"),
        (lambda t: t.tag_batch({0: EXAMPLE}), "texts must be a list of strings, not dict"),
        (
            lambda t: t.tag_batch([EXAMPLE], types=["Gene"]),
            r"unknown entity types \['Gene'\] in the per-corpus answer",
        ),
    ],
)
def test_bad_requests_name_the_problem(rules: Tagger, call, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        call(rules)


def test_any_iterable_of_texts_is_read_once_in_order(rules: Tagger) -> None:
    class Labelled(list):
        """Iterates in order but looks labels up elsewhere, as a pandas Series with a shuffled index does."""

        def __getitem__(self, i):  # type: ignore[override]
            return super().__getitem__(-1 - i)

    texts = ["KRAS", EXAMPLE]
    expected = rules.tag_batch(texts)
    assert rules.tag_batch(Labelled(texts)) == expected
    assert rules.tag_batch(t for t in texts) == expected  # a generator is not used up by the checks
    assert rules.tag_batch(tuple(texts)) == expected


def test_batch_keeps_text_order_and_empty_texts(rules: Tagger) -> None:
    texts = ["", EXAMPLE, " \t\n ", "KRAS", EXAMPLE]
    found = rules.tag_batch(texts)
    assert found == [[], rules(EXAMPLE), [], approx([entity(0, 4, "KRAS", "GENE", ["BC2GM"], prob(5, 3))]), found[1]]


def test_merge_entities_lists_every_head_and_keeps_the_best_score() -> None:
    found = merge_entities(
        [
            Entity(0, 4, "KRAS", "GENE", ("a",), 0.6),
            Entity(0, 4, "KRAS", "Chemical", ("b",), 0.7),  # other type: kept apart
            Entity(0, 4, "KRAS", "GENE", ("b",), 0.9),
            Entity(0, 4, "KRAS", "GENE", ("c",), 0.8),
            Entity(5, 9, "gene", "GENE", ("a",), 0.5),
        ]
    )
    assert found == [
        Entity(0, 4, "KRAS", "Chemical", ("b",), 0.7),
        Entity(0, 4, "KRAS", "GENE", ("a", "b", "c"), 0.9),
        Entity(5, 9, "gene", "GENE", ("a",), 0.5),
    ]


def test_flatten_prefers_score_then_length_then_position() -> None:
    a = Entity(0, 10, "x" * 10, "A", ("h",), 0.8)
    b = Entity(5, 15, "x" * 10, "B", ("h",), 0.8)  # same score and length, later: loses to a
    c = Entity(12, 14, "xx", "C", ("h",), 0.7)  # touches only b, which is gone: kept
    d = Entity(0, 3, "xxx", "D", ("h",), 0.8)  # same score, shorter than a: loses
    e = Entity(14, 20, "x" * 6, "E", ("h",), 0.95)  # best score, does not overlap c (half-open)
    assert flatten([a, b, c, d, e]) == [a, c, e]
    assert flatten([]) == []


def test_one_encoder_pass_per_batch_feeds_every_head(tokenizer, linear: Tagger, monkeypatch) -> None:
    text = " ".join(["The kras gene of mice in the liver rose in breast cancer cells."] * 10)
    words = [[t.text for t in s.tokens] for s in split_sentences(text)]
    windows = encode(linear.backend.tokenizer, words, linear.backend.config.max_length)
    calls = []
    original = linear.backend.encode
    monkeypatch.setattr(linear.backend, "encode", lambda *a: calls.append(1) or original(*a))
    Tagger(linear.backend, batch_size=4).tag_batch([text])
    assert len(calls) == math.ceil(len(windows) / 4) > 1  # two heads, yet one encoder pass per batch

    backend = RuleBackend(tokenizer, RULES, max_length=16)
    Tagger(backend, batch_size=3).tag_batch([text, EXAMPLE])
    example = [t.text for t in split_sentences(EXAMPLE)[0].tokens]
    assert backend.calls == math.ceil(len(encode(tokenizer, [*words, example], 16)) / 3)


def test_no_progress_bar_is_made_unless_asked(linear: Tagger, monkeypatch) -> None:
    # Even a disabled tqdm makes a multiprocessing lock and a monitor thread in every server worker.
    import mtbioner.runtime.inference as inference

    made = []
    real_tqdm = inference.tqdm
    monkeypatch.setattr(inference, "tqdm", lambda *a, **k: made.append(k) or real_tqdm(*a, **k))
    words = [["The", "kras", "gene", "."]]
    sentence_emissions(linear.backend, words, linear.corpora)
    assert made == []
    sentence_emissions(linear.backend, words, linear.corpora, progress=True)
    assert len(made) == 1


# --- Offsets and scores on any text (properties, with real tiny models) ---------------------------

# Words, marks, emoji sequences, case-changing letters, invisible characters, lone surrogates
# (a Python str may hold them, e.g. from surrogateescape'd bytes; the tokenizer may not).
PIECES = [
    *("BRCA1", "breast", "cancer", "cisplatin", "KRAS", "IL-2", "α-Synuclein", "Dr.", "(", ")", "."),
    *("e\u0301", "\u0301\u0301", "😀", "👩\u200d🔬", "\U0001f1e9\U0001f1ea", "ß", "İ", "ﬁ"),
    *("\x00", "\u200b", "\ufeff", "\ud83d", "\udcff"),
]
SEPARATORS = ["", " ", "  ", "\t", "\n", "\r\n", "\n\n", "\xa0", "\u3000", ". "]
texts = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(PIECES), st.text(st.characters(exclude_categories=()), max_size=6)),
        st.sampled_from(SEPARATORS),
    ),
    max_size=30,
).map(lambda parts: "".join(a + b for a, b in parts))


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
@example(text="Mutations\tin  BRCA1\r\n\ne\u0301 😀 breast\u00a0cancer \ud83d \udcff.")
def test_offsets_slice_the_original_text(real: Tagger, text: str) -> None:
    found = real(text)
    for e in found:
        assert set(e) == KEYS
        assert 0 <= e["start"] < e["end"] <= len(text)
        assert text[e["start"] : e["end"]] == e["text"]
        assert not e["text"][0].isspace() and not e["text"][-1].isspace()
        assert e["type"] in real.entity_types and e["corpus"] and set(e["corpus"]) <= set(real.corpora)
        assert 0.0 <= e["score"] <= 1.0
    assert found == sorted(found, key=lambda e: (e["start"], e["end"], e["type"]))
    for head in real.corpora:
        mine = [e for e in found if head in e["corpus"]]
        assert not any(overlap(a, b) for i, a in enumerate(mine) for b in mine[i + 1 :]), head
    flat = real(text, flat=True)
    assert all(e in found for e in flat)
    assert not any(overlap(a, b) for i, a in enumerate(flat) for b in flat[i + 1 :])
    # Every entity left out lost to an overlapping one at least as confident.
    for e in found:
        assert e in flat or any(overlap(e, k) and k["score"] >= e["score"] for k in flat)


def test_entities_appear_for_every_type(real: Tagger) -> None:
    text = " ".join(["Mutations in BRCA1 cause breast cancer after cisplatin treatment."] * 5)
    assert {e["type"] for e in real(text)} == set(real.entity_types)


def test_crf_scores_are_mean_marginals_in_unit_range(tiny_encoder: Path) -> None:
    model = biased_model(tiny_encoder, "crf", scale=1000.0)  # extreme emissions: marginals near 0 and 1
    with torch.no_grad():
        model.head("BC5CDR").transitions.normal_(0.0, 5.0)
    tagger = Tagger(model)
    text = "Mutations in BRCA1 cause breast cancer after cisplatin treatment in sodium chloride."
    found = tagger(text)
    assert found and all(0.0 <= e["score"] <= 1.0 and math.isfinite(e["score"]) for e in found)
    (sentence,) = split_sentences(text)
    emissions = sentence_emissions(model, [[t.text for t in sentence.tokens]])[0]["BC5CDR"]
    head = model.head("BC5CDR")
    decoder = tagger.decoders["BC5CDR"]
    tags, _ = decoder.decode(emissions)
    marginals = crf_marginals(emissions, decoder.start, decoder.end, decoder.transitions)
    starts = [t.start for t in sentence.tokens]
    for e in (e for e in found if "BC5CDR" in e["corpus"]):
        first, last = starts.index(e["start"]), max(i for i, s in enumerate(starts) if s < e["end"]) + 1
        chosen = [marginals[i, head.labels.index(tags[i])] for i in range(first, last)]
        assert e["score"] == pytest.approx(float(np.mean(chosen)), abs=6e-5)


def test_load_from_folder_gives_the_same_entities(linear: Tagger, tmp_path: Path) -> None:
    linear.backend.save_pretrained(tmp_path / "m")
    assert Tagger.load(tmp_path / "m")(EXAMPLE, merge_types=False) == linear(EXAMPLE)
    assert Tagger.load(tmp_path / "m")(EXAMPLE) == Tagger(linear.backend)(EXAMPLE)


# --- Long input: windows stitched back, nothing truncated ------------------------------------------

VOCAB = ["brca1", "kras", "breast", "cancer", "cisplatin", "mutations", "in", "the", "of", "mice", "liver", "sodium"]


def long_document(rng: random.Random) -> str:
    """Many short sentences, then one of 3,000 words (hundreds of 16-sub-token windows), then more."""

    def sentence(n: int) -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(n)).capitalize() + "."

    before = [sentence(rng.randint(3, 30)) for _ in range(60)]
    after = [sentence(rng.randint(3, 30)) for _ in range(60)]
    return " ".join(before) + "\n\n" + sentence(3000) + "\n\n" + "  ".join(after)


def test_long_document_equals_tagging_each_sentence_alone(linear: Tagger) -> None:
    text = long_document(random.Random(0))
    sentences = split_sentences(text)
    assert len(sentences) == 121 and max(len(s.tokens) for s in sentences) == 3001
    # One window per forward pass, so that both ways compute exactly the same numbers.
    tagger = Tagger(linear.backend, batch_size=1)
    expected = []
    for s in sentences:
        piece = text[s.start : s.end]
        assert len(split_sentences(piece)) == 1
        for e in tagger(piece):
            expected.append({**e, "start": e["start"] + s.start, "end": e["end"] + s.start})
    found = tagger(text)
    assert found == expected
    assert len(found) > 500


def test_batches_sorted_by_length_give_each_sentence_its_own_scores(linear: Tagger) -> None:
    rng = random.Random(1)
    sentences = [[rng.choice(VOCAB) for _ in range(rng.choice([1, 2, 5, 14, 40, 100]))] for _ in range(40)]
    one = sentence_emissions(linear.backend, sentences, batch_size=1)
    many = sentence_emissions(linear.backend, sentences, batch_size=16)
    for a, b in zip(one, many, strict=True):
        for head in linear.corpora:
            np.testing.assert_allclose(a[head], b[head], atol=1e-4)


def test_entity_across_window_edges_stays_whole(tokenizer) -> None:
    backend = RuleBackend(tokenizer, {"G": {"brca1": ("B-GENE", 6.0), "kras": ("I-GENE", 6.0)}}, max_length=8)
    words = ["the", "the", "brca1"] + ["kras"] * 20 + ["the"]
    text = " ".join(words)
    assert len(encode(tokenizer, [words], max_length=8)) >= 4
    (found,) = HeadsTagger(backend).tag_batch([text])
    assert found == approx([entity(8, 8 + len("brca1") + 5 * 20, text[8:-4], "GENE", ["G"], prob(6, 3))])


def test_real_model_entities_cross_window_edges(linear: Tagger) -> None:
    text = long_document(random.Random(0))
    (long,) = [s for s in split_sentences(text) if len(s.tokens) > 1000]
    words = [t.text for t in long.tokens]
    owner = {}
    for index, window in enumerate(encode(linear.backend.tokenizer, [words], max_length=16)):
        owner.update(dict.fromkeys(window.words, index))
    assert len(set(owner.values())) > 200 and len(owner) == len(words)  # every word owned once
    starts = {t.start - long.start: i for i, t in enumerate(long.tokens)}
    ends = {t.end - long.start: i for i, t in enumerate(long.tokens)}
    crossing = [e for e in linear(text[long.start : long.end]) if owner[starts[e["start"]]] != owner[ends[e["end"]]]]
    assert crossing  # entities are decoded on the stitched sentence, never cut at a window edge


def test_collector_is_paused_while_tagging_and_restored_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer caller still holds the pause
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a program that had turned it off keeps it off
    finally:
        gc.enable()


def test_collector_pause_is_shared_by_threads() -> None:
    entered, release = threading.Barrier(3), threading.Event()

    def hold() -> None:
        with collector_paused():
            entered.wait()
            release.wait()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    entered.wait()
    assert not gc.isenabled()
    release.set()
    for thread in threads:
        thread.join()
    assert gc.isenabled()


def test_tagging_restores_the_collector_after_an_error(rules: Tagger, monkeypatch) -> None:
    def fail(*args, **kwargs):
        assert not gc.isenabled()
        raise RuntimeError("model failed")

    monkeypatch.setattr("mtbioner.runtime.tagging.sentence_emissions", fail)
    with pytest.raises(RuntimeError, match="model failed"):
        rules(EXAMPLE)
    assert gc.isenabled()
