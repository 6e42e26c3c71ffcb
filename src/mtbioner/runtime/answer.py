"""One clean answer per mention, from the guesses of every head.

Each head answers by its own corpus's guideline: BC2GM's head tags ``p53 protein`` whole and tags
families (``growth factors``), the GENIA heads tag the name alone, JNLPBA's splits genes into DNA,
RNA and protein. :func:`answer` turns all of them into one entity per mention in the merged scheme
(:mod:`mtbioner.runtime.type_merging`), in steps that each can be switched on or off by an
:class:`AnswerPolicy`, so that each was measured on corpora the model did not train on before it was
turned on (``benchmarks/cross_corpus.py``; the default policy is the one those measurements chose):

1. *exclude*: per merged type, the answers of some heads are ignored (heads named by corpus, so one
   policy serves any model; a head a model lacks is simply absent, and a model whose every head of a type
   is excluded keeps them all, rather than lose the type);
2. *trim*: a gene's span ends at its name (``p53 protein`` -> ``p53``, ``VEGF mRNA`` -> ``VEGF``);
3. *generic*: lower-case plural gene mentions without a digit (``growth factors``, ``cytokines``) are
   families, not genes, and are dropped;
4. *votes*: a mention is kept when at least this share of the heads that can give its type found an
   overlapping span of that type (0: any one head);
5. *span*: of overlapping spans of one type, the longest (nested ones recorded) or the one most heads gave;
6. *abbreviations*: a short form defined in the text (``hemangiopericytomas (HPCs)``, Schwartz-Hearst,
   :mod:`mtbioner.data.abbreviations`) takes its long form's type wherever it occurs, and the reverse;
7. *consistency*: a string tagged once is tagged alike wherever else it occurs in the text;
8. *flat*: of overlapping mentions of different types (``Cr`` a chemical inside ``Cr(IV)`` a gene),
   the one with the higher score.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ..data.abbreviations import find_abbreviations
from ..errors import MtbionerError
from .type_merging import MERGED_TYPES, merge_types, merged_type, to_merged

if TYPE_CHECKING:
    from ..data.entity import Entity

GENE = "Gene"
# Words a gene mention's span may end with in one guideline and not in others ("p53 protein").
GENE_SUFFIXES = frozenset(
    w.lower()
    for w in (
        "gene", "genes", "protein", "proteins", "mRNA", "mRNAs", "promoter", "promoters", "transcript",
        "transcripts", "cDNA", "cDNAs", "locus", "loci", "product", "products", "expression",
    )
)  # fmt: skip
_LAST_WORD = re.compile(r"[\s\-/]*([^\W_]+)\W*$")


@dataclass(frozen=True)
class AnswerPolicy:
    """Which of :func:`answer`'s steps run; the fields are saved in an exported model's config."""

    exclude: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # merged type -> heads ignored for it
    trim: bool = False
    generic: bool = False
    votes: float = 0.0
    span: Literal["longest", "voted"] = "longest"
    abbreviations: bool = False
    consistency: bool = False
    flat: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.votes <= 1.0:
            raise MtbionerError(f"answer votes is a share of heads (0..1), not {self.votes}")
        if self.span not in ("longest", "voted"):
            raise MtbionerError(f"answer span must be 'longest' or 'voted', not {self.span!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exclude"] = {k: list(v) for k, v in self.exclude.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnswerPolicy:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MtbionerError(f"unknown answer policy field(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        values["exclude"] = {k: tuple(v) for k, v in dict(data.get("exclude", {})).items()}
        return cls(**values)


CHOSEN = AnswerPolicy(exclude={"Gene": ("JNLPBA", "BC2GM")}, abbreviations=True)
"""The policy a model without its own ``answer`` setting uses: the choice of ``benchmarks/cross_corpus.py`` on
left-out devel splits (benchmarks/results/cross_corpus/screen.md): genes from the GENIA-guideline heads (BioNLP09,
BioNLP11EPI, BioNLP13GE, Ex-PTM) where a model has them, and abbreviations defined in the text."""


def model_policy(config: Any) -> AnswerPolicy:
    """A model's answer policy: ``config.extra["answer"]`` when it has one, else :data:`CHOSEN`."""
    data = getattr(config, "extra", {}).get("answer")
    return AnswerPolicy.from_dict(data) if data else CHOSEN


def model_type_heads(config: Any, type_map: Mapping[str, str] = MERGED_TYPES) -> dict:
    """Merged type -> the heads of a model (its ``TaggerConfig``) that can give it."""
    return type_heads({name: head.entity_types for name, head in config.corpora.items()}, type_map)


def type_heads(head_types: Mapping[str, Sequence[str]], type_map: Mapping[str, str] = MERGED_TYPES) -> dict:
    """Merged type -> the heads that can give it, from each head's corpus types."""
    out: dict[str, set[str]] = {}
    for head, kinds in head_types.items():
        for kind in kinds:
            out.setdefault(merged_type(kind, type_map), set()).add(head)
    return out


def answer(
    text: str,
    entities: Sequence[Entity],
    heads: Mapping[str, set[str]],
    policy: AnswerPolicy = AnswerPolicy(),
    type_map: Mapping[str, str] = MERGED_TYPES,
) -> list[Entity]:
    """One text's entities (every head's, offsets into ``text``) as one answer in the merged scheme.

    Args:
        text: The text the offsets point into.
        entities: Entities as the heads gave them (corpus types, one head each or merged per span).
        heads: Merged type -> heads that can give it (:func:`type_heads`), for votes.
        policy: The steps to run.
        type_map: Corpus type -> merged type.
    """
    exclude = effective_exclude(policy, heads)
    mapped = [to_merged(e, type_map) for e in entities if _counted(merged_type(e.type, type_map), e.corpus, exclude)]
    if policy.trim:
        mapped = [t for t in (_trim(text, e) for e in mapped) if t is not None]
    if policy.generic:
        mapped = [e for e in mapped if not _generic(e)]
    if policy.votes > 0:
        mapped = _voted(mapped, heads, replace(policy, exclude=exclude))
    if policy.span == "voted":
        mapped = _most_given_spans(mapped)
    found = merge_types(mapped, {})
    if policy.abbreviations:
        found = _merged_with(found, _abbreviated(text, found))
    if policy.consistency:
        found = _merged_with(found, _repeated(text, found))
    if policy.flat:
        found = flatten(found)
    return found


def _merged_with(found: list[Entity], added: list[Entity]) -> list[Entity]:
    """``found`` (merged already) with ``added`` merged in; merging a merged set changes nothing, so most
    sentences, where no step adds a mention, skip the second merge."""
    return merge_types(found + added, {}) if added else found


def flatten(entities: Sequence[Entity]) -> list[Entity]:
    """Resolve overlaps: keep the highest-scoring entity of every overlapping group (ties: longer, earlier)."""
    kept: list[Entity] = []
    for e in sorted(entities, key=lambda x: (-x.score, -(x.end - x.start), x.start)):
        if all(not (e.start < k.end and k.start < e.end) for k in kept):
            kept.append(e)
    return sorted(kept, key=lambda x: (x.start, x.end, x.type))


def effective_exclude(policy: AnswerPolicy, heads: Mapping[str, set[str]]) -> dict[str, tuple[str, ...]]:
    """The policy's exclusions, less those that would leave a type without any head of this model."""
    return {
        kind: excluded
        for kind, excluded in policy.exclude.items()
        if not heads.get(kind) or set(heads[kind]) - set(excluded)
    }


def _counted(kind: str, corpora: tuple[str, ...], exclude: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether some head that found the mention (of merged type ``kind``) is not excluded for it; asked before
    the mention is copied into the merged scheme, so the excluded heads' many genes are never copied."""
    ignored = exclude.get(kind, ())
    return any(corpus not in ignored for corpus in corpora)


def _trim(text: str, e: Entity) -> Entity | None:
    """A gene without the words that end it in some guidelines only; ``None`` when nothing else is left."""
    if e.type != GENE:
        return e
    end = e.end
    while True:
        match = _LAST_WORD.search(text, e.start, end)
        if match is None or match.group(1).lower() not in GENE_SUFFIXES:
            break
        end = match.start()
    while end > e.start and not text[end - 1].isalnum() and text[end - 1] not in ")]+":
        end -= 1
    if end <= e.start:
        return None
    return e if end == e.end else replace(e, end=end, text=text[e.start : end])


def _generic(e: Entity) -> bool:
    """A lower-case plural without a digit (``growth factors``, ``cytokines``): a family, not a gene."""
    if e.type != GENE or any(c.isupper() or c.isdigit() for c in e.text):
        return False
    last = e.text.split()[-1] if e.text.split() else ""
    return last.endswith("s") and not last.endswith(("ss", "us", "is"))


def _clusters(entities: Sequence[Entity]) -> list[list[Entity]]:
    """Overlapping entities of one type, grouped (a chain of overlaps is one group)."""
    groups: list[list[Entity]] = []
    for kind in sorted({e.type for e in entities}):
        current: list[Entity] = []
        end = -1
        for e in sorted((e for e in entities if e.type == kind), key=lambda e: (e.start, e.end)):
            if current and e.start >= end:
                groups.append(current)
                current, end = [], -1
            current.append(e)
            end = max(end, e.end)
        if current:
            groups.append(current)
    return groups


def _voted(entities: Sequence[Entity], heads: Mapping[str, set[str]], policy: AnswerPolicy) -> list[Entity]:
    kept = []
    for group in _clusters(entities):
        kind = group[0].type
        able = set(heads.get(kind, set())) - set(policy.exclude.get(kind, ()))
        said = {corpus for e in group for corpus in e.corpus} & able if able else set()
        if not able or len(said) >= policy.votes * len(able) - 1e-9:
            kept.extend(group)
    return kept


def _most_given_spans(entities: Sequence[Entity]) -> list[Entity]:
    """Of each group of overlapping spans of one type, the span most heads gave (ties: higher score)."""
    kept = []
    for group in _clusters(entities):
        votes: dict[tuple[int, int], set[str]] = {}
        for e in group:
            votes.setdefault((e.start, e.end), set()).update(e.corpus)
        best = max(group, key=lambda e: (len(votes[(e.start, e.end)]), e.score, -(e.end - e.start)))
        kept.extend(e for e in group if (e.start, e.end) == (best.start, best.end))
    return kept


def _occurrences(text: str, needle: str) -> list[tuple[int, int]]:
    """Where ``needle`` stands in ``text`` with no letter or digit touching it, left to right, not overlapping.

    ``str.find`` rather than a regular expression built from the needle: a server answers with new needles all
    day, and each compiled pattern would go into ``re``'s module cache and stay there among the request's objects.
    """
    found: list[tuple[int, int]] = []
    if not needle.strip():
        return found
    start = text.find(needle)
    while start != -1:
        end = start + len(needle)
        if not (start > 0 and text[start - 1].isalnum()) and not (end < len(text) and text[end].isalnum()):
            found.append((start, end))
            start = text.find(needle, end)
        else:
            start = text.find(needle, start + 1)
    return found


def _free(found: Sequence[Entity], start: int, end: int, kind: str) -> bool:
    return not any(e.type == kind and e.start < end and start < e.end for e in found)


def _abbreviated(text: str, found: Sequence[Entity]) -> list[Entity]:
    """Short forms take their long form's type wherever they occur; a long form takes its short form's."""
    added: list[Entity] = []
    for abbreviation in find_abbreviations(text):
        long_span = (abbreviation.long_start, abbreviation.long_end)
        short_span = (abbreviation.short_start, abbreviation.short_end)
        source = _covering(found, *long_span) or _covering(found, *short_span)
        if source is None:  # the short form tagged elsewhere in the text
            source = max((e for e in found if e.text == abbreviation.short), key=lambda e: e.score, default=None)
        if source is None:
            continue
        targets = _occurrences(text, abbreviation.short)
        if _covering(found, *long_span) is None:
            targets.append(long_span)
        for start, end in targets:
            if _free(found, start, end, source.type) and _free(added, start, end, source.type):
                added.append(replace(source, start=start, end=end, text=text[start:end], nested=()))
    return added


def _covering(found: Sequence[Entity], start: int, end: int) -> Entity | None:
    """The best entity that covers most of ``[start, end)`` (at least half of it, and half of itself)."""
    best = None
    for e in found:
        overlap = min(end, e.end) - max(start, e.start)
        if overlap * 2 >= end - start and overlap * 2 >= e.end - e.start and (best is None or e.score > best.score):
            best = e
    return best


def _repeated(text: str, found: Sequence[Entity]) -> list[Entity]:
    """Every other occurrence of a tagged string (3+ characters, a letter among them) gets the same type."""
    added: list[Entity] = []
    seen: set[tuple[str, str]] = set()
    for e in sorted(found, key=lambda e: -e.score):
        key = (e.text, e.type)
        if key in seen or len(e.text) < 3 or not any(c.isalpha() for c in e.text):
            continue
        seen.add(key)
        for start, end in _occurrences(text, e.text):
            if all(not (k.start < end and start < k.end) for k in (*found, *added)):
                added.append(replace(e, start=start, end=end, nested=()))
    return added
