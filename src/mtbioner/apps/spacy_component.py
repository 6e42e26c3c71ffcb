"""spaCy pipeline component ``"mtbioner"``: every entity found in ``doc.spans``, the best in ``doc.ents``.

Install ``mtbioner[spacy]``; the ``spacy_factories`` entry point registers the factory, so
``nlp.add_pipe("mtbioner", config={"model": "path/to/model"})`` works without importing this module.
spaCy imports it (through that entry point) whenever it builds any pipeline, so it imports none of
mtbioner's model code: the tagger and its weights load only when the component is created. The core
package never imports this module, and works without spaCy.

Design (see ``docs/spacy.md``):

* ``doc.spans[spans_key]`` holds every entity of the answer, overlaps included, sorted by position: the merged
  answer by default (one ``Gene`` span for BRCA1, its heads in ``span._.mtbioner_corpora``), or with
  ``merge_types=False`` every head's own (BRCA1 as GENE and as DNA are two spans); ``doc.ents`` holds a
  non-overlapping subset chosen by :func:`mtbioner.runtime.answer.flatten` (the rule of ``mtbioner tag
  --flat``: highest score, then longer, then earlier), among the tokens no earlier component has already
  labelled unless ``overwrite_ents``.
* Span attributes ``span._.mtbioner_score``, ``mtbioner_corpora``, ``mtbioner_entities`` and
  ``mtbioner_realigned`` are getters over ``doc.user_data`` keyed by (start_char, end_char, label).
  spaCy keys stored span extensions by offsets alone, so BRCA1/GENE and BRCA1/DNA would overwrite each
  other's score; the label in the key keeps them apart, and the same lookup serves ``doc.ents``.
  ``doc.user_data`` travels with ``Doc.to_bytes`` and ``DocBin(store_user_data=True)``.
* Entity offsets come from mtbioner's own word splitter, which cuts at every punctuation mark, so an
  entity can end inside a spaCy token (``BRCA1`` in ``BRCA1/2``). ``alignment_mode="expand"`` (the
  default) widens it to the covering tokens; the model's exact entities stay in
  ``span._.mtbioner_entities``, ``span._.mtbioner_realigned`` is true, and the span group's
  ``attrs["realigned"]`` counts them. ``"contract"`` and ``"strict"`` may find no span: such an
  entity is listed in ``attrs["dropped"]`` and logged as a warning, never lost silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

try:
    from spacy.language import Language
    from spacy.pipeline import Pipe
    from spacy.tokens import Doc, Span, SpanGroup
    from spacy.util import minibatch
except ImportError as error:  # pragma: no cover - only without the extra
    raise ImportError("mtbioner's spaCy component needs spaCy: pip install 'mtbioner[spacy]'") from error

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import RequestError

if TYPE_CHECKING:
    from ..runtime.tagging import Entity, Tagger

logger = logging.getLogger(__name__)

AlignmentMode = Literal["expand", "contract", "strict"]
#: First element of the ``doc.user_data`` keys that hold what the model said about each span.
USER_DATA_KEY = "mtbioner"


def _record(span: Span) -> dict[str, Any] | None:
    """What mtbioner found for this span and label, or None for a span it did not produce."""
    return span.doc.user_data.get((USER_DATA_KEY, span.start_char, span.end_char, span.label_))


def _field(name: str):
    def get(span: Span) -> Any:
        record = _record(span)
        return None if record is None else record[name]

    return get


def _realigned(span: Span) -> bool | None:
    record = _record(span)
    if record is None:
        return None
    return any((e["start"], e["end"]) != (span.start_char, span.end_char) for e in record["entities"])


# force=True: re-importing the module (importlib.reload) must not fail on its own extensions.
Span.set_extension("mtbioner_score", getter=_field("score"), force=True)
Span.set_extension("mtbioner_corpora", getter=_field("corpora"), force=True)
Span.set_extension("mtbioner_entities", getter=_field("entities"), force=True)
Span.set_extension("mtbioner_realigned", getter=_realigned, force=True)


@Language.factory(
    "mtbioner",
    assigns=["doc.ents", "doc.spans", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": None,
        "batch_size": INFERENCE_BATCH_SIZE,
        "min_score": 0.0,
        "types": None,
        "corpora": None,
        "spans_key": "mtbioner",
        "alignment_mode": "expand",
        "overwrite_ents": False,
        "merge_types": True,
    },
)
def make_mtbioner(
    nlp: Language,
    name: str,
    model: str | None,
    batch_size: int,
    min_score: float,
    types: list[str] | None,
    corpora: list[str] | None,
    spans_key: str,
    alignment_mode: AlignmentMode,
    overwrite_ents: bool,
    merge_types: bool = True,
) -> MtbionerComponent:
    """Build the component from its config (the ``spacy_factories`` entry point names this function)."""
    from ..runtime.tagging import Tagger

    tagger = Tagger.load(model, batch_size)
    return MtbionerComponent(
        tagger, name, min_score, types, corpora, spans_key, alignment_mode, overwrite_ents, merge_types
    )


class MtbionerComponent(Pipe):
    """Tag ``doc.text`` with every head of an mtbioner model and write the entities onto the doc.

    Args:
        tagger: The loaded model.
        name: The component's name in the pipeline.
        min_score: Drop entities whose confidence is below this.
        types: Keep only these entity types (None: all).
        corpora: Run only these heads (None: all).
        spans_key: ``doc.spans`` key of the group holding every entity.
        alignment_mode: How offsets off spaCy's token boundaries become spans (see the module docstring).
        overwrite_ents: Replace entities set by earlier components instead of keeping them.
        merge_types: One answer in the merged scheme (``Gene``, ``Disease``, ...), or every head's own
            answer in its corpus's types (``False``).

    Raises:
        RequestError: Unknown types or corpora, or min_score outside [0, 1] (checked here, not at
            the first document).
    """

    def __init__(
        self,
        tagger: Tagger,
        name: str = "mtbioner",
        min_score: float = 0.0,
        types: list[str] | None = None,
        corpora: list[str] | None = None,
        spans_key: str = "mtbioner",
        alignment_mode: AlignmentMode = "expand",
        overwrite_ents: bool = False,
        merge_types: bool = True,
    ) -> None:
        if alignment_mode not in ("expand", "contract", "strict"):
            raise RequestError(f"alignment_mode must be expand, contract or strict, not {alignment_mode!r}")
        self.tagger = tagger
        self.name = name
        self.options = {"types": types, "corpora": corpora, "min_score": min_score, "merge_types": merge_types}
        self.spans_key = spans_key
        self.alignment_mode = alignment_mode
        self.overwrite_ents = overwrite_ents
        tagger.tag_batch([], **self.options)  # validates the options now, naming what is wrong

    @property
    def labels(self) -> tuple[str, ...]:
        """The entity types this component can assign."""
        from ..runtime.type_merging import merged_type

        wanted = set(self.options["types"] or [])
        if not self.options["merge_types"]:
            return tuple(t for t in self.tagger.entity_types if not wanted or t in wanted)
        # merged, a head's own type asked for (DNA) comes back under its merged label (Gene)
        wanted |= {merged_type(t) for t in wanted}
        return tuple(t for t in self.tagger.merged_types if not wanted or t in wanted)

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self.tagger.tag_batch([doc.text], **self.options))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Tag ``batch_size`` documents per model call (their windows share forward passes)."""
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size):
            try:
                self.set_annotations(docs, self.tagger.tag_batch([doc.text for doc in docs], **self.options))
                yield from docs
            except Exception as error:  # spaCy's contract: the handler (re-raise by default) decides
                error_handler(self.name, self, docs, error)

    def set_annotations(self, docs: Iterable[Doc], found: list[list[dict]]) -> None:
        """Write each document's entities (``Tagger.tag_batch`` dicts) as spans, attributes and ents."""
        for doc, entities in zip(docs, found, strict=True):
            self._annotate(doc, entities)

    def _annotate(self, doc: Doc, entities: list[dict]) -> None:
        from ..runtime.answer import flatten

        spans, merged, dropped = align_entities(doc, entities, self.alignment_mode)
        realigned = sum(_is_realigned(e, s) for key, s in spans.items() for e in merged[key])
        for (start, end, label), group in merged.items():
            doc.user_data[(USER_DATA_KEY, start, end, label)] = {
                "score": max(e["score"] for e in group),
                "corpora": list(dict.fromkeys(c for e in group for c in e["corpus"])),
                "entities": group,
            }
        doc.spans[self.spans_key] = SpanGroup(
            doc, name=self.spans_key, spans=list(spans.values()), attrs={"realigned": realigned, "dropped": dropped}
        )
        best = [spans[(e.start, e.end, e.type)] for e in flatten(_as_entities(doc, merged))]
        _set_ents(doc, best, self.overwrite_ents)
        if dropped:
            logger.warning(
                "%d entities not on spaCy token boundaries dropped (alignment_mode=%r): %s",
                len(dropped),
                self.alignment_mode,
                ", ".join(f"{e['text']!r} [{e['start']}:{e['end']}] {e['type']}" for e in dropped),
            )


def align_entities(
    doc: Doc, entities: list[dict], mode: AlignmentMode = "expand"
) -> tuple[dict[tuple[int, int, str], Span], dict[tuple[int, int, str], list[dict]], list[dict]]:
    """Map the model's character offsets onto spaCy tokens.

    Entities of one type that land on the same tokens (possible only when realigned) become one
    span standing for all of them.

    Returns:
        The spans by (start_char, end_char, label) in document order, the model's entities behind
        each, and the entities that got no span (only with ``"contract"`` or ``"strict"``).
    """
    spans: dict[tuple[int, int, str], Span] = {}
    merged: dict[tuple[int, int, str], list[dict]] = {}
    dropped: list[dict] = []
    for entity in entities:
        span = doc.char_span(entity["start"], entity["end"], label=entity["type"], alignment_mode=mode)
        if span is None:
            dropped.append(entity)
            continue
        key = (span.start_char, span.end_char, entity["type"])
        spans.setdefault(key, span)
        merged.setdefault(key, []).append(entity)
    order = sorted(spans, key=lambda k: (spans[k].start, spans[k].end, k[2]))
    return {k: spans[k] for k in order}, {k: merged[k] for k in order}, dropped


def _is_realigned(entity: dict, span: Span) -> bool:
    return (entity["start"], entity["end"]) != (span.start_char, span.end_char)


def _as_entities(doc: Doc, merged: dict[tuple[int, int, str], list[dict]]) -> list[Entity]:
    """One :class:`Entity` per span (its aligned offsets, best score), for :func:`~mtbioner.runtime.tagging.flatten`.

    Aligned offsets cover whole tokens, so two of them overlap in characters exactly when their
    spans share a token.
    """
    from ..runtime.tagging import Entity

    return [
        Entity(start, end, doc.text[start:end], label, (), max(e["score"] for e in group))
        for (start, end, label), group in merged.items()
    ]


def _set_ents(doc: Doc, best: list[Span], overwrite: bool) -> None:
    """Set ``doc.ents``: replace them, or keep earlier components' and add ours where tokens are free."""
    if overwrite:
        doc.ents = best
        return
    taken = {i for ent in doc.ents for i in range(ent.start, ent.end)}
    free = [span for span in best if not taken.intersection(range(span.start, span.end))]
    doc.set_ents(free, default="unmodified")
