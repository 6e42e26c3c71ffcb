"""``mtbioner train`` and ``mtbioner pretrain``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ..errors import MtbionerError
from ..fileio import read_json_record, recorded_fields
from ._common import (
    Bf16,
    DataDir,
    Limit,
    Resume,
    mixed_precision,
    parse_heads,
    parse_weights,
    resumed_precision,
    setup,
)


def train(
    corpora: Annotated[list[str] | None, typer.Argument(help="Corpus folders or names under --data-dir.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.")] = Path("model"),
    data_dir: DataDir = None,
    encoder: Annotated[
        str | None, typer.Option(help="Local Hugging Face checkpoint folder (default: packaged all-MiniLM-L6-v2).")
    ] = None,
    schedule: Annotated[str, typer.Option(help="mixed (Algorithm I) or sequential (Algorithm II).")] = "mixed",
    head: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KIND|NAME=KIND",
            help="linear (softmax, the paper's) or crf for every corpus; NAME=KIND for one (repeatable).",
        ),
    ] = None,
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
    context: Annotated[
        int,
        typer.Option(
            "--context",
            metavar="SUB_TOKENS",
            help="Read each sentence with up to this many sub-tokens of its document before and after it "
            "(document context; 0: sentences alone). The tagger then reads raw text the same way.",
        ),
    ] = 0,
    ema: Annotated[
        float,
        typer.Option(
            metavar="DECAY",
            help="Keep a moving average of the weights (decay per step, e.g. 0.999; 0: off): devel scores it "
            "and the model folder holds it.",
        ),
    ] = 0.0,
    dictionary_features: Annotated[
        bool,
        typer.Option(
            "--dictionary-features",
            help="Add each word's dictionary match tags to the heads' input; terms from the training splits "
            "(never test) and --dictionary files. See docs/dictionary.md.",
        ),
    ] = False,
    dictionary: Annotated[
        list[Path] | None,
        typer.Option(
            "--dictionary", metavar="FILE", help="A term<TAB>type file of extra terms (MeSH, ChEBI names); repeatable."
        ),
    ] = None,
    dictionary_folds: Annotated[
        int,
        typer.Option(help="Training sentences are matched with terms from outside their block of this many (1: all)."),
    ] = 5,
    dictionary_min_precision: Annotated[
        float,
        typer.Option(help="Drop terms whose matches in the training splits are entities of their type less often."),
    ] = 0.5,
    dictionary_case_sensitive: Annotated[
        bool, typer.Option("--dictionary-case-sensitive", help="Match dictionary terms with their exact case.")
    ] = False,
    dictionary_lr: Annotated[
        float, typer.Option(help="Learning rate of the dictionary match-tag table (it starts at zero).")
    ] = 1e-3,
    loss_weight: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=FLOAT", help="lambda of a corpus, NAME=FLOAT (repeatable; default 1)."),
    ] = None,
    train_splits: Annotated[
        str, typer.Option(help="Splits to train on: train, or train,devel (the paper's final models).")
    ] = "train",
    held_out: Annotated[
        list[str] | None,
        typer.Option(
            "--held-out",
            metavar="CORPUS",
            help="A corpus the model will be scored on without training on it (repeatable): no sentence of its "
            "devel or test split is trained or selected on (the trained corpora's test splits never are).",
        ),
    ] = None,
    limit: Limit = None,
    sampling_temperature: Annotated[
        float,
        typer.Option(help="Mixed schedule: corpus i gets batches in proportion to n_i^(1/T); 1 = the paper's mix."),
    ] = 1.0,
    save_every: Annotated[
        int, typer.Option(help="Steps between mid-epoch checkpoints (--resume continues from the latest).")
    ] = 500,
    bf16: Bf16 = False,
    resume: Resume = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train one model on several corpora.

    Example: mtbioner train BC2GM BC5CDR NCBI-disease --data-dir ../shared/data --output m
    """
    setup()
    from ..data.corpus import read_corpus, resolve_corpus, split_names
    from ..learn.training import TrainingConfig, read_training_info
    from ..learn.training import train as run_training

    if resume:
        info = read_training_info(output)
        if not info:
            raise MtbionerError(f"{output}: nothing to resume (no training.json)")
        with recorded_fields(output / "training.json"):
            # a run started with --bf16 on a host with bfloat16 may go on where it is emulated
            recorded = info["config"] | {"mixed_precision": resumed_precision(info["config"])}
            config = TrainingConfig(**recorded)
            paths = [Path(p) for p in info["corpora"].values()]
    else:
        if not corpora:
            raise MtbionerError("name at least one corpus, e.g. mtbioner train BC5CDR --output m")
        head_kind, heads = parse_heads(head or [])
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
            loss_weights=parse_weights(loss_weight or []),
            train_splits=split_names(train_splits),
            head=head_kind,  # type: ignore[arg-type]
            heads=heads,  # type: ignore[arg-type]
            limit=limit,
            encoder=encoder,
            sampling_temperature=sampling_temperature,
            case_features=case_features,
            context=context,
            ema=ema,
            dictionary_features=dictionary_features,
            dictionary_files=[str(p.resolve()) for p in dictionary or []],
            dictionary_folds=dictionary_folds,
            dictionary_min_precision=dictionary_min_precision,
            dictionary_case_sensitive=dictionary_case_sensitive,
            dictionary_lr=dictionary_lr,
            save_every=save_every,
            mixed_precision=mixed_precision(bf16),
            held_out=[str(resolve_corpus(c, data_dir).resolve()) for c in held_out or []],
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
    bf16: Bf16 = False,
    resume: Resume = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Continue masked-LM pre-training of an encoder on biomedical text; train --encoder takes the result.

    Example: mtbioner pretrain BC2GM BC5CDR NCBI-disease JNLPBA abstracts.txt --data-dir ../shared/data --output enc
    """
    setup()
    from ..data.corpus import split_names
    from ..learn.pretraining import INFO_FILE, PretrainConfig, gather_texts
    from ..learn.pretraining import pretrain as run_pretraining

    if resume:
        info_file = output / INFO_FILE
        if not info_file.is_file():
            raise MtbionerError(f"{output}: nothing to resume (no {INFO_FILE})")
        info = read_json_record(info_file)
        with recorded_fields(info_file):
            config = PretrainConfig(**info["config"] | {"mixed_precision": resumed_precision(info["config"])})
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
            mixed_precision=mixed_precision(bf16),
        )
    split_list = split_names(splits)
    # paths are recorded absolute, so that --resume re-reads the same text from any folder
    sources = [str(Path(s).resolve()) if Path(s).exists() else s for s in sources or []]
    data_dir = data_dir and data_dir.resolve()
    texts, counts = gather_texts(sources, data_dir, split_list, limit)
    inputs = {"sources": sources, "splits": split_list, "limit": limit, "data_dir": data_dir and str(data_dir)}
    run_pretraining(texts, output, config, resume=resume, progress=progress, sources=counts, inputs=inputs)
    typer.echo(f"saved encoder to {output}; use it with: mtbioner train ... --encoder {output}")
