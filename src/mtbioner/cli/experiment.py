"""``mtbioner experiment run|report|compare``: a study from a YAML file, its report, one comparison."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ..study.experiment import load_study, run_study


def _typer_app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, help="Run a study from a YAML file and write its report.")

    @app.command("run")
    def run_cmd(
        config: Annotated[Path, typer.Argument(help="Study file, e.g. experiments/mt-bioner.yaml.")],
        only: Annotated[list[str] | None, typer.Option("--only", help="Run only this run (repeatable).")] = None,
    ) -> None:
        """Run every unfinished run of a study (finished runs are skipped, interrupted ones resumed).

        Encoders the study file declares under ``encoders`` are pre-trained (or resumed) first, when a
        run needs them.
        """
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
        run_study(load_study(config), only)

    @app.command("report")
    def report_cmd(
        config: Annotated[Path, typer.Argument(help="Study file whose results to report.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Markdown report to write.")] = Path(
            "reports/mt-bioner.md"
        ),
    ) -> None:
        """Write the Markdown report and its PNG plots from the stored results (no training).

        A study file with ``report: {kind: full, ...}`` gets the full-scale report (Table 2 with
        bootstrap intervals and every configured difference); others the reduced-budget one.
        """
        study = load_study(config)
        if study.report.get("kind", "default") == "full":
            from ..study.report_full import write_report
        else:
            from ..study.report import write_report

        write_report(study, output)
        typer.echo(f"wrote {output}")

    @app.command("compare")
    def compare_cmd(
        config: Annotated[Path, typer.Argument(help="Study file.")],
        run_a: Annotated[str, typer.Argument(help="Run A (e.g. mt4).")],
        run_b: Annotated[str, typer.Argument(help="Run B (e.g. single-BC2GM).")],
    ) -> None:
        """F1 of A - B with its paired-bootstrap interval on every corpus both runs score (stored results)."""
        from ..study.report_full import compare_runs

        for row in compare_runs(load_study(config), run_a, run_b):
            if row.result is None:
                typer.echo(f"{row.corpus}: {row.note or 'no result'}")
                continue
            r = row.result
            typer.echo(
                f"{row.corpus}: F1 {row.a} {r.f1_a.value:.2f}, {row.b} {r.f1_b.value:.2f}, difference "
                f"{r.difference.value:+.2f}, {100 * r.confidence:.0f}% CI [{r.difference.low:+.2f}, "
                f"{r.difference.high:+.2f}]: {r.verdict} ({r.sentences} sentences, {r.resamples} resamples, "
                f"seed {r.seed})"
            )

    @app.command("status")
    def status_cmd(config: Annotated[Path, typer.Argument(help="Study file.")]) -> None:
        """Where each run stands: scored, trained, in progress (epoch, step of total, last checkpoint) or not
        started, read from the study's files (nothing is loaded or run)."""
        from ..study.study_status import study_status

        for status in study_status(load_study(config)):
            typer.echo(status.describe())

    @app.command("decide")
    def decide_cmd(config: Annotated[Path, typer.Argument(help="Study file with a 'rule' section.")]) -> None:
        """Apply the study's decision rule to the stored results: each candidate passes, fails or is pending.

        The rule is the study file's ``rule`` section (baseline, candidates, lead and guard corpora with
        their margins), written before the runs finished; the figures are judged as the tables print them.
        """
        from ..errors import MtbionerError
        from ..study.decision_rule import decision, judge
        from ..study.report import load_results

        study = load_study(config)
        if study.rule is None:
            raise MtbionerError(f"{config}: no 'rule' section to decide by (see docs/study.md)")
        f1 = {
            run: {corpus: score["f1"] for corpus, score in record.get("scores", {}).items()}
            for run, record in load_results(study).items()
        }
        verdicts = judge(study.rule, f1)
        typer.echo(study.rule.describe())
        for verdict in verdicts:
            typer.echo(verdict.describe())
        typer.echo(decision(study.rule, verdicts))

    return app


experiment_app = _typer_app()
