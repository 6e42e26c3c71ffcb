"""Compare models on the same sentences: agreement per entity type, scores against gold, disagreements.

Every number here compares entities *exactly*: two entities agree when they have the same
character span and the same type (what conlleval counts as a match); a shifted boundary or
another type is a disagreement. An entity is a ``(start, end, type)`` key of one sentence, so
a model's output is a set of keys per sentence, and:

* **pairwise agreement** of models A and B on a type counts the keys both found, only A found
  and only B found; its F1 is ``2·both / (2·both + only A + only B)``, which is the F1 of A
  scored against B as if B were gold, and the same the other way round (F1 is symmetric);
* **found by all / found by any** counts the keys every model found and the keys at least one
  found; their ratio is how much of what the models found they all agree on;
* **scores against gold** (``compare_corpus``) are precision, recall and F1 of each model's head
  named like the corpus, on char spans + type against the gold spans read from the corpus'
  IOB2 tags with :func:`~mtbioner.data.schemes.tags_to_spans`. The model reads the corpus' own words,
  spans are read from both tag sequences as conlleval reads them and micro-averaged as seqeval
  does, so the numbers equal ``mtbioner evaluate`` (and :func:`~mtbioner.runtime.evaluation.evaluate_corpus`)
  on that split, while one tagging pass also feeds the page and the agreement tables;
* **F1 differences** (:meth:`Comparison.differences`): every scored model's F1 minus the first scored
  model's, with a paired bootstrap 95% interval over the sentences (:mod:`~mtbioner.study.bootstrap`:
  the same resampled sentences for both models), so "is the new model better?" gets an answer that
  says how sure it is.

A sentence is a *disagreement* when the models' sets of keys differ (gold is shown but does
not count). The summary, the Markdown page and the HTML page: :mod:`mtbioner.study.compare_report`.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from ..data.schemes import tags_to_spans
from ..data.text import TextSentence, Token
from ..errors import MtbionerError
from ..runtime.evaluation import CorpusReport, Scores
from ..runtime.tagging import Entity, Tagger
from .bootstrap import Comparison as Difference
from .bootstrap import compare_counts

if TYPE_CHECKING:
    from ..data.corpus import Corpus

Key = tuple[int, int, str]
GOLD = "gold"
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Compared:
    """One sentence as each model read it; entity offsets are into ``text``.

    ``found`` maps each model's name to its entities; ``gold`` holds the annotated entities
    when the sentence comes from a corpus (``None`` otherwise).
    """

    label: str
    text: str
    found: Mapping[str, tuple[Entity, ...]]
    gold: tuple[Entity, ...] | None = None

    def keys(self, model: str) -> frozenset[Key]:
        return _keys(self.found[model])

    def gold_keys(self) -> frozenset[Key]:
        return _keys(self.gold or ())

    def disputed(self) -> frozenset[Key]:
        """Keys some model found and another did not."""
        sets = [self.keys(m) for m in self.found]
        return frozenset().union(*sets) - frozenset.intersection(*sets)

    @property
    def disagree(self) -> bool:
        return bool(self.disputed())

    def disputed_types(self) -> list[str]:
        return sorted({key[2] for key in self.disputed()})


@dataclass(frozen=True)
class Agreement:
    """Exact matches between the entities of two models (of one type, or of all types)."""

    both: int = 0
    only_a: int = 0
    only_b: int = 0

    @property
    def f1(self) -> float | None:
        """F1 in percent of one model against the other (symmetric); ``None`` when neither found any."""
        total = 2 * self.both + self.only_a + self.only_b
        return round(100 * 2 * self.both / total, 4) if total else None


@dataclass(frozen=True)
class Unanimity:
    """Entities found by every model (``every``) out of those found by at least one (``any``)."""

    every: int = 0
    any: int = 0

    @property
    def percent(self) -> float | None:
        return round(100 * self.every / self.any, 4) if self.any else None


@dataclass
class Comparison:
    """Models' entities on the same sentences, and (with a corpus) how each scores against gold.

    Args:
        models: Model names, in the order given; at least two.
        sentences: Every compared sentence, in input order.
        source: What was tagged, for the reports ("input FILE", "corpus NAME, split test").
        heads: The heads each model ran.
        corpus: The gold corpus' name, when there is one.
        scores: Gold scores of the models that have a head named like the corpus.
        unscored: Why each other model has no gold score.
    """

    models: list[str]
    sentences: list[Compared]
    source: str
    heads: dict[str, list[str]] = field(default_factory=dict)
    corpus: str | None = None
    scores: dict[str, CorpusReport] = field(default_factory=dict)
    unscored: dict[str, str] = field(default_factory=dict)

    @property
    def has_gold(self) -> bool:
        return self.corpus is not None

    @property
    def types(self) -> list[str]:
        """Every type that a model (or gold) found, sorted."""
        found = {key[2] for s in self.sentences for m in self.models for key in s.keys(m)}
        return sorted(found | {key[2] for s in self.sentences for key in s.gold_keys()})

    @property
    def disagreements(self) -> list[Compared]:
        return [s for s in self.sentences if s.disagree]

    def counts(self) -> dict[str, Counter[str]]:
        """Entities per type of each model."""
        return {m: Counter(key[2] for s in self.sentences for key in s.keys(m)) for m in self.models}

    def gold_counts(self) -> Counter[str]:
        return Counter(key[2] for s in self.sentences for key in s.gold_keys())

    def differences(self) -> dict[str, Difference]:
        """F1 of each scored model minus the first scored model's, with its paired bootstrap interval."""
        scored = [m for m in self.models if m in self.scores]
        if len(scored) < 2:
            return {}
        gold = [s.gold_keys() for s in self.sentences]

        def counts(model: str) -> np.ndarray:
            rows = [
                (len(g & s.keys(model)), len(s.keys(model)), len(g)) for g, s in zip(gold, self.sentences, strict=True)
            ]
            return np.array(rows, dtype=np.int64).reshape(-1, 3)

        reference = counts(scored[0])
        out = {}
        for model in scored[1:]:
            result = compare_counts(counts(model), reference)
            assert isinstance(result, Difference)
            out[model] = result
        return out

    def pairwise(self) -> dict[tuple[str, str], tuple[Agreement, dict[str, Agreement]]]:
        """Overall and per-type agreement of every pair of models, in argument order."""
        return {
            (a, b): _tally(((s.keys(a), s.keys(b)) for s in self.sentences), self.types)
            for a, b in combinations(self.models, 2)
        }

    def unanimity(self) -> tuple[Unanimity, dict[str, Unanimity]]:
        """Overall and per-type counts of entities found by every model against those found by any."""
        every: Counter[str] = Counter()
        found: Counter[str] = Counter()
        for s in self.sentences:
            sets = [s.keys(m) for m in self.models]
            every.update(key[2] for key in frozenset.intersection(*sets))
            found.update(key[2] for key in frozenset().union(*sets))
        per_type = {t: Unanimity(every[t], found[t]) for t in self.types}
        return Unanimity(sum(every.values()), sum(found.values())), per_type


def _tally(
    pairs: Iterable[tuple[frozenset[Key], frozenset[Key]]], types: Sequence[str]
) -> tuple[Agreement, dict[str, Agreement]]:
    """Overall and per-type :class:`Agreement` of pairs of key sets (one pair per sentence)."""
    counts = {t: [0, 0, 0] for t in types}
    for a, b in pairs:
        for key in a | b:
            counts[key[2]][0 if key in a and key in b else 1 if key in a else 2] += 1
    overall = Agreement(*(sum(c[i] for c in counts.values()) for i in range(3)))
    return overall, {t: Agreement(*c) for t, c in counts.items()}


def score_spans(
    gold: Sequence[frozenset[Key]], predicted: Sequence[frozenset[Key]]
) -> tuple[Scores, dict[str, Scores], int]:
    """Exact-match P/R/F1 in percent, overall (micro) and per type, of predicted against gold keys.

    Same definitions as :func:`mtbioner.runtime.evaluation.score` (seqeval, ``zero_division=0``): a
    type's row exists when gold or the predictions have it; ``support`` counts gold entities.

    Returns:
        Overall scores, scores per type, and the number of predicted entities.
    """
    hits: Counter[str] = Counter()
    wanted: Counter[str] = Counter()
    given: Counter[str] = Counter()
    for g, p in zip(gold, predicted, strict=True):
        wanted.update(k[2] for k in g)
        given.update(k[2] for k in p)
        hits.update(k[2] for k in g & p)
    types = sorted(set(wanted) | set(given))
    per_type = {t: _scores(hits[t], given[t], wanted[t]) for t in types}
    overall = _scores(sum(hits.values()), sum(given.values()), sum(wanted.values()))
    return overall, per_type, sum(given.values())


def _scores(hits: int, given: int, wanted: int) -> Scores:
    precision = hits / given if given else 0.0
    recall = hits / wanted if wanted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(round(100 * precision, 4), round(100 * recall, 4), round(100 * f1, 4), wanted)


def _check(taggers: Mapping[str, Tagger]) -> None:
    if len(taggers) < 2:
        raise MtbionerError(f"comparing needs at least two models, got {len(taggers)}: {list(taggers)}")


def compare_texts(
    taggers: Mapping[str, Tagger], texts: Sequence[str], ids: Sequence[str] | None = None, source: str = "texts"
) -> Comparison:
    """Tag raw texts with every model (all heads) and line up their entities sentence by sentence.

    Sentences are the tagger's own (:meth:`Tagger.split`), so no entity crosses one; a sentence is
    labelled with its document's id, plus ``.k`` when the document has several.

    Args:
        taggers: Model name to tagger, at least two.
        texts: Documents.
        ids: One id per document (default: 1, 2, ...).
        source: Where the texts came from, for the reports.
    """
    _check(taggers)
    ids = list(ids) if ids is not None else [str(i) for i in range(1, len(texts) + 1)]
    if len(ids) != len(texts):
        raise MtbionerError(f"{len(ids)} ids for {len(texts)} texts")
    found = {name: tagger.entities(texts, merge_types=False) for name, tagger in taggers.items()}
    sentences = []
    for index, text in enumerate(texts):
        parts = Tagger.split(text)
        for k, part in enumerate(parts, 1):
            label = ids[index] if len(parts) == 1 else f"{ids[index]}.{k}"
            shown = _SURROGATE.sub("\ufffd", text[part.start : part.end])  # same length; writable as UTF-8
            inside = {
                name: tuple(_shift(e, part) for e in ents[index] if part.start <= e.start < part.end)
                for name, ents in found.items()
            }
            sentences.append(Compared(label, shown, inside))
    heads = {name: tagger.corpora for name, tagger in taggers.items()}
    return Comparison(list(taggers), sentences, source, heads)


def _shift(entity: Entity, sentence: TextSentence) -> Entity:
    return replace(
        entity,
        start=entity.start - sentence.start,
        end=entity.end - sentence.start,
        text=_SURROGATE.sub("\ufffd", entity.text),
    )


def compare_corpus(taggers: Mapping[str, Tagger], corpus: Corpus, split: str = "test") -> Comparison:
    """Tag a corpus split's sentences with every model and score each against the gold annotations.

    A sentence's text is its words joined by single spaces and the models read exactly those
    words (not a re-tokenization). A model with a head named like the corpus runs only that
    head, so the page, the agreement and the score all describe the same predictions; a model
    without one runs all its heads, is shown, and is listed in ``unscored`` with the reason.
    """
    _check(taggers)
    gold_sentences = corpus.sentences(split)
    if not gold_sentences:
        raise MtbionerError(f"corpus {corpus.name!r} has no sentences in its {split!r} split")
    lines = [_join(s.tokens) for s in gold_sentences]
    gold = [_entities(t, words, tags_to_spans(s.tags)) for (t, words), s in zip(lines, gold_sentences, strict=True)]
    comparison = Comparison(list(taggers), [], f"corpus {corpus.name}, split {split}", corpus=corpus.name)
    found: dict[str, list[tuple[Entity, ...]]] = {}
    for name, tagger in taggers.items():
        scored = corpus.name in tagger.corpora
        comparison.heads[name] = [corpus.name] if scored else tagger.corpora
        started = time.perf_counter()
        windows = [(text, TextSentence(0, len(text), words)) for text, words in lines]
        raw = tagger.sentence_entities(windows, comparison.heads[name])
        found[name] = [
            tuple(tagger.finish(text, e, merge_types=False)) for (text, _), e in zip(windows, raw, strict=True)
        ]
        if not scored:
            comparison.unscored[name] = f"no head {corpus.name!r} (heads: {', '.join(tagger.corpora)})"
            continue
        overall, types, predicted = score_spans([_keys(g) for g in gold], [_keys(f) for f in found[name]])
        seconds = time.perf_counter() - started
        comparison.scores[name] = CorpusReport(
            corpus.name, corpus.name, split, len(lines), overall, predicted, types, seconds
        )
    for i, ((text, _), sentence) in enumerate(zip(lines, gold_sentences, strict=True)):
        label = f"{split} {i + 1}" + (f" (line {sentence.line})" if sentence.line else "")
        comparison.sentences.append(Compared(label, text, {m: found[m][i] for m in taggers}, gold[i]))
    return comparison


def _join(words: Sequence[str]) -> tuple[str, tuple[Token, ...]]:
    """The words joined by single spaces, and each word with its offsets in that text."""
    tokens, position = [], 0
    for word in words:
        tokens.append(Token(word, position, position + len(word)))
        position += len(word) + 1
    return " ".join(words), tuple(tokens)


def _entities(text: str, words: Sequence[Token], spans: Iterable[tuple[str, int, int]]) -> tuple[Entity, ...]:
    """Gold entities from word spans ``(type, first, end)``; ``corpus`` is ``("gold",)``."""
    out = []
    for kind, first, end in spans:
        start, stop = words[first].start, words[end - 1].end
        out.append(Entity(start, stop, text[start:stop], kind, (GOLD,), 1.0))
    return tuple(out)


def _keys(entities: Iterable[Entity]) -> frozenset[Key]:
    return frozenset((e.start, e.end, e.type) for e in entities)
