"""Knowledge distillation of a trained multi-task tagger into a shallower one (``mtbioner distill``).

The student (:mod:`mtbioner.learn.students`) is the teacher with fewer transformer layers: the embeddings,
the chosen layers (by default every other one, always keeping the last; optionally with narrower
feed-forward layers) and every head (CRF transitions included) are copied, so it starts close to the
teacher and ships with the same tokenizer, labels, letter-case features and dictionary (match tags
computed as tagging computes them). It then learns every head at once from the teacher's per-word label
distributions (computed once, before training), plus the gold labels where a sentence has them.

The loss of a batch, its terms (KL to the teacher's per-word distributions, optional hidden-state and
attention terms, the gold labels) and why: :mod:`mtbioner.learn.distillation_loss`; the settings:
:mod:`mtbioner.learn.distillation_config`; what it reads: :mod:`mtbioner.learn.distillation_data`.

Like :mod:`mtbioner.learn.pretraining`, the output folder is rewritten whole (``fileio.atomic_dir``) every
``save_every`` steps and after every epoch, with ``checkpoint/`` (optimizer, scheduler, position in
the epoch, running sums) until the end; every batch reseeds torch from (seed, epoch, batch), so
``resume=True`` ends with exactly the weights of an uninterrupted run.

``mixed_precision="bf16"`` runs the student's and the per-batch teacher forward passes under bfloat16
autocast; every loss is taken in float32. The precomputed teacher scores stay float32.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from tqdm.auto import tqdm

from ..constants import __version__
from ..data.corpus import Corpus
from ..errors import ModelFormatError, MtbionerError
from ..fileio import read_json_record, write_json
from ..model.attention_heads import head_count
from ..model.encoding import collate
from ..model.model import WEIGHTS_NAME, MultiTaskTagger
from .distillation_config import DistillConfig
from .distillation_data import Source, build_sources
from .distillation_loss import LossParts, batch_loss
from .students import choose_layers, make_student, teacher_depth
from .teacher_scores import SCORES_NAME, TeacherScores
from .training import (
    CHECKPOINT_DIR,
    batch_seed,
    check_resumable,
    checkpoint_line,
    devel_scores,
    parameter_groups,
    read_resume_state,
    schedule_batches,
    write_resume_state,
)

__all__ = ["DistillConfig", "distill", "load_teacher", "read_info", "teacher_folder"]  # the settings live apart

logger = logging.getLogger(__name__)

INFO_FILE = "distillation.json"
LOG_FILE = "log.jsonl"


# ---------------------------------------------------------------- the teacher


def teacher_folder(path: str | Path) -> Path:
    """The teacher's folder: a folder as given, or a shipped model's name (``default``)."""
    from ..runtime.shipped import resolve_model

    try:
        folder = resolve_model(path).resolve()
    except ModelFormatError as exc:
        raise MtbionerError(f"teacher: {exc}") from exc
    if not folder.is_dir():
        raise MtbionerError(f"teacher {folder}: no such model folder")
    return folder


def load_teacher(path: str | Path) -> MultiTaskTagger:
    """A trained torch model folder, or an int8 export (the shipped models too) read back into torch.

    An export has no torch weights of its own: :func:`mtbioner.runtime.dequantize.tagger_from_int8` reads
    its int8 weights back, so that ``mtbioner distill default`` works from an installed package.
    """
    folder = teacher_folder(path)
    try:
        from ..runtime.dequantize import is_export, tagger_from_int8

        if is_export(folder):
            return tagger_from_int8(folder)
        return MultiTaskTagger.from_pretrained(folder)
    except ModelFormatError as exc:
        raise MtbionerError(f"teacher: {exc}") from exc


# ---------------------------------------------------------------- the loop


def _new_sums() -> dict[str, float]:
    return {
        "loss": 0.0, "kl": 0.0, "gold": 0.0, "hidden": 0.0, "attention": 0.0,
        "gold_batches": 0, "text_batches": 0, "windows": 0, "seconds": 0.0,
    }  # fmt: skip


def distill(
    teacher: MultiTaskTagger | str | Path,
    corpora: Sequence[Corpus],
    texts: Sequence[str],
    output: str | Path,
    config: DistillConfig,
    resume: bool = False,
    progress: bool = True,
    inputs: dict[str, Any] | None = None,
    teacher_scores: str | Path | None = None,
) -> MultiTaskTagger:
    """Distil ``teacher`` into a student with fewer layers and save it to ``output``.

    Args:
        teacher: A trained model, or its folder.
        corpora: Corpora named like teacher heads, with ``config.splits`` loaded (and devel, which is
            scored after every epoch). Their sentences are learned from with gold labels.
        texts: Raw documents (split into sentences and words as the tagger does), learned from the
            teacher alone.
        output: The student's model folder (any command takes it; ``export`` makes it ONNX).
        config: Settings.
        resume: Continue the interrupted run in ``output``.
        progress: Show a progress bar.
        inputs: How corpora and texts were chosen, recorded so that the command line can re-read them.
        teacher_scores: A file to read the teacher's scores from when they fit this run's teacher and
            windows, or to write them to when computed: runs of one teacher on the same text (a screen of
            distillation settings) then share one teacher pass. A resume reads the checkpoint's copy first.

    Returns:
        The student, in eval mode.
    """
    from transformers import get_linear_schedule_with_warmup

    out = Path(output)
    shared = None if teacher_scores is None else Path(teacher_scores)
    teacher_path = None if isinstance(teacher, MultiTaskTagger) else str(teacher_folder(teacher))
    check_resumable(out, resume, sources=(Path(teacher_path),) if teacher_path else ())
    if teacher_path is not None:
        teacher = load_teacher(teacher_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    layers = choose_layers(teacher_depth(teacher), config.layers)
    student = make_student(teacher, layers, config.intermediate_size, config.attention_heads)
    if resume:
        load_model(student, str(out / WEIGHTS_NAME))  # strict: the same student shape
    student.train()
    sources = build_sources(teacher, corpora, texts, config.splits)
    lengths = {name: [len(w) for w in s.windows] for name, s in sources.items() if s.windows}

    def batches_of(epoch: int) -> list[tuple[str, list[int]]]:
        return schedule_batches(lengths, config.batch_size, "mixed", config.seed, epoch)

    steps_per_epoch = len(batches_of(0))
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(
        parameter_groups(student, config.weight_decay), lr=config.lr, fused=device.type in ("cpu", "cuda")
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup * total), total)
    devel = {c.name: c for c in corpora if "devel" in c.splits}
    info = _run_info(config, teacher, teacher_path, student, layers, sources, steps_per_epoch, device)
    info["inputs"] = inputs or {}
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "sums": _new_sums(), "log": []}
    if resume:
        state = read_resume_state(out, optimizer, scheduler)
        info["teacher_devel"] = json.loads((out / INFO_FILE).read_text(encoding="utf-8")).get("teacher_devel", {})
        logger.info("resuming %s at epoch %d, batch %d", out, state["epoch"] + 1, state["batch"])
    else:
        info["teacher_devel"] = devel_scores(teacher, devel, config.eval_batch_size)
        if info["teacher_devel"]:
            logger.info("teacher devel F1: %s", json.dumps({k: v["f1"] for k, v in info["teacher_devel"].items()}))

    pad_id = teacher.tokenizer.pad_token_id or 0
    taught = _teacher_scores(out, teacher, teacher_path, sources, config, resume, progress, shared)
    for epoch in range(state["epoch"], config.epochs):
        batches = batches_of(epoch)
        sums = state["sums"]
        bar = tqdm(
            total=len(batches),
            initial=state["batch"],
            desc=f"distil {epoch + 1}/{config.epochs}",
            disable=not progress,
        )
        started = time.perf_counter()
        for index in range(state["batch"], len(batches)):
            name, indices = batches[index]
            source = sources[name]
            torch.manual_seed(batch_seed(config.seed, epoch, index))  # same dropout after a resume
            batch = collate([source.windows[i] for i in indices], pad_id, name)
            parts = batch_loss(student, teacher, batch, source.gold, config, taught.batch(name, indices, device))
            parts.loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(student.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] = index + 1
            _add_batch(sums, parts, len(indices))
            done = sums["gold_batches"] + sums["text_batches"]
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / done:.3f}", kl=f"{sums['kl'] / done:.3f}")
            if state["step"] % config.save_every == 0 and state["batch"] < len(batches):
                sums["seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                _save(out, student, optimizer, scheduler, state, info, final=False, taught=taught)
                if not progress:  # a run in the background says where it is at each checkpoint
                    where = (epoch + 1, config.epochs, state["batch"], len(batches), state["step"], total)
                    logger.info(checkpoint_line(*where, sums["loss"] / done, sums["windows"], sums["seconds"]))
        bar.close()
        sums["seconds"] += time.perf_counter() - started
        entry = _epoch_entry(epoch, state, sums, config)
        entry["devel"] = devel_scores(student, devel, config.eval_batch_size)
        student.train()
        if entry["devel"]:
            entry["mean_devel_f1"] = round(sum(s["f1"] for s in entry["devel"].values()) / len(entry["devel"]), 4)
        state["log"].append(entry)
        state["epoch"], state["batch"], state["sums"] = epoch + 1, 0, _new_sums()
        logger.info("epoch %d: %s", epoch + 1, json.dumps(entry))
        _save(out, student, optimizer, scheduler, state, info, final=epoch + 1 == config.epochs, taught=taught)
    student.eval()
    return student


def _run_info(
    config: DistillConfig,
    teacher: MultiTaskTagger,
    teacher_path: str | None,
    student: MultiTaskTagger,
    layers: list[int],
    sources: Mapping[str, Source],
    steps_per_epoch: int,
    device: torch.device,
) -> dict[str, Any]:
    """What ``distillation.json`` records: settings, both models' sizes, the sources and the machine."""
    return {
        "config": {**asdict(config), "layers": layers},
        "teacher": {
            "path": teacher_path,
            "layers": teacher_depth(teacher),
            "parameters": teacher.num_parameters(),
        },
        "student": {
            "layers": layers,
            "num_hidden_layers": len(layers),
            "parameters": student.num_parameters(),
            "encoder_parameters": sum(p.numel() for p in student.encoder.parameters()),
            "intermediate_size": getattr(student.encoder.config, "intermediate_size", None),
            "attention_heads": head_count(student.config.encoder_config),
        },
        "sources": {
            name: {"kind": "corpus" if s.gold else "text", "sentences": s.sentences, "windows": len(s.windows)}
            for name, s in sources.items()
        },
        "devel_in_training": "devel" in config.splits,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * config.epochs,
        "device": str(device),
        "torch": torch.__version__,
        "mtbioner_version": __version__,
    }


def _add_batch(sums: dict, parts: LossParts, windows: int) -> None:
    """Add one batch's losses to the epoch's running sums (gold loss only for corpus batches)."""
    sums["loss"] += float(parts.loss.detach())
    sums["kl"] += parts.kl
    for term in ("hidden", "attention"):
        value = getattr(parts, term)
        if value is not None:
            sums[term] = sums.get(term, 0.0) + value  # .get: sums of a checkpoint written before the term existed
    if parts.gold is None:
        sums["text_batches"] += 1
    else:
        sums["gold"] += parts.gold
        sums["gold_batches"] += 1
    sums["windows"] += windows


def _epoch_entry(epoch: int, state: dict, sums: dict, config: DistillConfig) -> dict:
    """The epoch's log line: mean loss and terms per batch (hidden and attention terms unweighted; None when off)."""
    batches = sums["gold_batches"] + sums["text_batches"]
    seconds = max(sums["seconds"], 1e-9)

    def term(key: str, weight: float) -> float | None:
        return round(sums.get(key, 0.0) / max(batches, 1), 6) if weight > 0 else None

    return {
        "epoch": epoch + 1,
        "step": state["step"],
        "loss": round(sums["loss"] / max(batches, 1), 6),
        "kl": round(sums["kl"] / max(batches, 1), 6),
        "gold_loss": round(sums["gold"] / sums["gold_batches"], 6) if sums["gold_batches"] else None,
        "hidden_loss": term("hidden", config.hidden_weight),
        "attention_loss": term("attention", config.attention_weight),
        "batches": {"gold": int(sums["gold_batches"]), "text": int(sums["text_batches"])},
        "windows": int(sums["windows"]),
        "seconds": round(seconds, 2),
        "windows_per_s": round(sums["windows"] / seconds, 2),
    }


def _teacher_scores(
    out: Path,
    teacher: MultiTaskTagger,
    teacher_path: str | None,
    sources: Mapping[str, Source],
    config: DistillConfig,
    resume: bool,
    progress: bool,
    shared: Path | None,
) -> TeacherScores:
    """The teacher's scores: the checkpoint's on a resume, else the ``shared`` file's, when they fit; else
    computed (and written to ``shared``, for the next run of this teacher on these windows)."""
    if teacher_path is None:  # a teacher in memory has no name that saved scores could be checked against
        return TeacherScores.compute(teacher, sources, config.eval_batch_size, progress)
    heads, name = list(teacher.config.corpora), teacher_path
    if resume:
        saved = TeacherScores.load(out / CHECKPOINT_DIR / SCORES_NAME, sources, name, heads)
        if saved is not None:
            logger.info("teacher scores read from %s", out / CHECKPOINT_DIR / SCORES_NAME)
            saved.kept_at = out / CHECKPOINT_DIR / SCORES_NAME
            return saved
    if shared is not None:
        saved = TeacherScores.load(shared, sources, name, heads)
        if saved is not None:
            logger.info("teacher scores read from %s", shared)
            return saved
    taught = TeacherScores.compute(teacher, sources, config.eval_batch_size, progress)
    if shared is not None:
        shared.parent.mkdir(parents=True, exist_ok=True)
        taught.save(shared, name)
        logger.info("teacher scores written to %s", shared)
    return taught


def _save(
    out: Path,
    student: MultiTaskTagger,
    optimizer,
    scheduler,
    state: dict,
    info: dict,
    final: bool,
    taught: TeacherScores | None = None,
) -> None:
    """Rewrite the student folder whole: model, distillation.json, log and (until the end) a checkpoint.

    The checkpoint keeps the teacher's scores (``taught``) for a resume: written the first time, linked
    from the checkpoint being replaced after that (they never change during a run).
    """

    def extra(tmp: Path) -> None:
        write_json(tmp / INFO_FILE, {**info, "epochs_done": state["epoch"], "step": state["step"], "finished": final})
        (tmp / LOG_FILE).write_text("".join(json.dumps(e) + "\n" for e in state["log"]), encoding="utf-8")
        if final:
            return
        checkpoint = write_resume_state(tmp, optimizer, scheduler, state)
        teacher = str(info.get("teacher", {}).get("path") or "")
        if taught is not None and teacher:
            _keep_scores(taught, out / CHECKPOINT_DIR / SCORES_NAME, checkpoint / SCORES_NAME, teacher)

    student.save_pretrained(out, extra)


def _keep_scores(taught: TeacherScores, previous: Path, target: Path, teacher: str) -> None:
    """Link the copy the checkpoint being replaced holds, or save one (the first checkpoint, or after a resume
    that had to compute the scores again)."""
    if taught.kept_at == previous and previous.is_file():
        try:
            target.hardlink_to(previous)
            return
        except OSError:
            pass  # a file system without hard links: write them again
    taught.save(target, teacher)
    taught.kept_at = previous  # where the new checkpoint's copy lies once the folder is swapped in


def read_info(folder: str | Path) -> dict:
    """The ``distillation.json`` of a student folder (empty when absent)."""
    return read_json_record(Path(folder) / INFO_FILE)
