"""How the corpora overlap: the same strings in each other's text, and each head on each other's test set.

The multi-task model shares one encoder between corpora whose annotation schemes differ: BC2GM
marks ``GENE``, JNLPBA splits the same kind of mention into ``protein``, ``DNA`` and ``RNA``, and
BC5CDR and NCBI-disease do not mark genes at all. Two analyses measure what that means:

* **String overlap** (no model): for every ordered pair of corpora (A, B), A's distinct entity
  strings (train+devel by default: the test split is never used to choose anything) are looked up
  as whole-word sequences in B's text, and every occurrence is classified by how B annotates it:
  the same span with a B type (*exact*), a B entity that overlaps it (*partial*, with whether B's
  span is longer, shorter or crossing), or nothing (*none*: a **silver conflict**, the string A
  calls an entity is ``O`` in B). The pair (A, A) is a baseline: how consistently A labels its own
  strings. Before matching, tokens are re-split at punctuation (``IL-2`` -> ``IL - 2``), since
  JNLPBA keeps hyphenated words whole while the other three corpora split them.
* **Head confusion** (with a model): every head tags every corpus's **test** split, and each gold
  entity is put in a cell of gold type x predicted type at exact-span level (or *partial* /
  *missed*); predicted spans with no gold span of the same boundaries make a *none* row. This is
  analysis of a finished model, not model selection.

:func:`render` turns both into Markdown with heat maps and a findings section whose sentences
are computed from the numbers, including the merge policy for a single entity set
(:data:`TYPE_GROUPS`) that the numbers support. ``mtbioner overlap`` runs it.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import INFERENCE_BATCH_SIZE
from .corpus import Corpus, Sentence
from .errors import MtbionerError
from .fileio import atomic_write
from .schemes import tags_to_spans

# The candidate single entity set of issue 18 item 3: merged type -> the corpus types it takes in.
TYPE_GROUPS: dict[str, tuple[str, ...]] = {
    "gene/protein": ("GENE", "protein", "DNA", "RNA"),
    "Chemical": ("Chemical",),
    "Disease": ("Disease",),
    "cell line": ("cell_line",),
    "cell type": ("cell_type",),
}
NONE = "none"
PARTIAL = "partial"
MISSED = "missed"
_PIECE = re.compile(r"\w+|[^\w\s]")

Span = tuple[str, int, int]  # type, start, end (half-open, in pieces or tokens)
Key = tuple[str, ...]


def merged_type(kind: str, groups: Mapping[str, Sequence[str]] = TYPE_GROUPS) -> str:
    """The merged type a corpus type belongs to (itself when no group takes it)."""
    for name, members in groups.items():
        if kind in members:
            return name
    return kind


# --------------------------------------------------------------------------- corpus views


@dataclass
class View:
    """One corpus's text for string matching: sentences of pieces and their entity spans in pieces.

    ``pieces`` re-split every token at punctuation (when ``split_punct``), so corpora tokenized
    differently line up; ``split_tokens`` counts the tokens that became more than one piece.
    """

    name: str
    splits: tuple[str, ...]
    pieces: list[Key]
    spans: list[list[Span]]
    types: list[str]
    sentences: int
    tokens: int
    entities: Counter[str]
    split_tokens: int = 0
    surface: dict[Key, str] = field(default_factory=dict)  # a string's text as first written
    sizes: tuple[int, ...] = ()  # sentences of each split, in the order of ``splits``

    def folded(self) -> list[Key]:
        return [tuple(p.casefold() for p in sentence) for sentence in self.pieces]

    def held_out(self) -> tuple[View, View]:
        """The view cut in two for the self baseline: its first split, and the rest.

        With one split, its first and second halves. The baseline looks the first part's strings
        up in the second part's text, so no occurrence is the annotation that listed the string.
        """
        cut = self.sizes[0] if len(self.sizes) > 1 else len(self.pieces) // 2
        names = (self.splits[:1], self.splits[1:]) if len(self.sizes) > 1 else (self.splits, self.splits)
        return self._part(0, cut, names[0]), self._part(cut, len(self.pieces), names[1])

    def _part(self, start: int, end: int, splits: tuple[str, ...]) -> View:
        spans = self.spans[start:end]
        entities = Counter(kind for sentence in spans for kind, _, _ in sentence)
        return View(
            self.name,
            splits,
            self.pieces[start:end],
            spans,
            self.types,
            end - start,
            0,
            entities,
            surface=self.surface,
            sizes=(end - start,),
        )


def _pieces(token: str) -> list[str]:
    return _PIECE.findall(token) or [token]


def corpus_view(corpus: Corpus, splits: Sequence[str] = ("train", "devel"), split_punct: bool = True) -> View:
    """The sentences of ``splits`` of a read corpus as a :class:`View`."""
    pieces: list[Key] = []
    spans: list[list[Span]] = []
    entities: Counter[str] = Counter()
    surface: dict[Key, str] = {}
    sizes: list[int] = []
    tokens = split_tokens = sentences = 0
    for split in splits:
        for sentence in corpus.sentences(split):
            sentences += 1
            tokens += len(sentence.tokens)
            starts, flat = [], []
            for token in sentence.tokens:
                parts = _pieces(token) if split_punct else [token]
                split_tokens += len(parts) > 1
                starts.append(len(flat))
                flat.extend(parts)
            starts.append(len(flat))
            found = []
            for kind, first, end in tags_to_spans(sentence.tags):
                found.append((kind, starts[first], starts[end]))
                entities[kind] += 1
                key = tuple(flat[starts[first] : starts[end]])
                surface.setdefault(key, " ".join(sentence.tokens[first:end]))
            pieces.append(tuple(flat))
            spans.append(found)
        sizes.append(sentences - sum(sizes))
    types = sorted(entities)
    return View(
        corpus.name,
        tuple(splits),
        pieces,
        spans,
        types,
        sentences,
        tokens,
        entities,
        split_tokens,
        surface,
        tuple(sizes),
    )


def entity_strings(view: View, fold: bool = False) -> dict[Key, Counter[str]]:
    """Every distinct entity string of a view (piece tuple, case-folded if ``fold``) -> mentions per type."""
    found: dict[Key, Counter[str]] = defaultdict(Counter)
    for sentence, spans in zip(view.pieces, view.spans, strict=True):
        for kind, start, end in spans:
            key = sentence[start:end]
            found[tuple(p.casefold() for p in key) if fold else key][kind] += 1
    return dict(found)


class Matcher:
    """All occurrences of a set of piece tuples in a sentence, as whole-piece sequences.

    A dict from each string's first piece to the lengths of the strings starting with it, so a
    sentence costs one lookup per piece plus one set lookup per candidate length.
    """

    def __init__(self, keys: Iterator[Key] | Sequence[Key] | set[Key]) -> None:
        self.keys = set(keys)
        lengths: dict[str, set[int]] = defaultdict(set)
        for key in self.keys:
            if key:
                lengths[key[0]].add(len(key))
        self.lengths = {first: tuple(sorted(sizes)) for first, sizes in lengths.items()}

    def __call__(self, pieces: Key) -> Iterator[tuple[int, int, Key]]:
        n = len(pieces)
        keys, lengths = self.keys, self.lengths
        for start, piece in enumerate(pieces):
            sizes = lengths.get(piece)
            if sizes is None:
                continue
            for size in sizes:
                end = start + size
                if end > n:
                    break
                key = pieces[start:end]
                if key in keys:
                    yield start, end, key


def classify(spans: Sequence[Span], start: int, end: int) -> tuple[str, str | None, str | None]:
    """How a sentence's annotation covers the piece range ``[start, end)``.

    Returns ``("exact", type, None)`` for an entity with these boundaries, ``("partial", type,
    relation)`` for the entity overlapping it most (relation: B's span is ``longer`` and holds the
    range, ``shorter`` and inside it, or ``crossing``), or ``("none", None, None)``.
    """
    best: tuple[int, str, int, int] | None = None
    for kind, first, last in spans:
        if first == start and last == end:
            return "exact", kind, None
        shared = min(end, last) - max(start, first)
        if shared > 0 and (best is None or shared > best[0]):
            best = (shared, kind, first, last)
    if best is None:
        return NONE, None, None
    _, kind, first, last = best
    if first <= start and end <= last:
        relation = "longer"
    elif start <= first and last <= end:
        relation = "shorter"
    else:
        relation = "crossing"
    return PARTIAL, kind, relation


# --------------------------------------------------------------------------- string overlap


@dataclass
class PairOverlap:
    """Where A's entity strings occur in B's text, and how B annotates those occurrences.

    ``strings`` maps each of A's distinct strings to the A types it carries; ``seen`` maps those
    found in B's text to their occurrences by *outcome* (one of :meth:`outcomes`): ``"T"`` (B has
    a T entity with the same span), ``"in T"`` (it lies inside a longer B entity of type T),
    ``"~T"`` (a B entity of type T overlaps it otherwise: shorter or crossing, a boundary
    conflict) or ``"none"`` (a silver conflict). Every count selects the strings carrying any of
    the given A types, each string once (so a string with two A types counts in both type rows,
    but once for both together).
    """

    source: str
    target: str
    fold: bool
    source_types: list[str]
    target_types: list[str]
    strings: dict[Key, frozenset[str]] = field(default_factory=dict)
    seen: dict[Key, Counter[str]] = field(default_factory=dict)
    surface: dict[Key, str] = field(default_factory=dict, repr=False)
    baseline: str | None = None  # for A == B: which strings were looked up in which text

    @property
    def outcomes(self) -> list[str]:
        """Column order: for each B type exact, inside, other partial; then none."""
        return [c for t in self.target_types for c in (t, f"in {t}", f"~{t}")] + [NONE]

    def keys(self, types: Sequence[str] | None = None, found: bool = False) -> list[Key]:
        """A's strings carrying any of ``types`` (all by default), only those found in B if ``found``."""
        wanted = set(self.source_types if types is None else types)
        return [k for k, ts in self.strings.items() if ts & wanted and (not found or k in self.seen)]

    def count(self, what: str, types: Sequence[str] | None = None) -> int:
        """Distinct strings: ``strings``, ``found`` in B, ``labelled`` by B at least once (same span or
        inside), or ``never`` labelled (every occurrence unlabelled)."""
        if what == "strings":
            return len(self.keys(types))
        keys = self.keys(types, found=True)
        if what == "found":
            return len(keys)
        if what == "never":
            return sum(self.seen[k][NONE] == sum(self.seen[k].values()) for k in keys)
        if what == "labelled":
            return sum(any(c != NONE and not c.startswith("~") for c in self.seen[k]) for k in keys)
        raise ValueError(f"unknown count {what!r}")

    def occurrences(self, types: Sequence[str] | None = None) -> Counter[str]:
        total: Counter[str] = Counter()
        for key in self.keys(types, found=True):
            total.update(self.seen[key])
        return total

    def shares(self, types: Sequence[str] | None = None, weighted: bool = True) -> dict[str, float]:
        """Outcome shares of the strings of ``types``: string-weighted (each string's occurrences split
        into shares, then averaged over strings) or per occurrence; empty when none was found."""
        keys = self.keys(types, found=True)
        total: Counter[str] = Counter()
        if weighted:
            for key in keys:
                counts = self.seen[key]
                everything = sum(counts.values())
                for column, n in counts.items():
                    total[column] += n / everything
            whole: float = len(keys)
        else:
            for key in keys:
                total.update(self.seen[key])
            whole = sum(total.values())
        return {column: total[column] / whole for column in self.outcomes} if whole else {}

    def conflicts(self, types: Sequence[str] | None = None, n: int = 5) -> list[tuple[str, int, int]]:
        """The strings with most unlabelled occurrences in B: (text, unlabelled, all occurrences)."""
        rows = [(self.seen[k][NONE], sum(self.seen[k].values()), k) for k in self.keys(types, found=True)]
        rows = sorted((r for r in rows if r[0]), key=lambda r: (-r[0], r[2]))[:n]
        return [(_text(self.surface, key), none, total) for none, total, key in rows]


def outcome(status: str, kind: str | None, relation: str | None) -> str:
    """The column of a :func:`classify` result."""
    if status == NONE:
        return NONE
    if status == "exact":
        return str(kind)
    return f"in {kind}" if relation == "longer" else f"~{kind}"


def is_listed(key: Key, min_chars: int = 2) -> bool:
    """Whether a string takes part: at least ``min_chars`` characters and one letter.

    Single letters and bare numbers (``P``, ``1``) are rare annotations but occur everywhere in
    other text, and would swamp the counts with matches that say nothing about the schemes.
    """
    text = "".join(key)
    return len(text) >= min_chars and any(c.isalpha() for c in text)


def string_overlap(views: Sequence[View], fold: bool = False, min_chars: int = 2) -> list[PairOverlap]:
    """Every ordered pair (A, B) of views in the views' order; A == B is the held-out baseline.

    For A != B, A's strings from all its splits are looked up in all of B's text; for A == B,
    the strings of A's first split in the text of its other splits (:meth:`View.held_out`).
    """

    def listed(view: View) -> dict[Key, Counter[str]]:
        return {k: v for k, v in entity_strings(view, fold).items() if is_listed(k, min_chars)}

    strings = {view.name: listed(view) for view in views}
    halves = {view.name: view.held_out() for view in views}
    baseline = {name: listed(first) for name, (first, _) in halves.items()}
    matcher = Matcher(set().union(*(s.keys() for s in strings.values())))
    pairs: list[PairOverlap] = []
    for target in views:
        seen = _occurrences(matcher, target, fold)
        for source in views:
            if source.name == target.name:
                first, rest = halves[source.name]
                held = _occurrences(Matcher(baseline[source.name]), rest, fold)
                pair = _pair(source, target, fold, baseline[source.name], held)
                pair.baseline = f"{'+'.join(first.splits)} strings in {'+'.join(rest.splits)} text"
                if first.splits == rest.splits:
                    pair.baseline = "strings of the first half in the text of the second half"
            else:
                pair = _pair(source, target, fold, strings[source.name], seen)
            pairs.append(pair)
    return pairs


def _occurrences(matcher: Matcher, view: View, fold: bool) -> dict[Key, Counter[str]]:
    """Every occurrence of the matcher's strings in the view's text, by outcome."""
    seen: dict[Key, Counter[str]] = defaultdict(Counter)
    texts = view.folded() if fold else view.pieces
    for pieces, spans in zip(texts, view.spans, strict=True):
        for start, end, key in matcher(pieces):
            seen[key][outcome(*classify(spans, start, end))] += 1
    return seen


def _pair(source: View, target: View, fold: bool, strings, seen) -> PairOverlap:
    return PairOverlap(
        source.name,
        target.name,
        fold,
        source.types,
        target.types,
        {key: frozenset(types) for key, types in strings.items()},
        {key: seen[key] for key in strings if key in seen},
        source.surface,
    )


def _text(surface: Mapping[Key, str], key: Key) -> str:
    if key in surface:
        return surface[key]
    for original, text in surface.items():  # a case-folded key: the first spelling that folds to it
        if tuple(p.casefold() for p in original) == key:
            return text
    return " ".join(key)


def type_ambiguity(view: View, types: Sequence[str], fold: bool = False, min_chars: int = 2) -> tuple[int, int]:
    """Of the view's distinct strings annotated with any of ``types``: how many carry two or more of them."""
    total = several = 0
    for key, counts in entity_strings(view, fold).items():
        mine = [t for t in counts if t in types]
        if mine and is_listed(key, min_chars):
            total += 1
            several += len(mine) > 1
    return several, total


# --------------------------------------------------------------------------- model confusion


@dataclass
class HeadConfusion:
    """One head's predictions on one corpus's split, against that corpus's gold entities.

    ``counts[(gold, predicted)]``: gold is a gold type or ``"none"`` (predicted spans with no gold
    span of the same boundaries); predicted is a head type (same span), ``"partial"`` (only
    overlapping predictions) or ``"missed"`` (nothing predicted there).
    """

    corpus: str
    head: str
    split: str
    gold_types: list[str]
    head_types: list[str]
    counts: Counter[tuple[str, str]]
    sentences: int

    @property
    def rows(self) -> list[str]:
        return [*self.gold_types, NONE]

    @property
    def columns(self) -> list[str]:
        return [*self.head_types, PARTIAL, MISSED]

    def row(self, gold: str) -> Counter[str]:
        return Counter({column: n for (g, column), n in self.counts.items() if g == gold})

    def gold(self, types: Sequence[str] | None = None) -> int:
        kinds = self.gold_types if types is None else types
        return sum(n for (g, _), n in self.counts.items() if g in kinds)


def confusion(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> Counter[tuple[str, str]]:
    """Gold type x predicted type at exact-span level, with partial / missed and a none row."""
    counts: Counter[tuple[str, str]] = Counter()
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        by_bounds = {(s, e): kind for kind, s, e in predicted_spans}
        gold_bounds = {(s, e) for _, s, e in gold_spans}
        for kind, start, end in gold_spans:
            if (start, end) in by_bounds:
                counts[(kind, by_bounds[(start, end)])] += 1
            elif any(s < end and start < e for _, s, e in predicted_spans):
                counts[(kind, PARTIAL)] += 1
            else:
                counts[(kind, MISSED)] += 1
        for kind, start, end in predicted_spans:
            if (start, end) not in gold_bounds:
                counts[(NONE, kind)] += 1
    return counts


def model_confusion(
    backend: Any,
    test_sets: Mapping[str, Sequence[Sentence]],
    heads: Sequence[str] | None = None,
    split: str = "test",
    batch_size: int = INFERENCE_BATCH_SIZE,
    progress: bool = False,
) -> list[HeadConfusion]:
    """Every head of ``backend`` on every corpus's sentences (one encoder pass per corpus).

    Args:
        backend: A loaded model (``mtbioner.loading.load_backend``) or anything with its interface.
        test_sets: Corpus name -> its gold sentences (the test split: this is analysis, not selection).
        heads: Heads to run (default: all of the model's).
        split: The split's name, for the report.
    """
    from .inference import sentence_emissions

    heads = list(heads or backend.config.corpora)
    unknown = [h for h in heads if h not in backend.config.corpora]
    if unknown:
        raise MtbionerError(f"the model has no head {unknown[0]!r} (heads: {', '.join(backend.config.corpora)})")
    decoders = backend.decoders()
    out: list[HeadConfusion] = []
    for corpus, sentences in test_sets.items():
        words = [list(s.tokens) for s in sentences]
        gold = [tags_to_spans(s.tags) for s in sentences]
        gold_types = sorted({kind for spans in gold for kind, _, _ in spans})
        emissions = sentence_emissions(backend, words, heads, batch_size, progress)
        for head in heads:
            predicted = [tags_to_spans(decoders[head].decode(e[head])[0]) for e in emissions]
            head_types = list(backend.config.corpora[head].entity_types)
            counts = confusion(gold, predicted)
            out.append(HeadConfusion(corpus, head, split, gold_types, head_types, counts, len(sentences)))
    return out


# --------------------------------------------------------------------------- the analysis


@dataclass
class Analysis:
    """Everything the report shows."""

    views: list[View]
    cased: list[PairOverlap]
    folded: list[PairOverlap]
    confusions: list[HeadConfusion] | None = None
    model: str | None = None
    command: str | None = None
    split_punct: bool = True
    min_chars: int = 2
    groups: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(TYPE_GROUPS))

    def pair(self, source: str, target: str, fold: bool = False) -> PairOverlap | None:
        for pair in self.folded if fold else self.cased:
            if pair.source == source and pair.target == target:
                return pair
        return None

    def view(self, name: str) -> View | None:
        return next((v for v in self.views if v.name == name), None)

    def confusion(self, corpus: str, head: str) -> HeadConfusion | None:
        return next((c for c in self.confusions or [] if c.corpus == corpus and c.head == head), None)


def analyse(
    corpora: Sequence[Corpus],
    splits: Sequence[str] = ("train", "devel"),
    split_punct: bool = True,
    backend: Any = None,
    test_split: str = "test",
    batch_size: int = INFERENCE_BATCH_SIZE,
    min_chars: int = 2,
    progress: bool = False,
) -> Analysis:
    """Both analyses over read corpora (the model part only when ``backend`` is given).

    Raises:
        MtbionerError: Fewer than two corpora, a name given twice, or a split not loaded.
    """
    names = [c.name for c in corpora]
    if len(names) < 2:
        raise MtbionerError(f"overlap needs at least two corpora, got {len(names)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MtbionerError(f"corpus {twice[0]!r} is given twice; name each corpus once")
    views = [corpus_view(c, splits, split_punct) for c in corpora]
    cased = string_overlap(views, False, min_chars)
    folded = string_overlap(views, True, min_chars)
    analysis = Analysis(views, cased, folded, split_punct=split_punct, min_chars=min_chars)
    if backend is not None:
        tests = {c.name: c.sentences(test_split) for c in corpora}
        analysis.confusions = model_confusion(
            backend, tests, split=test_split, batch_size=batch_size, progress=progress
        )
    return analysis


# --------------------------------------------------------------------------- numbers the findings use


def members(view: View, group: str, groups: Mapping[str, Sequence[str]] = TYPE_GROUPS) -> list[str]:
    """The view's types that belong to a merged type."""
    return [t for t in view.types if merged_type(t, groups) == group]


def labelled_as(pair: PairOverlap, a_types: Sequence[str], b_types: Sequence[str], weighted: bool = True) -> float:
    """Share of A's strings' occurrences that B labels with one of ``b_types`` (same span or inside one)."""
    shares = pair.shares(a_types, weighted)
    return sum(shares.get(t, 0.0) + shares.get(f"in {t}", 0.0) for t in b_types)


def exact_as(pair: PairOverlap, a_types: Sequence[str], b_types: Sequence[str], weighted: bool = True) -> float:
    shares = pair.shares(a_types, weighted)
    return sum(shares.get(t, 0.0) for t in b_types)


def inside_as(pair: PairOverlap, a_types: Sequence[str], b_types: Sequence[str], weighted: bool = True) -> float:
    shares = pair.shares(a_types, weighted)
    return sum(shares.get(f"in {t}", 0.0) for t in b_types)


def boundary(pair: PairOverlap, a_types: Sequence[str], b_types: Sequence[str], weighted: bool = True) -> float:
    """Share of occurrences a ``b_types`` entity overlaps without holding: shorter or crossing."""
    shares = pair.shares(a_types, weighted)
    return sum(shares.get(f"~{t}", 0.0) for t in b_types)


def unlabelled(pair: PairOverlap, a_types: Sequence[str] | None = None, weighted: bool = True) -> float:
    return pair.shares(a_types, weighted).get(NONE, 0.0)


def share(part: float, whole: float) -> float | None:
    """``part / whole``, or ``None`` for an empty whole."""
    return part / whole if whole else None


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _n(value: int) -> str:
    return f"{value:,}"


def _names(types: Sequence[str]) -> str:
    return "/".join(types)


@dataclass
class GroupPair:
    """How corpus B labels corpus A's strings of one merged type (the evidence for merging)."""

    group: str
    source: str
    target: str
    a_types: list[str]
    b_types: list[str]
    strings: int
    found: int
    labelled: float  # same group, exact or inside (string-weighted)
    exact: float
    inside: float
    boundary: float
    none: float
    other_group: float  # labelled with a B type of another merged type
    baseline_none: float | None  # B's own strings of the group, unlabelled in B's held-out text
    contrast: float | None  # A's types outside the group, labelled with b_types
    contrast_types: list[str]


def group_pairs(analysis: Analysis) -> list[GroupPair]:
    """Every ordered pair of corpora that both annotate some merged type, with the merge evidence."""
    out: list[GroupPair] = []
    for group in analysis.groups:
        annotating = [v for v in analysis.views if members(v, group, analysis.groups)]
        for a in annotating:
            for b in annotating:
                if a.name == b.name:
                    continue
                pair = analysis.pair(a.name, b.name)
                base = analysis.pair(b.name, b.name)
                assert pair is not None
                a_types, b_types = members(a, group, analysis.groups), members(b, group, analysis.groups)
                others_b = [t for t in b.types if t not in b_types]
                others_a = [t for t in a.types if t not in a_types and pair.count("found", [t])]
                out.append(
                    GroupPair(
                        group,
                        a.name,
                        b.name,
                        a_types,
                        b_types,
                        pair.count("strings", a_types),
                        pair.count("found", a_types),
                        labelled_as(pair, a_types, b_types),
                        exact_as(pair, a_types, b_types),
                        inside_as(pair, a_types, b_types),
                        boundary(pair, a_types, b_types),
                        unlabelled(pair, a_types),
                        labelled_as(pair, a_types, others_b),
                        unlabelled(base, b_types) if base and base.count("found", b_types) else None,
                        labelled_as(pair, others_a, b_types) if others_a else None,
                        others_a,
                    )
                )
    return out


@dataclass
class Policy:
    """The merge policy the numbers support, each rule with the sentence that justifies it.

    ``type_map``: merged type -> the ``CORPUS TYPE`` pairs it takes in; ``merged``: the merged types
    the string evidence supports; ``rules``: (rule, evidence) pairs in the order the report lists them.
    """

    type_map: dict[str, list[str]]
    merged: list[str]
    rules: list[tuple[str, str]]


def _string_shares(pair: PairOverlap, key: Key, columns: Sequence[str]) -> float:
    counts = pair.seen[key]
    return sum(counts[c] for c in columns) / sum(counts.values())


def cross_group(pair: PairOverlap, groups: Mapping[str, Sequence[str]] = TYPE_GROUPS) -> dict[str, float]:
    """String-weighted sums over A's found strings: B labels them with another merged type (same span:
    ``exact``; holding them: ``inside``), and, for strings whose merged type B does not annotate at
    all, how many there are (``absent``) and their unlabelled shares (``absent_none``)."""
    out = {"strings": 0.0, "exact": 0.0, "inside": 0.0, "absent": 0.0, "absent_none": 0.0}
    b_groups = {merged_type(t, groups) for t in pair.target_types}
    for key in pair.keys(found=True):
        a_groups = {merged_type(t, groups) for t in pair.strings[key]}
        other = [t for t in pair.target_types if merged_type(t, groups) not in a_groups]
        out["strings"] += 1
        out["exact"] += _string_shares(pair, key, other)
        out["inside"] += _string_shares(pair, key, [f"in {t}" for t in other])
        if not a_groups & b_groups:
            out["absent"] += 1
            out["absent_none"] += _string_shares(pair, key, [NONE])
    return out


def recommend(analysis: Analysis) -> Policy:
    """Choose the merge rules from the measured numbers (each evidence line states its bar)."""
    evidence = [e for e in group_pairs(analysis) if e.found]
    groups = analysis.groups
    type_map: dict[str, list[str]] = {}
    for view in analysis.views:
        for t in view.types:
            type_map.setdefault(merged_type(t, groups), []).append(f"{view.name} {t}")
    rules: list[tuple[str, str]] = []

    # 1. which merges the strings support: labelled with the candidate type often, and more than other types
    verdicts: dict[str, list[tuple[bool, str]]] = defaultdict(list)
    for e in evidence:
        line = f"{e.target} labels {e.source}'s {_names(e.a_types)} strings {_names(e.b_types)} at {_pct(e.labelled)}"
        if e.contrast is not None:
            line += f" and {e.source}'s {_names(e.contrast_types)} strings at {_pct(e.contrast)}"
        ok = e.labelled >= 0.3 and (e.contrast is None or e.labelled >= 2 * e.contrast)
        verdicts[e.group].append((ok, line))
    merged = [g for g, rows in verdicts.items() if all(ok for ok, _ in rows)]
    refused = [g for g in verdicts if g not in merged]
    single = [g for g, members_ in type_map.items() if len(members_) == 1]
    if verdicts:
        lines = [line for g in verdicts for _, line in verdicts[g]]
        rule = (
            "Type map: "
            + "; ".join(f"{g} ← {', '.join(type_map[g])}" for g in type_map if g in merged or len(type_map[g]) > 1)
            + (f"; {', '.join(single)} stay as they are" if single else "")
            + ". Every merged entity keeps its original (corpus, type) pairs."
        )
        why = (
            "A merge is supported when the other corpus labels a corpus's strings with the candidate type (same span "
            "or inside a longer entity, string-weighted) at 30% or more, and at least twice as often as the source's "
            "strings of other types: " + "; ".join(lines) + "."
        )
        if refused:
            why += " Not supported by the strings, so decide on other grounds: " + ", ".join(refused) + "."
        rules.append((rule, why))
    for view in analysis.views:
        for g, members_ in type_map.items():
            mine = [m.split(" ", 1)[1] for m in members_ if m.split(" ", 1)[0] == view.name]
            if len(mine) > 1:
                several, total = type_ambiguity(view, mine, min_chars=analysis.min_chars)
                rules.append(
                    (
                        f"Keep {view.name}'s own type ({_names(mine)}) on every merged {g} entity it labels.",
                        f"{view.name} separates them consistently by string: only {_n(several)} of its {_n(total)} "
                        f"distinct {_names(mine)} strings ({_pct(share(several, total))}) carry two of these types, "
                        "so merging drops a distinction the corpus makes; kept as an attribute, nothing is lost.",
                    )
                )

    # 2. same span, 3. nested or crossing
    same = [e for e in evidence if e.group in merged]
    if same:
        exact = sum(e.exact for e in same) / len(same)
        inside = sum(e.inside for e in same) / len(same)
        crossing = sum(e.boundary for e in same) / len(same)
        pairs = f"averaged over the {len(same)} ordered corpus pairs of merged types"
        rules.append(
            (
                "Same span, same merged type (BC2GM GENE and JNLPBA DNA on `BRCA1`): one entity of the merged type, "
                "listing every (corpus, type) that found it, with the highest score.",
                f"Same-span agreement is the commonest labelled outcome: {_pct(exact)} of occurrences get the same "
                f"span, {_pct(inside)} lie inside a longer entity of the merged type and {_pct(crossing)} overlap "
                f"one otherwise ({pairs}).",
            )
        )
        own = [
            inside_as(base, e.b_types, e.b_types)
            for e in same
            if (base := analysis.pair(e.target, e.target)) is not None and base.count("found", e.b_types)
        ]
        within = (
            f" Within one corpus the same happens ({_pct(sum(own) / len(own))} of held-out occurrences of a "
            "corpus's own strings lie inside a longer entity of the same corpus): nesting is how names are "
            "written, not a clash of conventions, and a flat corpus keeps the longer mention."
            if own
            else ""
        )
        ratio = inside / crossing if crossing else float("inf")
        if inside >= 3 * crossing:
            rules.append(
                (
                    "Overlapping spans of one merged type: nested (one holds the other): keep the longer span, "
                    "recording the shorter with its corpus; crossing: keep the higher score.",
                    f"Partial overlaps are mostly nesting: {_pct(inside)} of occurrences lie inside a longer entity "
                    f"against {_pct(crossing)} shorter or crossing, {ratio:.1f} to 1 (the bar for 'keep the longer' "
                    f"is 3 to 1).{within} The longer span holds every annotated word of both (`IL-2` / `IL-2 "
                    "gene`); crossing spans have no such containment, so the model's confidence decides.",
                )
            )
        else:
            rules.append(
                (
                    "Overlapping spans of one merged type: keep the higher score.",
                    f"Partial overlaps are not mostly nesting ({_pct(inside)} inside a longer entity against "
                    f"{_pct(crossing)} shorter or crossing, under the 3 to 1 bar), so neither convention is "
                    "preferred.",
                )
            )

    # 4. different merged types
    sums: Counter[str] = Counter()
    for pair in analysis.cased:
        if pair.source != pair.target:
            sums.update(cross_group(pair, groups))
    if sums["strings"]:
        rules.append(
            (
                "Different merged types on the same span (an abbreviation that is a gene in one corpus and a disease "
                "in another): keep the higher score. Nested entities of different merged types (a gene name inside "
                "a cell-type mention): keep both.",
                f"Of cross-corpus occurrences, {_pct(sums['exact'] / sums['strings'])} get the same span with another "
                f"merged type and {_pct(sums['inside'] / sums['strings'])} lie inside an entity of another merged "
                f"type (string-weighted, {_n(int(sums['strings']))} string-corpus pairs). Same-span cases are real "
                "ambiguities that context decides; nested ones are two different things, both correct (`CD4` in "
                "`CD4+ T cells`).",
            )
        )

    # 5. silver conflicts
    lines = []
    if sums["absent"]:
        lines.append(
            f"strings whose merged type the other corpus does not annotate are unlabelled there at "
            f"{_pct(sums['absent_none'] / sums['absent'])} (string-weighted, {_n(int(sums['absent']))} string-corpus "
            "pairs): that O is the other scheme, not a judgement"
        )
    for e in evidence:
        if e.baseline_none is not None:
            gap = 100 * (e.none - e.baseline_none)
            lines.append(
                f"{e.target} leaves {e.source}'s {_names(e.a_types)} strings unlabelled at {_pct(e.none)} against "
                f"{_pct(e.baseline_none)} for its own held-out strings ({gap:+.1f} points)"
            )
    if lines:
        rules.append(
            (
                "Silver conflicts: a corpus's O is evidence against its own types only. Training on the merged set, "
                "mask the loss of the merged types a corpus does not annotate; within a type it does annotate its O "
                "stands (its annotators' decision), and the disagreement is reported rather than overwritten.",
                "; ".join(lines) + ".",
            )
        )
    return Policy(type_map, merged, rules)


# --------------------------------------------------------------------------- findings


def _examples(pair: PairOverlap, types: Sequence[str], n: int = 5) -> str:
    return ", ".join(f"`{text}` ({none} of {total})" for text, none, total in pair.conflicts(types, n))


def findings(analysis: Analysis) -> list[str]:
    """The findings, as Markdown bullets; every number in them is computed here."""
    out: list[str] = []
    views = analysis.views
    mentions = {v.name: sum(v.entities.values()) for v in views}
    total_mentions, total_tokens = sum(mentions.values()), sum(v.tokens for v in views)
    biggest = max(views, key=lambda v: mentions[v.name])
    out.append(
        f"**Size.** {biggest.name} is the largest corpus here: {_n(mentions[biggest.name])} of the "
        f"{_n(total_mentions)} entity mentions ({_pct(share(mentions[biggest.name], total_mentions))}) and "
        f"{_n(biggest.tokens)} of the {_n(total_tokens)} tokens ({_pct(share(biggest.tokens, total_tokens))}) of "
        f"the {'+'.join(views[0].splits)} splits: when batches are drawn in proportion to corpus size (the paper's "
        "mixed training) it supplies the largest share of the shared encoder's updates."
    )
    for e in group_pairs(analysis):
        if not e.found:
            out.append(f"**{e.group}, {e.source} → {e.target}.** None of {e.source}'s strings occur in {e.target}.")
            continue
        base = (
            ""
            if e.baseline_none is None
            else f", against {_pct(e.baseline_none)} for {e.target}'s own held-out strings"
        )
        out.append(
            f"**{e.group}, {e.source} → {e.target}.** {_n(e.found)} of {e.source}'s {_n(e.strings)} distinct "
            f"{_names(e.a_types)} strings ({_pct(share(e.found, e.strings))}) occur in {e.target}'s text. "
            f"{e.target} labels them {_names(e.b_types)} with the same span at {_pct(e.exact)}, inside a longer "
            f"{_names(e.b_types)} entity at {_pct(e.inside)}, overlapping otherwise at {_pct(e.boundary)}, with "
            f"another type at {_pct(e.other_group)}, and leaves them unlabelled (silver conflict) at {_pct(e.none)}"
            f"{base} (string-weighted shares of occurrences)."
        )
    out += _finer_split(analysis)
    out += _model_findings(analysis)
    return out


def _finer_split(analysis: Analysis) -> list[str]:
    """Where one corpus splits a merged type another keeps whole (JNLPBA protein/DNA/RNA against BC2GM GENE)."""
    out: list[str] = []
    groups = analysis.groups
    for group in groups:
        annotating = [v for v in analysis.views if members(v, group, groups)]
        for fine in annotating:
            for coarse in annotating:
                f_types, c_types = members(fine, group, groups), members(coarse, group, groups)
                if fine.name == coarse.name or len(f_types) <= len(c_types):
                    continue
                into = analysis.pair(coarse.name, fine.name)  # coarse strings in the fine corpus's text
                back = analysis.pair(fine.name, coarse.name)  # fine strings in the coarse corpus's text
                base_f, base_c = analysis.pair(fine.name, fine.name), analysis.pair(coarse.name, coarse.name)
                assert into and back and base_f and base_c
                if not into.count("found", c_types) or not back.count("found", f_types):
                    continue
                exact = {t: exact_as(into, c_types, [t]) for t in f_types}
                total = sum(exact.values())
                if total:
                    split = ", ".join(
                        f"{t} {_pct(share(v, total))}" for t, v in sorted(exact.items(), key=lambda x: -x[1])
                    )
                    out.append(
                        f"**{fine.name} splits what {coarse.name} calls {_names(c_types)}.** Where {fine.name} labels "
                        f"a {coarse.name} {_names(c_types)} string with the same span, the type is {split}: what is "
                        f"one type for the {coarse.name} head is {len(f_types)} types for the {fine.name} head."
                    )
                none_back, none_into = unlabelled(back, f_types), unlabelled(into, c_types)
                own_c = unlabelled(base_c, c_types) if base_c.count("found", c_types) else None
                own_f = unlabelled(base_f, f_types) if base_f.count("found", f_types) else None
                excess_back = none_back - (own_c or 0.0)
                excess_into = none_into - (own_f or 0.0)
                wider = excess_back >= 0.05 and excess_back > excess_into
                heading = (
                    f"{fine.name} annotates more than {coarse.name}"
                    if wider
                    else f"{coarse.name} labels {fine.name}'s strings about as often as {fine.name} labels its"
                )
                out.append(
                    f"**{heading}.** {coarse.name} leaves {fine.name}'s {_names(f_types)} strings unlabelled at "
                    f"{_pct(none_back)} of occurrences ({_pct(unlabelled(back, f_types, weighted=False))} counting "
                    f"every occurrence), against {_pct(own_c)} for its own held-out strings; {fine.name} leaves "
                    f"{coarse.name}'s strings unlabelled at {_pct(none_into)} (its own baseline {_pct(own_f)}). "
                    f"{coarse.name} never labels {_n(back.count('never', f_types))} of the "
                    f"{_n(back.count('found', f_types))} {fine.name} strings it contains; the most frequent "
                    f"unlabelled ones: {_examples(back, f_types)}."
                )
                others = [t for t in fine.types if t not in f_types]
                if others:
                    nested = inside_as(into, c_types, others) + exact_as(into, c_types, others)
                    out.append(
                        f"**{fine.name} also puts {coarse.name}'s {_names(c_types)} strings inside other types.** "
                        f"{_pct(nested)} of their occurrences in {fine.name} are labelled, or lie inside, "
                        f"{_names(others)} (e.g. a gene name inside a cell-type mention), where the {coarse.name} "
                        f"head is taught {_names(c_types)} for the same words."
                    )
                if wider:
                    paper = (
                        ", which is consistent with the drop the MT-BioNER paper saw on the other corpora when "
                        "JNLPBA was added"
                        if fine.name == "JNLPBA"
                        else ""
                    )
                    out.append(
                        f"**What this says about the {fine.name} effect.** {fine.name} brings, for {group}, a finer "
                        f"type split and a wider scope than {coarse.name}: strings {coarse.name} leaves O "
                        f"({_pct(none_back)}, {100 * excess_back:.1f} points above its own baseline) are entities "
                        f"for {fine.name}. With one head per corpus these labels do not contradict each other "
                        "directly, but the shared encoder has to carry each corpus's conventions besides the meaning "
                        f"of the words{paper}. Strings cannot show causation; the model part (`--model`) shows how "
                        "each head tags the other corpora's test entities."
                    )
    return out


def _model_findings(analysis: Analysis) -> list[str]:
    if not analysis.confusions:
        return []
    out: list[str] = []
    groups = analysis.groups
    for c in analysis.confusions:
        if c.corpus == c.head:
            continue
        for group in groups:
            gold_types = [t for t in c.gold_types if merged_type(t, groups) == group]
            head_types = [t for t in c.head_types if merged_type(t, groups) == group]
            gold = c.gold(gold_types)
            if not gold_types or not head_types or not gold:
                continue
            rows = Counter()
            for t in gold_types:
                rows.update(c.row(t))
            same = sum(rows[t] for t in head_types)
            by_type = ", ".join(f"{t} {_pct(share(rows[t], gold))}" for t in head_types if rows[t])
            out.append(
                f"**Model: {c.head} head on {c.corpus} {c.split}.** Of {_n(gold)} gold {_names(gold_types)} "
                f"entities it tags {_pct(share(same, gold))} with the same span as {group} ({by_type or 'none'}), "
                f"{_pct(share(rows[PARTIAL], gold))} partly and misses {_pct(share(rows[MISSED], gold))}; it also "
                f"predicts {_n(sum(c.row(NONE).values()))} spans {c.corpus} has no entity for."
            )
    return out


# --------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, dpi=110, format="png")


def strings_figure(analysis: Analysis, path: Path) -> None:
    """Heat map: rows A:type, one panel per B corpus (B types exact / inside, other overlap, none)."""
    plt = _pyplot()
    import numpy as np

    rows = [(v.name, t) for v in analysis.views for t in v.types]
    panels = []
    for b in analysis.views:
        columns = [c for t in b.types for c in (t, f"in {t}")] + ["~", NONE]
        grid = np.full((len(rows), len(columns)), np.nan)
        for i, (a_name, a_type) in enumerate(rows):
            pair = analysis.pair(a_name, b.name)
            if pair is None or not pair.count("found", [a_type]):
                continue
            shares = pair.shares([a_type])
            for j, column in enumerate(columns):
                if column == "~":
                    grid[i, j] = sum(shares[f"~{t}"] for t in b.types)
                else:
                    grid[i, j] = shares[column]
        panels.append((b.name, columns, grid))
    widths = [len(c) for _, c, _ in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(1.6 + 0.55 * sum(widths), 1.4 + 0.42 * len(rows)),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for k, (ax, (name, columns, grid)) in enumerate(zip(axes[0], panels, strict=True)):
        ax.imshow(np.nan_to_num(grid), cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                value = grid[i, j]
                if np.isnan(value):
                    ax.text(j, i, "·", ha="center", va="center", fontsize=7, color="0.6")
                elif value >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > 0.6 else "black",
                    )
        ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), [f"{a}: {t}" for a, t in rows] if k == 0 else [], fontsize=8)
        ax.set_title(f"in {name} text", fontsize=9)
        for i, (a_name, _) in enumerate(rows):
            if a_name == name:  # the held-out baseline rows
                ax.add_patch(plt.Rectangle((-0.5, i - 0.5), len(columns), 1, fill=False, lw=1.2, ec="darkorange"))
    fig.suptitle(
        "How each corpus (panel) annotates the others' entity strings: % of occurrences, each string weighted once\n"
        "T = same span as a T entity, in T = inside a longer T entity, ~ = other overlap, none = unlabelled; "
        "orange: the corpus's own held-out baseline",
        fontsize=9,
    )
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def model_figure(analysis: Analysis, path: Path) -> None:
    """Heat maps: one per (test corpus, head), gold type x predicted type, row-normalised, counts written."""
    plt = _pyplot()
    import numpy as np

    confusions = analysis.confusions or []
    corpora = list(dict.fromkeys(c.corpus for c in confusions))
    heads = list(dict.fromkeys(c.head for c in confusions))
    fig, axes = plt.subplots(
        len(corpora), len(heads), figsize=(max(6.0, 2.6 * len(heads) + 1), 2.2 * len(corpora) + 1.2), squeeze=False
    )
    for i, corpus in enumerate(corpora):
        for j, head in enumerate(heads):
            ax = axes[i][j]
            c = analysis.confusion(corpus, head)
            assert c is not None
            counts = np.array([[c.counts[(r, k)] for k in c.columns] for r in c.rows], dtype=float)
            totals = counts.sum(axis=1, keepdims=True)
            ax.imshow(
                np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0),
                cmap="Purples",
                vmin=0,
                vmax=1,
                aspect="auto",
            )
            for r in range(counts.shape[0]):
                for k in range(counts.shape[1]):
                    if counts[r, k]:
                        dark = totals[r, 0] and counts[r, k] / totals[r, 0] > 0.6
                        ax.text(
                            k,
                            r,
                            f"{int(counts[r, k])}",
                            ha="center",
                            va="center",
                            fontsize=6,
                            color="white" if dark else "black",
                        )
            ax.set_xticks(range(len(c.columns)), c.columns, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(c.rows)), c.rows, fontsize=7)
            if i == 0:
                ax.set_title(f"{head} head", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{corpus} {c.split} gold", fontsize=8)
    fig.suptitle(
        "Every head (column) on every test set (row): gold type × predicted type at exact span\n"
        "numbers: counts; colour: share of the row; none: predicted spans without a gold span",
        fontsize=9,
    )
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------- the report


def _link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _overview(analysis: Analysis, fold: bool) -> list[str]:
    names = [v.name for v in analysis.views]
    lines = ["| A's strings \\ in B's text | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a in analysis.views:
        cells = []
        for b in analysis.views:
            pair = analysis.pair(a.name, b.name, fold)
            assert pair is not None
            found, strings = pair.count("found"), pair.count("strings")
            cell = f"{_n(found)}/{_n(strings)} found · {_pct(unlabelled(pair) if found else None)} none"
            cells.append(f"*{cell}* (baseline)" if a.name == b.name else cell)
        lines.append(f"| {a.name} | " + " | ".join(cells) + " |")
    return lines


def _pair_table(pair: PairOverlap, folded: PairOverlap | None) -> list[str]:
    columns = [c for c in pair.outcomes if any(pair.shares([t]).get(c, 0) >= 0.0005 for t in pair.source_types)]
    head = [
        "A type",
        "strings",
        "found in B",
        "found (case-folded)",
        "labelled ≥1",
        "never labelled",
        "occurrences",
        *columns,
        "none (per occurrence)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    for t in pair.source_types:
        shares = pair.shares([t])
        found, strings = pair.count("found", [t]), pair.count("strings", [t])
        row = [
            t,
            _n(strings),
            f"{_n(found)} ({_pct(share(found, strings))})",
            "–" if folded is None else _n(folded.count("found", [t])),
            _n(pair.count("labelled", [t])),
            _n(pair.count("never", [t])),
            _n(sum(pair.occurrences([t]).values())),
            *(_pct(shares[c]) if found else "–" for c in columns),
            _pct(unlabelled(pair, [t], weighted=False) if found else None),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _confusion_table(c: HeadConfusion) -> list[str]:
    lines = [
        f"| {c.corpus} gold \\ {c.head} | " + " | ".join(c.columns) + " | total |",
        "|---|" + "---|" * (len(c.columns) + 1),
    ]
    for r in c.rows:
        counts = [c.counts[(r, k)] for k in c.columns]
        lines.append(f"| {r} | " + " | ".join(_n(n) for n in counts) + f" | {_n(sum(counts))} |")
    return lines


def render(analysis: Analysis, figures: Path, relative_to: Path, prefix: str = "overlap") -> str:
    """The report's Markdown; writes its heat maps into ``figures`` (links relative to ``relative_to``)."""
    figures.mkdir(parents=True, exist_ok=True)
    strings_png = figures / f"{prefix}-strings.png"
    strings_figure(analysis, strings_png)
    splits = "+".join(analysis.views[0].splits)
    out = [
        "# Corpus overlap: shared entity strings, how each corpus annotates them, and each head on the others",
        "",
        (f"Generated by `{analysis.command}`" if analysis.command else "Generated by `mtbioner overlap`")
        + "; every number and every sentence of the findings is computed from the corpora (and the model, when "
        "given). Rerun the command to regenerate it.",
        "",
        "## Method",
        "",
        f"- **Strings**: each corpus's distinct entity strings from its **{splits}** split(s). The test split is "
        "never used for the string analysis, so nothing here is chosen on test. Strings with fewer than "
        f"{analysis.min_chars} characters or without a letter (`P`, `1`) are left out: they are rare as "
        "annotations but occur everywhere.",
        "- **Matching**: a string occurs where its exact word sequence does (whole words). "
        + (
            "Tokens are first re-split at punctuation (`IL-2` → `IL - 2`), since JNLPBA keeps hyphenated words "
            "whole while the other corpora split them."
            if analysis.split_punct
            else "Tokens are compared as the corpora tokenize them."
        )
        + " Case-sensitive unless *case-folded* is said.",
        "- **Outcome of an occurrence in B**: `T` = B has a T entity with the same span; `in T` = it lies inside "
        "a longer B entity of type T; `~T` = a T entity overlaps it otherwise (shorter or crossing: a boundary "
        "conflict); `none` = B leaves it unlabelled, a **silver conflict** (A calls it an entity, B's annotators "
        "left it O).",
        "- **Shares** are string-weighted: each found string's occurrences are split into outcome shares and the "
        "strings averaged, so `protein` (hundreds of occurrences) weighs as much as `BRCA1`. Tables also give the "
        "per-occurrence none share.",
        "- **Baseline** (A = B): A's first split's strings in the text of its other split(s) (train strings in "
        "devel text), so no occurrence is the annotation that listed the string: how consistent a corpus is with "
        "itself.",
        "",
        "## Corpora",
        "",
        "| Corpus | splits | sentences | tokens | tokens re-split | entity mentions | distinct strings |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in analysis.views:
        mentions = ", ".join(f"{t} {_n(n)}" for t, n in sorted(v.entities.items()))
        distinct = len({k for k in entity_strings(v) if is_listed(k, analysis.min_chars)})
        out.append(
            f"| {v.name} | {'+'.join(v.splits)} | {_n(v.sentences)} | {_n(v.tokens)} | {_n(v.split_tokens)} | "
            f"{mentions} | {_n(distinct)} |"
        )
    out += ["", "## Findings", ""]
    out += [f"- {line}" for line in findings(analysis)]
    policy = recommend(analysis)
    out += [
        "",
        "## Recommended merge policy for one entity set (issue 18 item 3)",
        "",
        "Merged types: " + "; ".join(f"**{g}** ← {', '.join(ts)}" for g, ts in policy.type_map.items()) + ".",
        "",
        "Each rule comes with the numbers that chose it (the bars are stated); rerunning on other corpora can "
        "choose differently.",
        "",
    ]
    for i, (rule, why) in enumerate(policy.rules, 1):
        out += [f"{i}. **{rule}**  ", f"   *Evidence:* {why}"]
    out += [
        "",
        "## String overlap",
        "",
        "Found strings out of A's distinct strings, and the share of their occurrences B leaves unlabelled "
        "(string-weighted); the diagonal is the held-out baseline.",
        "",
        *_overview(analysis, False),
        "",
        "Case-folded:",
        "",
        *_overview(analysis, True),
        "",
        f"![type-by-type string overlap]({_link(strings_png, relative_to)})",
        "",
    ]
    for a in analysis.views:
        for b in analysis.views:
            pair = analysis.pair(a.name, b.name)
            assert pair is not None
            title = f"### {a.name} strings in {b.name} text" + (
                f" (baseline: {pair.baseline})" if pair.baseline else ""
            )
            out += [title, "", *_pair_table(pair, analysis.pair(a.name, b.name, True)), ""]
            unlabelled_rows = [f"{t}: {_examples(pair, [t])}" for t in pair.source_types if pair.conflicts([t], 1)]
            if unlabelled_rows:
                out += [
                    "Most often unlabelled in B (unlabelled of all occurrences): " + "; ".join(unlabelled_rows),
                    "",
                ]
    out += ["## Model: every head on every test set", ""]
    if analysis.confusions is None:
        out += [
            "Model part: run with `--model MODEL` (a trained or exported model folder) to add every head's "
            "predictions on every corpus's test split, as a gold type × predicted type heat map.",
            "",
        ]
    else:
        model_png = figures / f"{prefix}-model.png"
        model_figure(analysis, model_png)
        out += [
            f"Model `{analysis.model}`. Each head tags each corpus's **{analysis.confusions[0].split}** split. "
            "This is analysis of a finished model, not model selection: nothing is tuned on it. Cells count gold "
            "entities by the head's prediction at exact span (`partial`: only overlapping predictions, `missed`: "
            "none); the `none` row counts predicted spans with no gold span of the same boundaries.",
            "",
            f"![every head on every test set]({_link(model_png, relative_to)})",
            "",
        ]
        for c in analysis.confusions:
            out += [
                f"### {c.head} head on {c.corpus} {c.split} ({_n(c.sentences)} sentences)",
                "",
                *_confusion_table(c),
                "",
            ]
    return "\n".join(out).rstrip() + "\n"


def write_report(analysis: Analysis, output: str | Path, figures: str | Path | None = None) -> Path:
    """Write the Markdown report (atomically) and its figures (default: ``figures/`` beside it).

    Figures are named after the report (``overlap.md`` -> ``overlap-strings.png``, ``overlap-model.png``)
    and linked relative to the report's folder.
    """
    target = Path(output)
    folder = Path(figures) if figures is not None else target.parent / "figures"
    text = render(analysis, folder, target.parent, prefix=target.stem)
    with atomic_write(target) as handle:
        handle.write(text)
    return target
