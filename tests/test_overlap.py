"""The overlap analysis: exact counts on hand-made corpora, the model confusion, the report and the command.

Two tiny corpora, written into ``tmp_path``: ``geneA`` labels ``GENE`` (like BC2GM) and ``dnaB``
labels ``DNA`` and ``protein`` (like JNLPBA), tokenized differently (``IL-2`` against ``IL - 2``).
Every expected number below is worked out by hand from these files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer

from mtbioner.data.corpus import Sentence, read_corpus
from mtbioner.errors import MtbionerError
from mtbioner.study.overlap import (
    NONE,
    Matcher,
    analyse,
    classify,
    confusion,
    corpus_view,
    entity_strings,
    model_confusion,
    string_overlap,
    type_ambiguity,
)
from mtbioner.study.overlap_findings import cross_group, recommend
from mtbioner.study.overlap_report import render, write_report
from tests.test_tagging import RuleBackend

# one sentence per string: TOKEN/TAG pairs
GENE_A = {
    "train": ["BRCA1/B-GENE mutations/O", "The/O p53/B-GENE protein/I-GENE binds/O", "IL-2/B-GENE and/O X/B-GENE"],
    "devel": ["p53/B-GENE protein/I-GENE family/O"],
    "test": ["BRCA1/B-GENE and/O KRAS/B-GENE"],
}
DNA_B = {
    "train": [
        "BRCA1/B-DNA binds/O ./O",
        "BRCA1/O again/O",
        "brca1/O",
        "the/O p53/B-protein protein/I-protein family/I-protein",
    ],
    "devel": ["IL/B-protein -/I-protein 2/I-protein", "X/O"],
    "test": ["KRAS/B-protein binds/O BRCA1/O", "breast/B-DNA cancer/I-DNA"],
}


def write_corpus(folder: Path, splits: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True)
    for split, sentences in splits.items():
        blocks = ["\n".join("\t".join(pair.rsplit("/", 1)) for pair in s.split()) for s in sentences]
        (folder / f"{split}.tsv").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return folder


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    write_corpus(tmp_path / "data" / "geneA", GENE_A)
    write_corpus(tmp_path / "data" / "dnaB", DNA_B)
    return tmp_path / "data"


@pytest.fixture()
def corpora(data: Path):
    return [read_corpus(data / name) for name in ("geneA", "dnaB")]


def pair(pairs, source: str, target: str):
    return next(p for p in pairs if p.source == source and p.target == target)


# --- the pieces ------------------------------------------------------------------------------------


def test_matcher_finds_every_whole_word_occurrence_including_overlapping_ones() -> None:
    match = Matcher({("a", "b"), ("b",), ("b", "c", "d"), ("x",)})
    assert sorted(match(("a", "b", "c", "d", "b"))) == [
        (0, 2, ("a", "b")),
        (1, 2, ("b",)),
        (1, 4, ("b", "c", "d")),
        (4, 5, ("b",)),
    ]
    assert list(match(("ab", "c"))) == []  # whole words only
    assert list(match(("b", "c"))) == [(0, 1, ("b",))]  # a longer string cut off by the sentence end


def test_classify_tells_exact_inside_shorter_crossing_and_none() -> None:
    spans = [("DNA", 2, 5), ("protein", 7, 8)]
    assert classify(spans, 2, 5) == ("exact", "DNA", None)
    assert classify(spans, 3, 4) == ("partial", "DNA", "longer")  # B's entity holds the string
    assert classify(spans, 6, 9) == ("partial", "protein", "shorter")
    assert classify(spans, 4, 7) == ("partial", "DNA", "crossing")
    assert classify(spans, 0, 2) == ("none", None, None)
    assert classify(spans, 5, 7) == ("none", None, None)  # touching is not overlapping


def test_views_resplit_tokens_at_punctuation_and_keep_spans(corpora) -> None:
    view = corpus_view(corpora[0], ("train", "devel"))
    assert view.pieces[2] == ("IL", "-", "2", "and", "X")
    assert view.spans[2] == [("GENE", 0, 3), ("GENE", 4, 5)]
    assert view.split_tokens == 1 and view.tokens == 12 and view.sentences == 4 and view.sizes == (3, 1)
    assert view.surface[("IL", "-", "2")] == "IL-2"
    kept = corpus_view(corpora[0], ("train",), split_punct=False)
    assert kept.pieces[2] == ("IL-2", "and", "X") and kept.split_tokens == 0
    assert entity_strings(view) == {
        ("BRCA1",): {"GENE": 1},
        ("p53", "protein"): {"GENE": 2},
        ("IL", "-", "2"): {"GENE": 1},
        ("X",): {"GENE": 1},
    }


# --- string overlap: exact counts --------------------------------------------------------------------


def test_gene_strings_in_the_dna_corpus(corpora) -> None:
    views = [corpus_view(c, ("train", "devel")) for c in corpora]
    a_in_b = pair(string_overlap(views), "geneA", "dnaB")
    # BRCA1: DNA once, unlabelled once; "p53 protein" inside "p53 protein family"; IL-2 = "IL - 2"; X left out
    assert a_in_b.count("strings") == 3 and a_in_b.count("found") == 3
    assert a_in_b.count("labelled") == 3 and a_in_b.count("never") == 0
    assert a_in_b.occurrences() == {"DNA": 1, NONE: 1, "in protein": 1, "protein": 1}
    shares = a_in_b.shares(["GENE"])
    assert shares["DNA"] == pytest.approx(1 / 6) and shares[NONE] == pytest.approx(1 / 6)
    assert shares["in protein"] == pytest.approx(1 / 3) and shares["protein"] == pytest.approx(1 / 3)
    assert a_in_b.shares(["GENE"], weighted=False)[NONE] == pytest.approx(1 / 4)
    assert a_in_b.conflicts() == [("BRCA1", 1, 2)]


def test_case_folding_finds_the_lower_case_spelling(corpora) -> None:
    views = [corpus_view(c, ("train", "devel")) for c in corpora]
    folded = pair(string_overlap(views, fold=True), "geneA", "dnaB")
    assert folded.seen[("brca1",)] == {"DNA": 1, NONE: 2}
    assert folded.conflicts(n=1) == [("BRCA1", 2, 3)]


def test_as_tokenized_the_hyphenated_gene_is_not_found(corpora) -> None:
    views = [corpus_view(c, ("train", "devel"), split_punct=False) for c in corpora]
    a_in_b = pair(string_overlap(views), "geneA", "dnaB")
    assert a_in_b.count("found") == 2 and ("IL-2",) not in a_in_b.seen


def test_dna_strings_in_the_gene_corpus_and_the_held_out_baseline(corpora) -> None:
    views = [corpus_view(c, ("train", "devel")) for c in corpora]
    pairs = string_overlap(views)
    b_in_a = pair(pairs, "dnaB", "geneA")
    assert b_in_a.seen == {
        ("BRCA1",): {"GENE": 1},
        ("p53", "protein", "family"): {"~GENE": 1},  # A's "p53 protein" is shorter: a boundary conflict
        ("IL", "-", "2"): {"GENE": 1},
    }
    assert b_in_a.count("strings", ["DNA"]) == 1 and b_in_a.count("strings", ["protein"]) == 2
    assert b_in_a.count("labelled", ["protein"]) == 1
    baseline = pair(pairs, "geneA", "geneA")  # train strings in devel text
    assert baseline.baseline == "train strings in devel text"
    assert baseline.count("strings") == 3 and baseline.seen == {("p53", "protein"): {"GENE": 1}}
    # dnaB's train strings (BRCA1, p53 protein family) never occur in its devel text
    assert pair(pairs, "dnaB", "dnaB").count("found") == 0


def test_min_chars_and_letters_decide_which_strings_take_part(corpora) -> None:
    views = [corpus_view(c, ("train", "devel")) for c in corpora]
    with_x = pair(string_overlap(views, min_chars=1), "geneA", "dnaB")
    assert with_x.count("strings") == 4 and with_x.seen[("X",)] == {NONE: 1}
    assert pair(string_overlap(views, min_chars=6), "geneA", "dnaB").count("strings") == 1  # only "p53 protein"


def test_type_ambiguity_and_cross_group_sums(corpora) -> None:
    views = [corpus_view(c, ("train", "devel")) for c in corpora]
    assert type_ambiguity(views[1], ["DNA", "protein"]) == (0, 3)
    a_in_b = pair(string_overlap(views), "geneA", "dnaB")
    # GENE, DNA and protein are all gene/protein: nothing here is another merged type
    assert cross_group(a_in_b) == {"strings": 3, "exact": 0, "inside": 0, "absent": 0, "absent_none": 0}
    other = cross_group(a_in_b, {"gene": ("GENE",), "dna": ("DNA",), "protein": ("protein",)})
    assert other["exact"] == pytest.approx(0.5 + 1) and other["inside"] == pytest.approx(1)


def test_recommendation_follows_the_numbers(corpora) -> None:
    policy = recommend(analyse(corpora))
    assert policy.type_map["gene/protein"] == ["geneA GENE", "dnaB DNA", "dnaB protein"]
    assert policy.merged == ["gene/protein"]
    rules = [rule for rule, _ in policy.rules]
    assert rules[0].startswith("Type map: gene/protein ← geneA GENE, dnaB DNA, dnaB protein")
    evidence = dict(policy.rules)[rules[0]]
    # dnaB labels geneA's strings DNA/protein at (1/6 + 1/3 + 1/3) = 83.3%, geneA labels dnaB's GENE at 66.7%
    assert "dnaB labels geneA's GENE strings DNA/protein at 83.3%" in evidence
    assert "geneA labels dnaB's DNA/protein strings GENE at 66.7%" in evidence


# --- the model part ----------------------------------------------------------------------------------


def test_confusion_counts_exact_partial_missed_and_spurious() -> None:
    gold = [[("DNA", 0, 2), ("protein", 3, 4), ("protein", 5, 6)]]
    predicted = [[("GENE", 0, 1), ("GENE", 3, 4), ("GENE", 7, 8)]]
    assert confusion(gold, predicted) == {
        ("DNA", "partial"): 1,
        ("protein", "GENE"): 1,
        ("protein", "missed"): 1,
        (NONE, "GENE"): 2,  # "0-1" (only overlapping gold) and "7-8"
    }


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_encoder))


@pytest.fixture()
def rules(tokenizer) -> RuleBackend:
    return RuleBackend(
        tokenizer,
        {
            "geneA": {"brca1": ("B-GENE", 6.0), "breast": ("B-GENE", 6.0)},
            "dnaB": {"brca1": ("B-DNA", 6.0), "kras": ("B-protein", 5.0)},
        },
    )


def test_every_head_on_every_test_set(corpora, rules) -> None:
    tests = {c.name: c.sentences("test") for c in corpora}
    found = {(c.corpus, c.head): dict(c.counts) for c in model_confusion(rules, tests)}
    assert found == {
        ("geneA", "geneA"): {("GENE", "GENE"): 1, ("GENE", "missed"): 1},
        ("geneA", "dnaB"): {("GENE", "DNA"): 1, ("GENE", "protein"): 1},
        ("dnaB", "geneA"): {("protein", "missed"): 1, ("DNA", "partial"): 1, (NONE, "GENE"): 2},
        ("dnaB", "dnaB"): {("protein", "protein"): 1, ("DNA", "missed"): 1, (NONE, "DNA"): 1},
    }
    with pytest.raises(MtbionerError, match="no head 'nope'"):
        model_confusion(rules, tests, heads=["nope"])


def test_model_confusion_accepts_sentences_without_entities(rules) -> None:
    empty = {"plain": [Sentence(("the", "cancer"), ("O", "O"))]}
    (first, second) = model_confusion(rules, empty)
    assert first.gold_types == [] and dict(first.counts) == {} and first.sentences == 1
    assert dict(second.counts) == {}


# --- the report -------------------------------------------------------------------------------------


def test_report_without_a_model_says_how_to_add_it(corpora, tmp_path: Path) -> None:
    analysis = analyse(corpora)
    analysis.command = "mtbioner overlap geneA dnaB --output out/overlap.md"
    target = write_report(analysis, tmp_path / "out" / "overlap.md")
    text = target.read_text(encoding="utf-8")
    assert (tmp_path / "out" / "figures" / "overlap-strings.png").stat().st_size > 1000
    assert not (tmp_path / "out" / "figures" / "overlap-model.png").exists()
    assert "Generated by `mtbioner overlap geneA dnaB --output out/overlap.md`" in text
    assert "Model part: run with `--model MODEL`" in text
    assert "![type-by-type string overlap](figures/overlap-strings.png)" in text
    # the pair table of geneA's strings in dnaB's text, with the hand-worked shares
    assert "| GENE | 3 | 3 (100.0%) | 3 | 3 | 0 | 4 | 16.7% |" in text
    assert "`BRCA1` (1 of 2)" in text
    assert "| geneA | *1/3 found · 0.0% none* (baseline) | 3/3 found · 16.7% none |" in text
    assert "## Recommended merge policy" in text and "**gene/protein** ← geneA GENE, dnaB DNA, dnaB protein" in text


def test_report_with_a_model_has_the_heat_map_and_tables(corpora, rules, tmp_path: Path) -> None:
    analysis = analyse(corpora, backend=rules)
    analysis.model = "rules"
    text = render(analysis, tmp_path / "figs", tmp_path, prefix="r")
    assert (tmp_path / "figs" / "r-model.png").stat().st_size > 1000
    assert "![every head on every test set](figs/r-model.png)" in text
    assert "not model selection" in text
    assert "| geneA gold \\ dnaB | DNA | protein | partial | missed | total |" in text
    assert "| GENE | 1 | 1 | 0 | 0 | 2 |" in text
    assert "**Model: dnaB head on geneA test.** Of 2 gold GENE entities it tags 100.0% with the same span" in text


def test_analyse_refuses_one_corpus_or_a_repeated_one(corpora) -> None:
    with pytest.raises(MtbionerError, match="at least two corpora, got 1"):
        analyse(corpora[:1])
    with pytest.raises(MtbionerError, match="'geneA' is given twice"):
        analyse([corpora[0], corpora[0]])


# --- the command line --------------------------------------------------------------------------------


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run ``mtbioner overlap ARGS`` through ``mtbioner.cli.main`` (one-line errors, exit 2)."""
    import mtbioner.cli as package
    from mtbioner.cli.overlap import overlap

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    app.command()(overlap)
    monkeypatch.setattr(package, "app", app)

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["mtbioner", "overlap", *map(str, args)])
        with pytest.raises(SystemExit) as done:
            package.main()
        out, err = capsys.readouterr()
        return done.value.code, out, err

    return run


def test_cli_writes_the_report_and_prints_the_findings(cli, data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("geneA", "dnaB", "--data-dir", data, "--output", "rep/o.md", "--figures-dir", "figs")
    assert code == 0, err
    text = (tmp_path / "rep" / "o.md").read_text(encoding="utf-8")
    assert f"Generated by `mtbioner overlap geneA dnaB --data-dir {data} --output rep/o.md --figures-dir figs`" in text
    assert "![type-by-type string overlap](../figs/o-strings.png)" in text
    assert (tmp_path / "figs" / "o-strings.png").is_file()
    assert "- gene/protein, geneA → dnaB. 3 of geneA's 3 distinct GENE strings (100.0%)" in out
    assert "wrote rep/o.md" in err


def test_cli_with_a_model(cli, data: Path, tmp_path: Path, rules, monkeypatch) -> None:
    import mtbioner.runtime.loading

    (tmp_path / "m").mkdir()
    monkeypatch.setattr(mtbioner.runtime.loading, "load_backend", lambda path: rules)
    code, _, err = cli("geneA", "dnaB", "--data-dir", data, "--model", tmp_path / "m", "-o", tmp_path / "o.md")
    assert code == 0, err
    text = (tmp_path / "o.md").read_text(encoding="utf-8")
    assert "### dnaB head on geneA test (1 sentences)" in text and (tmp_path / "figures" / "o-model.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["geneA"], "overlap needs at least two corpora, got 1"),
        (["geneA", "geneA"], "corpus 'geneA' is given twice"),
        (["geneA", "dnaB", "--splits", "train,tset"], "--splits: unknown split 'tset'"),
        (["geneA", "dnaB", "--splits", "train,test"], "--splits must not include test"),
        (["geneA", "dnaB", "--splits", " , "], "--splits is empty"),
        (["geneA", "dnaB", "--limit", "0"], "--limit must be at least 1, not 0"),
        (["geneA", "dnaB", "--min-chars", "0"], "--min-chars must be at least 1"),
        (["geneA", "dnaB", "--model", "{tmp}/nothing/here"], "no such model folder"),
        (["geneA", "nope"], "corpus 'nope' not found"),
        (["geneA", "dnaB", "--output", "{tmp}"], "is a folder"),
    ],
)
def test_cli_user_mistakes_are_one_line(cli, data: Path, tmp_path: Path, args: list[str], message: str) -> None:
    code, out, err = cli(*(a.format(tmp=tmp_path) for a in args), "--data-dir", data)
    assert code == 2 and message in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_torch_model_accounts_for_every_gold_entity(corpora, tiny_encoder: Path) -> None:
    import torch

    from mtbioner.model.model import MultiTaskTagger

    torch.manual_seed(1)
    labels = {c.name: c.labels for c in corpora}
    model = MultiTaskTagger.from_encoder(labels, tiny_encoder, max_length=16).eval()
    with torch.no_grad():
        for param in model.heads.parameters():
            param.normal_(0, 2.0)  # varied labels, so predictions land in several cells
    tests = {c.name: c.sentences("test") for c in corpora}
    confusions = model_confusion(model, tests)
    assert [(c.corpus, c.head) for c in confusions] == [
        ("geneA", "geneA"),
        ("geneA", "dnaB"),
        ("dnaB", "geneA"),
        ("dnaB", "dnaB"),
    ]
    for c in confusions:
        gold = {kind: 0 for kind in c.gold_types}
        for sentence in tests[c.corpus]:
            for tag in sentence.tags:
                if tag.startswith("B-"):
                    gold[tag[2:]] += 1
        assert {kind: sum(c.row(kind).values()) for kind in c.gold_types} == gold
        assert set(c.columns) >= {column for (_, column) in c.counts}
    assert any(c.row(NONE) for c in confusions), "random heads should predict something"
