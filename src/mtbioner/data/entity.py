"""The record every answer is made of: one mention with character offsets, its type and who found it.

It sits below everything that makes or uses entities (tagging, the merged answer, formats, the server), so that
all of them can name it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entity:
    """A mention: ``text == document[start:end]`` (half-open character offsets).

    ``corpus`` names every head that found this span with this type; ``score`` is the
    highest of their confidences (mean probability of the entity's word labels). With merged
    types (:mod:`mtbioner.runtime.type_merging`), ``sources`` keeps each (corpus, original type) pair and
    ``nested`` the shorter entities of the same merged type folded into this one.
    """

    start: int
    end: int
    text: str
    type: str
    corpus: tuple[str, ...]
    score: float
    sources: tuple[tuple[str, str], ...] = ()
    nested: tuple[Entity, ...] = ()

    def to_dict(self) -> dict:
        out = {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "type": self.type,
            "corpus": list(self.corpus),
            "score": round(self.score, 4),
        }
        if self.sources:
            out["sources"] = [{"corpus": corpus, "type": kind} for corpus, kind in self.sources]
        if self.nested:
            out["nested"] = [n.to_dict() for n in self.nested]
        return out
