"""``mtbioner evaluate``, ``info`` and ``inspect``: scores, model facts and corpus facts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import MtbionerError
from ._common import DataDir, Limit, setup


def evaluate(
    model: Annotated[Path, typer.Argument(help="Model folder or shipped model name (e.g. default).")],
    corpora: Annotated[
        list[str] | None, typer.Argument(help="Corpora to score (default: the model's own), or HEAD=PATH.")
    ] = None,
    data_dir: DataDir = None,
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    limit: Limit = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the scores as JSON.")] = None,
    predictions: Annotated[Path | None, typer.Option(help="Write DIR/NAME.txt in conlleval's input format.")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per inference batch.")] = INFERENCE_BATCH_SIZE,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    merged: Annotated[
        bool,
        typer.Option(
            "--merged",
            help="Score the model's one merged answer (Gene, Chemical, Disease, Species, ...) instead of each head: "
            "on any corpus whose types map into the merged scheme, with exact and lenient (HunFlair's) boundaries.",
        ),
    ] = False,
    type_map: Annotated[
        list[str] | None,
        typer.Option("--map", metavar="TYPE=MERGED", help="With --merged: map a corpus type to a merged type."),
    ] = None,
) -> None:
    """Entity-level P/R/F1 per corpus and entity type (exact match, as conlleval).

    Example: mtbioner evaluate default BC5CDR --data-dir ../shared/data --json scores.json
    """
    setup(verbose=False)
    from ..fileio import check_output_file

    if batch_size < 1:
        raise MtbionerError(f"--batch-size must be at least 1, not {batch_size}")
    if json_file is not None:
        check_output_file(json_file)
    if predictions is not None and predictions.exists() and not predictions.is_dir():
        raise MtbionerError(f"{predictions}: is a file; --predictions writes a folder")
    if merged:
        _evaluate_merged(model, corpora, data_dir, split, limit, json_file, type_map or [], batch_size, progress)
        return
    if type_map:
        raise MtbionerError("--map applies to --merged scoring; add --merged")
    from ..data.corpus import read_corpus, resolve_corpus
    from ..runtime.evaluation import evaluate_corpus, format_table, write_conlleval, write_json_report
    from ..runtime.loading import load_backend

    backend = load_backend(model)
    jobs = []  # every corpus read and matched to a head before any is scored or written
    for spec in corpora or list(backend.config.corpora):
        head, sep, path = spec.partition("=")
        corpus = read_corpus(resolve_corpus(path if sep else spec, data_dir), splits=[split], limit=limit)
        head = head if sep else corpus.name
        if head not in backend.config.corpora:
            raise MtbionerError(
                f"{model} has no head {head!r} to score corpus {corpus.name!r}; "
                f"heads: {list(backend.config.corpora)}. "
                f"Use HEAD=PATH to score a folder with a named head."
            )
        jobs.append((corpus, head))
    scored = [(corpus, *evaluate_corpus(backend, corpus, split, head, batch_size, progress)) for corpus, head in jobs]
    reports = [report for _, report, _ in scored]
    typer.echo(format_table(reports))
    if predictions is not None:
        for corpus, _, predicted in scored:
            write_conlleval(predictions / f"{corpus.name}.txt", corpus.sentences(split), predicted)
    if json_file is not None:
        write_json_report(json_file, reports)


def _evaluate_merged(model, corpora, data_dir, split, limit, json_file, pairs, batch_size, progress) -> None:
    from ..data.corpus import read_corpus, resolve_corpus
    from ..fileio import write_json
    from ..runtime.tagging import Tagger
    from ..study.cross_corpus import check_type_map, evaluate_merged, format_merged, parse_type_map

    tagger = Tagger.load(model, batch_size)
    type_map = parse_type_map(pairs)
    loaded = [read_corpus(resolve_corpus(spec, data_dir), splits=[split], limit=limit) for spec in corpora or []]
    if not loaded:
        raise MtbionerError("--merged: name the corpora to score, e.g. mtbioner evaluate default BC2GM --merged")
    corpus_types = {t for c in loaded for t in c.entity_types}
    # the types the merged answer gives; a --map target outside them would drop that gold type unscored
    check_type_map(pairs, type_map, corpus_types, set(tagger.merged_types))
    results = {c.name: evaluate_merged(tagger, c, split, type_map, progress=progress) for c in loaded}
    typer.echo(format_merged(results))
    if json_file is not None:
        write_json(json_file, {"merged": results, "type_map": type_map})


def info(
    model: Annotated[Path, typer.Argument(help="Model folder or shipped model name (e.g. default).")],
) -> None:
    """Corpora, entity types, heads, encoder, parameters, size on disk and training settings."""
    setup(verbose=False)
    from ..runtime.loading import describe_model

    typer.echo(describe_model(model))


def inspect(
    corpora: Annotated[list[str], typer.Argument(help="Corpus folders or names under --data-dir.")],
    data_dir: DataDir = None,
    limit: Limit = None,
    encoder: Annotated[
        str | None,
        typer.Option(help="Tokenizer to count sub-tokens with (default: MiniLM's, as the shipped model has it)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    held_out: Annotated[
        list[str] | None,
        typer.Option(
            "--held-out",
            metavar="CORPUS",
            help="Count train/devel sentences found in this corpus's devel or test too.",
        ),
    ] = None,
) -> None:
    """Per split: documents, sentences, tokens, entities per type, repairs, longest sentence in sub-tokens,
    and the train/devel sentences that a run on these corpora removes because a scored split holds them."""
    setup(verbose=False)
    from ..data.corpus import corpus_stats, read_corpus, resolve_corpus
    from ..data.leakage import remove_leaks, scored_texts
    from ..model.fast_tokenizer import load_tokenizer
    from ..runtime.shipped import resolve_model

    # the shipped model's tokenizer is the default encoder's (MiniLM), and needs no torch to load
    tokenizer = load_tokenizer(encoder or resolve_model())
    loaded = [read_corpus(resolve_corpus(spec, data_dir), limit=limit) for spec in corpora]
    held = [resolve_corpus(spec, data_dir) for spec in held_out or []]
    _, leaks = remove_leaks(loaded, scored_texts({c.name: c.path for c in loaded}, held))
    result = {}
    for corpus in loaded:
        result[corpus.name] = corpus_stats(corpus, tokenizer)
        for split, counts in leaks.get(corpus.name, {}).items():
            result[corpus.name][split]["in_scored_splits"] = {"removed": counts["removed"], **counts["found_in"]}
    if json_out:
        typer.echo(json.dumps(result, indent=2))
        return
    for name, splits in result.items():
        typer.echo(f"{name}")
        for split, s in splits.items():
            ents = ", ".join(f"{t} {n}" for t, n in sorted(s["entities"].items()))
            typer.echo(
                f"  {split:<6} {s['format']:<8} docs {s['documents']:>5}  sentences {s['sentences']:>6}  "
                f"tokens {s['tokens']:>7}  repaired {s['repaired']:>4}  skipped {s['skipped']:>4}  "
                f"longest {s.get('longest_subtokens', '-')} sub-tokens  scheme {s['scheme']}"
            )
            typer.echo(f"         entities: {ents}")
            if "in_scored_splits" in s:
                found = dict(s["in_scored_splits"])
                where = ", ".join(f"{k} {v:,}" for k, v in found.items() if k != "removed")
                typer.echo(
                    f"         in scored splits (removed by train): {found['removed']:,}"
                    + (f" ({where})" if where else "")
                )
