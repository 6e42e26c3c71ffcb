"""``mtbioner compare``: several models on the same sentences, an offline HTML page and a Markdown summary."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Annotated

import typer

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import ModelFormatError, MtbionerError
from ._common import DataDir, setup


def compare(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Two or more models: folders (torch or exported) or shipped model names; NAME=MODEL labels one "
            "NAME in the page and summary (default: the argument as given).",
            metavar="MODEL",
            show_default=False,
        ),
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="Texts: .txt (a document per line) or .jsonl (id, text).")
    ] = None,
    gold: Annotated[
        str | None,
        typer.Option(help="Corpus folder or name under --data-dir: tag its sentences and score each model on them."),
    ] = None,
    data_dir: DataDir = None,
    split: Annotated[str, typer.Option(help="Split of the --gold corpus.")] = "test",
    limit: Annotated[
        int | None, typer.Option(help="Only the first N documents of --input, or sentences of --gold.")
    ] = None,
    output_html: Annotated[Path, typer.Option("--html", help="The page: every disagreeing sentence.")] = Path(
        "comparison.html"
    ),
    output_md: Annotated[Path, typer.Option("--markdown", "--md", help="The summary in Markdown.")] = Path(
        "comparison.md"
    ),
    max_examples: Annotated[int, typer.Option(help="Disagreeing sentences listed in the Markdown summary.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = INFERENCE_BATCH_SIZE,
) -> None:
    """Tag the same texts with several models: agreement per entity type, gold scores, the sentences they disagree on.

    Examples:
      mtbioner compare runs/mt4 runs/single-BC5CDR --gold BC5CDR --data-dir ../shared/data
      mtbioner compare default m --input abstracts.jsonl --html cmp.html --md cmp.md
      mtbioner compare teacher=default student=runs/s3-int8 --gold NCBI-disease --data-dir ../shared/data
    """
    setup(verbose=False)
    named = _named_models(list(models or []))
    _check_options(named, input_file, gold, limit, max_examples)
    _check_outputs(output_html, output_md, input_file)
    from ..runtime.tagging import Tagger
    from ..study.compare import compare_corpus, compare_texts
    from ..study.compare_report import format_summary, write_reports

    def load() -> dict:
        return {name: Tagger.load(model, batch_size=batch_size) for name, model in named.items()}

    if gold is not None:
        from ..data.corpus import read_corpus, resolve_corpus

        corpus = read_corpus(resolve_corpus(gold, data_dir), splits=[split], limit=limit)  # its errors come first
        comparison = compare_corpus(load(), corpus, split)
    else:
        ids, texts = _read_texts(input_file, limit)  # type: ignore[arg-type]  # checked: exactly one is given
        comparison = compare_texts(load(), texts, ids, source=f"input {input_file}")
    write_reports(comparison, output_html, output_md, max_examples)
    typer.echo(format_summary(comparison))
    typer.echo(f"wrote {output_html} and {output_md}", err=True)


def _named_models(arguments: list[str]) -> dict[str, str]:
    """Label -> model for each MODEL argument: ``NAME=MODEL`` names it, a bare MODEL is its own label.

    An argument with ``=`` that is itself an existing path stays a bare model, so folders named with ``=`` work.
    """
    named: dict[str, str] = {}
    for argument in arguments:
        name, eq, model = argument.partition("=")
        if not eq or Path(argument).exists():
            name, model = argument, argument
        elif not name or not model:
            raise MtbionerError(f"{argument!r}: write NAME=MODEL with both parts, e.g. teacher=default")
        if name in named:
            raise MtbionerError(f"model {name!r} is given twice; name each model once")
        named[name] = model
    return named


def _check_options(models: dict[str, str], input_file: Path | None, gold: str | None, limit, max_examples) -> None:
    """Every option mistake, before any model or corpus is loaded (loading takes seconds)."""
    from ..runtime.shipped import resolve_model

    if len(models) < 2:
        raise MtbionerError(f"compare needs at least two models, got {len(models)}: name two or more MODEL arguments")
    if (input_file is None) == (gold is None):
        raise MtbionerError("give exactly one of --input FILE (texts to tag) or --gold CORPUS (sentences to score)")
    if limit is not None and limit < 1:
        raise MtbionerError(f"--limit must be at least 1, not {limit}")
    if max_examples < 0:
        raise MtbionerError(f"--max-examples must be 0 or more, not {max_examples}")
    for model in models.values():
        if not resolve_model(model).is_dir():
            raise ModelFormatError(f"{model}: no such model folder")


def _read_texts(path: Path, limit: int | None) -> tuple[list[str], list[str]]:
    """Ids and texts of the input file's first ``limit`` documents."""
    from ..data.formats import read_documents

    records = [record for _, record in islice(read_documents(path), limit)]
    if not records:
        raise MtbionerError(f"{path}: no documents (every line is blank)")
    return [str(r["id"]) for r in records], [r["text"] for r in records]


def _check_outputs(html: Path, md: Path, input_file: Path | None) -> None:
    """Two distinct, writable reports, neither the input: checked before any model loads."""
    from ..fileio import check_output_file

    if html.resolve() == md.resolve():
        raise MtbionerError(f"--html and --md are the same file ({html}); the page would be lost: give two names")
    for path in (html, md):
        check_output_file(path, sources=(input_file,) if input_file is not None else ())
