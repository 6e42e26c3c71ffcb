"""Knowledge distillation of a trained multi-task tagger into a shallower one (``mtbioner distill``).

The student (:mod:`mtbioner.learn.students`) is the teacher with fewer transformer layers: the embeddings,
the chosen layers (by default every other one, always keeping the last; optionally with narrower
feed-forward layers) and every head (CRF transitions included) are copied, so it starts close to the
teacher and ships with the same tokenizer, labels, letter-case features and dictionary (match tags
computed as tagging computes them). It then learns every head at once from the teacher's per-word label
distributions (computed once, before training), plus the gold labels where a sentence has them.

The loss of a batch (one source per batch: a corpus with gold labels, or raw text without)::

    loss = T^2 * sum_heads  mean_words  KL( softmax(t_h / T) || softmax(s_h / T) )
           + hidden_weight * mean_layers MSE(student hidden states, teacher's)        # off by default
           + attention_weight * mean_layers mean_heads,queries KL(teacher attention || student's)  # off
           + alpha * gold(head of the batch's corpus)          # corpus batches only

``t_h`` and ``s_h`` are the teacher's and the student's emission scores of head ``h`` at the
first sub-token of each word the window owns (the positions that carry labels and predictions);
the mean is over those words. ``gold`` is the head's own training loss: cross-entropy per word
for a linear head, the CRF's negative log-likelihood per sentence for a CRF head. For a CRF head
the KL term compares the per-word softmax of the emissions (not CRF marginals); its transitions
start as the teacher's and move only through the gold term. Raw-text batches contribute the KL
term alone: unlabelled text is where distillation adds what the annotated corpora do not have.

The hidden-state term (TinyBERT, Jiao et al. 2020) compares the embedding output and the output of every
student layer with those of the teacher layer it was copied from, over the sub-tokens that are not
padding; the attention term (MiniLM, Wang et al. 2020) compares the attention distributions of the last
(or every) student layer with its teacher layer's, per head and query sub-token. Both need the teacher's
inner states, which the precomputed emission scores do not hold, so either one costs a teacher forward per
batch (:func:`batch_loss`); the attention term also switches both encoders to eager attention and turns
the student's attention dropout off, so that it learns the distributions it attends with.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from torch import nn
from tqdm.auto import tqdm

from ..constants import __version__
from ..data.corpus import Corpus
from ..data.text import text_surroundings
from ..errors import CorpusFormatError, ModelFormatError, MtbionerError
from ..fileio import read_json_record, write_json
from ..model.attention_heads import head_count
from ..model.encoding import Batch, Window, collate, document_surroundings, encode
from ..model.model import WEIGHTS_NAME, MultiTaskTagger
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
    without_scored_text,
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

    ``hidden_weight`` and ``attention_weight`` (0: off) weigh the hidden-state and attention terms of the
    loss (module docstring); ``attention_layers`` is ``"last"`` (MiniLM's choice: the last student layer
    against its teacher layer) or ``"all"`` (every student layer). ``intermediate_size`` narrows every
    student layer's feed-forward block to that many of the teacher's neurons (:mod:`mtbioner.learn.students`)
    and ``attention_heads`` its attention to that many of the teacher's heads; ``None`` keeps them all (the
    attention term then compares each student head with the teacher head it was copied from).
    ``mixed_precision`` is ``"no"`` or ``"bf16"`` (autocast, float32 losses).
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
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    attention_layers: str = "last"
    intermediate_size: int | None = None
    attention_heads: int | None = None
    mixed_precision: str = "no"

    def __post_init__(self) -> None:
        checks = [
            (self.hidden_weight >= 0, f"hidden weight must be 0 (off) or more, not {self.hidden_weight}"),
            (self.attention_weight >= 0, f"attention weight must be 0 (off) or more, not {self.attention_weight}"),
            (
                self.attention_layers in ("last", "all"),
                f"attention layers must be 'last' or 'all', not {self.attention_layers!r}",
            ),
            (
                self.mixed_precision in ("no", "bf16"),
                f"mixed precision must be 'no' or 'bf16', not {self.mixed_precision!r}",
            ),
            (self.temperature > 0, f"temperature must be positive, not {self.temperature}"),
            (self.alpha >= 0, f"alpha must be 0 or more, not {self.alpha}"),
            (self.lr > 0, f"lr must be positive, not {self.lr}"),
            (0 <= self.warmup <= 1, f"warmup is a proportion of the steps (0..1), not {self.warmup}"),
            (self.batch_size >= 1, f"batch size must be at least 1, not {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be at least 1, not {self.epochs}"),
            (self.save_every >= 1, f"save-every must be at least 1 step, not {self.save_every}"),
            (self.limit is None or self.limit >= 1, f"limit must be at least 1, not {self.limit}"),
            (
                self.intermediate_size is None or self.intermediate_size >= 1,
                f"intermediate size must be at least 1 neuron, not {self.intermediate_size}",
            ),
            (
                self.attention_heads is None or self.attention_heads >= 1,
                f"attention heads must be at least 1, not {self.attention_heads}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise MtbionerError(message)
        if "test" in self.splits:
            raise MtbionerError("distillation never reads a corpus' test split: use train and/or devel")
        bad = [s for s in self.splits if s not in ("train", "devel")]
        if bad or not self.splits:
            raise MtbionerError(f"splits to distill on must be train and/or devel, not {self.splits}")


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


# ---------------------------------------------------------------- data


@dataclass
class Source:
    """The windows of one batch source; ``gold`` is the head whose labels they carry (None: raw text)."""

    name: str
    windows: list[Window]
    gold: str | None
    sentences: int


def read_sources(
    sources: Sequence[str],
    data_dir: str | Path | None,
    splits: Sequence[str],
    limit: int | None,
    held_out: Sequence[str | Path] = (),
) -> tuple[list[Corpus], list[str], dict[str, int], dict]:
    """Corpora (the ``splits`` and devel, without sentences of a split the student is scored on) and raw texts
    (``.txt``, ``.jsonl``, ``.pubtator`` files).

    Scored splits are, as in training (:func:`~mtbioner.learn.training.without_scored_text`), the test splits of
    the corpora distilled on and the devel and test splits of the ``held_out`` corpora (folders): a student of a
    leave-out model is scored on the corpora its teacher left out, so it must not learn from their sentences
    either (some BioNLP09 sentences are in BC2GM's and JNLPBA's test sets).

    Returns:
        The corpora, the raw texts (exact duplicates dropped), how many texts each file gave, and what was
        removed (per corpus and split, as :func:`~mtbioner.data.leakage.remove_leaks` counts it).
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
    # like training, never learn from a sentence of a scored split
    corpora, leakage = without_scored_text(corpora, [str(path) for path in held_out])
    return corpora, texts, counts, leakage


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


def hidden_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean over layer pairs of the mean squared error per element of ``[B, T, H]`` hidden states, over the
    sub-tokens where ``mask`` (``[B, T]``, the attention mask) is set: padding carries nothing to learn.

    No projection: the student's layers are copies of the teacher's, of the same width.
    """
    keep = mask.bool()
    pairs = [(s[keep].float() - t[keep].float()).pow(2).mean() for s, t in zip(student, teacher, strict=True)]
    return torch.stack(pairs).mean()


ATTENTION_FLOOR = 1e-12
"""Probabilities are floored here before their log: a padded key has exactly 0 in both distributions."""


def attention_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Mean over layer pairs of the mean, over heads and non-padding queries, of KL(teacher row || student row).

    ``student``, ``teacher``: attention distributions ``[B, heads, T, T]`` (rows sum to 1 over the keys);
    ``mask``: ``[B, T]``, the attention mask. The floor only matters where the teacher's probability is 0
    (padded keys), whose terms are 0 whatever the student says.
    """
    queries = mask.bool()[:, None, :]
    pairs = []
    for s, t in zip(student, teacher, strict=True):
        s, t = s.float(), t.float()
        kl = (t * (t.clamp_min(ATTENTION_FLOOR).log() - s.clamp_min(ATTENTION_FLOOR).log())).sum(dim=-1)
        pairs.append(kl.masked_select(queries.expand_as(kl)).mean())
    return torch.stack(pairs).mean()


@dataclass
class LossParts:
    """A batch's loss and its terms, unweighted (``None``: a term this batch does not have)."""

    loss: torch.Tensor
    kl: float
    gold: float | None
    hidden: float | None = None
    attention: float | None = None


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
    ``None`` to run the teacher on the batch. The teacher runs on the batch anyway when the
    hidden-state or attention term is on: they need its inner states.
    """
    device = next(student.parameters()).device
    inputs = _inputs(batch, device)
    mask = word_mask(batch).to(device)
    states = {"hidden_states": config.hidden_weight > 0, "attentions": config.attention_weight > 0}
    if states["attentions"]:
        attention_ready(student, teacher)
    with _autocast(device, config.mixed_precision):
        reference, full = None, None
        if taught is None or any(states.values()):
            reference, full = _teacher_pass(teacher, inputs, states, scores=taught is None)
        output = student.encoder_output(*inputs[:3], **states)
        scores = student.head_scores(output.last_hidden_state, inputs[3])
    if full is not None:
        taught = {name: value[mask].clone() for name, value in full.items()}  # inference tensors cannot join autograd
    assert taught is not None
    kl = soft_loss(scores, taught, mask, config.temperature)
    parts = LossParts(kl, float(kl.detach()), None)
    if reference is not None and states["hidden_states"]:
        term = hidden_loss(*_paired_hidden(student, output, reference), inputs[1])
        parts.loss, parts.hidden = parts.loss + config.hidden_weight * term, float(term.detach())
    if reference is not None and states["attentions"]:
        term = attention_loss(*_paired_attentions(student, output, reference, config.attention_layers), inputs[1])
        parts.loss, parts.attention = parts.loss + config.attention_weight * term, float(term.detach())
    if gold is not None and batch.labels is not None:
        total, count = student.head(gold).loss_sum(scores[gold], batch.labels.to(device))
        hard = total / max(count, 1)
        parts.loss, parts.gold = parts.loss + config.alpha * hard, float(hard.detach())
    return parts


Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]
"""What a model reads of a batch: ids, attention mask, token types (case), dictionary match tags."""


def _inputs(batch: Batch, device: torch.device) -> Inputs:
    types = None if batch.token_type_ids is None else batch.token_type_ids.to(device)
    matched = None if batch.dictionary_ids is None else batch.dictionary_ids.to(device)
    return batch.input_ids.to(device), batch.attention_mask.to(device), types, matched


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    """bfloat16 autocast on ``device`` for ``"bf16"``, a context that changes nothing for ``"no"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _teacher_pass(
    teacher: MultiTaskTagger, inputs: Inputs, states: Mapping[str, bool], scores: bool
) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """The teacher's encoder output on a batch (with the inner states asked for) and, with ``scores``, every
    head's scores; inference tensors, to be cloned (or only read) by what joins the student's graph."""
    with torch.inference_mode():
        output = teacher.encoder_output(*inputs[:3], **states)
        return output, (teacher.head_scores(output.last_hidden_state, inputs[3]) if scores else None)


def teacher_layers(student: MultiTaskTagger) -> list[int]:
    """The teacher layer each student layer was copied from (recorded by ``make_student``)."""
    origin = student.config.extra.get("distillation", {})
    if "layers" not in origin:
        raise MtbionerError(
            "this student records no teacher layers (config extra.distillation): make it with make_student"
        )
    return list(origin["layers"])


def _paired_hidden(student: MultiTaskTagger, output: Any, reference: Any) -> tuple[list, list]:
    """The student's hidden states (embeddings, then each layer) and the teacher's they are compared with."""
    taught = reference.hidden_states
    pairs = [taught[0], *(taught[layer + 1] for layer in teacher_layers(student))]
    return list(output.hidden_states), [t.clone() for t in pairs]


def _paired_attentions(student: MultiTaskTagger, output: Any, reference: Any, which: str) -> tuple[list, list]:
    """The student's attention distributions (last layer, or all) and the teacher's they are compared with:
    each student head with the teacher head it was copied from (all of them, unless the student kept fewer)."""
    layers = teacher_layers(student)
    heads = student.config.extra.get("distillation", {}).get("heads") or [None] * len(layers)
    kept = range(len(layers)) if which == "all" else [len(layers) - 1]
    taught = [
        reference.attentions[layers[k]] if heads[k] is None else reference.attentions[layers[k]][:, heads[k]]
        for k in kept
    ]
    return [output.attentions[k] for k in kept], [t.clone() for t in taught]


def attention_ready(student: MultiTaskTagger, teacher: MultiTaskTagger) -> None:
    """Both encoders on eager attention (SDPA returns no distributions), the student's attention dropout off.

    Eager attention returns its distributions after dropout: a student in training mode would be compared
    with rows where a tenth of the probabilities are zeroed and the rest scaled up, not with what it
    attends with. Idempotent: :func:`batch_loss` calls it on every batch that needs attentions.
    """
    for model in (student, teacher):
        if model.encoder.config._attn_implementation != "eager":
            model.encoder.set_attn_implementation("eager")
    for module in student.encoder.modules():
        dropout = getattr(module, "dropout", None)
        if type(module).__name__.endswith("SelfAttention") and isinstance(dropout, nn.Dropout):
            dropout.p = 0.0


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
