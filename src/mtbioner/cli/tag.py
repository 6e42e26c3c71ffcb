"""``mtbioner tag``: raw text in, entities out, in JSONL, CoNLL, brat or PubTator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import MtbionerError
from ._common import setup

FORMATS = ("jsonl", "conll", "brat", "pubtator", "bioc-xml", "bioc-json")


def tag(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="Texts to tag, each printing one JSON line; a first argument that is a folder or a shipped "
            "model's name (or any first argument with --input) is the model (default: the shipped model).",
            metavar="[MODEL] [TEXT]...",
        ),
    ] = None,
    model_option: Annotated[
        str | None, typer.Option("--model", "-m", help="Model folder or shipped model name (default: shipped).")
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help=".txt (a document per line) or .jsonl (id, text).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output file (folder for brat); default stdout.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="jsonl, conll, brat, pubtator, bioc-xml or bioc-json.")
    ] = "jsonl",
    types: Annotated[
        list[str] | None, typer.Option("--types", help="Keep only these entity types (repeatable).")
    ] = None,
    corpora: Annotated[list[str] | None, typer.Option("--corpora", help="Run only these heads (repeatable).")] = None,
    min_score: Annotated[float, typer.Option(help="Drop entities less confident than this (0..1).")] = 0.0,
    flat: Annotated[bool, typer.Option("--flat", help="Resolve overlapping entities to the best one.")] = False,
    merge_types: Annotated[
        bool,
        typer.Option(
            "--merge-types/--per-corpus",
            help="One answer in the merged scheme (Gene, Chemical, Disease, Species, Anatomy, CellLine, CellType), "
            "or every head's own answer in its corpus's types.",
        ),
    ] = True,
    link: Annotated[
        str | None,
        typer.Option(help="Link entities to concepts: hpo, a KB file (id<TAB>name<TAB>type[<TAB>syn|syn]), an index."),
    ] = None,
    link_threshold: Annotated[
        float | None, typer.Option(help="Lowest link score that gives an id (default: the linker's, 0.6).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = INFERENCE_BATCH_SIZE,
    chunk: Annotated[int, typer.Option(help="Documents tagged together (sorted by length inside a chunk).")] = 256,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (stderr) for --input files.")] = True,
) -> None:
    """Tag raw text: entities with exact character offsets, one answer in merged types (--per-corpus: each head's).

    Examples:
      mtbioner tag "Mutations in BRCA1 cause breast cancer after tamoxifen treatment."
      mtbioner tag m "Mutations in BRCA1 cause breast cancer."      (your own model folder m)
      mtbioner tag m --input abstracts.jsonl --output entities.jsonl
      mtbioner tag m --input papers.txt --output ann/ --format brat
    """
    setup(verbose=False)
    from ..runtime.shipped import is_model_reference
    from ..runtime.tagging import Tagger, tag_documents

    texts = list(args or [])
    model = model_option
    if model is None and texts and (input_file is not None or is_model_reference(texts[0])):
        model = texts.pop(0)  # with --input there are no texts: the argument can only be the model

    if fmt not in FORMATS:
        raise MtbionerError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if bool(texts) == bool(input_file):
        raise MtbionerError("give either texts to tag or --input FILE (not both, not neither)")
    if output is None and fmt != "jsonl":
        raise MtbionerError(f"--format {fmt} needs --output")
    _check_texts(texts, model is None)
    if link_threshold is not None and (link is None or not 0.0 <= link_threshold <= 1.0):
        raise MtbionerError(
            "--link-threshold needs --link" if link is None else f"--link-threshold must be 0..1, not {link_threshold}"
        )
    _check_output(output, fmt, input_file)
    tagger = Tagger.load(model, batch_size=batch_size, link=link)
    options = {"types": types, "corpora": corpora, "min_score": min_score, "flat": flat, "merge_types": merge_types}
    if link is not None:
        options["link_threshold"] = link_threshold
    if texts:
        found = tagger.tag_batch(texts, **options)
        if output is None:
            for text, entities in zip(texts, found, strict=True):
                typer.echo(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))
            return
        pairs = enumerate(zip(texts, found, strict=True), 1)
        records = iter([{"id": str(n), "text": t, "entities": e} for n, (t, e) in pairs])
    else:
        records = tag_documents(tagger, input_file, chunk=chunk, progress=progress, **options)
    if output is None:
        for record in records:
            typer.echo(json.dumps(record, ensure_ascii=False))
        return
    from ..data import bioc_format, formats

    writer = {
        "jsonl": formats.write_jsonl,
        "conll": formats.write_conll,
        "brat": formats.write_brat,
        "pubtator": formats.write_pubtator,
        "bioc-xml": bioc_format.write_bioc_xml,
        "bioc-json": bioc_format.write_bioc_json,
    }[fmt]
    count = writer(records, output)
    typer.echo(f"tagged {count} documents -> {output}", err=True)


def _check_texts(texts: list[str], model_guessed: bool) -> None:
    """Refuse texts that are surely not texts: a file's name (meant for --input), or a model path that does not
    exist, which would otherwise be tagged as words and print nothing useful."""
    from pathlib import Path

    def exists(path: Path, folder: bool = False) -> bool:  # a text is not always a valid path (length, NUL)
        try:
            return path.is_dir() if folder else path.is_file()
        except (OSError, ValueError):
            return False

    for number, text in enumerate(texts, 1):
        if any("\ud800" <= c <= "\udfff" for c in text):
            raise MtbionerError(f"text argument {number} is not valid UTF-8")
        if not any(c.isspace() for c in text) and exists(Path(text)):
            raise MtbionerError(f"{text}: is a file; tag its documents with --input {text}")
    first = texts[0] if texts else ""
    one_word = bool(first) and not any(c.isspace() for c in first)
    if model_guessed and len(texts) > 1 and one_word and "/" in first and exists(Path(first).parent, folder=True):
        # "runs/m2 TEXT" with runs/ there: a mistyped model, not a text
        raise MtbionerError(
            f"{first}: no such model folder (to tag it as text, name the model first: mtbioner tag default ...)"
        )


def _check_output(output: Path | None, fmt: str, input_file: Path | None) -> None:
    """Refuse an output that cannot be written before the model loads and the documents are tagged."""
    from ..fileio import check_output_file

    if output is None:
        return
    if fmt == "brat":  # a folder of .txt/.ann pairs
        if output.exists() and not output.is_dir():
            raise MtbionerError(f"{output}: is a file; --format brat writes a folder")
        return
    check_output_file(output, sources=(input_file,) if input_file is not None else ())
