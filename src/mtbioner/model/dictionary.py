"""Dictionary evidence: term lists per entity type, matched over a sentence's words.

A :class:`Dictionary` holds terms per entity type, taken from the training splits of corpora
(the strings of their IOB2 entities; never the test split) and from user files of
``term<TAB>type`` lines (an export of MeSH or ChEBI names, say). A dictionary-feature model
(``mtbioner train --dictionary-features``) keeps its dictionary in the model folder as
``dictionary.json`` and adds a learned embedding of each word's match tags to the input of
every head (:mod:`mtbioner.model.model`), so tagging needs nothing else.

Matching (:meth:`Dictionary.match`) is independent of how a corpus split its words. Words and
terms are both cut into *atoms*, the finest tokenization of :mod:`mtbioner.data.text` (runs of
letters and digits; every other character alone), after NFKC normalisation and, unless the
dictionary is case-sensitive, case folding. The term ``IL-2`` is the atoms ``il - 2`` whether
a corpus wrote it as one word or three. A match must start on a word's first atom and end on a
word's last atom (``IL-2`` never matches inside ``IL-2R``), and among the terms of one type
the longest match from the left wins, then matching goes on after it (as flashtext does).

Match tags. Each type T of the dictionary is one *channel* with three states: no match, the
first word of a match (``B-T``) or a following word (``I-T``). A word gets one id per channel,
so a word matched as a GENE and as a protein carries both: ids are ``0`` (no match), ``1 + 2t``
(``B`` of the t-th type) or ``2 + 2t`` (``I`` of it), indices into one table of
``1 + 2 * len(types)`` rows (:attr:`Dictionary.tag_names`). The type set is fixed when the
model is built.

The matcher is a pure-Python trie over atoms with a per-word atom cache: on 5,000 BC5CDR
sentences (128,765 words; all train-split terms of BC5CDR's two types) matching takes 0.11-0.19 s
of CPU on one core, well under the encoder's cost, so no compiled matcher (pyahocorasick,
flashtext) is needed. Aho-Corasick over characters would find matches inside words that the
word-boundary rule then throws away. Memory grows with the atoms of all terms (a dict per node).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.schemes import tags_to_spans
from ..data.text import _TOKEN
from ..errors import CorpusFormatError, ModelFormatError, MtbionerError

if TYPE_CHECKING:
    from ..data.corpus import Corpus

DICTIONARY_NAME = "dictionary.json"
FORMAT = 1
_END = ""  # trie key of a node's payload; no atom is empty
_CACHE_LIMIT = 500_000  # words whose atoms are remembered (cleared when full)

Source = tuple[str, int]
"""Where a corpus term came from: (corpus name, fold). User-file terms have no source (always on)."""


class Dictionary:
    """Terms per entity type, and a matcher over word lists.

    Args:
        terms: Type to its terms (strings as written; words are separated by spaces).
        case_sensitive: Match letter case exactly (default: case-insensitive).
        types: The type order (channels of the match tags); default the sorted types of ``terms``.
            Types without terms are allowed (a fold of the training data may lack one).
    """

    def __init__(
        self,
        terms: Mapping[str, Iterable[str]],
        case_sensitive: bool = False,
        types: Sequence[str] | None = None,
    ) -> None:
        self.case_sensitive = case_sensitive
        self.types: list[str] = list(types) if types is not None else sorted(terms)
        if len(set(self.types)) != len(self.types):
            raise MtbionerError(f"dictionary types repeat: {self.types}")
        unknown = sorted(set(terms) - set(self.types))
        if unknown:
            raise MtbionerError(f"dictionary terms of types {unknown} that are not among its types {self.types}")
        for type_ in self.types:
            if not type_ or type_ != type_.strip() or "\t" in type_:
                raise MtbionerError(f"dictionary type {type_!r}: must be non-empty, without tabs or edge spaces")
        self.terms: dict[str, set[str]] = {t: {s for s in terms.get(t, ()) if s.strip()} for t in self.types}
        self._matcher: _Matcher | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_corpora(
        cls,
        corpora: Iterable[Corpus],
        splits: Sequence[str] = ("train",),
        case_sensitive: bool = False,
    ) -> Dictionary:
        """The entity strings of the given splits (words joined by spaces), per type.

        Raises:
            MtbionerError: ``test`` is asked for (test terms would leak the answers), or a split is not loaded.
        """
        _refuse_test(splits)
        terms: dict[str, set[str]] = {}
        for corpus in corpora:
            for split in splits:
                for sentence in corpus.sentences(split):
                    for type_, start, end in tags_to_spans(sentence.tags):
                        terms.setdefault(type_, set()).add(" ".join(sentence.tokens[start:end]))
        return cls(terms, case_sensitive)

    @classmethod
    def from_file(cls, path: str | Path, case_sensitive: bool = False) -> Dictionary:
        """Read ``term<TAB>type`` lines; blank lines and lines starting with ``#`` are skipped.

        Raises:
            CorpusFormatError: A malformed line; the message names ``file:line``.
            MtbionerError: The file cannot be read or holds no term.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise MtbionerError(f"{path}: no such dictionary file") from None
        except UnicodeDecodeError as exc:
            raise MtbionerError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise MtbionerError(f"{path}: cannot read the dictionary: {exc.strerror or exc}") from None
        terms: dict[str, set[str]] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise CorpusFormatError(
                    path, number, f"expected term<TAB>type, found {len(fields)} tab-separated field(s): {line[:60]!r}"
                )
            term, type_ = fields[0].strip(), fields[1].strip()
            if not term or not _atoms(term, True):
                raise CorpusFormatError(path, number, f"empty term in {line[:60]!r}")
            if not type_:
                raise CorpusFormatError(path, number, f"empty type in {line[:60]!r}")
            terms.setdefault(type_, set()).add(term)
        if not terms:
            raise MtbionerError(f"{path}: no term<TAB>type line in the dictionary file")
        return cls(terms, case_sensitive)

    def merge(self, *others: Dictionary) -> Dictionary:
        """A new dictionary with every term of this one and of ``others`` (types: this one's order, then new ones).

        Raises:
            MtbionerError: The dictionaries disagree on case sensitivity.
        """
        types = list(self.types)
        terms = {t: set(s) for t, s in self.terms.items()}
        for other in others:
            if other.case_sensitive != self.case_sensitive:
                raise MtbionerError("cannot merge a case-sensitive and a case-insensitive dictionary")
            for type_ in other.types:
                if type_ not in terms:
                    types.append(type_)
                    terms[type_] = set()
                terms[type_] |= other.terms[type_]
        return Dictionary(terms, self.case_sensitive, types)

    def prune(self, corpora: Iterable[Corpus], splits: Sequence[str], min_precision: float) -> Dictionary:
        """Drop terms that are mostly *not* an entity of their type where they occur in the given splits.

        A match of a term of type T in a sentence of a corpus that annotates T is *right* when a gold
        T entity has exactly its words. Terms whose share of right matches is below ``min_precision``
        go (terms that never match, or whose type no corpus annotates, stay). Case-insensitive
        ``ALL`` (a leukaemia) is the article "all" a thousand times and goes at any threshold.
        """
        _refuse_test(splits)
        if min_precision <= 0:
            return self
        matcher = self._compiled()
        found: dict[tuple[int, str], int] = {}
        right: dict[tuple[int, str], int] = {}
        for corpus in corpora:
            annotated = {self.types.index(t) for t in corpus.entity_types if t in self.types}
            if not annotated:
                continue
            for split in splits:
                for sentence in corpus.sentences(split):
                    gold = {(t, s, e) for t, s, e in tags_to_spans(sentence.tags)}
                    for channel, start, end in matcher.spans(sentence.tokens):
                        if channel not in annotated:
                            continue
                        key = (channel, matcher.key(sentence.tokens[start:end]))
                        found[key] = found.get(key, 0) + 1
                        if (self.types[channel], start, end) in gold:
                            right[key] = right.get(key, 0) + 1
        drop = {key for key, count in found.items() if right.get(key, 0) / count < min_precision}
        terms = {
            type_: {s for s in strings if (channel, self._key(s)) not in drop}
            for channel, (type_, strings) in enumerate(self.terms.items())
        }
        return Dictionary(terms, self.case_sensitive, self.types)

    # ------------------------------------------------------------------ matching

    @property
    def n_tags(self) -> int:
        """Rows of the match-tag table: no match, then ``B``/``I`` of every type."""
        return 1 + 2 * len(self.types)

    @property
    def tag_names(self) -> list[str]:
        """Name of every match-tag id: ``["O", "B-T0", "I-T0", "B-T1", ...]``."""
        return ["O", *(f"{p}-{t}" for t in self.types for p in "BI")]

    def match(self, words: Sequence[str]) -> list[tuple[int, ...]]:
        """Match-tag ids of every word, one per type (module docstring).

        >>> d = Dictionary({"Disease": ["breast cancer", "cancer"], "Chemical": ["IL-2"]})
        >>> d.match(["Breast", "cancer", "and", "IL", "-", "2", "cancer"])
        [(0, 3), (0, 4), (0, 0), (1, 0), (2, 0), (2, 0), (0, 3)]
        """
        return self._compiled().match(words)

    def spans(self, words: Sequence[str]) -> list[tuple[str, int, int]]:
        """Matches as ``(type, start, end)`` word ranges (half-open), sorted."""
        return [(self.types[c], s, e) for c, s, e in self._compiled().spans(words)]

    def tags(self, words: Sequence[str]) -> list[list[str]]:
        """Readable match tags of every word (``[]`` for no match), for inspection."""
        names = self.tag_names
        return [[names[i] for i in ids if i] for ids in self.match(words)]

    def _compiled(self) -> _Matcher:
        if self._matcher is None:  # built whole, then published: a second thread never sees half of it
            matcher = _Matcher(self.case_sensitive, len(self.types))
            for channel, type_ in enumerate(self.types):
                for term in self.terms[type_]:
                    matcher.add(self._key(term), channel, None)
            self._matcher = matcher
        return self._matcher

    def _key(self, term: str) -> tuple[str, ...]:
        return _atoms(term, self.case_sensitive)

    # ------------------------------------------------------------------ files

    def __len__(self) -> int:
        """Number of (term, type) entries."""
        return sum(len(s) for s in self.terms.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dictionary):
            return NotImplemented
        return (self.types, self.terms, self.case_sensitive) == (other.types, other.terms, other.case_sensitive)

    def counts(self) -> dict[str, int]:
        """Terms per type, in type order."""
        return {t: len(self.terms[t]) for t in self.types}

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "case_sensitive": self.case_sensitive,
            "types": self.types,
            "terms": {t: sorted(self.terms[t]) for t in self.types},
        }

    @classmethod
    def from_dict(cls, data: object, where: str = "dictionary") -> Dictionary:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelFormatError(f"{where}: not an mtbioner dictionary of format {FORMAT}")
        types, terms = data.get("types"), data.get("terms")
        if not isinstance(types, list) or not isinstance(terms, dict) or not all(isinstance(t, str) for t in types):
            raise ModelFormatError(f"{where}: a dictionary needs a list of types and terms per type")
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in terms.values()):
            raise ModelFormatError(f"{where}: terms must be lists of strings per type")
        try:
            return cls(terms, bool(data.get("case_sensitive", False)), types)
        except MtbionerError as exc:
            raise ModelFormatError(f"{where}: {exc}") from exc

    def save(self, folder: str | Path) -> Path:
        """Write ``dictionary.json`` into a (model) folder; returns its path."""
        from ..fileio import write_json

        path = Path(folder) / DICTIONARY_NAME
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Dictionary:
        """Read the ``dictionary.json`` of a model folder (plain JSON; nothing is un-pickled)."""
        path = Path(folder) / DICTIONARY_NAME
        if not path.is_file():
            raise ModelFormatError(f"{folder}: the model reads dictionary evidence but has no {DICTIONARY_NAME}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{path}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, str(path))


def training_matches(
    dictionary: Dictionary,
    corpora: Sequence[Corpus],
    splits: Sequence[str],
    folds: int,
    user_terms: Dictionary | None = None,
) -> dict[str, list[list[tuple[int, ...]]]]:
    """Match tags of every training sentence, each from terms found *outside* its own part of the data.

    If a training sentence were matched against a dictionary that holds its own entities, every
    training entity would be matched and the heads would learn that an entity is always in the
    dictionary; at test time most unseen entities are not, and recall would fall. So the training
    sentences of each corpus are cut into ``folds`` contiguous blocks (neighbouring sentences, often one
    document, stay together), and a sentence in block k is matched with the terms of every *other*
    block and corpus, plus all of ``user_terms``; only terms of ``dictionary`` count (after pruning).
    ``folds=1`` matches every sentence with the whole dictionary.

    Returns:
        Corpus name to the match ids of each sentence, in ``corpus.sentences(split)`` order over ``splits``.
    """
    _refuse_test(splits)
    if folds < 1:
        raise MtbionerError(f"dictionary folds must be at least 1, not {folds}")
    sentences = {c.name: [s for split in splits for s in c.sentences(split)] for c in corpora}
    if folds == 1:
        return {name: [dictionary.match(s.tokens) for s in ss] for name, ss in sentences.items()}
    matcher = _Matcher(dictionary.case_sensitive, len(dictionary.types))
    allowed = {(c, dictionary._key(t)) for c, type_ in enumerate(dictionary.types) for t in dictionary.terms[type_]}
    if user_terms is not None:
        for type_ in user_terms.types:
            if type_ in dictionary.types:
                channel = dictionary.types.index(type_)
                for term in user_terms.terms[type_]:
                    if (channel, dictionary._key(term)) in allowed:
                        matcher.add(dictionary._key(term), channel, None)
    for name, ss in sentences.items():
        for index, sentence in enumerate(ss):
            source = (name, _fold(index, len(ss), folds))
            for type_, start, end in tags_to_spans(sentence.tags):
                if type_ in dictionary.types:
                    channel = dictionary.types.index(type_)
                    key = dictionary._key(" ".join(sentence.tokens[start:end]))
                    if (channel, key) in allowed:
                        matcher.add(key, channel, source)
    return {
        name: [matcher.match(s.tokens, (name, _fold(i, len(ss), folds))) for i, s in enumerate(ss)]
        for name, ss in sentences.items()
    }


def _fold(index: int, total: int, folds: int) -> int:
    return index * folds // max(total, 1)


def _refuse_test(splits: Sequence[str]) -> None:
    if "test" in splits:
        raise MtbionerError(
            "dictionary terms never come from the test split (they would hand the model the answers); "
            "use train, or train and devel"
        )


def _atoms(text: str, case_sensitive: bool) -> tuple[str, ...]:
    """NFKC (and case-folded) atoms of ``text``: the finest tokenization of :mod:`mtbioner.data.text`."""
    text = unicodedata.normalize("NFKC", text)
    if not case_sensitive:
        text = text.casefold()
    return tuple(_TOKEN.findall(text))


class _Matcher:
    """A trie over atoms; a node's payload (under ``""``) maps a channel to the sources of its term.

    A payload value of ``None`` means "always on"; a set of sources means the term counts for
    every sentence except those of a source that is its only one (:func:`training_matches`).
    """

    def __init__(self, case_sensitive: bool, channels: int) -> None:
        self.case_sensitive = case_sensitive
        self.channels = channels
        self.root: dict = {}
        self._cache: dict[str, tuple[str, ...]] = {}

    def add(self, key: tuple[str, ...], channel: int, source: Source | None) -> None:
        if not key:
            return
        node = self.root
        for atom in key:
            node = node.setdefault(atom, {})
        payload = node.setdefault(_END, {})
        if source is None:
            payload[channel] = None
        elif channel not in payload:
            payload[channel] = {source}
        elif payload[channel] is not None:
            payload[channel].add(source)

    def key(self, words: Sequence[str]) -> tuple[str, ...]:
        return tuple(a for w in words for a in self._word_atoms(w))

    def _word_atoms(self, word: str) -> tuple[str, ...]:
        atoms = self._cache.get(word)
        if atoms is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            atoms = self._cache[word] = _atoms(word, self.case_sensitive)
        return atoms

    def spans(self, words: Sequence[str], exclude: Source | None = None) -> list[tuple[int, int, int]]:
        """Leftmost-longest matches per channel, as ``(channel, start word, end word)``, sorted."""
        cache, root = self._cache, self.root
        pieces = [cache.get(w) or self._word_atoms(w) for w in words]
        n = len(pieces)
        free = [0] * self.channels  # per channel: first word not inside an earlier match
        found: list[tuple[int, int, int]] = []
        for start, first in enumerate(pieces):
            node = root.get(first[0]) if first else None
            if node is None:
                continue  # most words: no term starts with their first atom
            best: dict[int, int] = {}
            word, atom = start, 1
            while True:
                if atom == len(pieces[word]):  # at the end of a word: a term ending here may match
                    payload = node.get(_END)
                    if payload:
                        for channel, sources in payload.items():
                            if sources is None or exclude is None or exclude not in sources or len(sources) > 1:
                                best[channel] = word + 1
                    word, atom = word + 1, 0
                    while word < n and not pieces[word]:
                        word += 1  # a word without atoms (cannot happen for corpus words) is skipped
                    if word == n:
                        break
                node = node.get(pieces[word][atom])
                if node is None:
                    break
                atom += 1
            for channel, end in best.items():
                if free[channel] <= start:
                    found.append((channel, start, end))
                    free[channel] = end
        found.sort(key=lambda m: (m[1], m[0]))
        return found

    def match(self, words: Sequence[str], exclude: Source | None = None) -> list[tuple[int, ...]]:
        empty = (0,) * self.channels
        rows: list[tuple[int, ...]] | None = None
        for channel, start, end in self.spans(words, exclude):
            if rows is None:
                rows = [empty] * len(words)
            for word in range(start, end):
                ids = list(rows[word])
                ids[channel] = 1 + 2 * channel + (word > start)
                rows[word] = tuple(ids)
        return rows if rows is not None else [empty] * len(words)
