from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mtbioner.model import decoding
from mtbioner.model.decoding import Decoder, crf_marginals, softmax, viterbi
from mtbioner.model.encoding import IGNORE_INDEX
from mtbioner.model.heads import CRFHead, LinearHead, build_head, compact


def brute_force(emissions, start, end, transitions):
    """Score of every label sequence, by enumeration (the reference for Viterbi and marginals)."""
    n, c = emissions.shape
    scores = {}
    for path in itertools.product(range(c), repeat=n):
        s = start[path[0]] + end[path[-1]] + sum(emissions[i, path[i]] for i in range(n))
        s += sum(transitions[path[i - 1], path[i]] for i in range(1, n))
        scores[path] = s
    return scores


def test_viterbi_hand_checked_example() -> None:
    # Labels O, B, I. Emissions alone prefer O I I (6), but O -> I is forbidden by the transitions,
    # so the best sequence is B I I (1.5 + 2 + 2 = 5.5), ahead of O B I (2 + 1 + 2 = 5).
    emissions = np.array([[2.0, 1.5, 0.0], [0.0, 1.0, 2.0], [0.0, 0.0, 2.0]])
    transitions = np.array([[0.0, 0.0, -100.0], [0.0, -0.5, 0.0], [0.0, -0.5, 0.0]])
    path = viterbi(emissions, np.zeros(3), np.zeros(3), transitions)
    assert path.tolist() == [1, 2, 2]


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_and_marginals_match_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 4, 3
    e, s, t, en = rng.normal(size=(n, c)), rng.normal(size=c), rng.normal(size=(c, c)), rng.normal(size=c)
    scores = brute_force(e, s, en, t)
    best = max(scores, key=scores.get)
    assert viterbi(e, s, en, t).tolist() == list(best)
    z = np.logaddexp.reduce(np.array(list(scores.values())))
    expected = np.zeros((n, c))
    for path, value in scores.items():
        for i, label in enumerate(path):
            expected[i, label] += np.exp(value - z)
    np.testing.assert_allclose(crf_marginals(e, s, en, t), expected, atol=1e-9)


def test_crf_loss_is_negative_log_likelihood() -> None:
    torch.manual_seed(0)
    head = CRFHead(4, ["B-X", "I-X", "O"], dropout=0.0)
    with torch.no_grad():
        head.transitions.normal_()
        head.start.normal_()
        head.end.normal_()
    logits = torch.randn(1, 5, 3)
    labels = torch.tensor([[IGNORE_INDEX, 0, IGNORE_INDEX, 1, 2]])  # 3 words at positions 1, 3, 4
    loss, count = head.loss_sum(logits, labels)
    e = logits[0, [1, 3, 4]].numpy()
    scores = brute_force(e, head.start.detach().numpy(), head.end.detach().numpy(), head.transitions.detach().numpy())
    log_z = np.logaddexp.reduce(np.array(list(scores.values())))
    assert count == 1
    assert float(loss.detach()) == pytest.approx(log_z - scores[(0, 1, 2)], rel=1e-5)


def test_crf_loss_handles_padding_rows() -> None:
    head = CRFHead(4, ["B-X", "I-X", "O"])
    logits = torch.randn(2, 4, 3)
    labels = torch.tensor([[IGNORE_INDEX, 0, 1, IGNORE_INDEX], [IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX]])
    loss, count = head.loss_sum(logits, labels)
    assert count == 2 and torch.isfinite(loss)
    # A one-word sequence scores start + emission + end only.
    one = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX]])
    single, _ = head.loss_sum(logits[1:], one)
    gold = head.start[2] + logits[1, 1, 2] + head.end[2]
    expected = torch.logsumexp(head.start + logits[1, 1] + head.end, 0) - gold
    assert single.item() == pytest.approx(expected.item(), rel=1e-5)


def test_compact_moves_labelled_positions_to_front() -> None:
    logits = torch.arange(12, dtype=torch.float).reshape(1, 4, 3)
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX, 0]])
    emissions, tags, mask = compact(logits, labels)
    assert emissions[0].tolist() == [[3.0, 4.0, 5.0], [9.0, 10.0, 11.0]]
    assert tags.tolist() == [[2, 0]] and mask.tolist() == [[1, 1]]


def test_linear_decoder_scores_are_probabilities() -> None:
    decoder = Decoder(("B-X", "I-X", "O"))
    labels, scores = decoder.decode(np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
    assert labels == ["B-X", "O"]
    np.testing.assert_allclose(scores, softmax(np.array([[5.0, 0, 0], [0, 0, 3.0]])).max(axis=1), rtol=1e-6)
    assert decoder.decode(np.zeros((0, 3)))[0] == []


@pytest.mark.parametrize("classes, scale", [(3, 1.0), (11, 3.0), (5, 40.0)])
def test_batched_crf_decoding_equals_each_sentence(monkeypatch, classes, scale) -> None:
    """Padded, length-sorted, chunked Viterbi and forward-backward give each sentence's own result,
    also with scores large enough to underflow a plain exponential."""
    monkeypatch.setattr(decoding, "CRF_CHUNK", 7)  # several chunks, ragged last one
    rng = np.random.default_rng(classes)
    crf = {
        name: rng.normal(size=shape) * scale
        for name, shape in (("start", classes), ("end", classes), ("transitions", (classes, classes)))
    }
    decoder = Decoder(tuple(f"L{i}" for i in range(classes)), "crf", **crf)
    sentences = [(rng.normal(size=(n, classes)) * scale).astype(np.float32) for n in rng.integers(0, 30, size=40)]
    together = decoder.decode_all(sentences)
    for emissions, (tags, scores) in zip(sentences, together, strict=True):
        alone_tags, alone_scores = decoder.decode(emissions)
        assert tags == alone_tags
        assert scores.dtype == np.float32 and np.isfinite(scores).all()
        np.testing.assert_allclose(scores, alone_scores, rtol=1e-5, atol=1e-7)


def test_build_head_rejects_unknown_kind() -> None:
    assert isinstance(build_head("linear", 8, ["O"]), LinearHead)
    with pytest.raises(ValueError, match="unknown head kind"):
        build_head("rnn", 8, ["O"])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["linear", "crf"])
def test_decode_all_equals_decoding_each_sentence(kind) -> None:
    rng = np.random.default_rng(0)
    labels = ("B-X", "I-X", "O")
    crf = {}
    if kind == "crf":
        crf = {"start": rng.normal(size=3), "end": rng.normal(size=3), "transitions": rng.normal(size=(3, 3))}
    decoder = Decoder(labels, kind, **crf)
    sentences = [rng.normal(size=(n, 3)).astype(np.float32) * 3 for n in (5, 0, 1, 12)]
    together = decoder.decode_all(sentences)
    assert len(together) == len(sentences)
    for emissions, (tags, scores) in zip(sentences, together, strict=True):
        alone_tags, alone_scores = decoder.decode(emissions)
        assert tags == alone_tags
        np.testing.assert_allclose(scores, alone_scores, rtol=1e-6)
    assert decoder.decode_all([]) == []


@pytest.mark.parametrize("kind", ["linear", "crf"])
@pytest.mark.parametrize("labels", [("B-X", "I-X", "O"), ("B-X", "I-X", "B-Y")])  # the second has no O
def test_decode_found_is_decode_all_without_the_all_o_sentences(kind, labels) -> None:
    rng = np.random.default_rng(1)
    crf = {}
    if kind == "crf":
        crf = {"start": rng.normal(size=3), "end": rng.normal(size=3), "transitions": rng.normal(size=(3, 3))}
    decoder = Decoder(labels, kind, **crf)
    # O strongly preferred in most sentences, so that some are all O; lengths 0 and 1 between them
    bias = np.array([0.0, 0.0, 4.0], dtype=np.float32)
    sentences = [rng.normal(size=(n, 3)).astype(np.float32) * 2 + bias for n in (6, 0, 3, 1, 9, 0, 4, 7, 2, 5)]
    expected = [(i, t, s) for i, (t, s) in enumerate(decoder.decode_all(sentences)) if t.count("O") != len(t)]
    found = decoder.decode_found(sentences)
    assert [(i, t) for i, t, _ in found] == [(i, t) for i, t, _ in expected]
    for (_, _, scores), (_, _, want) in zip(found, expected, strict=True):
        np.testing.assert_array_equal(scores, want)
    if "O" in labels:
        assert 0 < len(found) < sum(len(s) > 0 for s in sentences)  # the case the shortcut is for
    assert decoder.decode_found([]) == []
    assert decoder.decode_found([np.zeros((0, 3), dtype=np.float32)]) == []
