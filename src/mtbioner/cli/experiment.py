"""``mtbioner experiment run|report``: a study from a YAML file, and its report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ..experiment import load_study, run_study


def _typer_app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, help="Run a study from a YAML file and write its report.")

    @app.command("run")
    def run_cmd(
        config: Annotated[Path, typer.Argument(help="Study file, e.g. experiments/mt-bioner.yaml.")],
        only: Annotated[list[str] | None, typer.Option("--only", help="Run only this run (repeatable).")] = None,
    ) -> None:
        """Run every unfinished run of a study (finished runs are skipped, interrupted ones resumed)."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
        run_study(load_study(config), only)

    @app.command("report")
    def report_cmd(
        config: Annotated[Path, typer.Argument(help="Study file whose results to report.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Markdown report to write.")] = Path(
            "reports/mt-bioner.md"
        ),
    ) -> None:
        """Write the Markdown report and its PNG plots from the stored results (no training)."""
        from ..report import write_report

        write_report(load_study(config), output)
        typer.echo(f"wrote {output}")

    return app


experiment_app = _typer_app()
