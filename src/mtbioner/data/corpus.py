"""Read annotated corpora: a folder with a ``train``, ``devel`` and ``test`` split.

A split is one of (see :func:`read_corpus`):

* ``SPLIT.tsv``: one ``token<TAB>label`` line per token and a blank line between sentences;
  ``-DOCSTART-`` lines mark documents. Labels are normalised to IOB2 on read (see
  :mod:`mtbioner.data.schemes`), so everything downstream sees one scheme.
* ``SPLIT/``: a brat standoff folder of ``NAME.txt`` + ``NAME.ann`` files,
  ``SPLIT.pubtator``: a PubTator file, or ``SPLIT.bioc.xml`` / ``SPLIT.bioc.json``: a BioC
  collection (:mod:`mtbioner.data.bioc_format`). These are what annotation teams produce; their
  texts are cut into sentences and words by :mod:`mtbioner.data.text`, the tokenizer the tagger uses.

This module is the boundary where corpus files are validated: any problem raises
:class:`~mtbioner.errors.CorpusFormatError` naming the file and line and quoting the value.
Annotations that cannot become IOB2 tags (discontinuous, off word boundaries, overlapping)
are logged as warnings naming file and annotation id, and counted in the split.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, repeat
from pathlib import Path
from typing import Any, cast

from ..errors import CorpusFormatError, MtbionerError
from .schemes import SCHEMES, Scheme, detect_scheme, is_iob2, parse_tag, to_iob2

SPLITS = ("train", "devel", "test")
DOCSTART = "-DOCSTART-"
DATA_ENV = "MTBIONER_DATA"
PUBTATOR = ".pubtator"
BIOC = (".bioc.xml", ".bioc.json")
_ONE_FILE = (PUBTATOR, *BIOC)  # annotated splits held in one file, known by the end of its name
_LAYOUT = (
    "a corpus folder holds, for each of train, devel and test, SPLIT.tsv (token<TAB>label lines), "
    "a brat folder SPLIT/ (NAME.txt + NAME.ann), a PubTator file SPLIT.pubtator or a BioC file "
    "SPLIT.bioc.xml / SPLIT.bioc.json; a folder of .txt/.ann files or one .pubtator, .bioc.xml or "
    ".bioc.json file is a corpus with a single split"
)
# Warnings of formats/text that mean an annotation became no entity at all.
_LEFT_OUT = re.compile(r"left out$")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence: its tokens, their IOB2 tags, and where it came from (for messages)."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    document: int = 0
    line: int = 0


@dataclass
class Split:
    """One file of a corpus, with what reading it found.

    ``documents`` counts ``-DOCSTART-`` documents (a file without markers is one document)
    or, for brat, PubTator and BioC, documents with at least one word; ``repaired`` counts tags
    rewritten because they were ill-formed in ``scheme``. ``format`` is ``"tsv"``, ``"brat"``,
    ``"pubtator"`` or ``"bioc"``; for all but the first, ``warnings`` lists every annotation that was
    changed or left out (file and annotation id) and ``skipped`` counts those left out.
    """

    name: str
    path: Path
    sentences: list[Sentence]
    documents: int
    repaired: int
    scheme: str
    format: str = "tsv"
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class Corpus:
    """One annotated dataset; its name keys its head, label list and loss weight everywhere."""

    name: str
    path: Path
    splits: dict[str, Split]

    def sentences(self, split: str) -> list[Sentence]:
        """The sentences of a loaded split.

        Raises:
            MtbionerError: The split was not loaded (or does not exist).
        """
        if split not in self.splits:
            loaded = ", ".join(self.splits) or "none"
            raise MtbionerError(f"corpus {self.name!r} has no {split!r} split loaded (loaded: {loaded})")
        return self.splits[split].sentences

    @property
    def entity_types(self) -> list[str]:
        """Entity types found in the loaded splits, sorted."""
        tags: set[str] = set()
        for split in self.splits.values():
            tags.update(*(s.tags for s in split.sentences))
        return sorted({tag[2:] for tag in tags if tag != "O"})

    @property
    def labels(self) -> list[str]:
        """Sorted label list: ``O`` plus ``B-T`` and ``I-T`` for every entity type.

        Both prefixes are included even when a type never has an ``I-`` tag in the data, so a
        head trained on this corpus can output every well-formed IOB2 sequence.
        """
        types = self.entity_types
        return sorted({"O", *(f"B-{t}" for t in types), *(f"I-{t}" for t in types)})


def split_names(value: str | Sequence[str]) -> list[str]:
    """Split names from a comma list (``"train, devel"``) or a list, stripped, empty names dropped: the one
    reading shared by every ``--splits`` option and study file."""
    parts = value.split(",") if isinstance(value, str) else value
    return [part.strip() for part in parts if part.strip()]


def _clip(value: str, width: int = 60) -> str:
    """``repr`` of a value, shortened so that one bad line cannot flood the terminal."""
    return repr(value if len(value) <= width else value[:width] + "...")


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        bad = raw[error.start : error.start + 1]
        raise CorpusFormatError(
            path, line, f"not valid UTF-8: byte {bad!r} at byte offset {error.start}; save the file as UTF-8"
        ) from None


def _check_label(path: Path, line: int, label: str, scheme: str) -> str:
    """Validate a label the first time it is seen and return its canonical form."""
    label = label.strip()
    if not label:
        raise CorpusFormatError(path, line, "empty label (expected O, B-TYPE, I-TYPE, ...)")
    try:
        prefix, _ = parse_tag(label)
    except ValueError as error:
        raise CorpusFormatError(path, line, str(error)) from None
    if prefix in ("E", "S") and scheme in ("IOB1", "IOB2"):
        raise CorpusFormatError(path, line, f"label {label!r} is IOBES, but scheme {scheme} was requested")
    return label


_TRAILING = re.compile(r"[ \r]+$", re.MULTILINE)
_TWO_TABS = re.compile(r"\t[^\t\n]*\t")


def _read_lines(path: Path, text: str, limit: int | None, scheme: str) -> tuple[list[Sentence], int]:
    """Sentences (tags as in the file) and document count, line by line: the reference reader.

    This is the reader that defines the format and words every error; :func:`_read_fast`
    only takes over for files it can prove well formed.
    """
    sentences: list[Sentence] = []
    labels: dict[str, str] = {}  # raw label -> validated label
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    document, marked = 0, False
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            if tokens:
                sentences.append(Sentence(tuple(tokens), tuple(tags), document, first))
                tokens, tags = [], []
                if len(sentences) == limit:
                    break
            continue
        if line.split(None, 1)[0] == DOCSTART:
            if tokens:
                sentences.append(Sentence(tuple(tokens), tuple(tags), document, first))
                tokens, tags = [], []
                if len(sentences) == limit:
                    break
            document += 1 if marked or sentences else 0
            marked = True
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            found = f"found {len(fields)}: {_clip(line)}"
            raise CorpusFormatError(path, number, f"expected 2 tab-separated columns (token, label), {found}")
        token, label = fields
        if not token or token.isspace():
            raise CorpusFormatError(path, number, f"empty token in {_clip(line)}")
        tag = labels.get(label)
        if tag is None:
            tag = labels[label] = _check_label(path, number, label, scheme)
        if not tokens:
            first = number
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append(Sentence(tuple(tokens), tuple(tags), document, first))
    return sentences, document + 1 if marked or sentences else 0


def _blocks(text: str, limit: int | None) -> tuple[list[str], int]:
    """Text between ``"\\n\\n"`` separators (enough for ``limit`` sentences) and its first line."""
    body = text.lstrip("\n")
    first = 1 + len(text) - len(body)
    body = body.rstrip("\n")
    if limit is not None:  # split off only what is needed, plus room for document markers
        parts = body.split("\n\n", 2 * limit + 16)
        if len(parts) <= 2 * limit + 16:
            return parts, first
        head = parts[:-1]
        if len(head) - sum(DOCSTART in part for part in head) >= limit:
            return head, first
    return body.split("\n\n"), first


def _read_fast(text: str, limit: int | None, scheme: str) -> tuple[list[Sentence], int] | None:
    """The result of :func:`_read_lines` for a well-formed file, or ``None`` to fall back.

    It works on whole blocks with C-level string operations instead of a Python loop per
    line, which makes reading the shared corpora several times faster. Anything it cannot
    prove correct (a bad line or label, extra blank lines, a marker inside a sentence)
    returns ``None``, and the reference reader takes the file.
    """
    parts, line = _blocks(text, limit)
    blocks: list[tuple[int, str, int]] = []  # first line, block, document
    sizes: list[int] = []
    document, marked = 0, False
    for part in parts:
        if len(blocks) == limit:
            break
        size = part.count("\n") + 1
        if DOCSTART in part:
            if size > 1 or part.split(None, 1)[0] != DOCSTART:
                return None
            document += 1 if marked or blocks else 0
            marked = True
        else:
            blocks.append((line, part, document))
            sizes.append(size)
        line += size + 1
    joined = "\n".join(block for _, block, _ in blocks)
    flat = tuple(joined.replace("\n", "\t").split("\t"))
    if len(flat) != 2 * sum(sizes) or _TWO_TABS.search(joined):  # so exactly one tab per line
        return None
    tokens, tags = flat[0::2], flat[1::2]
    if not all(map(str.strip, tokens)) or not all(_is_clean_label(tag, scheme) for tag in set(tags)):
        return None
    sentences: list[Sentence] = []
    start = 0
    for (first, _, doc), size in zip(blocks, sizes, strict=True):
        sentences.append(Sentence(tokens[start : start + size], tags[start : start + size], doc, first))
        start += size
    return sentences, document + 1 if marked or blocks else 0


def _is_clean_label(label: str, scheme: str) -> bool:
    try:
        prefix, _ = parse_tag(label)
    except ValueError:
        return False
    return not (prefix in ("E", "S") and scheme in ("IOB1", "IOB2"))


def _normalise(sentences: list[Sentence], scheme: str) -> tuple[list[Sentence], int, Scheme]:
    """IOB2 sentences, the number of repaired tags, and the scheme the file was read as."""
    tag_lists = [sentence.tags for sentence in sentences]
    # All tags in one sequence, plus each sentence's first tag after an "O", have the same
    # tag transitions as the sentences: one C-level pass instead of one per sentence.
    flat = list(chain.from_iterable(tag_lists))
    starts = list(chain.from_iterable(zip(repeat("O"), (tags[0] for tags in tag_lists))))
    if is_iob2([flat, starts]):  # the usual case: nothing to convert or repair
        return sentences, 0, "IOB2" if scheme == "auto" else cast("Scheme", scheme)
    used = detect_scheme([flat, starts]) if scheme == "auto" else cast("Scheme", scheme)
    converted: list[Sentence] = []
    repaired = 0
    for sentence in sentences:
        iob2, fixed = to_iob2(sentence.tags, used)
        repaired += fixed
        converted.append(replace(sentence, tags=tuple(iob2)))
    return converted, repaired, used


def read_split(path: str | Path, name: str | None = None, limit: int | None = None, scheme: str = "auto") -> Split:
    """Read one split: a ``token<TAB>label`` file, a brat folder, a ``.pubtator`` or a BioC file.

    A folder is read as brat standoff, a file ending in ``.pubtator`` as PubTator and one
    ending in ``.bioc.xml`` or ``.bioc.json`` as BioC (all through :func:`_read_annotated`);
    anything else is a ``token<TAB>label`` file, read by :func:`read_tsv`.

    Args:
        path: The file or brat folder.
        name: Split name (default: the file name without ``.tsv`` / ``.pubtator`` / ``.bioc.*``).
        limit: Read only the first ``limit`` sentences (quick runs, tests).
        scheme: Tag scheme of a ``.tsv`` file (``"auto"`` to detect it); brat, PubTator and
            BioC annotations are spans, so it does not apply to them.

    Raises:
        CorpusFormatError: The file is missing, empty, not UTF-8, or has a bad line.
        MtbionerError: ``limit`` or ``scheme`` is invalid.
    """
    path = Path(path)
    _check_options(limit, scheme)
    if path.is_dir() or _is_one_file(path.name):
        return _read_annotated(path, name, limit)
    return read_tsv(path, name, limit, scheme)


def _check_options(limit: int | None, scheme: str) -> None:
    if limit is not None and limit < 1:
        raise MtbionerError(f"limit must be a positive number of sentences, got {limit}")
    if scheme != "auto" and scheme not in SCHEMES:
        raise MtbionerError(f"unknown tag scheme {scheme!r}; expected auto, {', '.join(SCHEMES)}")


def _clean(text: str) -> str:
    """Drop CR of CRLF endings and trailing spaces, which editors and Windows tools add."""
    if "\r" in text or " \n" in text or text.endswith(" "):
        return _TRAILING.sub("", text)
    return text


def read_tsv(path: str | Path, name: str | None = None, limit: int | None = None, scheme: str = "auto") -> Split:
    """Read one ``token<TAB>label`` file and normalise its tags to IOB2.

    Lines end at ``"\\n"`` only (not at every ``str.splitlines`` separator), so a token
    holding a Unicode line separator stays one token. CRLF endings, trailing spaces,
    repeated or whitespace-only blank lines and a missing final newline are accepted.

    Args:
        path: The file.
        name: Split name (default: the file name without ``.tsv``).
        limit: Read only the first ``limit`` sentences and stop (quick runs, tests).
        scheme: ``"auto"`` to detect IOB1/IOB2/IOBES from the file, or the scheme it uses.

    Raises:
        CorpusFormatError: The file is missing, empty, not UTF-8, or has a bad line.
        MtbionerError: ``limit`` or ``scheme`` is invalid.
    """
    path = Path(path)
    _check_options(limit, scheme)
    if not path.is_file():
        problem = "is a folder, not a token<TAB>label file" if path.exists() else f"missing file {path.name}"
        raise CorpusFormatError(path, None, problem)
    try:
        raw_bytes = path.read_bytes()
    except OSError as error:
        raise CorpusFormatError(path, None, f"cannot read: {error.strerror}") from None
    text = _clean(_decode(path, raw_bytes))
    raw, documents = _read_fast(text, limit, scheme) or _read_lines(path, text, limit, scheme)
    if not raw:
        what = "the file is empty" if not text.strip() else "only blank lines and -DOCSTART- markers"
        raise CorpusFormatError(path, None, f"no sentences: {what}")
    sentences, repaired, used = _normalise(raw, scheme)
    return Split(name or path.name.removesuffix(".tsv"), path, sentences, documents, repaired, used)


def _read_annotated(path: Path, name: str | None, limit: int | None) -> Split:
    """A brat folder, PubTator or BioC file as IOB2 sentences, logging what could not be kept.

    Every document is converted (so ``warnings`` and ``skipped`` cover the whole split even
    with ``limit``); ``limit`` then keeps the first sentences.
    """
    from .bioc_format import read_bioc_sentences  # these pull in regex + sentencex (bioc: on first read)
    from .formats import read_brat_folder, read_pubtator_sentences

    kind = "brat" if path.is_dir() else "bioc" if path.name.endswith(BIOC) else "pubtator"
    if kind != "brat" and not path.is_file():
        raise CorpusFormatError(path, None, f"missing file {path.name}")
    read = {"brat": read_brat_folder, "bioc": read_bioc_sentences, "pubtator": read_pubtator_sentences}[kind]
    tagged, warnings = read(path)
    sentences = [Sentence(*s) for s in tagged][:limit]
    if not sentences:
        raise CorpusFormatError(path, None, "no sentences: the documents hold no words")
    for tag in {t for s in sentences for t in s.tags}:
        if not _is_clean_label(tag, "IOB2"):
            raise CorpusFormatError(path, None, f"entity type {tag[2:]!r} is empty or has spaces at its ends")
    for warning in warnings:
        logger.warning("%s", warning)
    skipped = sum(bool(_LEFT_OUT.search(w)) for w in warnings)
    if warnings:
        logger.warning("%s: %d annotation problems, %d left out", path, len(warnings), skipped)
    return Split(
        name or _stem(path.name),
        path,
        sentences,
        len({s.document for s in sentences}),
        0,
        "IOB2",
        kind,
        skipped,
        warnings,
    )


def _split_sources(folder: Path, split: str) -> list[Path]:
    """Every file or folder in ``folder`` that could hold ``split``."""
    tsv, brat = folder / f"{split}.tsv", folder / split
    files = [folder / f"{split}{suffix}" for suffix in _ONE_FILE]
    found = [(tsv, tsv.is_file()), (brat, brat.is_dir()), *((file, file.is_file()) for file in files)]
    return [source for source, exists in found if exists]


def has_split(path: str | Path, split: str) -> bool:
    """Whether ``path`` is a corpus folder that holds ``split`` itself (a one-split corpus holds none by name)."""
    folder = Path(path)
    return folder.is_dir() and bool(_split_sources(folder, split))


def _is_one_file(name: str) -> bool:
    """Whether a file name marks a one-file annotated split (PubTator or BioC)."""
    return name.endswith(_ONE_FILE)


def _stem(name: str) -> str:
    """A split or corpus name: the file name without its one-file suffix."""
    return next((name.removesuffix(s) for s in _ONE_FILE if name.endswith(s)), name)


def _single_source(path: Path) -> Path | None:
    """``path`` when it is a one-split corpus: a PubTator or BioC file, or a folder of ``.ann`` files."""
    if path.is_file():
        return path if _is_one_file(path.name) else None
    if path.is_dir() and not any(_split_sources(path, split) for split in SPLITS):
        return path if next(path.glob("*.ann"), None) is not None else None
    return None


def _is_corpus(path: Path) -> bool:
    return _single_source(path) is not None or (path.is_dir() and any(_split_sources(path, split) for split in SPLITS))


def read_corpus(
    path: str | Path, splits: Sequence[str] = SPLITS, limit: int | None = None, scheme: str = "auto"
) -> Corpus:
    """Read the requested splits of a corpus; the corpus is named after the folder.

    A corpus folder holds each split as one of (mixing them is fine):

    * ``SPLIT.tsv``: ``token<TAB>label`` lines (IOB1, IOB2 or IOBES);
    * ``SPLIT/``: a brat standoff folder of ``NAME.txt`` + ``NAME.ann`` (sub-folders too);
    * ``SPLIT.pubtator``: a PubTator file (``ID|t|``, ``ID|a|`` and mention lines);
    * ``SPLIT.bioc.xml`` / ``SPLIT.bioc.json``: a BioC collection (see ``docs/bioc.md``).

    PubTator files must end in ``.pubtator`` (rename ``*.PubTator.txt`` downloads), so
    that a ``.txt`` is always brat text. A folder holding ``.ann`` files directly (and no
    split) or a single ``.pubtator``, ``.bioc.xml`` or ``.bioc.json`` file (named after its
    stem) is a one-split corpus: it is
    read as whichever split is requested, e.g. ``mtbioner evaluate MODEL HEAD=annotated/``;
    when several are requested it serves as ``train`` (or the first one) and the others are
    not loaded, which is logged as a warning.

    Raises:
        MtbionerError: The path does not exist or is not a corpus in any of these layouts.
        CorpusFormatError: A requested split is missing, given twice, or malformed.
    """
    target = Path(path)
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    if not target.exists():
        raise MtbionerError(f"corpus folder {target} does not exist; {_LAYOUT}")
    if not splits:
        raise MtbionerError(f"no splits requested from corpus {target}")
    name = Path(os.path.abspath(target)).name
    single = _single_source(target)
    if single is not None:
        split = _serve_single(single, splits)
        return Corpus(_stem(name), target, {split: read_split(single, split, limit, scheme)})
    if not _is_corpus(target):
        kind = "a file" if target.is_file() else "a folder without any split"
        raise MtbionerError(f"{target} is not a corpus: it is {kind}; {_LAYOUT}")
    sources = {}
    for split in splits:
        found = _split_sources(target, split)
        if not found:
            expected = f"no {split}.tsv, {split}/, {split}{PUBTATOR}, {split}.bioc.xml or {split}.bioc.json"
            raise CorpusFormatError(target, None, f"missing split {split!r}: {expected}; {_LAYOUT}")
        if len(found) > 1:
            both = " and ".join(p.name for p in found)
            raise CorpusFormatError(target, None, f"split {split!r} is given twice ({both}); keep one")
        sources[split] = found[0]
    loaded = {split: read_split(source, split, limit, scheme) for split, source in sources.items()}
    return Corpus(name, target, loaded)


def _serve_single(source: Path, splits: tuple[str, ...]) -> str:
    """The split a one-split corpus is read as, saying so when other splits go missing."""
    split = "train" if "train" in splits else splits[0]
    what = "a PubTator or BioC file" if source.is_file() else "a brat folder without train/devel/test"
    if len(splits) > 1:
        others = ", ".join(s for s in splits if s != split)
        logger.warning("%s is %s: read as its %r split; it has no %s", source, what, split, others)
    else:
        logger.info("%s is %s: read as its %r split", source, what, split)
    return split


def _available(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(child.name for child in folder.iterdir() if _is_corpus(child))


def resolve_corpus(spec: str, data_dir: str | Path | None = None) -> Path:
    """Find a corpus (folder, ``.pubtator`` or BioC file) from a path or a name.

    ``spec`` is used as a path when that folder (or one-file corpus) exists; otherwise it
    is a name looked up under ``data_dir`` or, when none is given, under ``$MTBIONER_DATA``
    (so ``--data-dir`` overrides the environment).

    Raises:
        MtbionerError: Not found; the message lists the places tried and the corpora there.
    """
    if not spec.strip():
        raise MtbionerError("empty corpus name: give a corpus folder or a name under --data-dir")
    direct = Path(spec).expanduser()
    if direct.is_dir() or (direct.is_file() and _is_one_file(direct.name)):
        return direct
    if direct.is_file():
        raise MtbionerError(f"{direct} is a file; give the corpus folder instead ({_LAYOUT})")
    tried = [str(direct)]
    root = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if root:
        candidate = Path(root).expanduser() / spec
        if candidate.is_dir() or (candidate.is_file() and _is_one_file(candidate.name)):
            return candidate
        tried.append(str(candidate))
        corpora = _available(Path(root).expanduser())
        hint = f"corpora in {root}: {', '.join(corpora)}" if corpora else f"no corpora found in {root}"
    else:
        hint = f"to look names up, pass --data-dir or set {DATA_ENV} to the folder holding the corpora"
    raise MtbionerError(f"corpus {spec!r} not found (tried {', '.join(tried)}); {hint}")


def corpus_stats(corpus: Corpus, tokenizer: Any = None) -> dict[str, dict[str, Any]]:
    """Counts per loaded split, for ``mtbioner info`` and for choosing ``max_length``.

    Args:
        corpus: A read corpus.
        tokenizer: Optional Hugging Face tokenizer; when given, ``longest_subtokens`` is the
            longest sentence in sub-tokens including ``[CLS]`` and ``[SEP]``, which tells
            whether sentences will need windows.

    Returns:
        ``{split: {format, documents, sentences, tokens, entities: {type: n}, repaired, scheme,
        skipped, warnings[, longest_subtokens]}}``; ``skipped`` counts brat/PubTator/BioC
        annotations left out and ``warnings`` all annotation problems (see :class:`Split`).
    """
    stats: dict[str, dict[str, Any]] = {}
    for name, split in corpus.splits.items():
        entities: Counter[str] = Counter()
        for sentence in split.sentences:
            entities.update(tag[2:] for tag in sentence.tags if tag.startswith("B-"))
        row: dict[str, Any] = {
            "format": split.format,
            "documents": split.documents,
            "sentences": len(split.sentences),
            "tokens": sum(len(s.tokens) for s in split.sentences),
            "entities": dict(sorted(entities.items())),
            "repaired": split.repaired,
            "scheme": split.scheme,
            "skipped": split.skipped,
            "warnings": len(split.warnings),
        }
        if tokenizer is not None:
            row["longest_subtokens"] = _longest_subtokens(tokenizer, split.sentences)
        stats[name] = row
    return stats


def _longest_subtokens(tokenizer: Any, sentences: list[Sentence], batch_size: int = 1024) -> int:
    longest = 0
    for i in range(0, len(sentences), batch_size):
        words = [list(s.tokens) for s in sentences[i : i + batch_size]]
        encoded = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        longest = max(longest, *(len(ids) for ids in encoded["input_ids"]))
    return longest + 2
