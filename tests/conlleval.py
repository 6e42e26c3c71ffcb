"""A line-by-line Python port of conlleval.pl's chunk counting (the CoNLL shared-task scorer).

Used as the reference in differential tests: the port reads the same ``token gold
predicted`` files that ``mtbioner evaluate --predictions`` writes.
"""

from __future__ import annotations

from collections import Counter


def _split(tag: str) -> tuple[str, str]:
    if tag == "O" or "-" not in tag:
        return tag, ""
    prefix, kind = tag.split("-", 1)
    return prefix, kind


def end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval.pl's ``endOfChunk``: does a chunk end between the previous word and this one?"""
    return (
        (prev_tag == "B" and tag in ("B", "O"))
        or (prev_tag == "I" and tag in ("B", "O"))
        or (prev_tag == "E" and tag in ("E", "I", "O"))
        or (prev_tag not in ("O", ".") and prev_type != type_)
    )


def start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval.pl's ``startOfChunk``: does a chunk start at this word?"""
    return (
        (prev_tag in ("B", "I", "O") and tag == "B")
        or (prev_tag == "O" and tag in ("I", "E"))
        or (prev_tag == "E" and tag in ("E", "I"))
        or (tag not in ("O", ".") and prev_type != type_)
    )


def conlleval(lines: list[str]) -> dict:
    """Score ``token gold predicted`` lines (blank lines between sentences) as conlleval.pl does."""
    correct_chunk: Counter[str] = Counter()
    found_correct: Counter[str] = Counter()
    found_guessed: Counter[str] = Counter()
    in_correct = False
    last_correct, last_correct_type = "O", ""
    last_guessed, last_guessed_type = "O", ""
    for line in [*lines, ""]:
        fields = line.split()
        if not fields:
            correct, correct_type, guessed, guessed_type = "O", "", "O", ""
        else:
            correct, correct_type = _split(fields[-2])
            guessed, guessed_type = _split(fields[-1])
        if in_correct:
            end_c = end_of_chunk(last_correct, correct, last_correct_type, correct_type)
            end_g = end_of_chunk(last_guessed, guessed, last_guessed_type, guessed_type)
            if end_c and end_g and last_guessed_type == last_correct_type:
                in_correct = False
                correct_chunk[last_correct_type] += 1
            elif end_c != end_g or guessed_type != correct_type:
                in_correct = False
        start_c = start_of_chunk(last_correct, correct, last_correct_type, correct_type)
        start_g = start_of_chunk(last_guessed, guessed, last_guessed_type, guessed_type)
        if start_c and start_g and guessed_type == correct_type:
            in_correct = True
        if start_c:
            found_correct[correct_type] += 1
        if start_g:
            found_guessed[guessed_type] += 1
        last_correct, last_correct_type = correct, correct_type
        last_guessed, last_guessed_type = guessed, guessed_type
    if in_correct:
        correct_chunk[last_correct_type] += 1

    def prf(c: int, g: int, t: int) -> dict:
        p = 100.0 * c / g if g else 0.0
        r = 100.0 * c / t if t else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {"precision": p, "recall": r, "f1": f, "support": t, "predicted": g}

    types = sorted(set(found_correct) | set(found_guessed))
    return {
        "overall": prf(sum(correct_chunk.values()), sum(found_guessed.values()), sum(found_correct.values())),
        "types": {t: prf(correct_chunk[t], found_guessed[t], found_correct[t]) for t in types},
    }
