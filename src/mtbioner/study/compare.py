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
not count). The HTML page is one self-contained file (inline CSS and JS, a Content Security
Policy that forbids loading anything) and escapes every piece of text it shows.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.schemes import tags_to_spans
from ..data.text import TextSentence, Token
from ..errors import MtbionerError
from ..fileio import atomic_write
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


# --- reports ------------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def format_summary(c: Comparison) -> str:
    """A few plain-text lines for the terminal: sentences, disagreements, agreement, gold F1."""
    overall, _ = c.unanimity()
    counts = c.counts()
    lines = [
        f"{len(c.sentences)} sentences ({c.source}), {len(c.disagreements)} where the models disagree",
        "entities: " + ", ".join(f"{m} {sum(counts[m].values())}" for m in c.models),
        f"found by all models: {overall.every} of {overall.any} ({_num(overall.percent)}%)",
    ]
    for (a, b), (agreement, _) in c.pairwise().items():
        lines.append(f"agreement F1 {a} vs {b}: {_num(agreement.f1)}")
    for model in c.models if c.has_gold else []:
        report = c.scores.get(model)
        if report is None:
            lines.append(f"gold {model}: not scored, {c.unscored[model]}")
        else:
            o = report.overall
            lines.append(f"gold {model}: P {o.precision:.2f}  R {o.recall:.2f}  F1 {o.f1:.2f}")
    for model, d in c.differences().items():
        lines.append(f"F1 {model} - {_reference(c)}: {_difference(d)}")
    return "\n".join(lines)


def _reference(c: Comparison) -> str:
    return next(m for m in c.models if m in c.scores)


def _difference(d: Difference) -> str:
    low, high = d.difference.low, d.difference.high
    return f"{d.difference.value:+.2f} [{low:+.2f}, {high:+.2f}] {d.verdict}"


def _difference_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["model", f"F1 - {_reference(c)}", "95% interval", "verdict", "sentences"]
    rows = [
        [m, f"{d.difference.value:+.2f}", f"[{d.difference.low:+.2f}, {d.difference.high:+.2f}]", d.verdict,
         str(d.sentences)]
        for m, d in c.differences().items()
    ]  # fmt: skip
    return header, rows


DIFFERENCE_NOTE = (
    "Paired bootstrap over the sentences (1,000 resamples, seed 42, the same resampled sentences for both "
    "models): win / loss when the whole interval is above / below 0, tie when it holds 0."
)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~!])")


def _md(text: str) -> str:
    """Text safe inside Markdown (tables included): specials escaped, whitespace runs one space."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]], escape: bool = True) -> list[str]:
    """A Markdown table; cells are plain text (escaped here) unless ``escape`` is off."""
    cell = _md if escape else str

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _type_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """Entities found per type by gold and each model, found by all models / by any, and their ratio."""
    columns = [*([(GOLD, c.gold_counts())] if c.has_gold else []), *c.counts().items()]
    overall, per_type = c.unanimity()
    header = ["type", *(name for name, _ in columns), "found by all", "found by any", "all agree %"]
    rows = [["all types", *(str(sum(n.values())) for _, n in columns)]]
    rows += [[t, *(str(n[t]) for _, n in columns)] for t in per_type]
    for row, unanimity in zip(rows, [overall, *per_type.values()], strict=True):
        row += [str(unanimity.every), str(unanimity.any), _num(unanimity.percent)]
    return header, rows


def _pair_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["models", "type", "both", "only first", "only second", "agreement F1"]
    rows = []
    for (a, b), (overall, per_type) in c.pairwise().items():
        for name, g in [("all types", overall), *per_type.items()]:
            rows.append([f"{a} vs {b}", name, str(g.both), str(g.only_a), str(g.only_b), _num(g.f1)])
    return header, rows


def _score_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["model", "type", "P", "R", "F1", "gold", "predicted"]
    rows = []
    for model in c.models:
        report = c.scores.get(model)
        if report is None:
            rows.append([model, "–", "–", "–", "–", "–", f"not scored: {c.unscored[model]}"])
            continue
        o = report.overall
        rows.append([model, "all types", _num(o.precision), _num(o.recall), _num(o.f1), str(o.support),
                     str(report.predicted)])  # fmt: skip
        for name, s in report.types.items():
            rows.append(["", name, _num(s.precision), _num(s.recall), _num(s.f1), str(s.support), ""])
    return header, rows


def _md_entities(entities: Sequence[Entity], disputed: frozenset[Key]) -> str:
    parts = []
    for e in entities:
        item = f"{_md(e.text)} ({_md(e.type)})"
        parts.append(f"**{item}**" if (e.start, e.end, e.type) in disputed else item)
    return ", ".join(parts) or "–"


def render_markdown(c: Comparison, max_examples: int = 20) -> str:
    """The summary: agreement per type, pairwise agreement, gold scores, the first disagreements."""
    lines = [
        "# Model comparison",
        "",
        "Models: " + ", ".join(f"{_md(m)} (heads: {_md(', '.join(c.heads.get(m, [])))})" for m in c.models) + ".",
        f"Tagged: {_md(c.source)}; {len(c.sentences)} sentences, {len(c.disagreements)} where the models "
        "disagree. Entities match when span and type are exactly the same.",
        "",
        "## Entities per type",
        "",
        *_md_table(*_type_rows(c)),
        "",
        "## Pairwise agreement",
        "",
        "Agreement F1 = 2·both / (2·both + only first + only second): the F1 of either model scored "
        "against the other.",
        "",
        *_md_table(*_pair_rows(c)),
    ]
    if c.has_gold:
        lines += ["", f"## Scores against gold ({_md(c.source)})", "", *_md_table(*_score_rows(c))]
        if c.differences():
            header, rows = _difference_rows(c)
            header, rows = [_md(h) for h in header], [[_md(row[0]), *row[1:]] for row in rows]  # names escaped
            lines += ["", "### F1 differences", "", DIFFERENCE_NOTE, "", *_md_table(header, rows, escape=False)]
    shown = c.disagreements[:max_examples]
    lines += ["", f"## Disagreements (first {len(shown)} of {len(c.disagreements)})", ""]
    if not c.disagreements:
        lines.append("The models found exactly the same entities in every sentence.")
    for s in shown:
        disputed = s.disputed()
        lines += [f"**{_md(s.label)}**, differs in {_md(', '.join(s.disputed_types()))}", "", f"> {_md(s.text)}", ""]
        rows = [[GOLD, _md_entities(s.gold, frozenset())]] if s.gold is not None else []
        rows += [[_md(m), _md_entities(s.found[m], disputed)] for m in c.models]
        lines += [*_md_table(["", "entities (bold: not found by every model)"], rows, escape=False), ""]
    return "\n".join(lines).rstrip() + "\n"


# Fixed colours for the usual corpora's types, as on the serve page (static/app.js); others cycle.
_KNOWN = {
    "chemical": "#86efac", "chem": "#86efac", "drug": "#86efac", "disease": "#fca5a5", "gene": "#93c5fd",
    "protein": "#c4b5fd", "dna": "#fcd34d", "rna": "#fdba74", "cell_line": "#67e8f9", "cell_type": "#f9a8d4",
    "species": "#bef264",
}  # fmt: skip
_PALETTE = ["#a5b4fc", "#fde68a", "#99f6e4", "#fecdd3", "#d9f99d", "#e9d5ff", "#bae6fd", "#fed7aa"]


def type_colours(types: Sequence[str]) -> dict[str, str]:
    """A distinct background colour per type (a known type keeps its serve-page colour)."""
    colours: dict[str, str] = {}
    spare = 0
    for type_ in types:
        colour = _KNOWN.get(type_.lower())
        if colour is None or colour in colours.values():
            colour = _PALETTE[spare % len(_PALETTE)]
            spare += 1
        colours[type_] = colour
    return colours


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _marked(
    text: str,
    entities: Sequence[Entity],
    index: Mapping[str, int],
    colours: Mapping[str, str],
    disputed: frozenset[Key],
    gold: frozenset[Key] | None,
    model: bool,
) -> str:
    """``text`` with its entities as ``<mark>`` elements, as the serve page draws them.

    The text is cut at every entity boundary; runs covered by the same entities become one mark,
    striped when several types overlap there, labelled with the types of the entities ending there.
    A mark lists its entities as JSON ``[[start, end, type], ...]`` in ``data-entities`` (for
    tests and scripts) and the legend indices of its types in ``data-t`` (for the type filter);
    ``disputed`` entities (not found by every model) get a dashed outline.
    """
    cuts = sorted({0, len(text), *(e.start for e in entities), *(e.end for e in entities)})
    groups: list[tuple[tuple[Entity, ...], int, int]] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        covering = tuple(e for e in entities if e.start <= a and e.end >= b)
        if groups and groups[-1][0] == covering:
            groups[-1] = (covering, groups[-1][1], b)
        else:
            groups.append((covering, a, b))
    out = []
    for covering, a, b in groups:
        if not covering:
            out.append(_esc(text[a:b]))
            continue
        types = list(dict.fromkeys(e.type for e in covering))
        if len(types) == 1:
            style = f"background:{colours[types[0]]}"
        else:
            stops = ", ".join(f"{colours[t]} {i * 8}px, {colours[t]} {(i + 1) * 8}px" for i, t in enumerate(types))
            style = f"background:repeating-linear-gradient(135deg, {stops})"
        keys = [(e.start, e.end, e.type) for e in covering]
        css = "entity disputed" if any(k in disputed for k in keys) else "entity"
        notes = [_note(e, gold, model) for e in covering]
        ending = dict.fromkeys(e.type for e in covering if e.end == b)
        labels = "".join(f'<span class="label">{_esc(t)}</span>' for t in ending)
        out.append(
            f'<mark class="{css}" data-t="{" ".join(str(index[t]) for t in types)}" '
            f'data-entities="{_esc(json.dumps(keys, ensure_ascii=False))}" style="{style}" '
            f'title="{_esc("; ".join(notes))}">{_esc(text[a:b])}{labels}</mark>'
        )
    return "".join(out)


def _note(entity: Entity, gold: frozenset[Key] | None, model: bool) -> str:
    """The tooltip line of one entity: type, text, offsets; a model's also its score and whether gold has it."""
    note = f"{entity.type} “{entity.text}” {entity.start}–{entity.end}"
    if model:
        note += f", score {entity.score:.2f}"
        if gold is not None:
            note += ", in gold" if (entity.start, entity.end, entity.type) in gold else ", not in gold"
    return note


def _html_table(table_id: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table of plain-text cells (escaped here)."""

    def cell(value: str, tag: str) -> str:
        return f"<{tag}>{_esc(value)}</{tag}>"

    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(c: Comparison, max_sentences: int | None = None) -> str:
    """One offline page: the tables of the summary, then each disagreeing sentence, a row per model."""
    types = c.types
    colours = type_colours(types)
    index = {t: i for i, t in enumerate(types)}
    legend = "".join(
        f'<button type="button" class="chip" data-type="{_esc(t)}" data-t="{index[t]}" '
        f'style="--colour:{colours[t]}"><span class="swatch"></span>{_esc(t)}</button>'
        for t in types
    )
    shown = c.disagreements if max_sentences is None else c.disagreements[:max_sentences]
    articles = "".join(_html_sentence(s, c.models, index, colours) for s in shown)
    if not c.disagreements:
        articles = '<p class="none">The models found exactly the same entities in every sentence.</p>'
    scores = ""
    if c.has_gold:
        scores = f"<h2>Scores against gold</h2>{_html_table('scores', *_score_rows(c))}"
        if c.differences():
            scores += (
                f'<h2>F1 differences</h2><p class="note">{_esc(DIFFERENCE_NOTE)}</p>'
                f"{_html_table('differences', *_difference_rows(c))}"
            )
    models = ", ".join(f"<code>{_esc(m)}</code>" for m in c.models)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Model comparison: {_esc(", ".join(c.models))}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>Model comparison</h1><span class="sub">{models} on {_esc(c.source)}</span></header>
<main>
<section class="card" id="summary">
<p>{len(c.sentences)} sentences, <strong>{len(c.disagreements)}</strong> where the models disagree.
Entities match when span and type are exactly the same.</p>
<h2>Entities per type</h2>{_html_table("types", *_type_rows(c))}
<h2>Pairwise agreement</h2>
<p class="note">Agreement F1 = 2·both / (2·both + only first + only second): the F1 of either model scored
against the other.</p>{_html_table("pairs", *_pair_rows(c))}
{scores}
</section>
<section class="card" id="disagreements">
<div class="result-head"><h2>Where the models disagree ({len(shown)} of {len(c.disagreements)} sentences)</h2>
<div id="legend" class="legend">{legend}</div></div>
<p class="note">Dashed outline: an entity not every model found. Hover a highlight for its details;
click a type to hide it.</p>
{articles}
</section>
</main>
<script>{_JS}</script>
</body>
</html>
"""


def _html_sentence(s: Compared, models: Sequence[str], index, colours) -> str:
    disputed = s.disputed()
    gold = None if s.gold is None else s.gold_keys()
    rows = []
    if s.gold is not None:
        marked = _marked(s.text, s.gold, index, colours, frozenset(), None, model=False)
        rows.append(_html_row('data-row="gold" class="row gold"', GOLD, len(s.gold), marked))
    for m in models:
        marked = _marked(s.text, s.found[m], index, colours, disputed, gold, model=True)
        rows.append(_html_row(f'data-model="{_esc(m)}" class="row"', m, len(s.found[m]), marked))
    differs = ", ".join(s.disputed_types())
    return (
        f'<article class="sentence" data-label="{_esc(s.label)}"><h3>{_esc(s.label)}'
        f'<span class="differs">differs in {_esc(differs)}</span></h3>{"".join(rows)}</article>'
    )


def _plural(count: int) -> str:
    return "entity" if count == 1 else "entities"


def _html_row(attributes: str, name: str, count: int, marked: str) -> str:
    return (
        f'<div {attributes}><div class="who">{_esc(name)}<span class="n">{count} {_plural(count)}</span></div>'
        f'<div class="text">{marked}</div></div>'
    )


_CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7fb; --card:#fff;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif;
  color: var(--ink); background: var(--bg); }
* { box-sizing: border-box; }
body { margin: 0; }
header { display:flex; align-items:baseline; gap:1.25rem; padding:0.9rem 2rem; background:#111827; color:#f9fafb; }
header h1 { margin:0; font-size:1.35rem; }
header .sub { color:#d1d5db; font-size:0.9rem; }
header code { background:#374151; color:#f9fafb; }
main { max-width:72rem; margin:1.5rem auto; padding:0 1.25rem; display:grid; gap:1.25rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:1.1rem 1.25rem; }
h2 { font-size:1.05rem; margin:1.2rem 0 0.4rem; }
.note { color:var(--muted); font-size:0.85rem; }
table { border-collapse:collapse; width:100%; font-size:0.88rem; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:0.25rem 0.6rem; border-bottom:1px solid var(--line); }
th { color:var(--muted); font-weight:600; font-size:0.78rem; text-transform:uppercase; }
.result-head { display:flex; align-items:center; gap:1rem; flex-wrap:wrap; }
.legend { display:flex; gap:0.45rem; flex-wrap:wrap; }
.chip { display:inline-flex; align-items:center; gap:0.4rem; font:inherit; font-size:0.85rem;
  padding:0.25rem 0.6rem; border:1px solid var(--line); border-radius:999px; background:#fff; cursor:pointer; }
.chip .swatch { width:0.8rem; height:0.8rem; border-radius:3px; background:var(--colour); }
.chip.off { opacity:0.45; text-decoration:line-through; }
.sentence { border-top:1px solid var(--line); padding:0.7rem 0; }
.sentence h3 { font-size:0.85rem; color:var(--muted); margin:0 0 0.4rem; font-weight:600; }
.differs { margin-left:0.8rem; font-weight:400; }
.row { display:grid; grid-template-columns:12rem 1fr; gap:0.8rem; padding:0.15rem 0; }
.row.gold { background:#f9fafb; }
.who { font-weight:600; font-size:0.85rem; overflow-wrap:anywhere; }
.who .n { display:block; font-weight:400; color:var(--muted); font-size:0.75rem; }
.text { line-height:2.1; white-space:pre-wrap; overflow-wrap:anywhere; }
mark.entity { color:inherit; padding:0.1em 0.25em; border-radius:5px; box-decoration-break:clone;
  -webkit-box-decoration-break:clone; cursor:help; }
mark.entity.disputed { outline:2px dashed #374151; outline-offset:1px; }
mark.entity.muted { background:none !important; outline:none; padding:0; }
mark.entity.muted .label { display:none; }
mark.entity .label { font-size:0.62em; font-weight:700; text-transform:uppercase; margin-left:0.4em;
  padding:0.05em 0.35em; border-radius:3px; background:rgb(255 255 255 / 65%); color:#374151; }
code { font-size:0.9em; background:#eef2ff; padding:0.05em 0.3em; border-radius:3px; }
"""

_JS = """
"use strict";
const hidden = new Set();
for (const chip of document.querySelectorAll("#legend .chip")) {
  chip.addEventListener("click", () => {
    const t = chip.dataset.t;
    if (hidden.has(t)) { hidden.delete(t); } else { hidden.add(t); }
    chip.classList.toggle("off", hidden.has(t));
    for (const mark of document.querySelectorAll("mark.entity")) {
      mark.classList.toggle("muted", mark.dataset.t.split(" ").every((i) => hidden.has(i)));
    }
  });
}
"""


def write_reports(
    c: Comparison, html_path: str | Path | None, md_path: str | Path | None, max_examples: int = 20
) -> None:
    """Write the HTML page (every disagreement) and the Markdown summary (the first ``max_examples``), atomically."""
    if max_examples < 0:
        raise MtbionerError(f"max_examples must be 0 or more, not {max_examples}")
    if html_path is not None:
        with atomic_write(html_path) as handle:
            handle.write(render_html(c))
    if md_path is not None:
        with atomic_write(md_path) as handle:
            handle.write(render_markdown(c, max_examples))
