"""Paired bootstrap intervals of F1 differences (``mtbioner.study.bootstrap``) and the stored predictions they read."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest

from mtbioner.data.corpus import Sentence
from mtbioner.errors import MtbionerError
from mtbioner.runtime.evaluation import score, write_conlleval
from mtbioner.study.bootstrap import (
    compare_counts,
    f1_interval,
    paired_bootstrap,
    read_conlleval,
    read_predictions,
    resample_indices,
    sentence_counts,
    verdict,
    write_predictions,
)

# Eight sentences with two entity types; the systems miss, split, mistype and invent entities, and
# system B has an I- after O (conlleval opens a chunk there).
GOLD = [
    ["B-Gene", "I-Gene", "O", "B-Chem"],
    ["O", "O", "O"],
    ["B-Chem", "O", "B-Gene", "I-Gene", "I-Gene"],
    ["B-Gene", "O"],
    ["O", "B-Chem", "I-Chem", "O", "B-Chem"],
    ["B-Gene", "I-Gene"],
    ["O", "O", "B-Gene", "O"],
    ["B-Chem"],
]
SYS_A = [
    ["B-Gene", "I-Gene", "O", "B-Chem"],
    ["O", "B-Gene", "O"],
    ["B-Chem", "O", "B-Gene", "I-Gene", "O"],
    ["B-Gene", "O"],
    ["O", "B-Chem", "I-Chem", "O", "O"],
    ["B-Gene", "I-Gene"],
    ["O", "O", "B-Gene", "O"],
    ["B-Gene"],
]
SYS_B = [
    ["B-Gene", "O", "O", "B-Chem"],
    ["O", "O", "O"],
    ["I-Chem", "O", "B-Gene", "I-Gene", "I-Gene"],
    ["O", "O"],
    ["O", "B-Chem", "B-Chem", "O", "B-Chem"],
    ["B-Chem", "I-Chem"],
    ["O", "O", "I-Gene", "O"],
    ["B-Chem"],
]


def test_counts_give_the_same_f1_as_seqeval_and_conlleval() -> None:
    for predicted in (SYS_A, SYS_B):
        counts = sentence_counts(GOLD, predicted)
        overall, _, n_predicted = score(GOLD, predicted)
        tp, pred, gold = counts.sum(axis=0)
        assert (pred, gold) == (n_predicted, overall.support)
        assert f1_interval(counts, 10).value == pytest.approx(overall.f1, abs=1e-4)
    assert sentence_counts(GOLD, SYS_B)[2].tolist() == [2, 2, 2]  # I-Chem after O opens a (correct) chunk


def test_vectorised_bootstrap_matches_a_brute_force_loop() -> None:
    resamples, seed = 300, 7
    result, diffs = compare_counts(
        sentence_counts(GOLD, SYS_A), sentence_counts(GOLD, SYS_B), resamples, seed, return_samples=True
    )
    brute = []
    for row in resample_indices(len(GOLD), resamples, seed):
        gold = [GOLD[i] for i in row]
        f1_a = score(gold, [SYS_A[i] for i in row])[0].f1  # seqeval on the resampled corpus
        f1_b = score(gold, [SYS_B[i] for i in row])[0].f1
        brute.append(f1_a - f1_b)
    assert np.allclose(diffs, brute, atol=2e-4)  # score() rounds to 4 decimals
    low, high = np.percentile(brute, [2.5, 97.5])
    assert (result.difference.low, result.difference.high) == pytest.approx((low, high), abs=2e-4)
    assert result.difference.value == pytest.approx(score(GOLD, SYS_A)[0].f1 - score(GOLD, SYS_B)[0].f1, abs=1e-3)
    assert result.difference.low < result.difference.value < result.difference.high
    assert result.f1_a.low <= result.f1_a.value <= result.f1_a.high
    assert (result.sentences, result.resamples, result.seed) == (8, 300, 7)


def test_identical_systems_give_a_zero_width_interval_at_zero() -> None:
    result = paired_bootstrap(GOLD, SYS_A, [list(s) for s in SYS_A], resamples=200)
    d = result.difference
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0)
    assert result.verdict == "tie" and result.share_not_better == 1.0
    assert result.f1_a == result.f1_b


def _corpus(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tags = []
        for _ in range(rng.randint(3, 15)):
            tags += ["B-X", "I-X"] if rng.random() < 0.15 else ["O"]
        out.append(tags)
    return out


def _spoil(gold: list[list[str]], rate: float, seed: int) -> list[list[str]]:
    """Predictions that drop each gold entity start with probability ``rate``."""
    rng = random.Random(seed)
    return [[("O" if t != "O" and rng.random() < rate else t) for t in s] for s in gold]


def test_a_clearly_better_system_wins_and_the_worse_one_loses() -> None:
    gold = _corpus(800, 1)
    good, bad = _spoil(gold, 0.05, 2), _spoil(gold, 0.30, 3)
    win = paired_bootstrap(gold, good, bad)
    assert win.verdict == "win" and 0 < win.difference.low < win.difference.value
    assert win.share_not_better == 0.0
    loss = paired_bootstrap(gold, bad, good)
    assert loss.verdict == "loss" and loss.difference.high < 0
    assert loss.difference.value == pytest.approx(-win.difference.value)
    close = paired_bootstrap(gold, _spoil(gold, 0.20, 4), _spoil(gold, 0.20, 5))
    assert close.verdict == "tie" and close.difference.low < 0 < close.difference.high
    assert [verdict(0.1, 1), verdict(-1, -0.1), verdict(-1, 1), verdict(0, 0)] == ["win", "loss", "tie", "tie"]


def test_the_seed_fixes_the_resamples() -> None:
    gold = _corpus(200, 4)
    a, b = _spoil(gold, 0.1, 5), _spoil(gold, 0.15, 6)
    assert paired_bootstrap(gold, a, b, seed=3) == paired_bootstrap(gold, a, b, seed=3)
    assert paired_bootstrap(gold, a, b, seed=3).difference != paired_bootstrap(gold, a, b, seed=4).difference


def test_a_thousand_resamples_of_five_thousand_sentences_are_quick() -> None:
    gold = _corpus(5000, 7)
    counts_a, counts_b = sentence_counts(gold, _spoil(gold, 0.1, 8)), sentence_counts(gold, _spoil(gold, 0.12, 9))
    started = time.perf_counter()
    result = compare_counts(counts_a, counts_b, 1000)
    assert time.perf_counter() - started < 5  # ~0.2 s on 2 busy cores; a Python loop over resamples takes far longer
    assert result.resamples == 1000 and result.sentences == 5000


def test_the_systems_must_have_tagged_the_same_sentences() -> None:
    with pytest.raises(MtbionerError, match="8 gold sentences but 7"):
        sentence_counts(GOLD, SYS_A[:7])
    with pytest.raises(MtbionerError, match="sentence 0: 4 gold tags but 3"):
        sentence_counts(GOLD, [SYS_A[0][:3], *SYS_A[1:]])
    with pytest.raises(MtbionerError, match="not scored on the same sentences"):
        compare_counts(sentence_counts(GOLD, SYS_A), sentence_counts(GOLD[:7], SYS_A[:7]))
    other_gold = [list(s) for s in GOLD]
    other_gold[1] = ["B-Gene", "O", "O"]
    with pytest.raises(MtbionerError, match="not scored on the same sentences"):
        compare_counts(sentence_counts(GOLD, SYS_A), sentence_counts(other_gold, SYS_A))


def test_predictions_round_trip_through_conlleval_and_the_stored_file(tmp_path: Path) -> None:
    sentences = [Sentence([f"w{i} {j}" for j in range(len(tags))], tags) for i, tags in enumerate(GOLD)]
    write_conlleval(tmp_path / "x.txt", sentences, SYS_A)  # tokens with spaces are written with _
    gold, predicted = read_conlleval(tmp_path / "x.txt")
    assert (gold, predicted) == (GOLD, SYS_A)

    write_predictions(tmp_path / "a.json.gz", gold, predicted, run="r", corpus="c", split="test")
    write_predictions(tmp_path / "b.json.gz", gold, predicted, run="r", corpus="c", split="test")
    assert (tmp_path / "a.json.gz").read_bytes() == (tmp_path / "b.json.gz").read_bytes()  # no time stamp
    assert read_predictions(tmp_path / "a.json.gz") == (GOLD, SYS_A)
    write_predictions(tmp_path / "empty.json.gz", [[], ["O"]], [[], ["O"]])
    assert read_predictions(tmp_path / "empty.json.gz") == ([[], ["O"]], [[], ["O"]])

    (tmp_path / "bad.json.gz").write_text("not gzip")
    with pytest.raises(MtbionerError, match="not a predictions file"):
        read_predictions(tmp_path / "bad.json.gz")
    (tmp_path / "bad.txt").write_text("token-only\n")
    with pytest.raises(MtbionerError, match="bad.txt:1: expected 'token gold predicted'"):
        read_conlleval(tmp_path / "bad.txt")
