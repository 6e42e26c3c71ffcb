"""The distillation loss of one batch (:func:`batch_loss`) and its terms.

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import MtbionerError
from ..model.encoding import Batch
from ..model.model import MultiTaskTagger
from .distillation_config import DistillConfig


def word_mask(batch: Batch) -> torch.Tensor:
    """``[B, T]`` True at the first sub-token of every word a window owns (where labels sit)."""
    mask = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
    for row, window in enumerate(batch.windows):
        mask[row, list(window.positions)] = True
    return mask


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
