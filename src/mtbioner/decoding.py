"""Turn per-word emission scores into labels and confidences, in numpy.

Decoding lives outside the model so that the torch model and the exported ONNX graph
share it: the graph returns emission scores, this module does softmax, Viterbi and CRF
marginals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Literal

import numpy as np

HeadKind = Literal["linear", "crf"]


@dataclass(frozen=True)
class Decoder:
    """What is needed to decode one head's emissions.

    Attributes:
        labels: Label of each class index.
        kind: ``"linear"`` (independent softmax per word) or ``"crf"``.
        start: CRF start scores ``[C]`` (``None`` for linear heads).
        end: CRF end scores ``[C]``.
        transitions: CRF scores ``[C, C]`` of moving from label ``i`` to label ``j``.
    """

    labels: tuple[str, ...]
    kind: HeadKind = "linear"
    start: np.ndarray | None = None
    end: np.ndarray | None = None
    transitions: np.ndarray | None = None

    def decode(self, emissions: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Labels of a whole sentence and the probability of each chosen label.

        Args:
            emissions: ``[n_words, C]`` scores of one sentence.

        Returns:
            The labels, and for each word the probability of its label: softmax for linear
            heads, the CRF marginal for CRF heads.
        """
        if emissions.shape[0] == 0:
            return [], np.zeros(0, dtype=np.float32)
        if self.kind == "linear":
            probs = softmax(emissions)
            best = probs.argmax(axis=-1)
        else:
            assert self.start is not None and self.end is not None and self.transitions is not None
            best = viterbi(emissions, self.start, self.end, self.transitions)
            probs = crf_marginals(emissions, self.start, self.end, self.transitions)
        scores = probs[np.arange(len(best)), best].astype(np.float32)
        return [self.labels[i] for i in best], scores

    def decode_all(self, emissions: Sequence[np.ndarray]) -> list[tuple[list[str], np.ndarray]]:
        """:meth:`decode` of many sentences; a linear head does them all in one softmax (same results).

        Per-sentence numpy calls cost more than the arithmetic on short sentences, so the words of
        every sentence are stacked; a CRF head still decodes sentence by sentence.
        """
        if self.kind != "linear" or not emissions:
            return [self.decode(e) for e in emissions]
        stacked = np.concatenate(emissions)
        probs = softmax(stacked)
        best = probs.argmax(axis=-1)
        scores = probs[np.arange(len(best)), best].astype(np.float32)
        labels = np.array(self.labels, dtype=object)[best].tolist()
        edges = accumulate((len(e) for e in emissions), initial=0)
        return [(labels[a:b], scores[a:b]) for a, b in pairwise(edges)]


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, stable for large scores."""
    shifted = x - x.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.exp(x - top).sum(axis=axis))


def viterbi(emissions: np.ndarray, start: np.ndarray, end: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """Highest-scoring label sequence of a linear-chain CRF.

    >>> e = np.array([[2.0, 0.0], [0.0, 1.0]])
    >>> t = np.array([[0.0, -5.0], [0.0, 0.0]])  # label 0 -> label 1 is expensive
    >>> viterbi(e, np.zeros(2), np.zeros(2), t).tolist()
    [0, 0]
    """
    n, _ = emissions.shape
    score = start + emissions[0]
    back = np.zeros((n, emissions.shape[1]), dtype=np.int64)
    for i in range(1, n):
        total = score[:, None] + transitions + emissions[i][None, :]
        back[i] = total.argmax(axis=0)
        score = total.max(axis=0)
    score = score + end
    path = [int(score.argmax())]
    for i in range(n - 1, 0, -1):
        path.append(int(back[i, path[-1]]))
    return np.array(path[::-1], dtype=np.int64)


def crf_marginals(emissions: np.ndarray, start: np.ndarray, end: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """``[n_words, C]`` marginal probability of each label at each word (forward-backward)."""
    n, c = emissions.shape
    alpha = np.zeros((n, c))
    beta = np.zeros((n, c))
    alpha[0] = start + emissions[0]
    for i in range(1, n):
        alpha[i] = _logsumexp(alpha[i - 1][:, None] + transitions, axis=0) + emissions[i]
    beta[-1] = end
    for i in range(n - 2, -1, -1):
        beta[i] = _logsumexp(transitions + (emissions[i + 1] + beta[i + 1])[None, :], axis=1)
    log_z = _logsumexp(alpha[-1] + end, axis=0)
    return np.exp(alpha + beta - log_z)
