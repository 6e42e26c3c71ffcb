"""Abbreviations defined in a text: ``long form (SHORT)`` pairs, by Schwartz and Hearst's algorithm.

Schwartz & Hearst (PSB 2003), as scispaCy's ``AbbreviationDetector`` applies it: a short form is the
text inside parentheses (at most two words, 2-10 characters, a letter among them, starting with a
letter or digit); its long form is found among the at most ``min(len + 5, 2 * len)`` words before the
parenthesis (``len``: the short form's characters), by matching the short form's letters and digits
right to left in the long form, the first one at the start of a word. When the parentheses hold the
longer text (``SHORT (long form)``), the roles swap.

Written here rather than taken from scispaCy: the abbreviations serve the torch-free core install,
and scispaCy would pin numpy below 2 and spaCy below 3.9 for a 60-line algorithm.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_PARENTHESES = re.compile(r"\(([^()]{1,60})\)")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Abbreviation:
    """A definition in a text: ``text[long_start:long_end]`` is abbreviated ``text[short_start:short_end]``."""

    long_start: int
    long_end: int
    short_start: int
    short_end: int
    short: str
    long: str


def _is_short_form(candidate: str) -> bool:
    words = candidate.split()
    return (
        0 < len(words) <= 2
        and 2 <= len(candidate) <= 10
        and any(c.isalpha() for c in candidate)
        and candidate[0].isalnum()
    )


def best_long_form(short: str, long: str) -> int | None:
    """Where, in ``long`` (words before the parenthesis), the long form of ``short`` starts; ``None`` if none.

    Example:
        >>> text = "tumours called hemangiopericytomas"
        >>> text[best_long_form("HPCs", text):]
        'hemangiopericytomas'
    """
    s, i = len(short) - 1, len(long) - 1
    while s >= 0:
        char = short[s].lower()
        if not char.isalnum():
            s -= 1
            continue
        # the short form's first character must start a word of the long form
        while i >= 0 and (long[i].lower() != char or (s == 0 and i > 0 and long[i - 1].isalnum())):
            i -= 1
        if i < 0:
            return None
        i -= 1
        s -= 1
    start = long.rfind(" ", 0, i + 1) + 1
    return start


def find_abbreviations(text: str) -> Iterator[Abbreviation]:
    """Every ``long form (SHORT)`` or ``SHORT (long form)`` definition in ``text``, in text order."""
    for match in _PARENTHESES.finditer(text):
        inner = match.group(1).strip()
        inner_start = match.start(1) + match.group(1).index(inner) if inner else match.start(1)
        before = [w for w in _WORD.finditer(text, 0, match.start()) if w.group()]
        if not inner or not before:
            continue
        if _is_short_form(inner):
            found = _long_before(text, before, inner, inner_start)
        else:
            found = _short_before(text, before, inner, inner_start)
        if found is not None:
            yield found


def _long_before(text: str, before: list[re.Match], short: str, short_start: int) -> Abbreviation | None:
    limit = min(len(short) + 5, 2 * len(short))
    window = before[-limit:]
    start = window[0].start()
    span = text[start : window[-1].end()]
    found = best_long_form(short, span)
    if found is None:
        return None
    long_start, long_end = start + found, window[-1].end()
    long = text[long_start:long_end]
    if len(long) <= len(short) or short.lower() in long.lower().split():
        return None
    return Abbreviation(long_start, long_end, short_start, short_start + len(short), short, long)


def _short_before(text: str, before: list[re.Match], inner: str, inner_start: int) -> Abbreviation | None:
    """``SHORT (long form)``: the word before the parenthesis is the short form."""
    word = before[-1]
    short = word.group()
    if not _is_short_form(short) or len(inner.split()) > min(len(short) + 5, 2 * len(short)):
        return None
    found = best_long_form(short, inner)
    if found != 0:  # the whole parenthesis must be the long form
        return None
    return Abbreviation(inner_start, inner_start + len(inner), word.start(), word.end(), short, inner)
