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

:mod:`mtbioner.study.overlap_findings` turns the numbers into sentences, including the merge policy for a
single entity set (:data:`TYPE_GROUPS`) that they support, and :mod:`mtbioner.study.overlap_report` into
Markdown with heat maps. ``mtbioner overlap`` runs all three.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..constants import INFERENCE_BATCH_SIZE
from ..data.corpus import Corpus, Sentence
from ..data.schemes import tags_to_spans
from ..errors import MtbionerError

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
        backend: A loaded model (``mtbioner.runtime.loading.load_backend``) or anything with its interface.
        test_sets: Corpus name -> its gold sentences (the test split: this is analysis, not selection).
        heads: Heads to run (default: all of the model's).
        split: The split's name, for the report.
    """
    from ..model.encoding import document_surroundings
    from ..runtime.inference import sentence_emissions

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
        context = backend.config.context
        around = document_surroundings(words, [s.document for s in sentences], context) if context else None
        emissions = sentence_emissions(backend, words, heads, batch_size, progress, around)
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
