"""``mtbioner tag-corpus``: tag a corpus of shards on Ray, locally or on a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..apps.scaling import CorpusJob, summary
from ..apps.scaling import tag_corpus as run_corpus_job
from ..constants import INFERENCE_BATCH_SIZE
from ._common import setup

_ADDRESS_HELP = "Existing Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: a local Ray)."


def tag_corpus(
    model: Annotated[Path, typer.Argument(help="Model folder (torch or ONNX), seen by every worker.")],
    inputs: Annotated[str, typer.Option("--input", "-i", help="Folder of .jsonl/.txt shards, or a glob.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for <shard>.jsonl and markers.")],
    address: Annotated[str | None, typer.Option("--ray-address", help=_ADDRESS_HELP)] = None,
    num_workers: Annotated[int, typer.Option(help="Ray actors, each with one copy of the model.")] = 1,
    cpus_per_worker: Annotated[int, typer.Option(help="CPUs (and torch threads) per actor.")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per actor (0: CPU only).")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = INFERENCE_BATCH_SIZE,
    chunk: Annotated[int, typer.Option(help="Documents tagged together inside a shard.")] = 256,
    retries: Annotated[int, typer.Option(help="Extra attempts for a shard whose worker failed.")] = 2,
    types: Annotated[list[str] | None, typer.Option("--types", help="Keep only these entity types.")] = None,
    corpora: Annotated[list[str] | None, typer.Option("--corpora", help="Run only these heads.")] = None,
    min_score: Annotated[float, typer.Option(help="Drop entities less confident than this (0..1).")] = 0.0,
    flat: Annotated[bool, typer.Option("--flat", help="Resolve overlapping entities to the best.")] = False,
    merge_types: Annotated[
        bool,
        typer.Option(
            "--merge-types/--per-corpus",
            help="One answer in the merged scheme (Gene, Chemical, Disease, Species, Anatomy, CellLine, CellType), "
            "as `mtbioner tag` gives, or every head's own answer in its corpus's types.",
        ),
    ] = True,
    progress: Annotated[bool, typer.Option(help="Show shards done and documents/s.")] = True,
) -> None:
    """Tag a corpus of shards on Ray (locally or on a cluster): OUT/<shard>.jsonl per input shard.

    A rerun skips finished shards; failed shards are retried, then listed (exit status 1).

    Examples:
      mtbioner tag-corpus m --input abstracts/ --output tagged/ --num-workers 2
      mtbioner tag-corpus m --input 'pubmed/*.jsonl' --output tagged/ --ray-address auto --num-workers 64
    """
    setup()
    job = CorpusJob(
        model=model,
        inputs=inputs,
        output=output,
        address=address,
        num_workers=num_workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        batch_size=batch_size,
        chunk=chunk,
        retries=retries,
        types=types or [],
        corpora=corpora or [],
        min_score=min_score,
        flat=flat,
        merge_types=merge_types,
        progress=progress,
    )
    report = run_corpus_job(job)
    typer.echo(summary(report, output), err=True)
    if report.failed:
        raise typer.Exit(1)
