"""One coherent entity set: the corpora's types merged into one scheme, overlapping spans resolved.

Each head speaks its own corpus's scheme: BC2GM says GENE where JNLPBA says protein, DNA or RNA, so the
same ``BRCA1`` comes back twice. This module maps every type into one scheme, named as PubTator3
names its concepts (``Gene`` covers genes and their products), and keeps the original (corpus, type)
pairs on each entity; :func:`mtbioner.runtime.answer.answer` (the merged answer that ``tag`` returns by
default, ``--per-corpus`` skips it) runs it after the steps chosen on left-out corpora. How overlaps are
resolved is what ``reports/overlap.md`` derives from the corpora (rerun ``mtbioner overlap`` to re-derive it):

1. same span, same merged type: one entity listing every (corpus, type) that found it, best score;
2. same merged type, one span inside the other: the longer is kept, the shorter recorded in ``nested``
   (8.3 of every 9.3 partial overlaps between corpora are such nestings, ``IL-2`` in ``IL-2 gene``);
   spans that cross: the higher score is kept;
3. different merged types on the same span: the higher score is kept; nested or crossing entities of
   different merged types are both kept (``CD4`` in ``CD4+ T cells`` is a gene inside a cell type).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..data.entity import Entity

MERGED_TYPES: dict[str, str] = {
    "GENE": "Gene",
    "protein": "Gene",
    "Protein": "Gene",
    "DNA": "Gene",
    "RNA": "Gene",
    "Chemical": "Chemical",
    "Disease": "Disease",
    "cell_line": "CellLine",
    "cell_type": "CellType",
    "Species": "Species",
    "Anatomy": "Anatomy",
}
"""Corpus type -> merged type; a type not listed keeps its own name."""


def merged_type(kind: str, type_map: Mapping[str, str] = MERGED_TYPES) -> str:
    return type_map.get(kind, kind)


def merge_types(entities: Sequence[Entity], type_map: Mapping[str, str] = MERGED_TYPES) -> list[Entity]:
    """One text's entities in the merged scheme, overlaps resolved as the module docstring says."""
    same_span: dict[tuple[int, int, str], Entity] = {}
    for e in entities:
        mapped = to_merged(e, type_map)
        key = (e.start, e.end, mapped.type)
        old = same_span.get(key)
        same_span[key] = mapped if old is None else _join(old, mapped)
    kept = _resolve_within_types(list(same_span.values()))
    return _resolve_same_span(kept)


def to_merged(e: Entity, type_map: Mapping[str, str] = MERGED_TYPES) -> Entity:
    """``e`` with its merged type, each (corpus, original type) pair kept in ``sources``.

    An entity merged already comes back as it is (entities are frozen): the answer merges its own output again.
    """
    kind = merged_type(e.type, type_map)
    if e.sources and kind == e.type:
        return e
    sources = e.sources or tuple((corpus, e.type) for corpus in e.corpus)
    return type(e)(e.start, e.end, e.text, kind, e.corpus, e.score, sources, e.nested)  # replace() is 3x slower


def _join(a: Entity, b: Entity) -> Entity:
    best = a if a.score >= b.score else b
    return replace(
        best,
        corpus=tuple(dict.fromkeys(a.corpus + b.corpus)),
        sources=tuple(dict.fromkeys(a.sources + b.sources)),
        nested=a.nested + b.nested,
    )


def _contains(outer: Entity, inner: Entity) -> bool:
    return outer.start <= inner.start and inner.end <= outer.end


def _resolve_within_types(entities: list[Entity]) -> list[Entity]:
    """Per merged type: nested spans fold into the longer one, crossing spans keep the higher score."""
    result: list[Entity] = []
    for kind in sorted({e.type for e in entities}):
        group = sorted((e for e in entities if e.type == kind), key=lambda e: (-(e.end - e.start), -e.score))
        kept: list[Entity] = []
        for e in group:  # longest first: a span meets every span that could contain it before itself
            holder = next((i for i, k in enumerate(kept) if _contains(k, e)), None)
            if holder is not None:
                kept[holder] = replace(kept[holder], nested=kept[holder].nested + _as_nested(e))
                continue
            crossing = [i for i, k in enumerate(kept) if e.start < k.end and k.start < e.end]
            if crossing and all(kept[i].score >= e.score for i in crossing):
                continue
            kept = [k for i, k in enumerate(kept) if i not in crossing] + [e]
        result.extend(kept)
    return result


def _resolve_same_span(entities: list[Entity]) -> list[Entity]:
    """Different merged types on one span: the higher score (ties: the first type by name)."""
    best: dict[tuple[int, int], Entity] = {}
    for e in sorted(entities, key=lambda e: (e.start, e.end, -e.score, e.type)):
        best.setdefault((e.start, e.end), e)
    return sorted(best.values(), key=lambda e: (e.start, e.end, e.type))


def _as_nested(e: Entity) -> tuple[Entity, ...]:
    """The entity (and what it held) as entries of its holder's ``nested``: one level, no recursion."""
    return (replace(e, nested=()), *e.nested)
