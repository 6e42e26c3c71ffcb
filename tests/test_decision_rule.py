"""A study's decision rule (``rule`` section, ``mtbioner experiment decide``) on hand-worked scores, and where a
study's runs stand (``mtbioner experiment status``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtbioner.cli import app
from mtbioner.errors import MtbionerError
from mtbioner.learn.training import checkpoint_line
from mtbioner.study.decision_rule import DecisionRule, decision, judge, parse_rule
from mtbioner.study.study_file import load_study
from tests.conftest import one_error_line, run_cli

RUNS = {"base": ["A", "B", "C"], "x": ["A", "B", "C"], "y": ["A", "B", "C"], "small": ["A"]}
RULE = DecisionRule("base", ("x", "y"), ("A", "B"), 0.3, ("C",), 0.5, "2026-12-06")
BASE = {"A": 80.0, "B": 70.0, "C": 60.0}


def test_a_lead_must_be_more_than_the_margin_as_the_table_shows_it() -> None:
    # x leads A+B by (80.2 + 70.4)/2 - 75 = +0.30: shown as +0.30, so not "more than 0.3" (the float is 0.2999...)
    # y leads by (80.31 + 70.4)/2 - 75 = +0.355 -> +0.36 and loses exactly 0.50 on C, which the rule allows
    verdicts = judge(
        RULE, {"base": BASE, "x": {"A": 80.2, "B": 70.4, "C": 61.0}, "y": {"A": 80.31, "B": 70.4, "C": 59.5}}
    )
    x, y = verdicts
    assert (x.state, x.lead, x.reasons) == ("fails", 0.3, ("lead +0.30 is not more than 0.30",))
    assert (y.state, y.lead, y.mean, y.reasons) == ("passes", 0.36, 70.07, ())
    assert decision(RULE, verdicts) == "decision: y replaces base (mean over all 70.07)"


def test_a_guard_corpus_down_by_more_than_its_margin_fails_with_every_reason() -> None:
    (x, y) = judge(
        RULE, {"base": BASE, "x": {"A": 79.0, "B": 70.0, "C": 59.49}, "y": {"A": 81.0, "B": 71.0, "C": 60.0}}
    )
    assert x.state == "fails"
    assert x.reasons == ("lead -0.50 is not more than 0.30", "C -0.51, down by more than 0.50")
    assert "x: fails (leads by -0.50, mean over all 69.50): lead -0.50" in x.describe()
    assert y.state == "passes"


def test_the_higher_mean_over_all_corpora_wins_and_pending_runs_hold_the_decision() -> None:
    x_scores = {"A": 81.0, "B": 71.0, "C": 60.0}  # lead +1.00, mean 70.67
    y_scores = {"A": 80.5, "B": 70.5, "C": 62.0}  # lead +0.50, mean 71.00: lower lead, higher mean
    both = judge(RULE, {"base": BASE, "x": x_scores, "y": y_scores})
    assert [v.state for v in both] == ["passes", "passes"]
    assert decision(RULE, both) == "decision: y replaces base (mean over all 71.00)"
    waiting = judge(RULE, {"base": BASE, "x": x_scores})
    assert [v.state for v in waiting] == ["passes", "pending"]
    assert waiting[1].describe() == "y: pending (no result for y yet)"
    assert decision(RULE, waiting) == "decision: waiting for y; passing so far: x"
    no_base = judge(RULE, {"x": x_scores})
    assert no_base[0].describe() == "x: pending (no result for base yet)"
    none = judge(RULE, {"base": BASE, "x": BASE, "y": {"A": 90.0, "B": 90.0}})
    assert [v.state for v in none] == ["fails", "fails"]
    assert none[1].reasons == ("no score on C",)
    assert decision(RULE, none) == "decision: no candidate passes; base stays"


def test_parse_rule_defaults_and_errors_name_the_field(tmp_path: Path) -> None:
    file = tmp_path / "study.yaml"
    rule = parse_rule(file, {"baseline": "base", "lead": {"corpora": ["A"], "by": 0}}, RUNS)
    assert rule == DecisionRule("base", ("x", "y", "small"), ("A",), 0.0, (), 0.0, "")
    assert parse_rule(file, None, RUNS) is None
    lead = {"corpora": ["A"], "by": 0.3}
    bad = [
        ({"baseline": "nobody", "lead": lead}, "baseline 'nobody' is not a run of the study"),
        ({"baseline": "base", "lead": lead, "candidates": ["z"]}, "candidates must be other runs.*got z"),
        ({"baseline": "base", "lead": lead, "candidates": ["base"]}, "candidates must be other runs.*got base"),
        ({"baseline": "base", "lead": {"corpora": ["D"], "by": 0.3}}, r"lead\.corpora must be corpora the baseline"),
        ({"baseline": "base", "lead": {"corpora": ["A"], "by": -1}}, r"lead\.by must be a non-negative number"),
        ({"baseline": "base", "lead": {"corpora": ["A"], "by": "x"}}, r"lead\.by must be a non-negative number"),
        ({"baseline": "base", "lead": {"corpora": ["A"]}}, r"lead must be a mapping \{corpora"),
        ({"baseline": "base"}, "lead must be a mapping"),
        ({"baseline": "base", "lead": lead, "guard": {"corpora": "C", "by": 1}}, r"guard\.corpora must be a list"),
        ({"baseline": "base", "lead": lead, "margin": 1}, "unknown key.*margin"),
        (["base"], "expected a mapping"),
    ]
    for section, message in bad:
        with pytest.raises(MtbionerError, match=f"study.yaml: rule: {message}"):
            parse_rule(file, section, RUNS)


def _result(folder: Path, run: str, f1: dict[str, float]) -> None:
    scores = {corpus: {"f1": value} for corpus, value in f1.items()}
    (folder / f"{run}.json").write_text(json.dumps({"run": run, "scores": scores}), encoding="utf-8")


def test_experiment_decide_reads_the_study_file_and_its_results(tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(
        "results: results\nrule:\n  written: 2026-12-06\n  baseline: base\n"
        "  lead: {corpora: [A, B], by: 0.3}\n  guard: {corpora: [C], by: 0.5}\n"
        "runs:\n  base: {corpora: [A, B, C]}\n  x: {corpora: [A, B, C]}\n  y: {corpora: [A, B, C]}\n",
        encoding="utf-8",
    )
    assert load_study(study).rule == DecisionRule("base", ("x", "y"), ("A", "B"), 0.3, ("C",), 0.5, "2026-12-06")
    (tmp_path / "results").mkdir()
    _result(tmp_path / "results", "base", BASE)
    _result(tmp_path / "results", "x", {"A": 80.0, "B": 71.0, "C": 58.0})
    result = CliRunner().invoke(app, ["experiment", "decide", str(study)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "rule (written 2026-12-06): a run replaces base when its mean F1 over A, B leads base's by more than 0.30 "
        "and trails it by no more than 0.50 on any of C; of those that pass, the highest mean over all 3 corpora wins",
        "x: fails (leads by +0.50, mean over all 69.67): C -2.00, down by more than 0.50",
        "y: pending (no result for y yet)",
        "decision: waiting for y",
    ]


def test_experiment_decide_without_a_rule_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    no_rule = tmp_path / "plain.yaml"
    no_rule.write_text("runs:\n  a: {corpora: [A]}\n", encoding="utf-8")
    code, output = run_cli(monkeypatch, capsys, "experiment", "decide", no_rule)
    assert code == 2
    assert one_error_line(output) == f"error: {no_rule}: no 'rule' section to decide by (see docs/study.md)"
    no_rule.write_text(
        "rule: {baseline: b, lead: {corpora: [A], by: 1}}\nruns:\n  a: {corpora: [A]}\n", encoding="utf-8"
    )
    code, output = run_cli(monkeypatch, capsys, "experiment", "decide", no_rule)
    assert code == 2
    assert "rule: baseline 'b' is not a run of the study" in one_error_line(output)


def test_the_ten_corpus_study_rule_reproduces_the_verdict_judged_by_hand() -> None:
    """ten-t3-w2 was judged by hand before the rule section existed (README): AnatEM and BioNLP09 fail it."""
    study = load_study(Path(__file__).parent.parent / "experiments" / "ten.yaml")
    assert study.rule is not None and study.rule.baseline == "ten-t3"
    record = {
        name: json.loads((study.results / f"{name}.json").read_text(encoding="utf-8"))
        for name in ("ten-t3", "ten-t3-w2")
    }
    f1 = {name: {c: s["f1"] for c, s in r["scores"].items()} for name, r in record.items()}
    verdict = judge(study.rule, f1)[0]
    assert (verdict.run, verdict.state, verdict.lead) == ("ten-t3-w2", "fails", 0.66)
    assert [reason.split()[0] for reason in verdict.reasons] == ["AnatEM", "BioNLP09"]


def test_experiment_status_reads_where_each_run_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(
        "results: results\nmodels: runs\nsplit: devel\n"
        "runs:\n  done: {corpora: [A, B]}\n  half: {corpora: [A]}\n"
        "  unscored: {corpora: [A]}\n  new: {corpora: [A]}\n",
        encoding="utf-8",
    )
    (tmp_path / "results").mkdir()
    record = {"run": "done", "scores": {"A": {"f1": 80.0}, "B": {"f1": 70.5}}, "finished": "2026-12-07T04:06:52+0000"}
    (tmp_path / "results" / "done.json").write_text(json.dumps(record), encoding="utf-8")
    half = tmp_path / "runs" / "half"
    (half / "checkpoint").mkdir(parents=True)
    (half / "checkpoint" / "state.json").write_text(json.dumps({"epoch": 2, "batch": 500, "step": 3618}))
    (half / "training.json").write_text(json.dumps({"config": {"epochs": 8}, "total_steps": 16944}))
    (half / "log.jsonl").write_text(
        "".join(
            json.dumps({"epoch": e, "devel": {"A": {"f1": f}, "B": {"f1": f + 1}}}) + "\n"
            for e, f in [(1, 60), (2, 70)]
        )
    )
    checkpoint = checkpoint_line(3, 8, 1500, 2118, 5736, 16944, 0.2, 48000, 2400.0)
    (tmp_path / "runs" / "half.log").write_text(f"resuming\n{checkpoint.replace('1500', '500')}\n{checkpoint}\ndone\n")
    (tmp_path / "runs" / "unscored").mkdir()
    (tmp_path / "runs" / "unscored" / "training.json").write_text("{}")
    code, output = run_cli(monkeypatch, capsys, "experiment", "status", study)
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "done: scored (mean devel F1 75.25 over 2 corpora; finished 2026-12-07T04:06:52+0000)"
    assert re.fullmatch(
        r"half: in progress \(epoch 3 of 8, step 3618 of 16944 \(21%\); checkpoint \d{4}-\d\d-\d\d \d\d:\d\d UTC; "
        r"about 5\.0 h of steps left at its pace then; devel mean 70\.50 after epoch 2\)",
        lines[1],
    ), lines[1]
    assert lines[2] == f"unscored: trained (not scored yet; model {tmp_path / 'runs' / 'unscored'})"
    assert lines[3:] == ["new: not started"]
