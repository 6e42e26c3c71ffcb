"""Entity linking: give every tagged entity the id of its best concept in a knowledge base.

A knowledge base (KB) is a UTF-8 TSV file, one concept a line::

    id<TAB>name<TAB>type[<TAB>synonym|synonym|...]

* ``id``: the concept id, written out as is (``HP:0001166``, ``MESH:D003550``, ``NCBIGene:1080``).
* ``name``: the canonical name, returned as ``id_name``.
* ``type``: the concept type (``Disease``, ``Phenotype``, ``Gene``, ``Chemical``...): entities are
  linked only to concepts of a compatible type (see :data:`DEFAULT_TYPE_MAP`).
* ``synonyms`` (optional): other names, separated by ``|`` (:data:`SYNONYM_SEPARATOR`), a
  character that neither MeSH, NCBI Gene nor HPO names contain; empty synonyms are ignored.

Blank lines are skipped. Lines starting with ``#`` are comments; the leading ones of the form
``# key: value`` are kept as the KB's metadata (source, version, licence) and written back by
:meth:`KnowledgeBase.write`. An optional header line ``id<TAB>name<TAB>type[<TAB>synonyms]``
is skipped. An id may appear on several lines (one line per synonym, as some exports have it)
if its type is the same: the first line's name is the canonical one, the other names become
synonyms. Anything else wrong raises :class:`KnowledgeBaseError`, naming the file and line.

Linking (:class:`Linker`), in the order scispaCy's and PubTator's linkers use:

1. *Normalisation* (:func:`normalise`): Unicode NFKC, case folding, Greek letters spelled out
   (``α`` -> ``alpha``), possessive ``'s`` dropped, every run of punctuation, hyphens, slashes
   and white space made one space, roman numerals II-XII (and I-XII after *type*, *class*,
   *grade*, *stage*, *group*, *factor*, *phase*, *complex*) made digits, a letter-digit space
   removed (``IL 6``, ``IL-6`` and ``IL6`` are all ``il6``), and a simple plural ``s`` / ``ies``
   dropped from words of four or more letters.
2. *Dictionary*: a mention whose normalised text equals a normalised name or synonym of a concept
   of an allowed type, spaces ignored (``pre-auricular pit`` = ``preauricular pit``), gets that
   concept with score 1.0 (ties: a canonical name beats a synonym,
   then the earlier line of the KB).
3. *TF-IDF nearest neighbour* for the rest: character 3-grams within word boundaries
   (scikit-learn ``TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3))``) over every normalised
   name and synonym; the mention's nearest string by cosine similarity (a sparse dot product,
   restricted to the allowed types) gives the concept and the score (0..1).
4. Below ``threshold`` no id is given: ``id``, ``id_name`` and ``link_score`` are all ``None``.

The index is built once (:class:`Linker`) and can be saved and loaded (:meth:`Linker.save`,
:meth:`Linker.load`): a folder of JSON, TSV, ``.npy`` and scipy ``.npz`` files, no pickle.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.formats import concept_id
from ..errors import CorpusFormatError, ModelFormatError, RequestError
from ..fileio import atomic_dir, atomic_write

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_TYPE_MAP",
    "LINK_FIELDS",
    "SYNONYM_SEPARATOR",
    "Concept",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "Linker",
    "Match",
    "concept_id",
    "normalise",
]

#: Separates the synonyms of the fourth KB column.
SYNONYM_SEPARATOR = "|"

#: Default score below which an entity gets no id: of 0.30, 0.35 ... 0.90, the one with the best F1 of
#: coverage and precision on the GSC+ development set (``benchmarks/linking.py``, ``docs/linking.md``).
DEFAULT_THRESHOLD = 0.6

#: Bumped whenever :func:`normalise` changes: a saved index built with another version is refused.
NORMALISER_VERSION = 1
#: Version of the saved index layout (:meth:`Linker.save`).
INDEX_FORMAT = 1

#: The entity types of mtbioner's corpora (and common synonyms) mapped to the KB types they may
#: link to. Keys and values are compared after :func:`type_key` (case-folded, letters and digits
#: only), so ``cell_line``, ``Cell Line`` and ``CellLine`` are one type.
DEFAULT_TYPE_MAP: dict[str, tuple[str, ...]] = {
    "gene": ("gene", "protein", "dna", "rna", "geneorgeneproduct", "geneproduct"),
    "protein": ("gene", "protein", "dna", "rna", "geneorgeneproduct", "geneproduct"),
    "dna": ("gene", "protein", "dna", "rna", "geneorgeneproduct", "geneproduct"),
    "rna": ("gene", "protein", "dna", "rna", "geneorgeneproduct", "geneproduct"),
    "geneorgeneproduct": ("gene", "protein", "dna", "rna", "geneorgeneproduct", "geneproduct"),
    "disease": ("disease", "phenotype", "disorder", "diseaseorphenotypicfeature", "phenotypicfeature"),
    "phenotype": ("phenotype", "phenotypicfeature", "diseaseorphenotypicfeature"),
    "diseaseorphenotypicfeature": ("disease", "phenotype", "disorder", "diseaseorphenotypicfeature"),
    "chemical": ("chemical", "drug", "chemicalentity", "simplechemical", "chemicalsubstance"),
    "drug": ("chemical", "drug", "chemicalentity", "simplechemical", "chemicalsubstance"),
    "cellline": ("cellline",),
    "celltype": ("celltype", "cell"),
}

_QUERY_CHUNK = 128  # mentions per sparse product when searching: 128 x strings float32 at most, densified

_GREEK = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "ϵ": "epsilon", "ζ": "zeta",
    "η": "eta", "θ": "theta", "ϑ": "theta", "ι": "iota", "κ": "kappa", "λ": "lambda", "μ": "mu",
    "ν": "nu", "ξ": "xi", "ο": "omicron", "π": "pi", "ρ": "rho", "σ": "sigma", "ς": "sigma",
    "τ": "tau", "υ": "upsilon", "φ": "phi", "ϕ": "phi", "χ": "chi", "ψ": "psi", "ω": "omega",
}  # fmt: skip
_GREEK_RE = re.compile("[" + "".join(_GREEK) + "]")
_POSSESSIVE = re.compile(r"(?<=\w)['’ʼ`´]s\b")
_NON_WORD = re.compile(r"[\W_]+")
_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8",
          "ix": "9", "x": "10", "xi": "11", "xii": "12"}  # fmt: skip
_ROMAN_ALWAYS = frozenset(_ROMAN) - {"i", "v", "x"}  # single letters are digits only after a keyword
_ROMAN_KEYWORDS = frozenset({"type", "class", "grade", "stage", "group", "factor", "phase", "complex"})
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_]) (?=\d)|(?<=\d) (?=[^\W\d_]\b)")
_PLURAL_KEEP = ("ss", "us", "is", "os")


#: The fields :meth:`Linker.link` adds to every entity (``None`` in all three when it finds no concept).
LINK_FIELDS = ("id", "id_name", "link_score")


def normalise(text: str) -> str:
    """The form names and mentions are compared in (see the module docstring); ``""`` if no letters or digits."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _GREEK_RE.sub(lambda m: f" {_GREEK[m.group()]} ", text)
    text = _POSSESSIVE.sub("", text)
    words = _NON_WORD.sub(" ", text).split()
    out: list[str] = []
    for word in words:
        if word in _ROMAN_ALWAYS or (word in _ROMAN and out and out[-1] in _ROMAN_KEYWORDS):
            word = _ROMAN[word]
        elif len(word) >= 4 and word.isalpha():
            if word.endswith("ies") and len(word) >= 5:
                word = word[:-3] + "y"
            elif word.endswith("s") and not word.endswith(_PLURAL_KEEP):
                word = word[:-1]
        out.append(word)
    return _LETTER_DIGIT.sub("", " ".join(out))


def _compact(form: str) -> str:
    """The dictionary key of a normalised form: without spaces, so ``pre-auricular`` finds ``preauricular``."""
    return form.replace(" ", "")


def type_key(kind: str) -> str:
    """A type name compared across KBs and models: case-folded letters and digits only."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", kind).casefold())


class KnowledgeBaseError(CorpusFormatError):
    """A knowledge-base file that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Concept:
    """One KB entry: ``id``, canonical ``name``, ``type`` and other names (``synonyms``)."""

    id: str
    name: str
    type: str
    synonyms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    """The best concept for a mention: ``method`` is ``"exact"`` (dictionary) or ``"tfidf"``."""

    id: str
    name: str
    type: str
    score: float
    method: str


@dataclass
class KnowledgeBase:
    """Concepts in file order, with the ``# key: value`` metadata of the file they came from.

    Example:
        >>> kb = KnowledgeBase([Concept("D1", "Cystic fibrosis", "Disease", ("mucoviscidosis",))])
        >>> kb["D1"].synonyms
        ('mucoviscidosis',)
    """

    concepts: list[Concept]
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_id = {c.id: c for c in self.concepts}
        if len(self._by_id) != len(self.concepts):
            seen: set[str] = set()
            repeated = next(c.id for c in self.concepts if c.id in seen or seen.add(c.id))
            raise ValueError(f"concept id {repeated!r} appears twice")

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts)

    def __getitem__(self, concept_id: str) -> Concept:
        return self._by_id[concept_id]

    def __contains__(self, concept_id: object) -> bool:
        return concept_id in self._by_id

    @property
    def types(self) -> list[str]:
        """The concept types, in order of first appearance."""
        return list(dict.fromkeys(c.type for c in self.concepts))

    @classmethod
    def read(cls, path: str | Path) -> KnowledgeBase:
        """Read a KB TSV file (format in the module docstring).

        Raises:
            KnowledgeBaseError: A line with fewer than 3 or more than 4 columns, an empty id, name
                or type, a name without letters or digits, an id repeated with another type, or
                bytes that are not UTF-8; the message names ``file:line``.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise KnowledgeBaseError(path, None, f"cannot read the knowledge base: {error.strerror}") from None
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        names: dict[str, list[str]] = {}
        kinds: dict[str, tuple[str, int]] = {}
        metadata: dict[str, str] = {}
        in_preamble = True
        for number, line_bytes in enumerate(raw.split(b"\n"), 1):
            try:
                line = line_bytes.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError as error:
                raise KnowledgeBaseError(path, number, f"not UTF-8 (byte {error.start + 1} of the line)") from None
            if not line.strip():
                continue
            if line.startswith("#"):
                key, sep, value = line[1:].partition(": ")
                if in_preamble and sep and key.strip() and "\t" not in key:
                    metadata[key.strip()] = value.strip()
                continue
            in_preamble = False
            fields = line.split("\t")
            if not names and [f.strip().casefold() for f in fields[:3]] == ["id", "name", "type"]:
                continue  # header line
            if not 3 <= len(fields) <= 4:
                raise KnowledgeBaseError(
                    path, number, f"expected id<TAB>name<TAB>type[<TAB>synonyms], found {len(fields)} columns"
                )
            concept_id, name, kind = (f.strip() for f in fields[:3])
            for label, value in (("id", concept_id), ("name", name), ("type", kind)):
                if not value:
                    raise KnowledgeBaseError(path, number, f"empty {label}")
            if not normalise(name):
                raise KnowledgeBaseError(path, number, f"name {name!r} has no letters or digits")
            synonyms = [s.strip() for s in fields[3].split(SYNONYM_SEPARATOR)] if len(fields) == 4 else []
            if concept_id in kinds:
                first_kind, first_line = kinds[concept_id]
                if first_kind != kind:
                    raise KnowledgeBaseError(
                        path,
                        number,
                        f"id {concept_id!r} has type {kind!r} here but {first_kind!r} on line {first_line}",
                    )
                names[concept_id].extend([name, *synonyms])
            else:
                kinds[concept_id] = (kind, number)
                names[concept_id] = [name, *synonyms]
        concepts = []
        for concept_id, (kind, _) in kinds.items():
            name, *others = names[concept_id]
            synonyms = tuple(dict.fromkeys(s for s in others if s and s != name))
            concepts.append(Concept(concept_id, name, kind, synonyms))
        if not concepts:
            raise KnowledgeBaseError(path, None, "no concepts (expected id<TAB>name<TAB>type[<TAB>synonyms] lines)")
        return cls(concepts, metadata)

    def write(self, path: str | Path) -> None:
        """Write the KB as TSV (metadata as leading ``# key: value`` lines), atomically.

        Raises:
            ValueError: A field holding a tab or line break, or a synonym holding ``|``.
        """
        with atomic_write(path) as handle:
            for key, value in self.metadata.items():
                if _LINE_BREAK.search(f"{key}{value}") or ":" in key:
                    raise ValueError(f"metadata {key!r}: a key holding ':' or a line break")
                handle.write(f"# {key}: {value}\n")
            for c in self.concepts:
                bad = next(
                    (f for f in (c.id, c.name, c.type, *c.synonyms) if _LINE_BREAK.search(f) or "\t" in f), None
                )
                if bad is not None:
                    raise ValueError(f"concept {c.id!r}: {bad!r} holds a tab or line break")
                if any(SYNONYM_SEPARATOR in s for s in c.synonyms):
                    raise ValueError(f"concept {c.id!r}: a synonym holds {SYNONYM_SEPARATOR!r}")
                row = [c.id, c.name, c.type] + ([SYNONYM_SEPARATOR.join(c.synonyms)] if c.synonyms else [])
                handle.write("\t".join(row) + "\n")


_LINE_BREAK = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


class Linker:
    """Links mentions to the concepts of a :class:`KnowledgeBase`; built once, reused for every text.

    Args:
        kb: The concepts.
        threshold: Score (0..1) below which a mention gets no id.
        type_map: Entity type -> KB types it may link to (default :data:`DEFAULT_TYPE_MAP`). An
            entity type not in the map links to KB concepts of the same type if there are any;
            a type the map knows links only to the mapped types (an HPO KB has no chemicals, so
            a ``Chemical`` gets no id). When none of the KB's types appears in the map (say a
            MeSH export typed ``MeSH``), or the entity has no type, the whole KB is searched.

    Example:
        >>> kb = KnowledgeBase([Concept("D1", "Cystic fibrosis", "Disease"), Concept("G1", "CFTR", "Gene")])
        >>> linker = Linker(kb)
        >>> linker.link([{"text": "cystic fibrosi", "type": "Disease"}])[0]["id"]
        'D1'
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        threshold: float = DEFAULT_THRESHOLD,
        type_map: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._setup(kb, threshold, type_map)
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(**self._vectorizer_options())
        self._matrix = self._vectorizer.fit_transform(self._strings).tocsr() if self._strings else None

    def _setup(self, kb: KnowledgeBase, threshold: float, type_map: Mapping[str, Sequence[str]] | None) -> None:
        self.kb = kb
        self.threshold = threshold
        source = DEFAULT_TYPE_MAP if type_map is None else type_map
        self.type_map = {type_key(k): tuple(dict.fromkeys(type_key(v) for v in vs)) for k, vs in source.items()}
        self._kb_type_keys = list(dict.fromkeys(type_key(c.type) for c in kb.concepts))
        type_code = {k: i for i, k in enumerate(self._kb_type_keys)}
        self._concept_type = np.array([type_code[type_key(c.type)] for c in kb.concepts], dtype=np.int32)
        mapped = {v for vs in self.type_map.values() for v in vs}
        self._kb_types_known = any(k in mapped for k in self._kb_type_keys)
        strings: list[str] = []
        owner: list[int] = []
        preferred: list[bool] = []
        self._exact: dict[str, list[int]] = {}
        for index, concept in enumerate(kb.concepts):
            seen: set[str] = set()
            for rank, name in enumerate((concept.name, *concept.synonyms)):
                form = normalise(name)
                if not form or form in seen:
                    continue
                seen.add(form)
                self._exact.setdefault(_compact(form), []).append(len(strings))
                strings.append(form)
                owner.append(index)
                preferred.append(rank == 0)
        self._strings = strings
        self._owner = np.array(owner, dtype=np.int64)
        self._preferred = np.array(preferred, dtype=bool)
        for candidates in self._exact.values():  # canonical names first, then file order
            candidates.sort(key=lambda s: (not self._preferred[s], self._owner[s]))
        self._string_type = self._concept_type[self._owner] if strings else np.zeros(0, dtype=np.int32)
        self._submatrices: dict[tuple[int, ...] | None, tuple[np.ndarray | None, object]] = {}

    @staticmethod
    def _vectorizer_options() -> dict:
        return {"analyzer": "char_wb", "ngram_range": (3, 3), "lowercase": False, "dtype": np.float32}

    @property
    def threshold(self) -> float:
        """Score (0..1) below which :meth:`link` gives no id; settable."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = _checked_threshold(value)

    def __len__(self) -> int:
        return len(self.kb)

    def __repr__(self) -> str:
        return f"Linker({len(self.kb)} concepts, {len(self._strings)} names, threshold={self.threshold})"

    # -- types ---------------------------------------------------------------------------------

    def allowed_types(self, entity_type: str | None) -> tuple[int, ...] | None:
        """Codes of the KB types an entity of ``entity_type`` may link to; ``None``: all of them."""
        if not entity_type or not self._kb_types_known:
            return None
        key = type_key(entity_type)
        if key in self.type_map:
            wanted = self.type_map[key]
        elif key in self._kb_type_keys:
            wanted = (key,)
        else:
            return None
        return tuple(i for i, k in enumerate(self._kb_type_keys) if k in wanted)

    def _rows_for(self, allowed: tuple[int, ...] | None):
        """The string rows of the allowed types (``None``: all) and their matrix, transposed to CSR once."""
        cached = self._submatrices.get(allowed)
        if cached is None:
            if self._matrix is None:
                cached = (None, None)
            elif allowed is None:
                cached = (None, self._matrix.T.tocsr())
            else:
                rows = np.flatnonzero(np.isin(self._string_type, allowed))
                cached = (rows, self._matrix[rows].T.tocsr() if len(rows) else None)
            self._submatrices[allowed] = cached
        return cached

    # -- linking -------------------------------------------------------------------------------

    def match(
        self, mentions: Sequence[str], types: Sequence[str | None] | None = None, threshold: float | None = None
    ) -> list[Match | None]:
        """The best concept of each mention, or ``None`` when none scores ``threshold`` or more.

        Args:
            mentions: Entity texts.
            types: The entity type of each mention (``None``: search every KB type).
            threshold: Overrides the linker's threshold (``0.0``: always the nearest concept).
        """
        threshold = self.threshold if threshold is None else _checked_threshold(threshold)
        if isinstance(mentions, str):
            raise RequestError("mentions must be a list of strings, not one string")
        if types is None:
            types = [None] * len(mentions)
        if len(types) != len(mentions):
            raise RequestError(f"{len(mentions)} mentions but {len(types)} types")
        forms = [normalise(m) if isinstance(m, str) else None for m in mentions]
        for i, form in enumerate(forms):
            if form is None:
                raise RequestError(f"mention {i} is {type(mentions[i]).__name__}, not a string")
        # Each distinct (form, allowed types) is resolved once: documents repeat their mentions.
        allowed_of = {kind: self.allowed_types(kind) for kind in set(types)}
        keys = [(form, allowed_of[kind]) for form, kind in zip(forms, types, strict=True)]
        best: dict[tuple[str, tuple[int, ...] | None], tuple[int, float, str] | None] = {}
        fuzzy: dict[tuple[int, ...] | None, list[str]] = {}
        for key in dict.fromkeys(keys):
            form, allowed = key
            if not form:
                best[key] = None
                continue
            hit = next(
                (s for s in self._exact.get(_compact(form), ()) if allowed is None or self._string_type[s] in allowed),
                None,
            )
            if hit is not None:
                best[key] = (int(self._owner[hit]), 1.0, "exact")
            else:
                fuzzy.setdefault(allowed, []).append(form)
        for allowed, group in fuzzy.items():
            for form, found in zip(group, self._nearest(group, allowed), strict=True):
                best[(form, allowed)] = found
        out: list[Match | None] = []
        for key in keys:
            found = best[key]
            if found is None or found[1] < threshold:
                out.append(None)
            else:
                concept = self.kb.concepts[found[0]]
                out.append(Match(concept.id, concept.name, concept.type, found[1], found[2]))
        return out

    def _nearest(self, forms: list[str], allowed: tuple[int, ...] | None) -> list[tuple[int, float, str] | None]:
        rows, transposed = self._rows_for(allowed)
        if transposed is None:
            return [None] * len(forms)
        queries = self._vectorizer.transform(forms)
        found: list[tuple[int, float, str] | None] = []
        for start in range(0, len(forms), _QUERY_CHUNK):
            scores = (queries[start : start + _QUERY_CHUNK] @ transposed).toarray()
            top = scores.argmax(axis=1)
            for row, column in enumerate(top):
                score = float(scores[row, column])
                if score <= 0.0:
                    found.append(None)
                    continue
                string = int(column if rows is None else rows[column])
                found.append((int(self._owner[string]), min(1.0, score), "tfidf"))
        return found

    def link(self, entities: Iterable[Mapping], threshold: float | None = None) -> list[dict]:
        """Copies of ``entities`` (dicts with ``text`` and ``type``) with ``id``, ``id_name`` and ``link_score``.

        An entity whose best concept scores below the threshold gets ``None`` in all three.
        """
        entities = list(entities)
        for i, e in enumerate(entities):
            if not isinstance(e, Mapping) or not isinstance(e.get("text"), str):
                raise RequestError(f"entity {i} has no text to link")
        matches = self.match([e["text"] for e in entities], [e.get("type") for e in entities], threshold)
        return [
            {**e, "id": m.id, "id_name": m.name, "link_score": round(m.score, 4)}
            if m is not None
            else {**e, "id": None, "id_name": None, "link_score": None}
            for e, m in zip(entities, matches, strict=True)
        ]

    def link_documents(
        self, documents: Sequence[Sequence[Mapping]], threshold: float | None = None
    ) -> list[list[dict]]:
        """:meth:`link` for the entity lists of many documents, vectorised together."""
        flat = self.link([e for doc in documents for e in doc], threshold)
        out, start = [], 0
        for doc in documents:
            out.append(flat[start : start + len(doc)])
            start += len(doc)
        return out

    # -- persistence ---------------------------------------------------------------------------

    def _fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self._strings).encode("utf-8")).hexdigest()

    def save(self, folder: str | Path) -> None:
        """Write the KB and its built index to ``folder`` (replaced as a whole)."""
        from scipy import sparse

        with atomic_dir(folder) as tmp:
            self.kb.write(tmp / "kb.tsv")
            vocabulary = self._vectorizer.get_feature_names_out().tolist() if self._matrix is not None else []
            settings = {
                "format": INDEX_FORMAT,
                "normaliser": NORMALISER_VERSION,
                "threshold": self.threshold,
                "concepts": len(self.kb),
                "strings": len(self._strings),
                "strings_sha256": self._fingerprint(),
                "vectorizer": {"analyzer": "char_wb", "ngram_range": [3, 3]},
                "vocabulary": vocabulary,
            }
            (tmp / "linker.json").write_text(json.dumps(settings, ensure_ascii=False) + "\n", encoding="utf-8")
            if self._matrix is not None:
                sparse.save_npz(tmp / "tfidf.npz", self._matrix)
                np.save(tmp / "idf.npy", self._vectorizer.idf_.astype(np.float64), allow_pickle=False)

    @classmethod
    def load(
        cls, folder: str | Path, threshold: float | None = None, type_map: Mapping[str, Sequence[str]] | None = None
    ) -> Linker:
        """Open a folder written by :meth:`save` (``threshold`` overrides the saved one).

        The type map is not part of the index: ``type_map`` is used as in :class:`Linker`.

        Raises:
            ModelFormatError: Not such a folder, or one written by another index or normaliser version.
        """
        from scipy import sparse
        from sklearn.feature_extraction.text import TfidfVectorizer

        folder = Path(folder)
        try:
            settings = json.loads((folder / "linker.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelFormatError(f"{folder}: not a saved linker (linker.json: {error})") from None
        if settings.get("format") != INDEX_FORMAT or settings.get("normaliser") != NORMALISER_VERSION:
            raise ModelFormatError(
                f"{folder}: linker index format {settings.get('format')}/normaliser {settings.get('normaliser')} "
                f"is not {INDEX_FORMAT}/{NORMALISER_VERSION}; rebuild it from its kb.tsv"
            )
        self = cls.__new__(cls)
        kb = KnowledgeBase.read(folder / "kb.tsv")
        self._setup(kb, settings["threshold"] if threshold is None else threshold, type_map)
        if len(self._strings) != settings["strings"] or self._fingerprint() != settings["strings_sha256"]:
            raise ModelFormatError(f"{folder}: kb.tsv does not match the saved index; rebuild it")
        vocabulary = settings["vocabulary"]
        self._vectorizer = TfidfVectorizer(**self._vectorizer_options(), vocabulary=vocabulary or None)
        self._matrix = None
        if self._strings:
            try:
                self._matrix = sparse.load_npz(folder / "tfidf.npz").tocsr().astype(np.float32)
                idf = np.load(folder / "idf.npy", allow_pickle=False)
            except (OSError, ValueError) as error:
                raise ModelFormatError(f"{folder}: unreadable index ({error})") from None
            if self._matrix.shape != (len(self._strings), len(vocabulary)) or idf.shape != (len(vocabulary),):
                raise ModelFormatError(f"{folder}: index shape {self._matrix.shape} does not match its vocabulary")
            self._vectorizer.idf_ = idf
        return self


def _checked_threshold(value: object) -> float:
    """A link threshold is a score: 0..1 (above 1 nothing links, below 0 everything would)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise RequestError(f"threshold must be a number between 0 and 1, not {value!r}")
    return float(value)
