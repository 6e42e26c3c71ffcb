"""``mtbioner compare``: agreement, gold scores, disagreements, the page and the summary.

Exact numbers come from rule backends (``tests.test_tagging.RuleBackend``) whose entities are
known by hand; gold scores are also checked against ``evaluate_corpus`` on a tiny real model, and
the page is opened in headless Chromium (helpers of ``tests.test_browser``).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest
import torch
import typer

from mtbioner.data.corpus import read_corpus
from mtbioner.errors import MtbionerError
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.evaluation import evaluate_corpus, score
from mtbioner.runtime.tagging import Tagger
from mtbioner.study.compare import Agreement, Comparison, Unanimity, compare_corpus, compare_texts, score_spans
from mtbioner.study.compare_report import format_summary, render_html, render_markdown, write_reports
from tests.test_tagging import RuleBackend

# Two rule models that disagree in known places; C finds exactly what A finds.
RULES_A = {
    "rules": {
        "kras": ("B-GENE", 6.0),
        "myc": ("B-GENE", 6.0),
        "aspirin": ("B-CHEM", 6.0),
        "sodium": ("B-CHEM", 6.0),
        "chloride": ("I-CHEM", 6.0),
    }
}
RULES_B = {
    "rules": {"kras": ("B-GENE", 6.0), "tp53": ("B-GENE", 6.0), "aspirin": ("B-CHEM", 6.0), "sodium": ("B-CHEM", 6.0)}
}
TEXTS = [
    "KRAS binds MYC. Aspirin was given.",
    "Sodium chloride and TP53 in <script>alert(1)</script> cells.",
    "Nothing here.",
]

# A handmade corpus: the gold entities, and two models with a head named like it.
HANDMADE = """KRAS\tB-GENE
binds\tO
MYC\tB-GENE
.\tO

tumor\tB-GENE
necrosis\tI-GENE
factor\tI-GENE
rose\tO
.\tO

aspirin\tB-CHEM
reduced\tO
pain\tO
.\tO
"""
GOLD_A = {
    "handmade": {
        "kras": ("B-GENE", 6.0),
        "myc": ("B-GENE", 6.0),
        "tumor": ("B-GENE", 6.0),
        "necrosis": ("I-GENE", 6.0),
        "aspirin": ("B-CHEM", 6.0),
    }
}
GOLD_B = {"handmade": {"kras": ("B-GENE", 6.0), "factor": ("B-GENE", 6.0), "rose": ("B-CHEM", 6.0)}}
OTHER_HEAD = {"other": {"kras": ("B-GENE", 6.0)}}


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_encoder))


@pytest.fixture(scope="module")
def texts_comparison(tokenizer) -> Comparison:
    taggers = {name: Tagger(RuleBackend(tokenizer, rules)) for name, rules in [("A", RULES_A), ("B", RULES_B)]}
    taggers["C"] = Tagger(RuleBackend(tokenizer, RULES_A))
    return compare_texts(taggers, TEXTS, ["d1", "d2", "d3"], source="input texts.txt")


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("corpora") / "handmade"
    folder.mkdir()
    (folder / "test.tsv").write_text(HANDMADE, encoding="utf-8")
    return read_corpus(folder, splits=["test"])


@pytest.fixture(scope="module")
def gold_comparison(tokenizer, handmade) -> Comparison:
    taggers = {
        name: Tagger(RuleBackend(tokenizer, r)) for name, r in [("A", GOLD_A), ("B", GOLD_B), ("C", OTHER_HEAD)]
    }
    return compare_corpus(taggers, handmade, "test")


def keys(entities) -> list[tuple[int, int, str, str]]:
    return [(e.start, e.end, e.type, e.text) for e in entities]


# --- agreement on raw texts ------------------------------------------------------------------------


def test_sentences_are_the_taggers_with_offsets_into_each_sentence(texts_comparison: Comparison) -> None:
    c = texts_comparison
    assert [(s.label, s.text) for s in c.sentences] == [
        ("d1.1", "KRAS binds MYC."),
        ("d1.2", "Aspirin was given."),
        ("d2", TEXTS[1]),
        ("d3", "Nothing here."),
    ]
    first, second, third, _ = c.sentences
    assert keys(first.found["A"]) == [(0, 4, "GENE", "KRAS"), (11, 14, "GENE", "MYC")]
    assert keys(first.found["B"]) == [(0, 4, "GENE", "KRAS")]
    assert keys(second.found["B"]) == [(0, 7, "CHEM", "Aspirin")]
    assert keys(third.found["A"]) == [(0, 15, "CHEM", "Sodium chloride")]
    assert keys(third.found["B"]) == [(0, 6, "CHEM", "Sodium"), (20, 24, "GENE", "TP53")]
    assert c.heads == {"A": ["rules"], "B": ["rules"], "C": ["rules"]}


def test_agreement_per_type_is_exact(texts_comparison: Comparison) -> None:
    c = texts_comparison
    assert c.types == ["CHEM", "GENE"]
    assert c.counts() == {"A": {"GENE": 2, "CHEM": 2}, "B": {"GENE": 2, "CHEM": 2}, "C": {"GENE": 2, "CHEM": 2}}
    pairs = c.pairwise()
    assert list(pairs) == [("A", "B"), ("A", "C"), ("B", "C")]
    overall, per_type = pairs[("A", "B")]
    assert overall == Agreement(both=2, only_a=2, only_b=2) and overall.f1 == 50.0
    assert per_type == {"CHEM": Agreement(1, 1, 1), "GENE": Agreement(1, 1, 1)}
    assert pairs[("A", "C")][0] == Agreement(4, 0, 0) and pairs[("A", "C")][0].f1 == 100.0
    assert pairs[("B", "C")][1]["GENE"] == Agreement(1, 1, 1)  # B's TP53 against C's MYC
    every, by_type = c.unanimity()
    assert every == Unanimity(2, 6) and every.percent == pytest.approx(33.3333)
    assert by_type == {"CHEM": Unanimity(1, 3), "GENE": Unanimity(1, 3)}


def test_agreement_of_types_nobody_found_is_undefined_not_zero() -> None:
    assert Agreement().f1 is None and Unanimity().percent is None
    assert Agreement(0, 3, 0).f1 == 0.0


def test_disagreements_are_the_sentences_whose_entity_sets_differ(texts_comparison: Comparison) -> None:
    found = texts_comparison.disagreements
    assert [s.label for s in found] == ["d1.1", "d2"]
    assert found[0].disputed() == {(11, 14, "GENE")}
    assert found[1].disputed() == {(0, 15, "CHEM"), (0, 6, "CHEM"), (20, 24, "GENE")}
    assert found[1].disputed_types() == ["CHEM", "GENE"]


def test_fewer_than_two_models_is_a_user_error(tokenizer) -> None:
    with pytest.raises(MtbionerError, match="at least two models"):
        compare_texts({"A": Tagger(RuleBackend(tokenizer, RULES_A))}, TEXTS)


# --- scores against gold ---------------------------------------------------------------------------


def test_gold_scores_are_exact(gold_comparison: Comparison) -> None:
    c = gold_comparison
    assert [s.text for s in c.sentences] == [
        "KRAS binds MYC .",
        "tumor necrosis factor rose .",
        "aspirin reduced pain .",
    ]
    assert keys(c.sentences[1].gold) == [(0, 21, "GENE", "tumor necrosis factor")]
    a, b = c.scores["A"], c.scores["B"]
    assert (a.overall.precision, a.overall.recall, a.overall.f1, a.overall.support, a.predicted) == (75, 75, 75, 4, 4)
    assert a.types["GENE"].f1 == pytest.approx(66.6667) and a.types["CHEM"].f1 == 100.0
    assert (b.overall.precision, b.overall.recall, b.overall.f1) == (
        pytest.approx(33.3333),
        25.0,
        pytest.approx(28.5714),
    )
    assert (b.types["GENE"].precision, b.types["GENE"].recall, b.types["GENE"].f1) == (50, pytest.approx(33.3333), 40)
    assert (b.types["CHEM"].f1, b.types["CHEM"].support) == (0.0, 1)
    assert c.heads == {"A": ["handmade"], "B": ["handmade"], "C": ["other"]}


def test_a_model_without_the_corpus_head_is_shown_and_not_scored(gold_comparison: Comparison) -> None:
    c = gold_comparison
    assert "C" not in c.scores
    assert c.unscored == {"C": "no head 'handmade' (heads: other)"}
    assert keys(c.sentences[0].found["C"]) == [(0, 4, "GENE", "KRAS")]
    summary = render_markdown(c)
    assert "not scored: no head 'handmade' (heads: other)" in summary


def test_f1_differences_are_the_paired_bootstrap_of_the_tag_sequences(gold_comparison: Comparison) -> None:
    from mtbioner.study.bootstrap import paired_bootstrap

    differences = gold_comparison.differences()
    assert list(differences) == ["B"]  # against A, the first scored model; C has no head to score
    d = differences["B"]
    assert d.difference.value == pytest.approx(28.5714 - 75.0, abs=1e-3)
    # the same comparison from the IOB2 tags by the route the study's reports take
    gold = [["B-GENE", "O", "B-GENE", "O"], ["B-GENE", "I-GENE", "I-GENE", "O", "O"], ["B-CHEM", "O", "O", "O"]]
    tags_a = [["B-GENE", "O", "B-GENE", "O"], ["B-GENE", "I-GENE", "O", "O", "O"], ["B-CHEM", "O", "O", "O"]]
    tags_b = [["B-GENE", "O", "O", "O"], ["O", "O", "B-GENE", "B-CHEM", "O"], ["O", "O", "O", "O"]]
    expected = paired_bootstrap(gold, tags_b, tags_a)
    assert d.to_dict() == expected.to_dict()
    assert d.difference.low < d.difference.value < d.difference.high and d.verdict == expected.verdict
    summary = render_markdown(gold_comparison)
    assert "### F1 differences" in summary
    row = f"| B | {d.difference.value:+.2f} | [{d.difference.low:+.2f}, {d.difference.high:+.2f}] | {d.verdict} | 3 |"
    assert row in summary
    assert "F1 B - A: " in format_summary(gold_comparison)
    assert '<table id="differences">' in render_html(gold_comparison)


def test_no_differences_without_two_scored_models(texts_comparison: Comparison) -> None:
    assert texts_comparison.differences() == {}
    assert "F1 differences" not in render_markdown(texts_comparison)


def test_span_scores_equal_the_evaluation_scorer() -> None:
    gold = [["B-GENE", "I-GENE", "O", "B-CHEM"], ["O", "B-GENE"], ["B-CHEM", "O"]]
    predicted = [["B-GENE", "O", "O", "B-CHEM"], ["O", "B-GENE"], ["B-GENE", "O"]]
    from mtbioner.data.schemes import tags_to_spans

    def spans(tags):
        return frozenset((s, e, t) for t, s, e in tags_to_spans(tags))

    ours = score_spans([spans(g) for g in gold], [spans(p) for p in predicted])
    assert ours == score(gold, predicted)


def scaled_model(encoder: Path, seed: int) -> MultiTaskTagger:
    """A random tiny model with a ``toy_gene`` head scaled up, so that it finds many (wrong) entities."""
    torch.manual_seed(seed)
    model = MultiTaskTagger.from_encoder({"toy_gene": ["B-GENE", "I-GENE", "O"]}, encoder, max_length=16)
    with torch.no_grad():
        model.head("toy_gene").classifier.weight.mul_(10.0)
    return model.eval()


def test_gold_scores_equal_evaluate_corpus_on_a_real_model(tiny_encoder: Path, toy_dir: Path) -> None:
    corpus = read_corpus(toy_dir / "toy_gene", splits=["test"])
    models = {"one": scaled_model(tiny_encoder, 1), "two": scaled_model(tiny_encoder, 2)}
    c = compare_corpus({name: Tagger(m) for name, m in models.items()}, corpus, "test")
    for name, model in models.items():
        expected, _ = evaluate_corpus(model, corpus, "test")
        got = c.scores[name]
        assert (got.overall, got.types, got.predicted, got.sentences) == (
            expected.overall,
            expected.types,
            expected.predicted,
            expected.sentences,
        )
        assert expected.predicted > 0


# --- the page and the summary ----------------------------------------------------------------------


def test_html_escapes_text_and_needs_nothing_from_outside(texts_comparison: Comparison) -> None:
    page = render_html(texts_comparison)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # the page's own, inline
    assert "http://" not in page and "https://" not in page and " src=" not in page
    assert "default-src 'none'" in page


def test_html_escapes_model_names_and_types(tokenizer) -> None:
    evil = '"><img src=x onerror=alert(1)>'
    rules = {"h": {"kras": ("B-<b>T</b>", 6.0)}}
    taggers = {evil: Tagger(RuleBackend(tokenizer, rules)), "plain": Tagger(RuleBackend(tokenizer, RULES_B))}
    page = render_html(compare_texts(taggers, ["KRAS rose."]))
    assert evil not in page and "<b>T</b>" not in page and "<img" not in page
    assert "&lt;b&gt;T&lt;/b&gt;" in page


def test_markdown_summary_has_the_tables_and_the_first_disagreements(texts_comparison, tmp_path: Path) -> None:
    html_file, md_file = tmp_path / "out" / "c.html", tmp_path / "out" / "c.md"
    write_reports(texts_comparison, html_file, md_file, max_examples=1)
    summary = md_file.read_text(encoding="utf-8")
    assert html_file.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert "| all types | 4 | 4 | 4 | 2 | 6 | 33.33 |" in summary
    assert "| A vs B | GENE | 1 | 1 | 1 | 50.00 |" in summary
    assert "| A vs C | all types | 4 | 0 | 0 | 100.00 |" in summary
    assert "## Disagreements (first 1 of 2)" in summary
    assert "**d1.1**, differs in GENE" in summary
    assert "| A | KRAS (GENE), **MYC (GENE)** |" in summary
    assert "| B | KRAS (GENE) |" in summary
    assert "d2" not in summary.split("## Disagreements")[1]  # only the first one
    assert "Scores against gold" not in summary
    full = render_markdown(texts_comparison)
    assert "\\<script\\>alert(1)\\</script\\>" in full  # escaped, so no renderer runs it
    assert "<script>" not in full


def test_markdown_with_gold_lists_scores_and_the_gold_row(gold_comparison: Comparison) -> None:
    summary = render_markdown(gold_comparison)
    assert "## Scores against gold (corpus handmade, split test)" in summary
    assert "| A | all types | 75.00 | 75.00 | 75.00 | 4 | 4 |" in summary
    assert "| B | all types | 33.33 | 25.00 | 28.57 | 4 | 3 |" in summary
    assert "| gold | tumor necrosis factor (GENE) |" in summary
    assert "| type | gold | A | B | C | found by all | found by any | all agree % |" in summary
    assert "| all types | 4 | 4 | 3 | 1 | 1 | 6 | 16.67 |" in summary
    assert "| GENE | 3 | 3 | 2 | 1 | 1 | 4 | 25.00 |" in summary


# --- the command line ------------------------------------------------------------------------------


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run ``mtbioner compare ARGS`` through ``mtbioner.cli.main`` (one-line errors, exit 2)."""
    import mtbioner.cli as package
    from mtbioner.cli.compare import compare

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(lambda: None)  # a group, as in the real app: the command is named
    app.command()(compare)
    monkeypatch.setattr(package, "app", app)

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["mtbioner", "compare", *map(str, args)])
        with pytest.raises(SystemExit) as done:
            package.main()
        out, err = capsys.readouterr()
        return done.value.code, out, err

    return run


@pytest.fixture()
def rule_models(monkeypatch: pytest.MonkeyPatch, tokenizer, tmp_path: Path) -> tuple[Path, Path]:
    """Two model folders that ``Tagger.load`` opens as the rule models A and B."""
    folders = {tmp_path / "A": RULES_A, tmp_path / "B": RULES_B}
    for folder in folders:
        folder.mkdir()

    def load(cls, model_dir, batch_size: int = 32) -> Tagger:
        return cls(RuleBackend(tokenizer, folders[Path(model_dir)]), batch_size)

    monkeypatch.setattr(Tagger, "load", classmethod(load))
    a, b = folders
    return a, b


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{a}", "{b}"], "give exactly one of --input FILE"),
        (["{a}", "{b}", "--input", "{texts}", "--gold", "toy"], "give exactly one of --input FILE"),
        (["{a}", "--input", "{texts}"], "compare needs at least two models, got 1"),
        (["--input", "{texts}"], "compare needs at least two models, got 0"),
        (["{a}", "no-such-model", "--input", "{texts}"], "no-such-model: no such model folder"),
        (["{a}", "{a}", "--input", "{texts}"], "is given twice"),
        (["x={a}", "x={b}", "--input", "{texts}"], "model 'x' is given twice"),
        (["={a}", "{b}", "--input", "{texts}"], "write NAME=MODEL with both parts"),
        (["x=", "{b}", "--input", "{texts}"], "write NAME=MODEL with both parts"),
        (["x=no-such-model", "{b}", "--input", "{texts}"], "no-such-model: no such model folder"),
        (["{a}", "{b}", "--input", "{texts}", "--limit", "0"], "--limit must be at least 1"),
        (["{a}", "{b}", "--gold", "no-such-corpus"], "corpus 'no-such-corpus' not found"),
        (["{a}", "{b}", "--input", "{tmp}/missing.txt"], "missing.txt: cannot read"),
        (["{a}", "{b}", "--input", "{texts}", "--html", "{tmp}/c.out", "--md", "{tmp}/c.out"], "are the same file"),
        (["{a}", "{b}", "--input", "{texts}", "--md", "{texts}"], "would replace the input"),
        (["{a}", "{b}", "--input", "{texts}", "--html", "{tmp}"], "is a folder; give a file name"),
    ],
)
def test_cli_mistakes_are_one_line_and_exit_2(cli, rule_models, tmp_path: Path, args, message) -> None:
    a, b = rule_models
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    rc, out, err = cli(*(x.format(a=a, b=b, texts=texts, tmp=tmp_path) for x in args))
    assert rc == 2, err
    assert err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1 and out == ""


def test_cli_compares_input_texts(cli, rule_models, tmp_path: Path) -> None:
    a, b = rule_models
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)), "utf-8")
    page, summary = tmp_path / "c.html", tmp_path / "c.md"
    rc, out, err = cli(a, b, "--input", texts, "--html", page, "--md", summary, "--max-examples", "5")
    assert rc == 0, err
    assert "4 sentences" in out and "2 where the models disagree" in out
    assert f"agreement F1 {a} vs {b}: 50.00" in out
    assert "**p0.1**, differs in GENE" in summary.read_text(encoding="utf-8")
    assert page.read_text(encoding="utf-8").count('<article class="sentence"') == 2


def test_cli_names_models_with_name_equals_model(cli, rule_models, tmp_path: Path) -> None:
    a, b = rule_models
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    page, summary = tmp_path / "c.html", tmp_path / "c.md"
    rc, out, err = cli(f"first={a}", b, "--input", texts, "--html", page, "--md", summary)
    assert rc == 0, err
    assert f"agreement F1 first vs {b}: 50.00" in out
    assert "Models: first (heads:" in summary.read_text(encoding="utf-8")
    assert str(a) not in page.read_text(encoding="utf-8")


def test_cli_scores_two_saved_models_on_a_gold_corpus(cli, tiny_encoder: Path, toy_dir: Path, tmp_path: Path) -> None:
    folders = []
    for seed in (1, 2):
        folder = tmp_path / f"model{seed}"
        scaled_model(tiny_encoder, seed).save_pretrained(folder)
        folders.append(folder)
    page, summary = tmp_path / "c.html", tmp_path / "c.md"
    rc, out, err = cli(*folders, "--gold", toy_dir / "toy_gene", "--limit", "6", "--html", page, "--md", summary)
    assert rc == 0, err
    assert out.startswith("6 sentences (corpus toy_gene, split test)")
    assert f"gold {folders[0]}: P " in out and f"gold {folders[1]}: P " in out
    text = summary.read_text(encoding="utf-8")
    assert "## Scores against gold (corpus toy\\_gene, split test)" in text
    assert 'data-row="gold"' in page.read_text(encoding="utf-8")


# --- in a real browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from tests.test_browser import start_chromium

    driver = start_chromium(1200, 900)
    yield driver
    driver.quit()


WITHOUT_LABELS = (
    "const n = arguments[0].cloneNode(true); n.querySelectorAll('.label').forEach((l) => l.remove()); "
    "return n.textContent;"
)


def shown_entities(driver, row) -> set[tuple[int, int, str]]:
    """Every entity the row highlights, from its marks' ``data-entities``."""
    from selenium.webdriver.common.by import By

    found = set()
    for mark in row.find_elements(By.CSS_SELECTOR, "mark.entity"):
        found.update(tuple(k) for k in json.loads(mark.get_attribute("data-entities")))
    return found


def test_page_in_chromium_shows_each_models_entities(browser, texts_comparison, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    from tests.test_browser import mark_text

    page = tmp_path / "compare.html"
    write_reports(texts_comparison, page, None)
    browser.get(page.as_uri())
    articles = browser.find_elements(By.CSS_SELECTOR, "article.sentence")
    assert [a.get_attribute("data-label") for a in articles] == ["d1.1", "d2"]
    for article, sentence in zip(articles, texts_comparison.disagreements, strict=True):
        rows = article.find_elements(By.CSS_SELECTOR, ".row")
        assert [r.get_attribute("data-model") for r in rows] == ["A", "B", "C"]
        for row in rows:
            model = row.get_attribute("data-model")
            assert shown_entities(browser, row) == sentence.keys(model)
            assert browser.execute_script(WITHOUT_LABELS, row.find_element(By.CLASS_NAME, "text")) == sentence.text
    marks = articles[0].find_elements(By.CSS_SELECTOR, '.row[data-model="A"] mark.entity')
    assert [mark_text(browser, m) for m in marks] == ["KRAS", "MYC"]
    assert ["disputed" in m.get_attribute("class") for m in marks] == [False, True]
    assert marks[1].value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent")
    b_row = articles[1].find_element(By.CSS_SELECTOR, '.row[data-model="B"]')
    assert "<script>alert(1)</script>" in b_row.text  # shown as text, never run
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    chips = browser.find_elements(By.CSS_SELECTOR, "#legend .chip")
    assert [c.get_attribute("data-type") for c in chips] == ["CHEM", "GENE"]
    chips[1].click()  # hide GENE: the page's inline script runs under its own CSP
    assert "muted" in marks[1].get_attribute("class")
    assert marks[1].value_of_css_property("background-color") in ("rgba(0, 0, 0, 0)", "transparent")
    assert browser.execute_script("return performance.getEntriesByType('resource').length;") == 0
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True})
    png = tmp_path / "compare.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_page_in_chromium_puts_gold_first(browser, gold_comparison, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    page = tmp_path / "gold.html"
    write_reports(gold_comparison, page, None)
    browser.get(page.as_uri())
    articles = browser.find_elements(By.CSS_SELECTOR, "article.sentence")
    assert len(articles) == len(gold_comparison.disagreements) == 3
    for article, sentence in zip(articles, gold_comparison.disagreements, strict=True):
        rows = article.find_elements(By.CSS_SELECTOR, ".row")
        assert rows[0].get_attribute("data-row") == "gold"
        assert shown_entities(browser, rows[0]) == sentence.gold_keys()
        assert [r.get_attribute("data-model") for r in rows[1:]] == ["A", "B", "C"]
    assert browser.find_element(By.ID, "scores").text.count("not scored") == 1
    assert browser.save_screenshot(str(tmp_path / "gold.png"))
