"""Linking wired through ``Tagger``, ``mtbioner tag`` (every output format with an id field) and the server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mtbioner.cli import main
from mtbioner.data.bioc_format import read_bioc
from mtbioner.data.formats import read_brat_ann, read_pubtator
from mtbioner.runtime.linking import KnowledgeBase, Linker
from mtbioner.runtime.tagging import Tagger
from tests.test_tagging import EXAMPLE, RULES, RuleBackend

KB = (
    "G672\tBRCA1\tGene\tbreast cancer 1|BRCC1\n"
    "D001943\tbreast neoplasms\tDisease\tbreast cancer\n"
    "C027\tcisplatine\tChemical\n"  # not the mention's spelling: found by TF-IDF, with a score under 1
)


@pytest.fixture()
def kb_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MTBIONER_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "kb.tsv"
    path.write_text(KB, encoding="utf-8")
    return path


@pytest.fixture()
def tagger(tiny_encoder: Path, kb_file: Path) -> Tagger:
    from transformers import AutoTokenizer

    backend = RuleBackend(AutoTokenizer.from_pretrained(str(tiny_encoder)), RULES)
    return Tagger(backend, linker=Linker(KnowledgeBase.read(kb_file)))


def ids(entities: list[dict]) -> dict[str, str | None]:
    return {f"{e['text']}/{e['type']}": e["id"] for e in entities}


def test_tagger_links_every_entity(tagger: Tagger) -> None:
    found = ids(tagger(EXAMPLE))
    assert found["BRCA1/Gene"] == "G672"
    assert found["breast cancer/Disease"] == "D001943"
    assert found["cisplatin/Chemical"] == "C027"
    assert found["breast/Gene"] is None  # a gene named "breast" is nothing in this KB
    assert all(e["link_score"] is None or 0 <= e["link_score"] <= 1 for e in tagger(EXAMPLE))
    unlinked = Tagger(tagger.backend)(EXAMPLE)
    assert all("id" not in e for e in unlinked)


def _tag(monkeypatch, capsys, tagger: Tagger, *args) -> tuple[int, str, str]:
    asked = []

    def load(cls, model_dir=None, batch_size=32, link=None):
        asked.append(link)
        return tagger if link else Tagger(tagger.backend)

    monkeypatch.setattr(Tagger, "load", classmethod(load))
    monkeypatch.setattr(sys, "argv", ["mtbioner", "tag", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return done.value.code, out, err


def test_every_output_format_carries_the_concept(
    tagger: Tagger, kb_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code, out, err = _tag(monkeypatch, capsys, tagger, EXAMPLE, "--link", kb_file)
    assert code == 0, err
    assert ids(json.loads(out)["entities"])["BRCA1/Gene"] == "G672"

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "d1", "text": EXAMPLE}) + "\n", encoding="utf-8")
    outputs = {"pubtator": tmp_path / "o.pubtator", "brat": tmp_path / "brat", "bioc-json": tmp_path / "o.bioc.json"}
    for fmt, path in outputs.items():
        args = ["--input", source, "--output", path, "--format", fmt, "--link", kb_file, "--no-progress"]
        assert _tag(monkeypatch, capsys, tagger, tmp_path / "m", *args)[0] == 0
    [pubtator] = read_pubtator(outputs["pubtator"])
    assert {e["text"]: e["identifier"] for e in pubtator["entities"]}["BRCA1"] == "G672"
    assert {e["text"]: e["identifier"] for e in pubtator["entities"]}["breast"] == "-"
    brat = read_brat_ann(outputs["brat"] / "d1.ann")
    assert {e["text"]: e.get("identifier") for e in brat}["cisplatin"] == "C027"
    assert all(e["id"].startswith("T") for e in brat)  # the T-ids stay annotation ids
    [bioc] = read_bioc(outputs["bioc-json"])
    assert {e["text"]: e.get("identifier") for e in bioc["entities"]}["breast cancer"] == "D001943"
    assert all(e["id"].startswith("T") for e in bioc["entities"])


def test_server_links_and_describes_its_knowledge_base(tagger: Tagger, kb_file: Path) -> None:
    import httpx

    from mtbioner.apps.serving import ServeSettings, create_app, running

    plain = Tagger(tagger.backend)
    with running(create_app(plain, ServeSettings(link=str(kb_file)))) as url:
        linked = httpx.post(f"{url}/v1/tag", json={"text": EXAMPLE}).json()["entities"]
        unlinked = httpx.post(f"{url}/v1/tag", json={"text": EXAMPLE, "link": False}).json()["entities"]
        strict = httpx.post(f"{url}/v1/tag", json={"text": EXAMPLE, "link_threshold": 1.0}).json()["entities"]
        info = httpx.get(f"{url}/v1/model").json()
    assert ids(linked)["BRCA1/Gene"] == "G672"
    assert all(e.get("id") is None and e.get("link_score") is None for e in unlinked)
    assert sum(e["id"] is not None for e in strict) < sum(e["id"] is not None for e in linked)
    assert info["linking"]["concepts"] == 3 and info["linking"]["knowledge_base"] == str(kb_file)
