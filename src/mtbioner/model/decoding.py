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
        every sentence are stacked (linear heads), or the sentences are padded and run through
        Viterbi and forward-backward together, one step per word position (CRF heads).
        """
        if not emissions:
            return []
        if self.kind == "crf":
            assert self.start is not None and self.end is not None and self.transitions is not None
            return crf_decode_batch(emissions, self.start, self.end, self.transitions, self.labels)
        stacked = np.concatenate(emissions)
        probs = softmax(stacked)
        best = probs.argmax(axis=-1)
        scores = probs[np.arange(len(best)), best].astype(np.float32)
        labels = np.array(self.labels, dtype=object)[best].tolist()
        edges = accumulate((len(e) for e in emissions), initial=0)
        return [(labels[a:b], scores[a:b]) for a, b in pairwise(edges)]

    def decode_found(self, emissions: Sequence[np.ndarray]) -> list[tuple[int, list[str], np.ndarray]]:
        """``(index, labels, scores)`` of the sentences whose labels are not all ``O``, in order: what tagging
        reads. The same labels and scores as :meth:`decode_all`, but a linear head's all-``O`` sentences (most
        sentences, for most of ten heads) are never turned into lists of labels, and a CRF head's get no
        forward-backward (:func:`crf_decode_batch` with ``found_only``).
        """
        if self.kind == "crf" and emissions:
            assert self.start is not None and self.end is not None and self.transitions is not None
            decoded = crf_decode_batch(emissions, self.start, self.end, self.transitions, self.labels, found_only=True)
            return [(i, tags, scores) for i, (tags, scores) in enumerate(decoded) if _found(tags)]
        if not emissions or "O" not in self.labels:
            return [(i, tags, scores) for i, (tags, scores) in enumerate(self.decode_all(emissions)) if _found(tags)]
        stacked = np.concatenate(emissions)
        probs = softmax(stacked)
        best = probs.argmax(axis=-1)
        edges = np.fromiter(accumulate((len(e) for e in emissions), initial=0), np.int64, len(emissions) + 1)
        named = np.flatnonzero(best != self.labels.index("O"))
        if not len(named):
            return []
        scores = probs[np.arange(len(best)), best].astype(np.float32)
        names = np.array(self.labels, dtype=object)
        out = []
        for i in np.unique(np.searchsorted(edges, named, side="right") - 1).tolist():
            a, b = edges[i], edges[i + 1]
            out.append((i, names[best[a:b]].tolist(), scores[a:b]))
        return out


def _found(tags: list[str]) -> bool:
    return tags.count("O") != len(tags)


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


CRF_CHUNK = 256  # sentences decoded together: bounds the padded arrays, keeps padding within a length group


def crf_decode_batch(
    emissions: Sequence[np.ndarray],
    start: np.ndarray,
    end: np.ndarray,
    transitions: np.ndarray,
    labels: Sequence[str],
    found_only: bool = False,
) -> list[tuple[list[str], np.ndarray]]:
    """Viterbi labels and the marginal of each chosen label, for many sentences at once.

    The same arithmetic as :func:`viterbi` and :func:`crf_marginals` on each sentence, but one
    numpy call per word position for a whole group of sentences instead of per sentence: a
    Python loop over every word of every sentence cost more than the encoder itself. Sentences
    are sorted by length, so at position ``i`` the sentences still running are a prefix.

    ``found_only``: a sentence whose best path is all ``O`` gets no marginals (forward-backward, the larger
    part of the work) and comes back empty (``[]``), for :meth:`Decoder.decode_found`, which skips it.
    """
    lengths = np.array([len(e) for e in emissions])
    results: list[tuple[list[str], np.ndarray]] = [([], np.zeros(0, dtype=np.float32))] * len(emissions)
    order = [int(i) for i in np.argsort(-lengths, kind="stable") if lengths[i] > 0]
    names = np.array(labels, dtype=object)
    for first in range(0, len(order), CRF_CHUNK):
        chunk = order[first : first + CRF_CHUNK]
        padded = np.zeros((len(chunk), lengths[chunk[0]], emissions[chunk[0]].shape[1]), emissions[chunk[0]].dtype)
        for row, index in enumerate(chunk):
            padded[row, : lengths[index]] = emissions[index]
        chunk_lengths = lengths[chunk]
        best = _viterbi_sorted(padded, chunk_lengths, start, end, transitions)
        rows = np.arange(len(chunk))
        if found_only and "O" in labels:  # rows stay longest first, as the marginals need
            named = (best != list(labels).index("O")) & (np.arange(best.shape[1]) < chunk_lengths[:, None])
            rows = rows[named.any(axis=1)]
            if not len(rows):
                continue
            padded, best = padded[rows, : chunk_lengths[rows[0]]], best[rows, : chunk_lengths[rows[0]]]
        probs = _marginals_sorted(padded, chunk_lengths[rows], start, end, transitions)
        chosen = np.take_along_axis(probs, best[:, :, None], axis=2)[:, :, 0].astype(np.float32)
        for kept, row in enumerate(rows.tolist()):
            n = chunk_lengths[row]
            results[chunk[row]] = (names[best[kept, :n]].tolist(), chosen[kept, :n])
    return results


def _running(lengths: np.ndarray) -> np.ndarray:
    """How many sentences (sorted longest first) still have a word at each position."""
    return (lengths[None, :] > np.arange(lengths[0])[:, None]).sum(axis=1)


def _viterbi_sorted(
    emissions: np.ndarray, lengths: np.ndarray, start: np.ndarray, end: np.ndarray, transitions: np.ndarray
) -> np.ndarray:
    """``[B, T]`` best paths of padded ``[B, T, C]`` emissions sorted longest first (padding unused)."""
    batch, steps, classes = emissions.shape
    running = _running(lengths)
    score = start + emissions[:, 0]
    back = np.broadcast_to(np.arange(classes), (batch, steps, classes)).copy()  # identity after a sentence ends
    for i in range(1, steps):
        k = running[i]
        total = score[:k, :, None] + transitions + emissions[:k, i][:, None, :]
        back[:k, i] = total.argmax(axis=1)
        score[:k] = total.max(axis=1)
    path = np.empty((batch, steps), dtype=np.int64)
    path[:] = (score + end).argmax(axis=1)[:, None]
    for i in range(steps - 1, 0, -1):
        k = running[i]
        path[:k, i - 1] = back[np.arange(k), i, path[:k, i]]
    return path


def _marginals_sorted(
    emissions: np.ndarray, lengths: np.ndarray, start: np.ndarray, end: np.ndarray, transitions: np.ndarray
) -> np.ndarray:
    """``[B, T, C]`` label marginals (forward-backward) of padded emissions sorted longest first.

    Log-domain like :func:`crf_marginals`, but each step's log-sum-exp over the previous label is a
    small matrix product of shifted exponentials (``log(exp(a - max a) @ exp(T - max T))``), which
    cannot underflow while the transition scores span less than ~700. A word's marginals sum to
    one, so ``alpha + beta`` is normalised per word instead of through the partition function.
    """
    batch, steps, _ = emissions.shape
    running = _running(lengths)
    shift = transitions.max()
    step = np.exp(transitions - shift)
    alpha = np.zeros(emissions.shape)
    beta = np.zeros(emissions.shape)
    alpha[:, 0] = start + emissions[:, 0]
    for i in range(1, steps):
        k = running[i]
        alpha[:k, i] = _log_matmul_exp(alpha[:k, i - 1], step) + shift + emissions[:k, i]
    beta[np.arange(batch), lengths - 1] = end
    for i in range(steps - 2, -1, -1):
        k = running[i + 1]
        beta[:k, i] = _log_matmul_exp(emissions[:k, i + 1] + beta[:k, i + 1], step.T) + shift
    joint = alpha + beta
    joint = np.exp(joint - joint.max(axis=2, keepdims=True))
    return joint / joint.sum(axis=2, keepdims=True)


def _log_matmul_exp(scores: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``log(exp(scores) @ step)`` for ``[k, C]`` log scores, shifted by each row's maximum."""
    top = scores.max(axis=1, keepdims=True)
    return np.log(np.exp(scores - top) @ step) + top
