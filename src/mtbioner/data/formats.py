"""Documents and entities in and out: plain text, JSONL, CoNLL, brat standoff and PubTator.

An entity is the tagger's dict ``{"start", "end", "text", "type", "corpus", "score"}`` with
half-open character offsets into its document's ``text``; a record is a document dict with
``"id"``, ``"text"`` and ``"entities"``. Every writer is atomic (``mtbioner.fileio``): the file
or folder appears whole or not at all. The corpus readers (brat, PubTator) return IOB2 word
sentences built with ``mtbioner.data.text`` so that training sees the words the tagger will see.

Conventions decided here:

* ``.txt`` input: one document per line, id = its 1-based line number; blank lines are skipped
  (their numbers are not reused), CRLF endings and a UTF-8 BOM are removed.
* PubTator: the title is the text's first line and the abstract the rest, so offsets need no
  shift (PubTator counts one separator character between them); a text without a line break
  is all title with an empty abstract. Tabs and line breaks in a field become spaces (same length);
  the identifier column is the entity's ``"identifier"`` or ``-``.
* Annotated corpora to sentences (``text.annotations_to_sentences``): every line break ends a
  sentence; an annotation off word boundaries is widened to the words it touches, a
  discontinuous one is left out, of two overlapping ones the longer is kept; each with a
  warning naming file and annotation id.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mtbioner.data.text import TaggedSentence, Token, annotations_to_sentences, split_sentences
from mtbioner.errors import CorpusFormatError, RequestError
from mtbioner.fileio import atomic_dir, atomic_write

__all__ = [
    "TaggedSentence",
    "read_brat_ann",
    "read_brat_folder",
    "read_documents",
    "read_jsonl_entities",
    "read_pubtator",
    "read_pubtator_sentences",
    "write_brat",
    "write_conll",
    "write_jsonl",
    "write_pubtator",
]

Record = dict[str, Any]
_FIELD_BREAK = re.compile(r"\r\n|[\t\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
PUBTATOR_HEADER = re.compile(r"([^|\t]+)\|([ta])\|(.*)")
"""A PubTator title or abstract line: ``ID|t|title`` / ``ID|a|abstract``."""
_BRAT_CONFS = {"annotation.conf", "visual.conf", "tools.conf", "kb_shortcuts.conf"}


def concept_id(entity: Record) -> str | None:
    """An entity's concept id for writers: ``id`` if the entity was linked (it has ``link_score``),
    else an ``identifier`` read from PubTator or BioC (``-`` counts as none), else ``None``.

    A brat- or BioC-read entity's ``id`` is its annotation id, not a concept: hence the ``link_score`` test.
    """
    if "link_score" in entity:
        return entity.get("id")
    found = entity.get("identifier")
    return None if found in (None, "", "-") else str(found)


def read_documents(path: str | Path) -> Iterator[tuple[int, Record]]:
    """Yield ``(line_number, record)`` for each document of a ``.txt`` or ``.jsonl`` file.

    ``.jsonl`` records need a string ``"text"``; ``"id"`` defaults to the line number and other
    fields pass through untouched, so they reach the output.

    Raises:
        RequestError: Unknown suffix, unreadable file, or a bad line (not UTF-8, invalid JSON,
            missing or non-string text); the message names file and line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise RequestError(f"{path}: unknown input format {suffix!r}; use .txt (one document per line) or .jsonl")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise RequestError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise RequestError(f"{path}:{number}: not UTF-8 (byte {raw[exc.start]:#04x})") from exc
            line = line.removesuffix("\n").removesuffix("\r")
            if not line.strip():
                continue
            record = _parse_record(line, path, number) if suffix == ".jsonl" else {"text": line}
            record.setdefault("id", str(number))
            yield number, record


def read_jsonl_entities(path: str | Path) -> list[Record]:
    """Read records written by ``write_jsonl``, checking each entity's offsets against its text.

    Raises:
        RequestError: A bad line, or an entity whose offsets do not slice out its ``"text"``.
    """
    records = []
    for number, record in read_documents(path):
        entities = record.get("entities", [])
        if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
            raise RequestError(f'{path}:{number}: "entities" must be a list of objects')
        for entity in entities:
            start, end = entity.get("start"), entity.get("end")
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(record["text"])):
                raise RequestError(f"{path}:{number}: entity offsets {start!r}..{end!r} are outside the text")
            if "text" in entity and record["text"][start:end] != entity["text"]:
                raise RequestError(f"{path}:{number}: entity text {entity['text']!r} is not text[{start}:{end}]")
        records.append(record)
    return records


def write_jsonl(records: Iterable[Record], path: str | Path) -> int:
    """Write one JSON object per line (UTF-8, non-ASCII kept readable); return the count.

    Numpy scalars (scores straight from decoding) are written as plain numbers.
    """
    count = 0
    with atomic_write(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=_json_scalar) + "\n")
            count += 1
    return count


def write_conll(records: Iterable[Record], path: str | Path) -> int:
    """Write ``word<TAB>IOB2-tag`` lines in the corpora's own layout; return the document count.

    Each document starts with ``-DOCSTART-\\tO`` and a blank line (as in JNLPBA), sentences
    come from ``split_sentences`` and end with a blank line, so ``corpus.py`` reads the output
    back as a corpus. One tag per word cannot hold overlapping entities: the longer wins (then
    the higher score). A sentence never starts with ``I-``.
    """
    count = 0
    with atomic_write(path) as handle:
        for count, record in enumerate(records, 1):
            sentences = split_sentences(record["text"])
            tokens = [t for sentence in sentences for t in sentence.tokens]
            tags = _tags_for(tokens, _sorted_entities(record, _doc_id(record, count)))
            handle.write("-DOCSTART-\tO\n\n")
            position = 0
            for sentence in sentences:
                for k, token in enumerate(sentence.tokens):
                    tag = tags[position + k]
                    if k == 0 and tag.startswith("I-"):
                        tag = "B-" + tag[2:]
                    handle.write(f"{token.text}\t{tag}\n")
                handle.write("\n")
                position += len(sentence.tokens)
    return count


def write_brat(records: Iterable[Record], folder: str | Path) -> int:
    """Write ``ID.txt`` + ``ID.ann`` per document and an ``annotation.conf``; return the count.

    The folder is replaced as a whole (written aside, then renamed), so it never mixes two runs;
    to protect user files, an existing folder holding anything but brat files is refused.
    Each entity becomes ``T<n>\\tType start end\\ttext`` plus ``#<n>\\tAnnotatorNotes T<n>\\t
    corpus=... score=...`` (tabs and line breaks in the text column become spaces).

    Raises:
        RequestError: An id that is not a safe file name, a repeated id, a type with spaces.
    """
    folder = Path(folder)
    if folder.is_dir():
        strangers = [
            p.name for p in folder.iterdir() if p.suffix not in (".txt", ".ann") and p.name not in _BRAT_CONFS
        ]
        if strangers:
            raise RequestError(f"{folder}: refusing to replace a folder that holds other files ({strangers[0]})")
    types: set[str] = set()
    seen: set[str] = set()
    with atomic_dir(folder) as tmp:
        for ordinal, record in enumerate(records, 1):
            doc_id = _doc_id(record, ordinal)
            if not doc_id or doc_id in (".", "..") or re.search(r"[/\\\x00]", doc_id) or doc_id in seen:
                raise RequestError(f"document id {doc_id!r} cannot name a brat file (empty, a path or repeated)")
            seen.add(doc_id)
            lines = []
            for n, entity in enumerate(_sorted_entities(record, doc_id), 1):
                types.add(entity["type"])
                span_text = _flat(record["text"][entity["start"] : entity["end"]])
                lines.append(f"T{n}\t{entity['type']} {entity['start']} {entity['end']}\t{span_text}\n")
                corpus = entity.get("corpus") or ""
                corpus = ",".join(corpus) if isinstance(corpus, list) else str(corpus)
                score = "" if entity.get("score") is None else entity["score"]
                link = ""
                if "link_score" in entity and entity.get("id"):
                    link = f" id={_flat(str(entity['id']))} link_score={entity['link_score']}"
                    link += f" id_name={_flat(str(entity.get('id_name') or ''))}"
                lines.append(f"#{n}\tAnnotatorNotes T{n}\tcorpus={corpus} score={score}{link}\n")
            (tmp / f"{doc_id}.txt").write_bytes(record["text"].encode("utf-8"))
            (tmp / f"{doc_id}.ann").write_bytes("".join(lines).encode("utf-8"))
        conf = "[entities]\n" + "".join(f"{t}\n" for t in sorted(types)) + "[relations]\n[events]\n[attributes]\n"
        (tmp / "annotation.conf").write_text(conf, encoding="utf-8")
    return len(seen)


def read_brat_ann(path: str | Path) -> list[Record]:
    """Read the text-bound (``T``) annotations of a brat ``.ann`` file.

    Returns dicts with ``id``, ``type``, ``start``, ``end`` (outermost), ``text``, ``fragments``
    (list of ``[start, end]``, several when discontinuous) and, from our AnnotatorNotes,
    ``corpus`` (list) and ``score``. Relations, events and attributes are ignored.

    Raises:
        CorpusFormatError: A malformed ``T`` line, naming file and line.
    """
    path = Path(path)
    entities: dict[str, Record] = {}
    for number, line in enumerate(_read_utf8(path).split("\n"), 1):
        line = line.removesuffix("\r")
        fields = line.split("\t")
        if line.startswith("T"):
            match = re.fullmatch(r"(\S+) (\d+ \d+(?:;\d+ \d+)*)", fields[1]) if len(fields) >= 2 else None
            if match is None:
                raise CorpusFormatError(path, number, f"expected 'T<n><TAB>Type start end<TAB>text', got {line!r}")
            fragments = [[int(a), int(b)] for a, b in (f.split() for f in match.group(2).split(";"))]
            if any(a > b for a, b in fragments):
                raise CorpusFormatError(path, number, f"fragment end before start in {fields[1]!r}")
            entities[fields[0]] = {
                "id": fields[0],
                "type": match.group(1),
                "start": min(a for a, _ in fragments),
                "end": max(b for _, b in fragments),
                "text": "\t".join(fields[2:]),
                "fragments": fragments,
            }
        elif line.startswith("#") and len(fields) == 3 and fields[1].startswith("AnnotatorNotes "):
            target = entities.get(fields[1].split(" ", 1)[1])
            notes = re.fullmatch(
                r"corpus=(\S*) score=([-+.\deE]*)(?: id=(\S+) link_score=(\S*)(?: id_name=(.*))?)?", fields[2]
            )
            if target is not None and notes:
                target["corpus"] = [c for c in notes.group(1).split(",") if c]
                target["score"] = float(notes.group(2)) if notes.group(2) else None
                if notes.group(3):  # a linked entity: its concept (the ``id`` key is the T-id here)
                    target["identifier"] = notes.group(3)
                    target["id_name"] = notes.group(5) or ""
    return list(entities.values())


def read_brat_folder(folder: str | Path) -> tuple[list[TaggedSentence], list[str]]:
    """Read a brat standoff folder (``NAME.txt`` + ``NAME.ann``, sub-folders too) as IOB2 sentences.

    Documents are numbered in sorted path order. Problems that lose or change an annotation
    are returned as warnings (see the module docstring), never dropped silently.

    Raises:
        CorpusFormatError: Not a folder, no ``.txt`` files, a non-UTF-8 file, a malformed line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusFormatError(folder, None, "not a folder")
    texts = sorted(folder.rglob("*.txt"))
    if not texts:
        raise CorpusFormatError(folder, None, "no .txt files; brat standoff needs NAME.txt and NAME.ann")
    sentences: list[TaggedSentence] = []
    warnings = [
        f"{ann}: no {ann.with_suffix('.txt').name}; ignored"
        for ann in sorted(folder.rglob("*.ann"))
        if not ann.with_suffix(".txt").is_file()
    ]
    for index, txt in enumerate(texts):
        ann = txt.with_suffix(".ann")
        annotations = read_brat_ann(ann) if ann.is_file() else []
        if not ann.is_file():
            warnings.append(f"{txt}: no {ann.name}; read as a document without entities")
        found, problems = annotations_to_sentences(_read_utf8(txt), annotations, source=str(ann), document=index)
        sentences += found
        warnings += problems
    return sentences, warnings


def write_pubtator(records: Iterable[Record], path: str | Path) -> int:
    """Write PubTator: ``ID|t|title``, ``ID|a|abstract``, mention lines, a blank line; return the count.

    Raises:
        RequestError: An id that is empty or holds ``|``, a tab or a line break.
    """
    count = 0
    with atomic_write(path) as handle:
        for count, record in enumerate(records, 1):
            doc_id = _doc_id(record, count)
            if not doc_id or re.search(r"[|\t\r\n]", doc_id):
                raise RequestError(f"document id {doc_id!r} cannot be a PubTator id (empty, or holds | or a tab)")
            title, _, abstract = record["text"].partition("\n")
            handle.write(f"{doc_id}|t|{_flat(title)}\n{doc_id}|a|{_flat(abstract)}\n")
            for entity in _sorted_entities(record, doc_id):
                mention = _flat(record["text"][entity["start"] : entity["end"]])
                identifier = _flat(concept_id(entity) or "-")
                handle.write(
                    f"{doc_id}\t{entity['start']}\t{entity['end']}\t{mention}\t{entity['type']}\t{identifier}\n"
                )
            handle.write("\n")
    return count


def read_pubtator(path: str | Path) -> list[Record]:
    """Read a PubTator file into records ``{"id", "text", "entities"}``.

    ``text`` is ``title + "\\n" + abstract`` (just the title when the abstract is empty), so
    PubTator offsets index it directly. Relation lines (``ID<TAB>CID<TAB>...``) are skipped.

    Raises:
        CorpusFormatError: A line that is none of title, abstract, mention or relation, or a
            mention whose id is not the current document's.
    """
    path = Path(path)
    documents: list[Record] = []
    current: Record | None = None
    for number, line in enumerate(_read_utf8(path).split("\n"), 1):
        line = line.removesuffix("\r")
        header = PUBTATOR_HEADER.fullmatch(line)
        fields = line.split("\t")
        if not line.strip():
            current = None
        elif header:
            doc_id, kind, content = header.groups()
            if current is None or current["id"] != doc_id:
                current = {"id": doc_id, "title": "", "abstract": "", "entities": []}
                documents.append(current)
            current["title" if kind == "t" else "abstract"] = content
        elif len(fields) >= 5 and fields[1].isdigit() and fields[2].isdigit():
            if current is None or current["id"] != fields[0]:
                raise CorpusFormatError(path, number, f"mention of {fields[0]!r} outside its document")
            entity = {"start": int(fields[1]), "end": int(fields[2]), "text": fields[3], "type": fields[4]}
            entity["identifier"] = fields[5] if len(fields) > 5 else "-"
            current["entities"].append(entity)
        elif len(fields) != 4 or fields[1].isdigit():
            raise CorpusFormatError(path, number, f"expected 'ID|t|title', 'ID|a|abstract' or a mention, got {line!r}")
    for document in documents:
        title, abstract = document.pop("title"), document.pop("abstract")
        document["text"] = f"{title}\n{abstract}" if abstract else title
    return documents


def read_pubtator_sentences(path: str | Path) -> tuple[list[TaggedSentence], list[str]]:
    """Read a PubTator corpus as IOB2 sentences, with warnings as in ``read_brat_folder``."""
    sentences: list[TaggedSentence] = []
    warnings: list[str] = []
    for index, document in enumerate(read_pubtator(path)):
        annotations = [{"id": f"{document['id']}:{e['start']}-{e['end']}", **e} for e in document["entities"]]
        found, problems = annotations_to_sentences(document["text"], annotations, source=str(path), document=index)
        sentences += found
        warnings += problems
    return sentences, warnings


def _parse_record(line: str, path: Path, number: int) -> Record:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise RequestError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("text"), str):
        got = type(record["text"]).__name__ if "text" in record else "nothing"
        raise RequestError(f'{path}:{number}: "text" must be a string, got {got}')
    if _SURROGATE.search(record["text"]):
        raise RequestError(f'{path}:{number}: "text" holds an unpaired surrogate escape, which is not Unicode')
    if "id" in record and (isinstance(record["id"], bool) or not isinstance(record["id"], str | int)):
        raise RequestError(f'{path}:{number}: "id" must be a string or an integer, got {record["id"]!r}')
    return record


def _read_utf8(path: Path) -> str:
    """A whole file as text, offsets intact (no newline translation, BOM kept as brat does)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorpusFormatError(path, None, f"cannot read: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusFormatError(path, raw.count(b"\n", 0, exc.start) + 1, "not UTF-8") from exc


def _json_scalar(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars and 0-d arrays become Python numbers."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _doc_id(record: Record, ordinal: int) -> str:
    return str(record.get("id", ordinal))


def _flat(text: str) -> str:
    """Tabs and line breaks to spaces, keeping the length so that offsets stay valid."""
    return _FIELD_BREAK.sub(lambda m: " " * len(m.group()), text)


def _sorted_entities(record: Record, doc_id: str) -> list[Record]:
    """The record's entities by position, after checking what the file formats rely on."""
    entities = sorted(record.get("entities", []), key=lambda e: (e["start"], e["end"]))
    for entity in entities:
        if not 0 <= entity["start"] < entity["end"] <= len(record["text"]):
            raise RequestError(
                f"document {doc_id}: entity offsets {entity['start']}..{entity['end']} are outside the text"
            )
        if not entity["type"] or re.search(r"\s", entity["type"]):
            raise RequestError(f"document {doc_id}: entity type {entity['type']!r} is empty or holds whitespace")
    return entities


def _tags_for(tokens: Sequence[Token], entities: Iterable[Record]) -> list[str]:
    """IOB2 tag per word; overlapping entities resolved longest first, then by score."""
    starts, ends = [t.start for t in tokens], [t.end for t in tokens]
    tags = ["O"] * len(tokens)
    ranked = sorted(entities, key=lambda e: (e["start"] - e["end"], -(e.get("score") or 0.0), e["start"]))
    for entity in ranked:
        first, last = bisect.bisect_right(ends, entity["start"]), bisect.bisect_left(starts, entity["end"])
        if first < last and all(tag == "O" for tag in tags[first:last]):
            tags[first:last] = [f"B-{entity['type']}"] + [f"I-{entity['type']}"] * (last - first - 1)
    return tags
