"""``mtbioner distill``: a smaller, faster student from a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import MtbionerError
from ..fileio import recorded_fields
from ._common import DataDir, Resume, mixed_precision, resumed_precision, setup


def distill(
    teacher: Annotated[
        Path | None,
        typer.Argument(
            help="Model to distil: a trained folder, an int8 export or a shipped name such as default (not needed "
            "with --resume).",
            show_default=False,
        ),
    ] = None,
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="Corpora named like the teacher's heads (folders or names under --data-dir) and raw-text files "
            "(.txt, .jsonl, .pubtator). Default: the corpora the teacher was trained on.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Student model folder to write.")] = Path("student"),
    layers: Annotated[
        str | None,
        typer.Option(
            help="Student depth: a count N (N teacher layers evenly spaced, keeping the last) or teacher layer "
            "indices such as 1,3,5. Default: half the teacher's layers.",
            show_default=False,
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(help="Softmax temperature of the KL term.")] = 2.0,
    alpha: Annotated[float, typer.Option(help="Weight of the gold-label loss on annotated sentences.")] = 0.5,
    epochs: Annotated[int, typer.Option(help="Passes over the text.")] = 3,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    warmup: Annotated[float, typer.Option(help="Warm-up proportion of all steps (linear decay after).")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Windows per batch; one source per batch.")] = 32,
    splits: Annotated[
        str, typer.Option(help="Corpus splits to distil on: train and/or devel (never test).")
    ] = "train",
    data_dir: DataDir = None,
    held_out: Annotated[
        list[str] | None,
        typer.Option(
            "--held-out",
            metavar="CORPUS",
            help="A corpus the student will be scored on without learning from it (repeatable): no sentence of its "
            "devel or test split is distilled on. Default: the teacher's own (training.json), so a student of a "
            "leave-out model stays clean on the corpora its teacher left out.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Read only the first N sentences/texts of each split and file.")
    ] = None,
    save_every: Annotated[int, typer.Option(help="Write a resumable checkpoint every N steps.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed (batch order, dropout).")] = 42,
    hidden_weight: Annotated[
        float,
        typer.Option(
            help="Weight of the hidden-state term (TinyBERT): MSE between each student layer's output and its "
            "teacher layer's, and between the embeddings. 0: off; on, the teacher runs on every batch."
        ),
    ] = 0.0,
    attention_weight: Annotated[
        float,
        typer.Option(
            help="Weight of the attention term (MiniLM): KL between the teacher's and the student's attention "
            "distributions. 0: off; on, the teacher runs on every batch (eager attention, slower)."
        ),
    ] = 0.0,
    attention_layers: Annotated[
        str, typer.Option(help="Layers of the attention term: last (MiniLM's) or all student layers.")
    ] = "last",
    intermediate_size: Annotated[
        int | None,
        typer.Option(
            help="Feed-forward neurons each student layer keeps (largest input-row norm x output-column norm). "
            "Default: all of the teacher's.",
            show_default=False,
        ),
    ] = None,
    attention_heads: Annotated[
        int | None,
        typer.Option(
            help="Attention heads each student layer keeps, at their size (largest ||output columns @ value rows||). "
            "Default: all of the teacher's.",
            show_default=False,
        ),
    ] = None,
    bf16: Annotated[
        bool,
        typer.Option(
            "--bf16",
            help="Student and teacher forward passes under bfloat16 autocast (losses in float32): faster on CPUs "
            "with AMX or AVX-512 BF16 and on GPUs; elsewhere bfloat16 is software, many times slower, so the run "
            "distils in float32 and says so.",
        ),
    ] = False,
    teacher_scores: Annotated[
        Path | None,
        typer.Option(
            "--teacher-scores",
            help="A file of the teacher's scores over the training windows: read when it fits this run's teacher "
            "and windows, else computed and written there, so that runs of one teacher on the same text (a screen "
            "of settings) share one teacher pass.",
        ),
    ] = None,
    resume: Resume = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Distil a trained model into a student with fewer layers that learns every head from the teacher.

    Example: mtbioner distill m BC2GM BC5CDR abstracts.txt --data-dir ../shared/data --layers 3 --output m3
    """
    setup()
    from ..data.corpus import resolve_corpus, split_names
    from ..learn.distillation import distill as run_distillation
    from ..learn.distillation import read_info
    from ..learn.distillation_config import DistillConfig
    from ..learn.distillation_data import read_sources
    from ..learn.students import parse_layers

    if teacher_scores is not None and teacher_scores.is_dir():
        raise MtbionerError(f"--teacher-scores {teacher_scores}: a folder; name a file, e.g. runs/teacher.safetensors")
    if resume:
        info = read_info(output)
        if not info or not (output / "checkpoint" / "state.json").is_file():
            raise MtbionerError(f"{output}: nothing to resume (no unfinished distillation run there)")
        with recorded_fields(output / "distillation.json"):
            recorded = info["teacher"]["path"]
            config = DistillConfig(**info["config"] | {"mixed_precision": resumed_precision(info["config"])})
            inputs = info["inputs"]
            source_list, data_dir = inputs["sources"], inputs["data_dir"] and Path(inputs["data_dir"])
            held = list(inputs.get("held_out", []))
        if teacher is not None and str(teacher.expanduser().resolve()) != recorded:
            raise MtbionerError(f"{output} was distilled from {recorded}, not {teacher}; drop the teacher to resume")
        teacher = Path(recorded)
    else:
        if teacher is None:
            raise MtbionerError("name the teacher model folder, e.g. mtbioner distill m BC5CDR --output m3")
        _check_teacher(teacher, parse_layers(layers), intermediate_size, attention_heads)
        config = DistillConfig(
            layers=parse_layers(layers),
            temperature=temperature,
            alpha=alpha,
            lr=lr,
            warmup=warmup,
            batch_size=batch_size,
            epochs=epochs,
            seed=seed,
            save_every=save_every,
            splits=split_names(splits),
            limit=limit,
            hidden_weight=hidden_weight,
            attention_weight=attention_weight,
            attention_layers=attention_layers,
            intermediate_size=intermediate_size,
            attention_heads=attention_heads,
            mixed_precision=mixed_precision(bf16),
        )
        source_list = list(sources or []) or _teacher_corpora(teacher)
        # paths are recorded absolute, so that --resume re-reads the same text from any folder
        source_list = [str(Path(s).resolve()) if Path(s).exists() else s for s in source_list]
        data_dir = data_dir and data_dir.resolve()
        held = [str(resolve_corpus(c, data_dir).resolve()) for c in held_out or []] or _teacher_held_out(teacher)
    corpora, texts, counts, leakage = read_sources(source_list, data_dir, config.splits, config.limit, held)
    inputs = {"sources": source_list, "data_dir": data_dir and str(data_dir), "text_counts": counts,
              "held_out": held, "leakage": leakage}  # fmt: skip
    run_distillation(
        teacher, corpora, texts, output, config, resume=resume, progress=progress, inputs=inputs,
        teacher_scores=teacher_scores,
    )  # fmt: skip
    typer.echo(f"saved student to {output}")


def _check_teacher(teacher: Path, layers, intermediate_size: int | None, attention_heads: int | None = None) -> None:
    """Fail fast, before reading any corpus: the teacher folder and the student's layers, width and heads."""
    from ..learn.distillation import teacher_folder
    from ..learn.students import check_attention_heads, check_intermediate_size, choose_layers
    from ..model.attention_heads import head_count
    from ..model.model import read_config
    from ..runtime.dequantize import is_export
    from ..runtime.onnx_backend import read_onnx_config

    folder = teacher_folder(teacher)
    try:
        config = read_onnx_config(folder)[0] if is_export(folder) else read_config(folder)
    except MtbionerError as exc:
        raise MtbionerError(f"teacher: {exc}") from exc
    depth = config.encoder_config.get("num_hidden_layers")
    if isinstance(depth, int):
        choose_layers(depth, layers)
    check_intermediate_size(intermediate_size, config.encoder_config.get("intermediate_size"))
    check_attention_heads(attention_heads, head_count(config.encoder_config))


def _teacher_held_out(teacher: Path) -> list[str]:
    """The corpora the teacher was trained to be scored on without training on them (its ``--held-out``)."""
    from ..learn.distillation import teacher_folder
    from ..learn.training import read_training_info

    return list(read_training_info(teacher_folder(teacher)).get("config", {}).get("held_out", []))


def _teacher_corpora(teacher: Path) -> list[str]:
    """The corpus folders recorded in the teacher's training.json, else its heads' names (the shipped
    models name each head after its corpus, found under --data-dir). A recorded folder that is not there from
    here (``train`` records them as given, relative to where it ran) is named by its head instead."""
    from ..learn.distillation import teacher_folder
    from ..learn.training import read_training_info

    folder = teacher_folder(teacher)
    recorded = read_training_info(folder).get("corpora", {})
    if recorded:
        return [path if Path(path).is_dir() else name for name, path in recorded.items()]
    config_file = folder / "config.json"
    heads = list(json.loads(config_file.read_text(encoding="utf-8")).get("corpora", {}))
    if not heads:
        raise MtbionerError(
            "name at least one corpus or raw-text file (the teacher records no training corpora), "
            "e.g. mtbioner distill m BC5CDR abstracts.txt --output m3"
        )
    return heads
