"""Tag schemes (IOB1, IOB2, IOBES) and the spans they encode: small pure functions.

Every corpus is normalised to IOB2 when it is read, so the rest of mtbioner only ever sees
``B-TYPE`` / ``I-TYPE`` / ``O``. Spans are ``(type, start, end)`` with a half-open ``end``
(``tokens[start:end]``); seqeval's and spaCy's inclusive ends never leak in here.

Chunks are read as conlleval (and seqeval's default mode) read them, so a span found here is
exactly what the scorer counts: an ``I-X`` after ``O``, a sentence start or another type opens
a chunk instead of being dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Literal

Scheme = Literal["IOB1", "IOB2", "IOBES"]
SCHEMES: tuple[Scheme, ...] = ("IOB1", "IOB2", "IOBES")

_PREFIXES = frozenset("BIES")
_CLOSING = frozenset("ES")  # prefixes after which a chunk is over
_OPENING = frozenset("BS")  # prefixes that always open a chunk


def parse_tag(tag: str) -> tuple[str, str | None]:
    """Split a tag into its prefix and entity type.

    The type is everything after the first ``-``, so types may themselves contain ``-`` or
    ``_`` (``B-Gene-Or-Protein``, ``B-cell_line``), as in seqeval.

    Args:
        tag: ``"O"`` or ``"<B|I|E|S>-<type>"``.

    Returns:
        ``(prefix, type)``; the type is ``None`` for ``"O"``.

    Raises:
        ValueError: The tag is malformed; the message quotes it.

    Example:
        >>> parse_tag("B-Gene-Or-Protein")
        ('B', 'Gene-Or-Protein')
        >>> parse_tag("O")
        ('O', None)
        >>> parse_tag("B_GENE")
        Traceback (most recent call last):
        ...
        ValueError: malformed tag 'B_GENE': expected 'O' or B-, I-, E-, S- followed by an entity type
    """
    if tag == "O":
        return "O", None
    prefix, dash, type_ = tag.partition("-")
    if prefix not in _PREFIXES or not dash or not type_ or type_ != type_.strip() or "\t" in type_:
        raise ValueError(f"malformed tag {tag!r}: expected 'O' or B-, I-, E-, S- followed by an entity type")
    return prefix, type_


# Corpora repeat a handful of distinct tags hundreds of thousands of times.
_parse = functools.lru_cache(maxsize=1024)(parse_tag)


def iobes_to_iob2(tags: Sequence[str]) -> list[str]:
    """Rename IOBES prefixes to IOB2 ones (``S`` -> ``B``, ``E`` -> ``I``).

    This is the plain renaming of well-formed IOBES; :func:`to_iob2` also repairs an ``I``
    or ``E`` that opens a chunk.

    Example:
        >>> iobes_to_iob2(["S-GENE", "O", "B-CHEM", "I-CHEM", "E-CHEM"])
        ['B-GENE', 'O', 'B-CHEM', 'I-CHEM', 'I-CHEM']
    """
    renamed = {"S": "B", "E": "I"}
    out = []
    for tag in tags:
        prefix, type_ = _parse(tag)
        out.append(tag if type_ is None else f"{renamed.get(prefix, prefix)}-{type_}")
    return out


@functools.lru_cache(maxsize=4096)
def _opens_with_i(prev: str, tag: str) -> bool:
    """Whether ``tag`` after ``prev`` is an ``I-`` that opens a chunk (IOB tags only)."""
    prefix, type_ = _parse(tag)
    if prefix in _CLOSING:
        raise ValueError(f"tag {tag!r} is IOBES; convert it with to_iob2(tags, 'IOBES')")
    return prefix == "I" and _parse(prev)[1] != type_


def _transitions(tags: Sequence[str]) -> set[tuple[str, str]]:
    """Distinct (previous, current) tag pairs; ``"O"`` stands for the sentence start.

    Sentences repeat a few pairs many times, so checking distinct pairs is much cheaper
    than walking every tag, which matters when reading corpora of half a million tokens.
    """
    return set(zip(chain(("O",), tags), tags, strict=False))  # one shorter on purpose


def repair_iob2(tags: Sequence[str]) -> tuple[list[str], int]:
    """Turn every ``I-X`` that opens a chunk into ``B-X``, as conlleval reads it.

    An ``I-X`` opens a chunk after ``O``, at the sentence start, or after a tag of another
    type. The same rewrite converts IOB1 (where ``B`` only separates adjacent entities)
    to IOB2, without changing which spans the tags encode.

    Args:
        tags: IOB1 or IOB2 tags (``B``, ``I``, ``O`` prefixes only).

    Returns:
        The IOB2 tags and how many were rewritten.

    Raises:
        ValueError: A tag is malformed or uses an ``E-``/``S-`` prefix.

    Example:
        >>> repair_iob2(["I-GENE", "I-GENE", "O", "B-CHEM", "I-GENE"])
        (['B-GENE', 'I-GENE', 'O', 'B-CHEM', 'B-GENE'], 2)
    """
    if not any([_opens_with_i(prev, tag) for prev, tag in _transitions(tags)]):
        return list(tags), 0
    out: list[str] = []
    repaired = 0
    prev = "O"
    for tag in tags:
        if _opens_with_i(prev, tag):
            out.append(f"B-{tag[2:]}")
            repaired += 1
        else:
            out.append(tag)
        prev = tag
    return out, repaired


def _all_transitions(tag_sequences: Iterable[Sequence[str]]) -> set[tuple[str, str]]:
    transitions: set[tuple[str, str]] = set()
    for tags in tag_sequences:
        transitions.update(_transitions(tags))
    return transitions


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> Scheme:
    """Guess the tag scheme of a file from all of its tag sequences.

    IOBES if any ``E-`` or ``S-`` tag occurs. IOB1 if some ``I-X`` opens a chunk and every
    ``B-X`` directly follows a ``B-X`` or ``I-X`` (``B`` used only to split adjacent
    entities). Otherwise IOB2, whose stray ``I`` starts are then counted as repairs.

    Example:
        >>> detect_scheme([["I-GENE", "O"], ["I-GENE", "B-GENE"]])
        'IOB1'
        >>> detect_scheme([["B-GENE", "I-GENE", "O"]])
        'IOB2'
        >>> detect_scheme([["S-GENE", "O"]])
        'IOBES'
    """
    i_starts = False
    b_after_boundary = False
    for prev, tag in _all_transitions(tag_sequences):
        prefix, type_ = _parse(tag)
        if prefix in _CLOSING:  # every tag is the second of some pair
            return "IOBES"
        if type_ != _parse(prev)[1]:
            if prefix == "I":
                i_starts = True
            elif prefix == "B":
                b_after_boundary = True
    return "IOB1" if i_starts and not b_after_boundary else "IOB2"


def is_iob2(tag_sequences: Iterable[Sequence[str]]) -> bool:
    """Whether every sequence is well-formed IOB2 (no ``E``/``S``, no ``I`` opening a chunk).

    Such sequences come out of :func:`to_iob2` unchanged whatever the scheme, so a reader
    can skip converting them sentence by sentence.

    Example:
        >>> is_iob2([["B-GENE", "I-GENE", "O"], ["O", "B-CHEM"]])
        True
        >>> is_iob2([["O", "I-GENE"]])
        False
    """
    for prev, tag in _all_transitions(tag_sequences):
        prefix, type_ = _parse(tag)
        if prefix in _CLOSING or (prefix == "I" and _parse(prev)[1] != type_):
            return False
    return True


def to_iob2(tags: Sequence[str], scheme: Scheme) -> tuple[list[str], int]:
    """Convert tags of ``scheme`` to IOB2 and count the ill-formed ones repaired.

    IOB1 chunk starts are the scheme working as intended, so they are not counted. In IOB2
    an ``I`` that opens a chunk is counted; in IOBES so is an ``I`` or ``E`` without an open
    chunk of its type (after ``O``, ``E``, ``S``, another type or the sentence start).

    Example:
        >>> to_iob2(["I-GENE", "B-GENE"], "IOB1")
        (['B-GENE', 'B-GENE'], 0)
        >>> to_iob2(["S-GENE", "E-GENE", "O"], "IOBES")
        (['B-GENE', 'B-GENE', 'O'], 1)
    """
    if scheme == "IOB1":
        return repair_iob2(tags)[0], 0
    if scheme == "IOB2":
        return repair_iob2(tags)
    if scheme != "IOBES":
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    out: list[str] = []
    repaired = 0
    open_type: str | None = None  # type of the chunk that the next I/E may continue
    for tag in tags:
        prefix, type_ = _parse(tag)
        opens = prefix in _OPENING
        if prefix in ("I", "E") and type_ != open_type:
            opens = True
            repaired += 1
        out.append("O" if type_ is None else f"{'B' if opens else 'I'}-{type_}")
        open_type = None if prefix in _CLOSING else type_
    return out, repaired


def tags_to_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Read the chunks of a tag sequence as conlleval does, with half-open ends.

    A chunk opens at ``B``/``S``, at an ``I``/``E`` after ``O``, ``E``, ``S`` or the
    sentence start, and at any type change; it closes at ``O``, ``B``, ``S``, after ``E``/``S``
    and at a type change. This equals seqeval's default-mode ``get_entities`` with its
    inclusive end moved one on, so decoded spans score exactly as the evaluation counts them.

    Example:
        >>> tags_to_spans(["B-GENE", "I-GENE", "O", "I-CHEM", "B-CHEM"])
        [('GENE', 0, 2), ('CHEM', 3, 4), ('CHEM', 4, 5)]
    """
    spans: list[tuple[str, int, int]] = []
    start = 0
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate(tags):
        prefix, parsed_type = _parse(tag)
        type_ = parsed_type or ""
        changed = type_ != prev_type
        if prev_prefix != "O" and (prev_prefix in _CLOSING or prefix in "BSO" or changed):
            spans.append((prev_type, start, i))
        if prefix != "O" and (prefix in _OPENING or prev_prefix in "ESO" or changed):
            start = i
        prev_prefix, prev_type = prefix, type_
    if prev_prefix != "O":
        spans.append((prev_type, start, len(tags)))
    return spans


def spans_to_tags(spans: Iterable[tuple[str, int, int]], length: int) -> list[str]:
    """Write half-open ``(type, start, end)`` spans as IOB2 tags of a sentence.

    Raises:
        ValueError: A span is empty, out of ``range(length)`` or overlaps another.

    Example:
        >>> spans_to_tags([("GENE", 0, 2), ("CHEM", 3, 4)], 5)
        ['B-GENE', 'I-GENE', 'O', 'B-CHEM', 'O']
    """
    tags = ["O"] * length
    for type_, start, end in spans:
        if not 0 <= start < end <= length:
            raise ValueError(f"span {(type_, start, end)!r} is empty or outside a {length}-token sentence")
        if any(tag != "O" for tag in tags[start:end]):
            raise ValueError(f"span {(type_, start, end)!r} overlaps another span")
        tags[start] = f"B-{type_}"
        tags[start + 1 : end] = [f"I-{type_}"] * (end - start - 1)
    return tags
