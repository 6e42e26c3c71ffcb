"""Score a model's merged answer on any corpus whose types map into the merged scheme.

In-domain scores (:mod:`mtbioner.runtime.evaluation`) ask each head about its own corpus. A user sees something
else: one answer in the merged scheme (``Gene``, ``Chemical``, ``Disease``, ``Species``, ...), on text
no head was trained on. Here a corpus split becomes documents of text (its tokens joined by spaces,
sentences by one space; a document is a ``-DOCSTART-`` document where the file marks them, else one
sentence), the tagger answers on that text, and the answer is compared with the corpus's gold
entities mapped into the merged scheme, by character offsets:

* ``exact``: same start, end and type (conlleval's rule);
* ``lenient``: the boundary mode of HunFlair's published comparison (hu-ner/hunflair-experiments,
  ``evaluate_ann.py`` with threshold 1): a prediction is a true positive when it lies inside a gold
  span of the same type whose start or end it may pass by one character; a gold entity is a false
  negative when it lies inside no prediction with the same slack. Matching is greedy in text order,
  and a matched entity is used once per pass (:func:`match_lenient`).

Only the types the corpus annotates (after mapping) are scored: a ``Chemical`` answer on a gene
corpus is not counted against the model, since that corpus never says whether it is right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..data.schemes import tags_to_spans
from ..data.text import TextSentence, tokenize_words
from ..errors import MtbionerError
from ..runtime.answer import AnswerPolicy, answer
from ..runtime.type_merging import MERGED_TYPES

if TYPE_CHECKING:
    from ..data.corpus import Corpus
    from ..data.entity import Entity
    from ..runtime.tagging import Tagger

Mode = str  # "exact" or "lenient"
MODES = ("exact", "lenient")


@dataclass(frozen=True, slots=True)
class Span:
    """An entity of one document: half-open character offsets and a (merged) type."""

    doc: int
    start: int
    end: int
    type: str


@dataclass
class Document:
    """Text built from a corpus's sentences, with each sentence's word offsets and gold spans."""

    text: str
    sentences: list[list[tuple[int, int]]]  # per sentence, (start, end) of each corpus token
    gold: list[Span] = field(default_factory=list)


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Counts) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn

    def scores(self) -> dict[str, float | int]:
        """Precision, recall and F1 in percent (0 where undefined), and the gold count."""
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {
            "precision": round(100 * p, 2),
            "recall": round(100 * r, 2),
            "f1": round(100 * f, 2),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


def build_documents(
    sentences: Sequence[tuple[Sequence[str], Sequence[str], int]], type_map: Mapping[str, str], group: int = 1
) -> list[Document]:
    """Documents of text with gold spans in the merged scheme.

    Args:
        sentences: ``(tokens, IOB2 tags, document number)`` in file order; consecutive sentences with the
            same number form a document when the file marks documents (numbers differ).
        type_map: Corpus type -> merged type; gold entities of types it does not name are dropped.
        group: Where the file marks no documents, this many consecutive sentences make one (1: each sentence
            alone). Corpora that keep their abstracts' sentence order read more like a user's text in groups.
    """
    marked = len({doc for _, _, doc in sentences}) > 1
    documents: list[Document] = []
    previous: int | None = None
    for index, (tokens, tags, doc) in enumerate(sentences):
        starts = doc != previous if marked else index % max(1, group) == 0
        if not documents or starts:
            documents.append(Document("", []))
        previous = doc
        current = documents[-1]
        offset = len(current.text) + (1 if current.text else 0)
        positions, cursor = [], offset
        for token in tokens:
            positions.append((cursor, cursor + len(token)))
            cursor += len(token) + 1
        current.text = (current.text + " " if current.text else "") + " ".join(tokens)
        current.sentences.append(positions)
        index = len(documents) - 1
        for kind, first, end in tags_to_spans(list(tags)):
            if kind in type_map:
                current.gold.append(Span(index, positions[first][0], positions[end - 1][1], type_map[kind]))
    return documents


def _count(
    predicted: Sequence[Span], gold: Sequence[Span], matches: Callable[[Span, Span], bool]
) -> dict[str, Counts]:
    """HunFlair's two greedy passes: predictions against unused gold (TP/FP), gold against unused predictions (FN)."""
    counts: dict[str, Counts] = {}
    remaining = _by_doc(gold)
    for p in predicted:
        hit = next((g for g in remaining.get(p.doc, []) if matches(p, g)), None)
        kind = counts.setdefault(p.type, Counts())
        if hit is None:
            kind.fp += 1
        else:
            remaining[p.doc].remove(hit)
            kind.tp += 1
    unused = _by_doc(predicted)
    for g in gold:
        hit = next((p for p in unused.get(g.doc, []) if matches(g, p)), None)
        if hit is None:
            counts.setdefault(g.type, Counts()).fn += 1
        else:
            unused[g.doc].remove(hit)
    return counts


def _by_doc(spans: Sequence[Span]) -> dict[int, list[Span]]:
    out: dict[int, list[Span]] = {}
    for s in spans:
        out.setdefault(s.doc, []).append(s)
    return out


def _exact(a: Span, b: Span) -> bool:
    return a == b


def _within(slack: int) -> Callable[[Span, Span], bool]:
    """``a`` lies inside ``b`` of the same type, its start up to ``slack`` before or its end up to ``slack`` after."""

    def inside(a: Span, b: Span) -> bool:
        if a.doc != b.doc or a.type != b.type:
            return False
        return (b.start - slack <= a.start and a.end <= b.end) or (b.start <= a.start and a.end <= b.end + slack)

    return inside


def match_exact(predicted: Sequence[Span], gold: Sequence[Span]) -> dict[str, Counts]:
    """True positives, false positives and false negatives per type, exact boundaries."""
    return _count(predicted, gold, _exact)


def match_lenient(predicted: Sequence[Span], gold: Sequence[Span], slack: int = 1) -> dict[str, Counts]:
    """The same counts in HunFlair's lenient boundary mode (see the module docstring).

    Example: gold ``p53 protein`` (0-11) and prediction ``p53`` (0-3): the prediction is a true positive
    (it lies inside the gold span), and the gold entity is also a false negative (it does not lie inside
    the prediction), exactly as ``evaluate_ann.py`` counts it.
    """
    return _count(predicted, gold, _within(slack))


def score(predicted: Sequence[Span], gold: Sequence[Span], types: Sequence[str]) -> dict[str, dict]:
    """Both modes: ``{mode: {"overall": scores, "types": {type: scores}}}``, only ``types`` counted."""
    wanted = set(types)
    pred = [p for p in predicted if p.type in wanted]
    gold = [g for g in gold if g.type in wanted]
    result = {}
    for mode, counter in (("exact", match_exact), ("lenient", match_lenient)):
        counts = counter(pred, gold)
        overall = Counts()
        for c in counts.values():
            overall.add(c)
        support = {t: sum(1 for g in gold if g.type == t) for t in wanted}
        per_type = {t: {**counts.get(t, Counts()).scores(), "support": support[t]} for t in sorted(wanted)}
        result[mode] = {"overall": {**overall.scores(), "support": len(gold)}, "types": per_type}
    return result


def corpus_documents(corpus: Corpus, split: str, type_map: Mapping[str, str], group: int = 1) -> list[Document]:
    """A loaded split as :func:`build_documents` makes it."""
    return build_documents([(s.tokens, s.tags, s.document) for s in corpus.sentences(split)], type_map, group)


def text_sentences(document: Document) -> list[TextSentence]:
    """The document's sentences as the tagger reads them: the corpus's sentence bounds, the tagger's words.

    Words come from :func:`~mtbioner.data.text.tokenize_words` (the finest split, as for raw text), so a corpus
    that joins ``IL-2`` is read like any other text; its token bounds stay word bounds.
    """
    out = []
    for positions in document.sentences:
        start, end = positions[0][0], positions[-1][1]
        out.append(TextSentence(start, end, tuple(tokenize_words(document.text[start:end], start))))
    return out


def raw_entities(tagger: Tagger, documents: Sequence[Document], progress: bool = False) -> list[list[Entity]]:
    """Every head's entities in each document (offsets into its text), before any merging."""
    pairs = [(i, (d.text, s)) for i, d in enumerate(documents) for s in text_sentences(d)]
    found = tagger.sentence_entities([p for _, p in pairs], tagger.corpora, progress)
    per_doc: list[list[Entity]] = [[] for _ in documents]
    for (index, _), entities in zip(pairs, found, strict=True):
        per_doc[index].extend(entities)
    return per_doc


def answer_spans(
    documents: Sequence[Document],
    raw: Sequence[Sequence[Entity]],
    heads: Mapping[str, set[str]],
    policy: AnswerPolicy,
) -> list[Span]:
    """The merged answer of each document under ``policy``, as spans."""
    spans = []
    for index, (document, entities) in enumerate(zip(documents, raw, strict=True)):
        for e in answer(document.text, entities, heads, policy):
            spans.append(Span(index, e.start, e.end, e.type))
    return spans


def score_answer(
    documents: Sequence[Document],
    raw: Sequence[Sequence[Entity]],
    heads: Mapping[str, set[str]],
    policy: AnswerPolicy,
    types: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Both modes' scores of the merged answer, on the gold types (or ``types``) of the documents."""
    gold = [g for d in documents for g in d.gold]
    wanted = sorted(types if types is not None else {g.type for g in gold})
    return score(answer_spans(documents, raw, heads, policy), gold, wanted)


def parse_type_map(pairs: Sequence[str], base: Mapping[str, str] = MERGED_TYPES) -> dict[str, str]:
    """``base`` updated with ``TYPE=MERGED`` pairs (a user's ``--map`` options).

    Raises:
        MtbionerError: A pair is not ``TYPE=MERGED``.
    """
    out = dict(base)
    for pair in pairs:
        kind, sep, merged = (part.strip() for part in pair.partition("="))
        if not sep or not kind or not merged:
            raise MtbionerError(f"--map {pair!r}: expected CORPUS_TYPE=MERGED_TYPE, e.g. GENE=Gene")
        out[kind] = merged
    return out


def check_type_map(pairs: Sequence[str], type_map: Mapping[str, str], corpus_types: set[str], model_types: set[str]):
    """Refuse a user mapping that names no known type: its corpus type in no corpus scored, or its merged
    type one the model never gives.

    Raises:
        MtbionerError: Naming the pair and the known types.
    """
    for pair in pairs:
        kind = pair.partition("=")[0].strip()
        if kind not in corpus_types:
            raise MtbionerError(
                f"--map {pair!r}: no corpus scored has type {kind!r} (their types: {sorted(corpus_types)})"
            )
        if type_map[kind] not in model_types:
            raise MtbionerError(
                f"--map {pair!r}: the model gives no merged type {type_map[kind]!r} (it gives: {sorted(model_types)})"
            )


def evaluate_merged(
    tagger: Tagger,
    corpus: Corpus,
    split: str,
    type_map: Mapping[str, str] = MERGED_TYPES,
    policy: AnswerPolicy | None = None,
    progress: bool = False,
) -> dict:
    """Score the tagger's merged answer on one split: ``{"exact": ..., "lenient": ..., "types": [...]}``.

    Only the corpus's types that map to a type the model gives are scored.

    Raises:
        MtbionerError: None of the corpus's types maps to a type the model gives.
    """
    heads = tagger.type_heads  # computed once when the tagger was made
    documents = corpus_documents(corpus, split, type_map)
    types = sorted({g.type for d in documents for g in d.gold} & set(heads))
    if not types:
        mapped = {kind: type_map.get(kind, kind) for kind in corpus.entity_types}
        raise MtbionerError(
            f"corpus {corpus.name!r}: none of its types maps to a type the model gives ({mapped}; the model gives "
            f"{sorted(heads)}); map them with --map TYPE=MERGED"
        )
    raw = raw_entities(tagger, documents, progress)
    result = score_answer(documents, raw, heads, policy or tagger.policy, types)
    return {**result, "types": types, "documents": len(documents), "split": split}


def format_merged(results: Mapping[str, dict]) -> str:
    """A plain-text table of :func:`evaluate_merged` results: a row per corpus and per type, both modes."""
    header = (
        f"{'corpus / merged type':<28} {'exact P':>8} {'R':>7} {'F1':>7}   "
        f"{'lenient P':>9} {'R':>7} {'F1':>7} {'gold':>7}"
    )
    lines = [header, "-" * len(header)]
    for name, result in results.items():
        rows = [(name, result["exact"]["overall"], result["lenient"]["overall"])]
        rows += [(f"  {t}", result["exact"]["types"][t], result["lenient"]["types"][t]) for t in result["types"]]
        for label, e, le in rows:
            lines.append(
                f"{label:<28} {e['precision']:8.2f} {e['recall']:7.2f} {e['f1']:7.2f}   "
                f"{le['precision']:9.2f} {le['recall']:7.2f} {le['f1']:7.2f} {e['support']:7d}"
            )
    return "\n".join(lines)
