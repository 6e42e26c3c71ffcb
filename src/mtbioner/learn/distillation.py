"""Knowledge distillation of a trained multi-task tagger into a shallower one (``mtbioner distill``).

The student is the teacher with fewer transformer layers: the embeddings, the chosen layers
(by default every other one, always keeping the last) and every head (CRF transitions
included) are copied, so it starts close to the teacher and ships with the same tokenizer,
labels, letter-case features and dictionary (match tags computed as tagging computes them). It
then learns every head at once from the teacher's per-word label distributions (computed once,
before training), plus the gold labels where a sentence has them.

The loss of a batch (one source per batch: a corpus with gold labels, or raw text without)::

    loss = T^2 * sum_heads  mean_words  KL( softmax(t_h / T) || softmax(s_h / T) )
           + alpha * gold(head of the batch's corpus)          # corpus batches only

``t_h`` and ``s_h`` are the teacher's and the student's emission scores of head ``h`` at the
first sub-token of each word the window owns (the positions that carry labels and predictions);
the mean is over those words. ``gold`` is the head's own training loss: cross-entropy per word
for a linear head, the CRF's negative log-likelihood per sentence for a CRF head. For a CRF head
the KL term compares the per-word softmax of the emissions (not CRF marginals); its transitions
start as the teacher's and move only through the gold term. Raw-text batches contribute the KL
term alone: unlabelled text is where distillation adds what the annotated corpora do not have.

Like :mod:`mtbioner.learn.pretraining`, the output folder is rewritten whole (``fileio.atomic_dir``) every
``save_every`` steps and after every epoch, with ``checkpoint/`` (optimizer, scheduler, position in
the epoch, running sums) until the end; every batch reseeds torch from (seed, epoch, batch), so
``resume=True`` ends with exactly the weights of an uninterrupted run.

A narrower student (smaller hidden size) is not offered: it cannot start from the teacher's weights.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from torch import nn
from tqdm.auto import tqdm

from ..constants import __version__
from ..data.corpus import Corpus
from ..data.leakage import remove_leaks, scored_texts
from ..data.text import text_surroundings
from ..errors import CorpusFormatError, ModelFormatError, MtbionerError
from ..fileio import write_json
from ..model.encoding import Batch, Window, collate, document_surroundings, encode, length_grouped_batches
from ..model.model import WEIGHTS_NAME, HeadConfig, MultiTaskTagger
from .training import (
    batch_seed,
    check_resumable,
    devel_scores,
    parameter_groups,
    read_resume_state,
    schedule_batches,
    write_resume_state,
)

logger = logging.getLogger(__name__)

INFO_FILE = "distillation.json"
LOG_FILE = "log.jsonl"
TEXT_SOURCE = "<raw text>"
"""Batch-source name of the raw (unlabelled) texts."""


@dataclass
class DistillConfig:
    """Distillation settings.

    ``layers``: a count N (N teacher layers evenly spaced, the last always kept: every other layer
    for half the depth), an explicit list of teacher layer indices (0-based, increasing), or
    ``None`` for half the teacher's layers (rounded up). ``temperature`` softens both
    distributions in the KL term; ``alpha`` weighs the gold loss against it. ``splits`` are the
    corpus splits whose text is distilled on (train and/or devel, never test).
    """

    layers: int | list[int] | None = None
    temperature: float = 2.0
    alpha: float = 0.5
    lr: float = 1e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    batch_size: int = 32
    epochs: int = 3
    seed: int = 42
    save_every: int = 500
    max_grad_norm: float = 1.0
    splits: list[str] = field(default_factory=lambda: ["train"])
    limit: int | None = None
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        checks = [
            (self.temperature > 0, f"temperature must be positive, not {self.temperature}"),
            (self.alpha >= 0, f"alpha must be 0 or more, not {self.alpha}"),
            (self.lr > 0, f"lr must be positive, not {self.lr}"),
            (0 <= self.warmup <= 1, f"warmup is a proportion of the steps (0..1), not {self.warmup}"),
            (self.batch_size >= 1, f"batch size must be at least 1, not {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be at least 1, not {self.epochs}"),
            (self.save_every >= 1, f"save-every must be at least 1 step, not {self.save_every}"),
            (self.limit is None or self.limit >= 1, f"limit must be at least 1, not {self.limit}"),
        ]
        for ok, message in checks:
            if not ok:
                raise MtbionerError(message)
        if "test" in self.splits:
            raise MtbionerError("distillation never reads a corpus' test split: use train and/or devel")
        bad = [s for s in self.splits if s not in ("train", "devel")]
        if bad or not self.splits:
            raise MtbionerError(f"splits to distill on must be train and/or devel, not {self.splits}")


# ---------------------------------------------------------------- the student


def choose_layers(teacher_layers: int, layers: int | Sequence[int] | None) -> list[int]:
    """Teacher layer indices the student keeps.

    >>> choose_layers(6, 3), choose_layers(6, 2), choose_layers(12, 4), choose_layers(6, None)
    ([1, 3, 5], [2, 5], [2, 5, 8, 11], [1, 3, 5])
    """
    n = teacher_layers
    if layers is None:
        layers = (n + 1) // 2
    if isinstance(layers, int):
        if not 1 <= layers <= n:
            raise MtbionerError(f"--layers {layers} is out of range: the teacher has {n} layers (1 to {n})")
        return [(i + 1) * n // layers - 1 for i in range(layers)]
    chosen = [int(i) for i in layers]
    if not chosen:
        raise MtbionerError("--layers lists no layer")
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise MtbionerError(f"--layers {bad} out of range: the teacher's layers are 0 to {n - 1}")
    if any(b <= a for a, b in zip(chosen, chosen[1:], strict=False)):
        raise MtbionerError(f"--layers {chosen}: list teacher layers in increasing order, each once")
    return chosen


def parse_layers(value: str | None) -> int | list[int] | None:
    """``"3"`` (a count) or ``"0,2,5"`` (teacher layer indices) from the command line."""
    if value is None or not value.strip():
        return None
    try:
        if "," in value:
            return [int(part) for part in value.split(",") if part.strip()]
        return int(value)
    except ValueError:
        raise MtbionerError(f"--layers {value!r}: give a count (3) or teacher layer indices (1,3,5)") from None


def teacher_depth(model: MultiTaskTagger) -> int:
    return int(model.encoder.config.num_hidden_layers)


def make_student(teacher: MultiTaskTagger, layers: int | Sequence[int] | None = None) -> MultiTaskTagger:
    """A copy of ``teacher`` keeping only the chosen transformer layers.

    Embeddings (token-type rows of case-feature models too), the kept layers in order and every
    head (with CRF start/end/transition scores) are copied exactly; the config's layer count is
    updated so that ``MultiTaskTagger.from_pretrained`` rebuilds the student from its folder.
    """
    depth = teacher_depth(teacher)
    chosen = choose_layers(depth, layers)
    container = _layer_container(teacher.encoder, depth)
    encoder_config = dict(teacher.config.encoder_config)
    key = "num_hidden_layers" if "num_hidden_layers" in encoder_config else "n_layers"
    if key not in encoder_config:
        raise MtbionerError("the teacher's encoder config has no num_hidden_layers: cannot make a student")
    encoder_config[key] = len(chosen)
    extra = {**teacher.config.extra, "distillation": {"teacher_layers": depth, "layers": chosen}}
    config = replace(
        teacher.config,
        encoder_config=encoder_config,
        corpora={
            name: HeadConfig(list(h.labels), h.head, h.loss_weight) for name, h in teacher.config.corpora.items()
        },
        extra=extra,
    )
    student = MultiTaskTagger(config, tokenizer=teacher.tokenizer, dictionary=teacher.dictionary)
    source = teacher.state_dict()
    prefix = f"encoder.{container}."
    weights = {}
    for name in student.state_dict():
        origin = name
        if name.startswith(prefix):
            index, rest = name[len(prefix) :].split(".", 1)
            origin = f"{prefix}{chosen[int(index)]}.{rest}"
        weights[name] = source[origin].detach().clone()
    student.load_state_dict(weights, strict=True)
    return student.to(next(teacher.parameters()).device)


def _layer_container(encoder: nn.Module, depth: int) -> str:
    """Dotted name of the encoder's list of transformer layers (``encoder.layer`` in BERT)."""
    found = [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == depth
        and name.rsplit(".", 1)[-1] in ("layer", "layers")
    ]
    if len(found) != 1:
        raise MtbionerError(
            f"{type(encoder).__name__}: cannot find its {depth} transformer layers; "
            "distillation needs a BERT-style encoder"
        )
    return found[0]


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


# ---------------------------------------------------------------- data


@dataclass
class Source:
    """The windows of one batch source; ``gold`` is the head whose labels they carry (None: raw text)."""

    name: str
    windows: list[Window]
    gold: str | None
    sentences: int


def read_sources(
    sources: Sequence[str], data_dir: str | Path | None, splits: Sequence[str], limit: int | None
) -> tuple[list[Corpus], list[str], dict[str, int]]:
    """Corpora (the ``splits`` and devel, without sentences of any of their test splits) and raw texts
    (``.txt``, ``.jsonl``, ``.pubtator`` files).

    Returns:
        The corpora, the raw texts (exact duplicates dropped) and how many texts each file gave.
    """
    from ..data.corpus import read_corpus, resolve_corpus
    from .pretraining import TEXT_SUFFIXES, file_texts

    if "test" in splits:
        raise MtbionerError("distillation never reads a corpus' test split: use train and/or devel")
    corpora: list[Corpus] = []
    texts: list[str] = []
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for source in sources:
        file = Path(source).expanduser()
        if file.is_file() and file.suffix.lower() in TEXT_SUFFIXES:
            before = len(texts)
            for text in file_texts(file, limit):
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
            counts[source] = len(texts) - before
        else:
            path = resolve_corpus(source, data_dir)
            wanted = list(dict.fromkeys([*splits, "devel"]))
            try:
                corpus = read_corpus(path, splits=wanted, limit=limit)
            except CorpusFormatError as exc:
                if "devel" in splits or "missing split 'devel'" not in str(exc):
                    raise
                corpus = read_corpus(path, splits=list(splits), limit=limit)  # no devel: not scored
            corpora.append(corpus)
    # like training, never learn from a sentence of a scored split (the corpora's test splits)
    corpora, _ = remove_leaks(corpora, scored_texts({c.name: c.path for c in corpora}))
    return corpora, texts, counts


def build_sources(
    teacher: MultiTaskTagger, corpora: Sequence[Corpus], texts: Sequence[str], splits: Sequence[str]
) -> dict[str, Source]:
    """Windows of each corpus (gold labels of the head of the same name) and of the raw texts."""
    from ..runtime.tagging import Tagger

    config = teacher.config
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise MtbionerError(f"two corpora share a name: {names}; corpus names (folder names) must be unique")
    out: dict[str, Source] = {}
    for corpus in corpora:
        if corpus.name not in config.corpora:
            raise MtbionerError(
                f"the teacher has no head {corpus.name!r} (its heads: {', '.join(config.corpora)}); "
                "give that corpus' text as a raw-text file instead"
            )
        labels = config.corpora[corpus.name].labels
        used = [split for split in splits if split in corpus.splits]
        sentences = [s for split in used for s in corpus.sentences(split)]
        unknown = sorted({t for s in sentences for t in s.tags} - set(labels))
        if unknown:
            raise MtbionerError(f"{corpus.name}: labels {unknown} are not in the teacher's head ({labels})")
        words = [s.tokens for s in sentences]
        documents = [(split, s.document) for split in used for s in corpus.sentences(split)]
        windows = encode(
            teacher.tokenizer,
            words,
            config.max_length,
            config.stride,
            tags=[s.tags for s in sentences],
            label2id={label: i for i, label in enumerate(labels)},
            case=config.case_features,
            matches=_matches(teacher, words),
            context=config.context,
            surroundings=document_surroundings(words, documents, config.context) if config.context else None,
        )
        out[corpus.name] = Source(corpus.name, windows, corpus.name, len(sentences))
    if texts:
        read = [(text, s) for text in texts for s in Tagger.split(text)]
        words = [[t.text for t in s.tokens] for _, s in read]
        surroundings = [text_surroundings(text, s, config.context) for text, s in read] if config.context else None
        windows = encode(
            teacher.tokenizer, words, config.max_length, config.stride, case=config.case_features,
            matches=_matches(teacher, words), context=config.context, surroundings=surroundings,
        )  # fmt: skip
        out[TEXT_SOURCE] = Source(TEXT_SOURCE, windows, None, len(words))
    if not any(s.windows for s in out.values()):
        raise MtbionerError("no text to distill on: name corpora (train split) or raw-text files with text in them")
    return out


def _matches(teacher: MultiTaskTagger, sentences: Sequence[Sequence[str]]) -> list | None:
    """Dictionary match tags for a dictionary-feature teacher, as tagging computes them (the whole dictionary).

    Training hid each sentence's own fold of terms; here the student learns what the teacher does at
    inference, so both see the tags a user's text would get.
    """
    if not teacher.config.dictionary_features:
        return None
    return [teacher.dictionary.match(words) for words in sentences]


def word_mask(batch: Batch) -> torch.Tensor:
    """``[B, T]`` True at the first sub-token of every word a window owns (where labels sit)."""
    mask = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
    for row, window in enumerate(batch.windows):
        mask[row, list(window.positions)] = True
    return mask


# ---------------------------------------------------------------- the loss


def soft_loss(
    student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor], mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * sum over heads of mean over words of KL(softmax(teacher/T) || softmax(student/T))``.

    ``teacher`` holds each head's scores at the masked positions only (``[words, C]``, in mask order).
    """
    words = max(int(mask.sum()), 1)
    total = None
    for name, target in teacher.items():
        t = torch.log_softmax(target.float() / temperature, dim=-1)
        s = torch.log_softmax(student[name][mask].float() / temperature, dim=-1)
        kl = nn.functional.kl_div(s, t, reduction="sum", log_target=True)
        total = kl if total is None else total + kl
    assert total is not None
    return total * (temperature**2) / words


class TeacherScores:
    """The teacher's scores at every owned word of every window, computed in one pass before training.

    The teacher is fixed and in eval mode, so a window's scores are the same every epoch: one pass
    replaces a teacher forward per batch per epoch (for a half-depth student, a third of each step).
    Each source keeps one ``[words, C]`` tensor per head, its windows' words one after another.
    """

    def __init__(
        self, teacher: MultiTaskTagger, sources: Mapping[str, Source], batch_size: int, progress: bool = False
    ) -> None:
        device = next(teacher.parameters()).device
        pad_id = teacher.tokenizer.pad_token_id or 0
        self.scores: dict[str, dict[str, torch.Tensor]] = {}
        self.starts: dict[str, list[int]] = {}
        total = sum(len(s.windows) for s in sources.values())
        bar = tqdm(total=total, desc="teacher scores", unit="win", disable=not progress, leave=False)
        for name, source in sources.items():
            if not source.windows:
                continue
            self.starts[name] = list(accumulate((len(w.words) for w in source.windows), initial=0))
            rows: dict[int, dict[str, torch.Tensor]] = {}
            for indices in length_grouped_batches([len(w) for w in source.windows], batch_size):
                batch = collate([source.windows[i] for i in indices], pad_id)
                types = None if batch.token_type_ids is None else batch.token_type_ids.to(device)
                matched = None if batch.dictionary_ids is None else batch.dictionary_ids.to(device)
                with torch.inference_mode():
                    out = teacher.forward_all(
                        batch.input_ids.to(device), batch.attention_mask.to(device), None, types, matched
                    )
                for row, index in enumerate(indices):
                    positions = list(source.windows[index].positions)
                    rows[index] = {head: value[row, positions].float().cpu() for head, value in out.items()}
                bar.update(len(indices))
            heads = list(teacher.config.corpora)
            self.scores[name] = {
                head: torch.cat([rows[i][head] for i in range(len(source.windows))]) for head in heads
            }
        bar.close()

    def batch(self, source: str, indices: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        """Every head's scores at the owned words of these windows, in the order :func:`word_mask` reads them."""
        starts = self.starts[source]
        index = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in indices])
        return {head: scores[index].to(device) for head, scores in self.scores[source].items()}


@dataclass
class LossParts:
    loss: torch.Tensor
    kl: float
    gold: float | None


def batch_loss(
    student: MultiTaskTagger,
    teacher: MultiTaskTagger,
    batch: Batch,
    gold: str | None,
    config: DistillConfig,
    taught: Mapping[str, torch.Tensor] | None = None,
) -> LossParts:
    """The distillation loss of one batch (module docstring); ``gold`` names the head of its labels.

    ``taught``: the teacher's scores at the batch's owned words (:class:`TeacherScores`), or
    ``None`` to run the teacher on the batch.
    """
    device = next(student.parameters()).device
    ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)
    types = None if batch.token_type_ids is None else batch.token_type_ids.to(device)
    matched = None if batch.dictionary_ids is None else batch.dictionary_ids.to(device)
    mask = word_mask(batch).to(device)
    if taught is None:
        with torch.inference_mode():
            full = teacher.forward_all(ids, attention, None, types, matched)
        taught = {name: value[mask].clone() for name, value in full.items()}  # inference tensors cannot join autograd
    scores = student.forward_all(ids, attention, None, types, matched)
    kl = soft_loss(scores, taught, mask, config.temperature)
    if gold is None or batch.labels is None:
        return LossParts(kl, float(kl.detach()), None)
    total, count = student.head(gold).loss_sum(scores[gold], batch.labels.to(device))
    hard = total / max(count, 1)
    return LossParts(kl + config.alpha * hard, float(kl.detach()), float(hard.detach()))


# ---------------------------------------------------------------- the loop


def _new_sums() -> dict[str, float]:
    return {"loss": 0.0, "kl": 0.0, "gold": 0.0, "gold_batches": 0, "text_batches": 0, "windows": 0, "seconds": 0.0}


def distill(
    teacher: MultiTaskTagger | str | Path,
    corpora: Sequence[Corpus],
    texts: Sequence[str],
    output: str | Path,
    config: DistillConfig,
    resume: bool = False,
    progress: bool = True,
    inputs: dict[str, Any] | None = None,
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

    Returns:
        The student, in eval mode.
    """
    from transformers import get_linear_schedule_with_warmup

    out = Path(output)
    check_resumable(out, resume)
    teacher_path = None
    if not isinstance(teacher, MultiTaskTagger):
        teacher_path = str(teacher_folder(teacher))
        teacher = load_teacher(teacher_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    layers = choose_layers(teacher_depth(teacher), config.layers)
    student = make_student(teacher, layers)
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
    taught = TeacherScores(teacher, sources, config.eval_batch_size, progress)
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
                _save(out, student, optimizer, scheduler, state, info, final=False)
        bar.close()
        sums["seconds"] += time.perf_counter() - started
        entry = _epoch_entry(epoch, state, sums)
        entry["devel"] = devel_scores(student, devel, config.eval_batch_size)
        student.train()
        if entry["devel"]:
            entry["mean_devel_f1"] = round(sum(s["f1"] for s in entry["devel"].values()) / len(entry["devel"]), 4)
        state["log"].append(entry)
        state["epoch"], state["batch"], state["sums"] = epoch + 1, 0, _new_sums()
        logger.info("epoch %d: %s", epoch + 1, json.dumps(entry))
        _save(out, student, optimizer, scheduler, state, info, final=epoch + 1 == config.epochs)
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
    if parts.gold is None:
        sums["text_batches"] += 1
    else:
        sums["gold"] += parts.gold
        sums["gold_batches"] += 1
    sums["windows"] += windows


def _epoch_entry(epoch: int, state: dict, sums: dict) -> dict:
    batches = sums["gold_batches"] + sums["text_batches"]
    seconds = max(sums["seconds"], 1e-9)
    return {
        "epoch": epoch + 1,
        "step": state["step"],
        "loss": round(sums["loss"] / max(batches, 1), 6),
        "kl": round(sums["kl"] / max(batches, 1), 6),
        "gold_loss": round(sums["gold"] / sums["gold_batches"], 6) if sums["gold_batches"] else None,
        "batches": {"gold": int(sums["gold_batches"]), "text": int(sums["text_batches"])},
        "windows": int(sums["windows"]),
        "seconds": round(seconds, 2),
        "windows_per_s": round(sums["windows"] / seconds, 2),
    }


def _save(out: Path, student: MultiTaskTagger, optimizer, scheduler, state: dict, info: dict, final: bool) -> None:
    """Rewrite the student folder whole: model, distillation.json, log and (until the end) a checkpoint."""

    def extra(tmp: Path) -> None:
        write_json(tmp / INFO_FILE, {**info, "epochs_done": state["epoch"], "step": state["step"], "finished": final})
        (tmp / LOG_FILE).write_text("".join(json.dumps(e) + "\n" for e in state["log"]), encoding="utf-8")
        if final:
            return
        write_resume_state(tmp, optimizer, scheduler, state)

    student.save_pretrained(out, extra)


def read_info(folder: str | Path) -> dict:
    """The ``distillation.json`` of a student folder (empty when absent)."""
    path = Path(folder) / INFO_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
