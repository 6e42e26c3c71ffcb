"""The ``mtbioner`` command line: thin typer wrappers around the library.

Each command parses its options, builds a config, calls one library function and prints
a summary. User mistakes (:class:`~mtbioner.errors.MtbionerError`) print one line and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import INFERENCE_BATCH_SIZE
from .errors import MtbionerError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-task biomedical NER: one shared encoder, one tagging head per corpus (MT-BioNER).",
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder holding corpora by name (default: $MTBIONER_DATA).", show_default=False),
]
Limit = Annotated[int | None, typer.Option(help="Read only the first N sentences of each split (smoke runs).")]


def _quiet_libraries() -> None:
    """Keep transformers' load-time chatter (progress bars, notices) out of the CLI's output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _setup(verbose: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    _quiet_libraries()


def _parse_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            weights[name] = float(value)
        except ValueError:
            raise MtbionerError(f"--loss-weight {item!r}: expected NAME=FLOAT, e.g. BC2GM=0.5") from None
    return weights


@app.command()
def train(
    corpora: Annotated[list[str] | None, typer.Argument(help="Corpus folders or names under --data-dir.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.")] = Path("model"),
    data_dir: DataDir = None,
    encoder: Annotated[
        str | None, typer.Option(help="Local Hugging Face checkpoint folder (default: packaged all-MiniLM-L6-v2).")
    ] = None,
    schedule: Annotated[str, typer.Option(help="mixed (Algorithm I) or sequential (Algorithm II).")] = "mixed",
    head: Annotated[str, typer.Option(help="linear (softmax, the paper's) or crf.")] = "linear",
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 5e-5,
    warmup: Annotated[float, typer.Option(help="Warm-up proportion of all steps (linear decay after).")] = 0.4,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.01,
    batch_size: Annotated[int, typer.Option(help="Sentences (windows) per batch; one corpus per batch.")] = 32,
    epochs: Annotated[int, typer.Option(help="Passes over the training data.")] = 8,
    max_length: Annotated[
        int, typer.Option(help="Sub-tokens per window; longer sentences get overlapping windows.")
    ] = 128,
    seed: Annotated[int, typer.Option(help="Random seed (batch order, dropout, head init).")] = 42,
    freeze_encoder: Annotated[bool, typer.Option("--freeze-encoder", help="Train the heads only.")] = False,
    case_features: Annotated[
        bool,
        typer.Option("--case-features", help="Feed each word's letter case to the encoder (uncased ones lose it)."),
    ] = False,
    loss_weight: Annotated[
        list[str] | None, typer.Option(help="lambda of a corpus, NAME=FLOAT (repeatable; default 1).")
    ] = None,
    train_splits: Annotated[
        str, typer.Option(help="Splits to train on: train, or train,devel (the paper's final models).")
    ] = "train",
    limit: Limit = None,
    sampling_temperature: Annotated[
        float,
        typer.Option(help="Mixed schedule: corpus i gets batches in proportion to n_i^(1/T); 1 = the paper's mix."),
    ] = 1.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --output.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train one model on several corpora.

    Example: mtbioner train BC2GM BC5CDR NCBI-disease --data-dir ../shared/data --output m
    """
    _setup()
    from .corpus import read_corpus, resolve_corpus
    from .training import TrainingConfig, read_training_info
    from .training import train as run_training

    if resume:
        info = read_training_info(output)
        if not info:
            raise MtbionerError(f"{output}: nothing to resume (no training.json)")
        config = TrainingConfig(**info["config"])
        paths = [Path(p) for p in info["corpora"].values()]
    else:
        if not corpora:
            raise MtbionerError("name at least one corpus, e.g. mtbioner train BC5CDR --output m")
        config = TrainingConfig(
            schedule=schedule,  # type: ignore[arg-type]
            lr=lr,
            warmup=warmup,
            weight_decay=weight_decay,
            batch_size=batch_size,
            epochs=epochs,
            max_length=max_length,
            seed=seed,
            freeze_encoder=freeze_encoder,
            loss_weights=_parse_weights(loss_weight or []),
            train_splits=[s.strip() for s in train_splits.split(",") if s.strip()],
            head=head,  # type: ignore[arg-type]
            limit=limit,
            encoder=encoder,
            sampling_temperature=sampling_temperature,
            case_features=case_features,
        )
        paths = [resolve_corpus(c, data_dir) for c in corpora]
    splits = sorted(set(config.train_splits) | {"devel"})
    loaded = [read_corpus(p, splits=splits, limit=config.limit) for p in paths]
    for corpus in loaded:
        for split in corpus.splits.values():
            if split.repaired:
                logging.getLogger(__name__).warning(
                    "%s/%s: repaired %d ill-formed tag sequences", corpus.name, split.name, split.repaired
                )
    run_training(loaded, output, config, resume=resume, progress=progress)
    typer.echo(f"saved model to {output}")


@app.command()
def pretrain(
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="Corpora (folders or names under --data-dir) and raw-text files (.txt, .jsonl, .pubtator)."
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Encoder folder to write.")] = Path("encoder"),
    data_dir: DataDir = None,
    encoder: Annotated[
        str | None, typer.Option(help="Local Hugging Face checkpoint to start from (default: packaged MiniLM).")
    ] = None,
    splits: Annotated[
        str, typer.Option(help="Corpus splits to read: train and/or devel (never test).")
    ] = "train,devel",
    epochs: Annotated[int, typer.Option(help="Passes over the text.")] = 3,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    warmup: Annotated[float, typer.Option(help="Warm-up proportion of all steps (linear decay after).")] = 0.06,
    batch_size: Annotated[int, typer.Option(help="Texts (windows) per batch.")] = 32,
    max_length: Annotated[int, typer.Option(help="Sub-tokens per window; longer texts are cut into windows.")] = 128,
    mlm_probability: Annotated[float, typer.Option(help="Share of words (or sub-tokens) masked.")] = 0.15,
    whole_word_mask: Annotated[
        bool, typer.Option("--whole-word-mask/--token-mask", help="Mask whole words, or single sub-tokens.")
    ] = True,
    heldout: Annotated[int, typer.Option(help="Texts kept out to measure held-out MLM loss each epoch.")] = 500,
    save_every: Annotated[int, typer.Option(help="Write a resumable checkpoint every N steps.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed (held-out sample, batch order, masks).")] = 42,
    limit: Annotated[int | None, typer.Option(help="Read only the first N texts of each source/split.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --output.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Continue masked-LM pre-training of an encoder on biomedical text; train --encoder takes the result.

    Example: mtbioner pretrain BC2GM BC5CDR NCBI-disease JNLPBA abstracts.txt --data-dir ../shared/data --output enc
    """
    _setup()
    from .pretraining import INFO_FILE, PretrainConfig, gather_texts
    from .pretraining import pretrain as run_pretraining

    if resume:
        info_file = output / INFO_FILE
        if not info_file.is_file():
            raise MtbionerError(f"{output}: nothing to resume (no {INFO_FILE})")
        info = json.loads(info_file.read_text(encoding="utf-8"))
        config = PretrainConfig(**info["config"])
        sources, splits, limit = info["inputs"]["sources"], info["inputs"]["splits"], info["inputs"]["limit"]
        data_dir = info["inputs"]["data_dir"] and Path(info["inputs"]["data_dir"])
    else:
        config = PretrainConfig(
            encoder=encoder,
            epochs=epochs,
            lr=lr,
            warmup=warmup,
            batch_size=batch_size,
            max_length=max_length,
            mlm_probability=mlm_probability,
            whole_word_mask=whole_word_mask,
            seed=seed,
            heldout=heldout,
            save_every=save_every,
        )
    split_list = [s.strip() for s in splits.split(",") if s.strip()] if isinstance(splits, str) else splits
    # paths are recorded absolute, so that --resume re-reads the same text from any folder
    sources = [str(Path(s).resolve()) if Path(s).exists() else s for s in sources or []]
    data_dir = data_dir and data_dir.resolve()
    texts, counts = gather_texts(sources, data_dir, split_list, limit)
    inputs = {"sources": sources, "splits": split_list, "limit": limit, "data_dir": data_dir and str(data_dir)}
    run_pretraining(texts, output, config, resume=resume, progress=progress, sources=counts, inputs=inputs)
    typer.echo(f"saved encoder to {output}; use it with: mtbioner train ... --encoder {output}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model folder.")],
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
) -> None:
    """Entity-level P/R/F1 per corpus and entity type (exact match, as conlleval).

    Example: mtbioner evaluate m --data-dir ../shared/data --json scores.json
    """
    _setup(verbose=False)
    from .corpus import read_corpus, resolve_corpus
    from .evaluation import evaluate_corpus, format_table, write_conlleval, write_json_report
    from .loading import load_backend

    backend = load_backend(model)
    specs = corpora or list(backend.config.corpora)
    reports = []
    for spec in specs:
        head, sep, path = spec.partition("=")
        if sep:
            corpus = read_corpus(resolve_corpus(path, data_dir), splits=[split], limit=limit)
        else:
            corpus = read_corpus(resolve_corpus(spec, data_dir), splits=[split], limit=limit)
            head = corpus.name
        if head not in backend.config.corpora:
            raise MtbionerError(
                f"{model} has no head {head!r} to score corpus {corpus.name!r}; "
                f"heads: {list(backend.config.corpora)}. "
                f"Use HEAD=PATH to score a folder with a named head."
            )
        report, predicted = evaluate_corpus(backend, corpus, split, head, batch_size, progress)
        reports.append(report)
        if predictions is not None:
            write_conlleval(predictions / f"{corpus.name}.txt", corpus.sentences(split), predicted)
    typer.echo(format_table(reports))
    if json_file is not None:
        write_json_report(json_file, reports)


FORMATS = ("jsonl", "conll", "brat", "pubtator")


@app.command()
def tag(
    model: Annotated[Path, typer.Argument(help="Model folder (torch or exported ONNX).")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to tag; each prints one JSON line.")] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help=".txt (a document per line) or .jsonl (id, text).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output file (folder for brat); default stdout.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl, conll, brat or pubtator.")] = "jsonl",
    types: Annotated[
        list[str] | None, typer.Option("--types", help="Keep only these entity types (repeatable).")
    ] = None,
    corpora: Annotated[list[str] | None, typer.Option("--corpora", help="Run only these heads (repeatable).")] = None,
    min_score: Annotated[float, typer.Option(help="Drop entities less confident than this (0..1).")] = 0.0,
    flat: Annotated[bool, typer.Option("--flat", help="Resolve overlapping entities to the best one.")] = False,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = INFERENCE_BATCH_SIZE,
    chunk: Annotated[int, typer.Option(help="Documents tagged together (sorted by length inside a chunk).")] = 256,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (stderr) for --input files.")] = True,
) -> None:
    """Tag raw text: entities with exact character offsets, every type of every head.

    Examples:
      mtbioner tag m "Mutations in BRCA1 cause breast cancer after tamoxifen treatment."
      mtbioner tag m --input abstracts.jsonl --output entities.jsonl
      mtbioner tag m --input papers.txt --output ann/ --format brat
    """
    _setup(verbose=False)
    from .tagging import Tagger, tag_documents

    if fmt not in FORMATS:
        raise MtbionerError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if bool(texts) == bool(input_file):
        raise MtbionerError("give either texts to tag or --input FILE (not both, not neither)")
    if output is None and fmt != "jsonl":
        raise MtbionerError(f"--format {fmt} needs --output")
    for number, text in enumerate(texts or [], 1):
        if any("\ud800" <= c <= "\udfff" for c in text):
            raise MtbionerError(f"text argument {number} is not valid UTF-8")
    tagger = Tagger.load(model, batch_size=batch_size)
    options = {"types": types, "corpora": corpora, "min_score": min_score, "flat": flat}
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
    from . import formats

    writer = {
        "jsonl": formats.write_jsonl,
        "conll": formats.write_conll,
        "brat": formats.write_brat,
        "pubtator": formats.write_pubtator,
    }[fmt]
    count = writer(records, output)
    typer.echo(f"tagged {count} documents -> {output}", err=True)


@app.command()
def info(model: Annotated[Path, typer.Argument(help="Model folder.")]) -> None:
    """Corpora, entity types, heads, encoder, parameters, size on disk and training settings."""
    _setup(verbose=False)
    from .loading import describe_model

    typer.echo(describe_model(model))


@app.command()
def inspect(
    corpora: Annotated[list[str], typer.Argument(help="Corpus folders or names under --data-dir.")],
    data_dir: DataDir = None,
    limit: Limit = None,
    encoder: Annotated[
        str | None, typer.Option(help="Tokenizer to count sub-tokens with (default: packaged MiniLM).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Per split: documents, sentences, tokens, entities per type, repairs, longest sentence in sub-tokens."""
    _setup(verbose=False)
    from transformers import AutoTokenizer

    from .corpus import corpus_stats, read_corpus, resolve_corpus
    from .model import default_encoder

    tokenizer = AutoTokenizer.from_pretrained(encoder or default_encoder())
    result = {}
    for spec in corpora:
        corpus = read_corpus(resolve_corpus(spec, data_dir), limit=limit)
        result[corpus.name] = corpus_stats(corpus, tokenizer)
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


# Commands that live in their own modules (each imports its heavy libraries lazily).
from .serving import serve_command  # noqa: E402

app.command("serve")(serve_command)
from .export import export_command  # noqa: E402

app.command("export")(export_command)
from .scaling import tag_corpus_command  # noqa: E402

app.command("tag-corpus")(tag_corpus_command)
from .experiment import experiment_app  # noqa: E402

app.add_typer(experiment_app, name="experiment")


def _click_errors() -> tuple[tuple[type[Exception], ...], tuple[type[BaseException], ...]]:
    """Usage-error and abort classes of the click that typer runs on.

    typer 0.2x vendors its own copy of click (``typer._click``), whose exceptions are not
    ``click``'s; catching only one of them turned a mistyped option into a traceback.
    """
    errors: list[type[Exception]] = []
    aborts: list[type[BaseException]] = [typer.Abort]
    try:
        import click

        errors.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    except ImportError:  # pragma: no cover - click is a dependency of uvicorn and older typers
        pass
    try:
        from typer._click.exceptions import ClickException

        errors.append(ClickException)
    except ImportError:  # typer before the vendored click
        pass
    return tuple(errors), tuple(aborts)


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and exit status 2."""
    usage_errors, aborts = _click_errors()
    try:
        rc = app(standalone_mode=False, prog_name="mtbioner")
    except MtbionerError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except usage_errors as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except aborts:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
