"""BioC XML and BioC JSON, in (corpora, records) and out (tagger output), through the ``bioc`` package.

BioC is what PubTator3, PMC's text-mining subset and many shared tasks distribute: a
collection of documents, each cut into passages (title, abstract, sections) that carry
their own ``offset``, with annotations whose locations are offsets into the *document*.
Offsets count Unicode code points (Python ``str`` indices). BioC leaves the unit to each
collection's key file; where a file counts UTF-8 bytes or UTF-16 units instead, its offsets
miss the text after the first non-ASCII character, and the text check below says so.

Conventions decided here (``docs/bioc.md`` has the long form):

* Reading, a document becomes one record whose ``text`` lays every passage at its offset
  and fills the gaps between passages with line breaks, so the BioC offsets index the
  record's text unchanged (``entity["start"]`` is the location's offset) and a
  title/abstract document reads exactly like its PubTator twin (``title\\nabstract``). The
  record keeps ``"passages"`` (``offset``, ``length``, ``infons``) and the document's
  ``"infons"``, which the writers write back.
* An annotation belongs to its passage (document-level ones to the passage holding them);
  one that leaves it, overlapping passages and an annotation text that is not the passage
  text at its location are errors. Several locations make a discontinuous entity with
  ``fragments``, left out of IOB2 sentences with a warning as brat's are; an annotation
  without any location (or of length 0) is left out with a warning.
* Writing, a record without ``"passages"`` is one passage at offset 0 holding the whole
  text, so nothing is re-cut and every entity offset is written as it is. Entity attributes
  go to annotation infons: ``type``, ``identifier`` (when present), ``score``, ``corpus``
  (names joined with ``,``). XML cannot carry control characters or unpaired surrogates:
  they become a space (the whitespace ones) or U+FFFD, one for one, so offsets hold.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mtbioner.data.formats import Record, _doc_id, _sorted_entities, concept_id
from mtbioner.data.text import TaggedSentence, annotations_to_sentences
from mtbioner.errors import CorpusFormatError, RequestError
from mtbioner.fileio import atomic_write

if TYPE_CHECKING:
    import bioc

__all__ = ["read_bioc", "read_bioc_sentences", "write_bioc_json", "write_bioc_xml"]

Kind = Literal["xml", "json"]
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LIBRARY_ERRORS = (KeyError, TypeError, ValueError, AttributeError)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Passage:
    """A passage as read: document-level offset, its text, and its (and its sentences') annotations."""

    offset: int
    text: str
    infons: dict[str, str]
    annotations: tuple[Any, ...]

    @property
    def end(self) -> int:
        return self.offset + len(self.text)


def read_bioc(path: str | Path) -> list[Record]:
    """Read a BioC XML (``.xml``) or JSON (``.json``) collection into records.

    Each record is ``{"id", "text", "entities", "passages", "infons"}``: ``text`` holds the
    passages at their offsets (gaps filled with line breaks), so an entity's ``start`` and
    ``end`` are the BioC location offsets. Entities carry ``id`` (the annotation's),
    ``start``, ``end``, ``text``, ``type`` and, when the infons give them, ``identifier``,
    ``score`` and ``corpus``; a discontinuous one also ``fragments``. Annotations left out
    are logged as warnings.

    Raises:
        CorpusFormatError: Unreadable, malformed or empty file, overlapping passages, an
            annotation outside its passage, without a type, or whose text differs from the
            passage text at its location; the message names file, document and annotation.
    """
    records, warnings = _read(Path(path))
    for warning in warnings:
        logger.warning("%s", warning)
    return records


def read_bioc_sentences(path: str | Path) -> tuple[list[TaggedSentence], list[str]]:
    """Read a BioC corpus file as IOB2 sentences, with warnings as in ``formats.read_brat_folder``.

    Each passage is cut into sentences on its own, so no sentence or word ever joins two
    passages, even passages that touch without a gap. Warnings name an annotation with its
    document offsets (``document 12 annotation T3 (40..52)``).
    """
    path = Path(path)
    records, warnings = _read(path)
    sentences: list[TaggedSentence] = []
    for index, record in enumerate(records):
        for text, entities in _by_passage(record):
            found, problems = annotations_to_sentences(text, entities, source=str(path), document=index)
            sentences += found
            warnings += problems
    return sentences, warnings


def _by_passage(record: Record) -> list[tuple[str, list[Record]]]:
    """Each passage's text with its entities, moved to passage offsets.

    Reading made every entity lie inside one passage, and passages are sorted by offset
    (then end, so an empty passage comes before a full one at the same offset).
    """
    passages = record["passages"]
    starts = [p["offset"] for p in passages]
    grouped: list[list[Record]] = [[] for _ in passages]
    for entity in record["entities"]:
        owner = bisect.bisect_right(starts, entity["start"]) - 1
        name = f"document {record['id']} annotation {entity['id']} ({entity['start']}..{entity['end']})"
        moved = {"id": name, "start": entity["start"] - starts[owner], "end": entity["end"] - starts[owner]}
        grouped[owner].append(entity | moved)
    texts = [record["text"][p["offset"] : p["offset"] + p["length"]] for p in passages]
    return list(zip(texts, grouped, strict=True))


def write_bioc_xml(records: Iterable[Record], path: str | Path) -> int:
    """Write records as one BioC XML collection (UTF-8), atomically; return the document count.

    Raises:
        RequestError: Entity offsets outside the text, a type with whitespace, bad
            ``"passages"`` or ``"infons"`` fields, an entity that is not inside one passage.
    """
    return _write(records, Path(path), "xml")


def write_bioc_json(records: Iterable[Record], path: str | Path) -> int:
    """Write records as one BioC JSON collection (UTF-8, non-ASCII readable), atomically.

    Returns the document count; raises as :func:`write_bioc_xml`.
    """
    return _write(records, Path(path), "json")


def _kind(path: Path) -> Kind:
    suffix = path.suffix.lower()
    if suffix not in (".xml", ".json"):
        raise CorpusFormatError(path, None, f"unknown BioC suffix {suffix!r}; use .xml or .json")
    return "xml" if suffix == ".xml" else "json"


def _load(path: Path) -> bioc.BioCCollection:
    """The collection in ``path``, every library or parser failure turned into a located error."""
    from bioc import biocjson, biocxml
    from lxml import etree  # a dependency of bioc

    kind = _kind(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorpusFormatError(path, None, f"cannot read: {exc.strerror}") from None
    try:
        if kind == "xml":
            return biocxml.load(io.BytesIO(raw))
        return biocjson.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CorpusFormatError(path, raw.count(b"\n", 0, exc.start) + 1, "not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise CorpusFormatError(path, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except etree.XMLSyntaxError as exc:
        raise CorpusFormatError(path, exc.lineno, f"invalid XML: {exc.msg}") from None
    except _LIBRARY_ERRORS as exc:
        missing = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CorpusFormatError(path, None, f"not a BioC {kind.upper()} collection: {missing}") from None


def _read(path: Path) -> tuple[list[Record], list[str]]:
    """Records and the warnings about annotations left out, for both public readers."""
    collection = _load(path)
    if not collection.documents:
        raise CorpusFormatError(path, None, "no BioC documents (expected a collection holding documents)")
    records: list[Record] = []
    warnings: list[str] = []
    for ordinal, document in enumerate(collection.documents, 1):
        record, problems = _document_to_record(document, ordinal, path)
        records.append(record)
        warnings += problems
    return records, warnings


def _document_to_record(document: bioc.BioCDocument, ordinal: int, path: Path) -> tuple[Record, list[str]]:
    doc_id = str(ordinal) if document.id is None else str(document.id)
    where = f"document {doc_id!r}"
    passages = sorted((_read_passage(p, path, where) for p in document.passages), key=lambda p: (p.offset, p.end))
    text = _layout([(p.offset, p.text) for p in passages], 0, "\n", path, where)
    pairs = [(a, p) for p in passages for a in p.annotations]
    pairs += [(a, _owner(a, passages, path, where)) for a in document.annotations]
    entities: list[Record] = []
    warnings: list[str] = []
    for annotation, passage in pairs:
        entity = _annotation_to_entity(annotation, passage, path, where)
        if entity is None:
            warnings.append(f"{path}: {where} annotation {annotation.id!r}: no location of any length; left out")
        else:
            entities.append(entity)
    record = {
        "id": doc_id,
        "text": text,
        "entities": sorted(entities, key=lambda e: (e["start"], e["end"])),
        "passages": [{"offset": p.offset, "length": len(p.text), "infons": p.infons} for p in passages],
        "infons": _infons(document.infons, path, where),
    }
    return record, warnings


def _owner(annotation: bioc.BioCAnnotation, passages: list[_Passage], path: Path, where: str) -> _Passage | None:
    """The passage holding a document-level annotation's first location (BioC allows those too)."""
    spans = _locations(annotation, path, f"{where} annotation {annotation.id!r}")
    return next((p for p in passages if spans and p.offset <= spans[0][0] < p.end), None)


def _read_passage(passage: bioc.BioCPassage, path: Path, where: str) -> _Passage:
    """A passage with its text; one that gives only sentences gets them laid at their offsets."""
    offset = _offset(passage.offset, path, f"{where}: passage offset")
    annotations = list(passage.annotations)
    text = _text(passage.text, path, f"{where}: passage text")
    if not text and passage.sentences:
        pieces = [
            (_offset(s.offset, path, f"{where}: sentence offset"), _text(s.text, path, f"{where}: sentence text"))
            for s in passage.sentences
        ]
        text = _layout(pieces, offset, " ", path, f"{where}, passage at {offset}")
    for sentence in passage.sentences:
        annotations += sentence.annotations
    return _Passage(offset, text, _infons(passage.infons, path, where), tuple(annotations))


def _layout(pieces: list[tuple[int, str]], start: int, filler: str, path: Path, where: str) -> str:
    """Texts placed at their offsets (counted from ``start``), gaps filled with ``filler``.

    Raises:
        CorpusFormatError: Two pieces overlap, or one starts before ``start``.
    """
    parts: list[str] = []
    position = start
    for offset, text in sorted(pieces, key=lambda piece: piece[0]):
        if offset < position:
            raise CorpusFormatError(path, None, f"{where}: text at offset {offset} overlaps the text before it")
        parts += [filler * (offset - position), text]
        position = offset + len(text)
    return "".join(parts)


def _annotation_to_entity(
    annotation: bioc.BioCAnnotation, passage: _Passage | None, path: Path, where: str
) -> Record | None:
    """The entity of one annotation, or ``None`` when it has no location of any length."""
    name = f"{where} annotation {annotation.id!r}"
    spans = [(start, end) for start, end in _locations(annotation, path, name) if end > start]
    if not spans:
        return None
    if passage is None:
        raise CorpusFormatError(path, None, f"{name}: {spans[0][0]}..{spans[0][1]} lies in no passage")
    for start, end in spans:
        if not passage.offset <= start < end <= passage.end:
            bounds = f"{passage.offset}..{passage.end}"
            raise CorpusFormatError(path, None, f"{name}: {start}..{end} is outside its passage ({bounds})")
    infons = _infons(annotation.infons, path, name)
    if not infons.get("type", "").strip():
        raise CorpusFormatError(path, None, f"{name}: no 'type' infon, so no entity type")
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    found = passage.text[start - passage.offset : end - passage.offset]
    if len(spans) == 1 and annotation.text and annotation.text != found:  # an empty <text/> gives none
        raise CorpusFormatError(path, None, f"{name}: text {annotation.text!r} is not the passage text {found!r}")
    entity: Record = {"id": str(annotation.id), "start": start, "end": end, "text": found, "type": infons["type"]}
    if len(spans) > 1:
        entity["fragments"] = [[s, e] for s, e in sorted(spans)]
    return entity | _attributes(infons)


def _attributes(infons: Mapping[str, str]) -> Record:
    """What our writers keep in infons, back as entity fields; a score that is no number is dropped."""
    found: Record = {}
    if "identifier" in infons:
        found["identifier"] = infons["identifier"]
    if infons.get("corpus"):
        found["corpus"] = [c for c in infons["corpus"].split(",") if c]
    try:
        found["score"] = float(infons["score"])
    except (KeyError, ValueError):
        pass
    return found


def _locations(annotation: bioc.BioCAnnotation, path: Path, name: str) -> list[tuple[int, int]]:
    """``(start, end)`` per location, in document offsets."""
    spans = []
    for location in annotation.locations:
        start = _offset(location.offset, path, f"{name}: location offset")
        spans.append((start, start + _offset(location.length, path, f"{name}: location length")))
    return spans


def _offset(value: Any, path: Path, what: str) -> int:
    """A non-negative integer from the file (BioC JSON can hold anything where XML held digits)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorpusFormatError(path, None, f"{what} must be a non-negative integer, got {value!r}")
    return value


def _text(value: Any, path: Path, what: str) -> str:
    """A text from the file; missing is empty (BioC JSON could hold any value here)."""
    if value is not None and not isinstance(value, str):
        raise CorpusFormatError(path, None, f"{what} must be a string, got {value!r}")
    return value or ""


def _infons(value: Any, path: Path, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise CorpusFormatError(path, None, f"{where}: infons must be an object of strings, got {value!r}")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _write(records: Iterable[Record], path: Path, kind: Kind) -> int:
    """Build the collection in memory, then write it in one atomic step."""
    import bioc
    from bioc import biocjson, biocxml

    clean = _xml_safe if kind == "xml" else _json_safe
    collection = bioc.BioCCollection()
    collection.source = "mtbioner"
    for ordinal, record in enumerate(records, 1):
        collection.add_document(_record_to_document(record, ordinal, clean))
    with atomic_write(path) as handle:
        if kind == "xml":
            biocxml.dump(collection, handle)
        else:
            biocjson.dump(collection, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
    return len(collection.documents)


def _record_to_document(record: Record, ordinal: int, clean: Callable[[str], str]) -> bioc.BioCDocument:
    import bioc

    doc_id = _doc_id(record, ordinal)
    text = record["text"]
    document = bioc.BioCDocument()
    document.id = clean(doc_id)
    document.infons = _output_infons(record.get("infons", {}), doc_id, clean)
    for offset, length, infons in _passage_spans(record, doc_id):
        passage = bioc.BioCPassage.of_text(clean(text[offset : offset + length]), offset)
        passage.infons = _output_infons(infons, doc_id, clean)
        document.add_passage(passage)
    entities = _sorted_entities(record, doc_id)
    ids = [str(e.get("id", "")) for e in entities]
    linked = any("link_score" in e for e in entities)  # then ``id`` is a concept, not an annotation id
    if linked or "" in ids or len(set(ids)) < len(ids):  # keep the ids a read document came with, else number
        ids = [f"T{n}" for n in range(1, len(entities) + 1)]
    for entity, annotation_id in zip(entities, ids, strict=True):
        spans = _entity_spans(entity, doc_id)
        owner = next((p for p in document.passages if all(p.offset <= s and e <= _end(p) for s, e in spans)), None)
        if owner is None:
            raise RequestError(f"document {doc_id}: entity {entity['start']}..{entity['end']} is not in one passage")
        owner.add_annotation(_entity_to_annotation(entity, annotation_id, spans, text, clean))
    return document


def _end(passage: bioc.BioCPassage) -> int:
    return passage.offset + len(passage.text)


def _passage_spans(record: Record, doc_id: str) -> list[tuple[int, int, Mapping[str, Any]]]:
    """``(offset, length, infons)`` per passage: the record's own, or the whole text as one.

    Raises:
        RequestError: Passages that are malformed, out of order, overlapping or outside the
            text, or text outside every passage (it would be lost).
    """
    text = record["text"]
    given = record.get("passages")
    if given is None:
        return [(0, len(text), {})]
    if not isinstance(given, list) or not all(isinstance(p, dict) for p in given):
        raise RequestError(f'document {doc_id}: "passages" must be a list of objects')
    spans: list[tuple[int, int, Mapping[str, Any]]] = []
    position = 0
    for passage in given:
        offset, length = passage.get("offset"), passage.get("length")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (offset, length)):
            raise RequestError(f'document {doc_id}: passage needs integer "offset" and "length", got {passage!r}')
        if not position <= offset <= offset + length <= len(text):
            raise RequestError(
                f"document {doc_id}: passage {offset}+{length} overlaps the one before or runs past the text"
            )
        if text[position:offset].strip():
            raise RequestError(f"document {doc_id}: text {position}..{offset} lies in no passage and would be lost")
        spans.append((offset, length, passage.get("infons", {})))
        position = offset + length
    if text[position:].strip():
        raise RequestError(f"document {doc_id}: text after the last passage would be lost")
    return spans


def _entity_spans(entity: Record, doc_id: str) -> list[tuple[int, int]]:
    """The locations to write: the fragments of a discontinuous entity, else its one span."""
    fragments = entity.get("fragments")
    if not fragments or len(fragments) < 2:
        return [(entity["start"], entity["end"])]
    spans = [tuple(f) for f in fragments if isinstance(f, list | tuple) and all(type(x) is int for x in f)]
    if len(spans) < len(fragments) or not all(
        len(f) == 2 and entity["start"] <= f[0] < f[1] <= entity["end"] for f in spans
    ):
        raise RequestError(f"document {doc_id}: fragments {fragments!r} are not spans inside their entity")
    return [(s, e) for s, e in spans]


def _entity_to_annotation(
    entity: Record, annotation_id: str, spans: list[tuple[int, int]], text: str, clean: Callable[[str], str]
) -> bioc.BioCAnnotation:
    """An annotation: our entity fields as infons, one location per span (brat joins fragments' text)."""
    import bioc

    annotation = bioc.BioCAnnotation()
    annotation.id = clean(annotation_id)
    annotation.infons["type"] = clean(entity["type"])
    identifier = concept_id(entity)
    if identifier is not None:
        annotation.infons["identifier"] = clean(identifier)
    if entity.get("link_score") is not None:
        annotation.infons["link_score"] = _number(entity["link_score"], clean)
        annotation.infons["id_name"] = clean(str(entity.get("id_name") or ""))
    if entity.get("score") is not None:
        annotation.infons["score"] = _number(entity["score"], clean)
    corpus = entity.get("corpus")
    if corpus:
        annotation.infons["corpus"] = clean(",".join(corpus) if isinstance(corpus, list | tuple) else str(corpus))
    for start, end in spans:
        annotation.add_location(bioc.BioCLocation(start, end - start))
    annotation.text = clean(" ".join(text[start:end] for start, end in spans))
    return annotation


def _number(value: Any, clean: Callable[[str], str]) -> str:
    """A score as its shortest exact decimal (numpy scalars too); anything else as written."""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return clean(str(value))


def _output_infons(infons: Any, doc_id: str, clean: Callable[[str], str]) -> dict[str, str]:
    if not isinstance(infons, dict):
        raise RequestError(f'document {doc_id}: "infons" must be an object, got {infons!r}')
    return {clean(str(k)): clean(str(v)) for k, v in infons.items()}


def _xml_safe(text: str) -> str:
    """Characters XML 1.0 cannot hold, one for one: whitespace ones to a space, others to U+FFFD."""
    return _XML_UNSAFE.sub(lambda m: " " if m.group().isspace() else "\ufffd", text)


def _json_safe(text: str) -> str:
    """Unpaired surrogates (which UTF-8 cannot encode) to U+FFFD, one for one."""
    return _SURROGATE.sub("\ufffd", text)
