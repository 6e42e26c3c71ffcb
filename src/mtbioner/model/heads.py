"""One shallow tagging head per corpus: linear + softmax (the paper's) or linear + CRF."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .decoding import Decoder, HeadKind
from .encoding import IGNORE_INDEX


class LinearHead(nn.Module):
    """Dropout and a linear layer from the encoder's hidden size to the corpus' labels."""

    kind: HeadKind = "linear"

    def __init__(self, hidden_size: int, labels: list[str], dropout: float = 0.1) -> None:
        super().__init__()
        self.labels = list(labels)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, len(labels))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, T, H]`` hidden states to ``[B, T, C]`` emission scores at every sub-token.

        Float32 even under bfloat16 autocast, so that the loss and the CRF's sums are taken in float32.
        """
        return self.classifier(self.dropout(hidden)).float()

    def loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy over labelled positions, and how many there were."""
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return loss, int((labels != IGNORE_INDEX).sum())

    def decoder(self) -> Decoder:
        return Decoder(tuple(self.labels), "linear")


class CRFHead(LinearHead):
    """Linear emissions plus a linear-chain CRF over the labelled (first) sub-tokens.

    The CRF runs over words, not sub-tokens: positions without a label are squeezed out
    before the forward algorithm, so a word split into many pieces is still one step.
    """

    kind: HeadKind = "crf"

    def __init__(self, hidden_size: int, labels: list[str], dropout: float = 0.1) -> None:
        super().__init__(hidden_size, labels, dropout)
        n = len(labels)
        self.start = nn.Parameter(torch.zeros(n))
        self.end = nn.Parameter(torch.zeros(n))
        self.transitions = nn.Parameter(torch.zeros(n, n))

    def loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed negative log-likelihood of the gold sequences, and the number of sequences."""
        emissions, tags, mask = compact(logits, labels)
        keep = mask.any(dim=1)
        emissions, tags, mask = emissions[keep], tags[keep], mask[keep]
        if emissions.shape[0] == 0:
            return logits.sum() * 0.0, 0
        return (self.log_partition(emissions, mask) - self.gold_score(emissions, tags, mask)).sum(), len(tags)

    def gold_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Score of the given label sequences ``[B, W]`` (mask: real words)."""
        batch = torch.arange(tags.shape[0])
        score = self.start[tags[:, 0]] + emissions[batch, 0, tags[:, 0]]
        for i in range(1, tags.shape[1]):
            step = self.transitions[tags[:, i - 1], tags[:, i]] + emissions[batch, i, tags[:, i]]
            score = score + step * mask[:, i]
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)
        return score + self.end[last]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Log of the sum of scores of all label sequences (forward algorithm)."""
        alpha = self.start + emissions[:, 0]
        for i in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + emissions[:, i].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, i : i + 1].bool(), nxt, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def decoder(self) -> Decoder:
        def arr(p: torch.Tensor) -> np.ndarray:
            return p.detach().float().cpu().numpy()

        return Decoder(tuple(self.labels), "crf", arr(self.start), arr(self.end), arr(self.transitions))


def compact(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each row's labelled positions to the front: ``[B, T, C]`` to ``[B, W, C]``.

    Returns the emissions, the labels (0 where padded) and a 0/1 mask of real words.
    """
    mask = labels != IGNORE_INDEX
    width = max(int(mask.sum(1).max()), 1)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
    emissions = logits.gather(1, order.unsqueeze(2).expand(-1, -1, logits.shape[2]))
    tags = labels.gather(1, order)
    word_mask = mask.gather(1, order)
    return emissions, torch.where(word_mask, tags, 0), word_mask.long()


def build_head(kind: HeadKind, hidden_size: int, labels: list[str], dropout: float = 0.1) -> LinearHead:
    """A head of the given kind (``"linear"`` or ``"crf"``)."""
    if kind == "linear":
        return LinearHead(hidden_size, labels, dropout)
    if kind == "crf":
        return CRFHead(hidden_size, labels, dropout)
    raise ValueError(f"unknown head kind {kind!r}: use 'linear' or 'crf'")
