"""``mtbioner overlap``: how the corpora's entity strings overlap and how each head tags the others' test sets."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import MtbionerError
from ._common import DataDir, Limit, setup

_SPLITS = ("train", "devel", "test")


def overlap(
    corpora: Annotated[
        list[str] | None,
        typer.Argument(
            help="Two or more corpus folders or names under --data-dir.", metavar="CORPUS...", show_default=False
        ),
    ] = None,
    data_dir: DataDir = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model folder (trained or exported) or shipped name (default): add every head on every test set.",
        ),
    ] = None,
    splits: Annotated[
        str, typer.Option(help="Comma-separated splits whose entity strings and text are compared (not test).")
    ] = "train,devel",
    output: Annotated[Path, typer.Option("--output", "-o", help="The Markdown report.")] = Path("reports/overlap.md"),
    figures_dir: Annotated[
        Path | None,
        typer.Option("--figures-dir", help="Folder for the heat maps (default: figures/ beside --output)."),
    ] = None,
    limit: Limit = None,
    min_chars: Annotated[
        int, typer.Option(help="Leave out entity strings shorter than this (and any without a letter).")
    ] = 2,
    split_punct: Annotated[
        bool,
        typer.Option("--split-punct/--as-tokenized", help="Re-split tokens at punctuation before matching strings."),
    ] = True,
    batch_size: Annotated[
        int, typer.Option(help="Windows per inference batch (with --model).")
    ] = INFERENCE_BATCH_SIZE,
) -> None:
    """Corpus overlap: each corpus's entity strings in the others' text and how they are annotated there.

    For every ordered pair (A, B): how many of A's distinct entity strings occur in B's text, and
    whether B labels those occurrences (same span, inside a longer entity, other overlap) or leaves
    them unlabelled (a silver conflict). With --model, every head also tags every corpus's test set
    (analysis, not model selection). Writes Markdown with heat maps, findings and a merge policy.

    Examples:
      mtbioner overlap BC2GM BC5CDR NCBI-disease JNLPBA --data-dir ../shared/data
      mtbioner overlap BC2GM JNLPBA --data-dir ../shared/data --model m --output reports/overlap-m.md
    """
    setup(verbose=False)
    names = list(corpora or [])
    chosen = _check_options(names, model, splits, output, limit, min_chars, batch_size)
    from ..data.corpus import read_corpus, resolve_corpus
    from ..study.overlap import analyse
    from ..study.overlap_findings import findings
    from ..study.overlap_report import write_report

    wanted = [*chosen, "test"] if model is not None and "test" not in chosen else chosen
    read = [read_corpus(resolve_corpus(name, data_dir), splits=wanted, limit=limit) for name in names]
    backend = None
    if model is not None:
        from ..runtime.loading import load_backend

        backend = load_backend(model)
    analysis = analyse(read, chosen, split_punct, backend, batch_size=batch_size, min_chars=min_chars)
    analysis.model = model
    analysis.command = _command(names, data_dir, model, splits, output, figures_dir, limit, min_chars, split_punct)
    write_report(analysis, output, figures_dir)
    for line in findings(analysis):
        typer.echo(f"- {line.replace('**', '')}")
    figures = figures_dir if figures_dir is not None else output.parent / "figures"
    typer.echo(f"wrote {output} and its figures in {figures}", err=True)


def _check_options(
    names: list[str], model: str | None, splits: str, output: Path, limit: int | None, min_chars: int, batch_size: int
) -> list[str]:
    """Every option mistake, before any corpus or model is read; returns the splits."""
    from ..data.corpus import split_names

    if len(names) < 2:
        raise MtbionerError(f"overlap needs at least two corpora, got {len(names)}: name two or more CORPUS arguments")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MtbionerError(f"corpus {twice[0]!r} is given twice; name each corpus once")
    chosen = split_names(splits)
    if not chosen:
        raise MtbionerError("--splits is empty: give splits such as train,devel")
    unknown = [s for s in chosen if s not in _SPLITS]
    if unknown:
        raise MtbionerError(f"--splits: unknown split {unknown[0]!r}; expected some of {', '.join(_SPLITS)}")
    if len(set(chosen)) != len(chosen):
        raise MtbionerError(f"--splits names a split twice: {splits!r}")
    if "test" in chosen:
        raise MtbionerError(
            "--splits must not include test: the string analysis informs choices (the merge policy), and nothing is "
            "chosen on test; the model part (--model) reads test on its own"
        )
    if limit is not None and limit < 1:
        raise MtbionerError(f"--limit must be at least 1, not {limit}")
    if min_chars < 1:
        raise MtbionerError(f"--min-chars must be at least 1, not {min_chars}")
    if batch_size < 1:
        raise MtbionerError(f"--batch-size must be at least 1, not {batch_size}")
    if output.is_dir():
        raise MtbionerError(
            f"--output {output} is a folder; give the Markdown file to write, e.g. {output}/overlap.md"
        )
    if model is not None:
        from ..errors import ModelFormatError
        from ..runtime.shipped import resolve_model

        if not resolve_model(model).is_dir():
            raise ModelFormatError(f"{model}: no such model folder")
    return chosen


def _command(
    names: list[str],
    data_dir: Path | None,
    model: str | None,
    splits: str,
    output: Path,
    figures_dir: Path | None,
    limit: int | None,
    min_chars: int,
    split_punct: bool,
) -> str:
    """The command line that regenerates the report, written into it."""
    args = ["mtbioner", "overlap", *names]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    if model is not None:
        args += ["--model", model]
    if splits != "train,devel":
        args += ["--splits", splits]
    args += ["--output", str(output)]
    if figures_dir is not None:
        args += ["--figures-dir", str(figures_dir)]
    if limit is not None:
        args += ["--limit", str(limit)]
    if min_chars != 2:
        args += ["--min-chars", str(min_chars)]
    if not split_punct:
        args.append("--as-tokenized")
    return shlex.join(args)
