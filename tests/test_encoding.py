from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from mtbioner.encoding import IGNORE_INDEX, assign_owners, collate, encode, length_grouped_batches, plan_windows


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return AutoTokenizer.from_pretrained(str(tiny_encoder))


@pytest.mark.parametrize(
    ("counts", "budget", "stride", "expected"),
    [
        ([1, 1, 1], 5, 2, [(0, 3)]),
        ([1] * 6, 4, 2, [(0, 4), (2, 6)]),
        ([3, 3, 3, 3], 6, 3, [(0, 2), (1, 3), (2, 4)]),
        ([4, 4, 4], 4, 2, [(0, 1), (1, 2), (2, 3)]),  # a word as long as a window: no overlap possible
        ([1] * 10, 4, 0, [(0, 4), (4, 8), (8, 10)]),
    ],
)
def test_plan_windows(counts, budget, stride, expected) -> None:
    assert plan_windows(counts, budget, stride) == expected


@pytest.mark.parametrize("seed", range(20))
def test_windows_cover_every_word_once(seed: int) -> None:
    rng = random.Random(seed)
    counts = [rng.randint(1, 5) for _ in range(rng.randint(1, 60))]
    budget = rng.randint(5, 20)
    windows = plan_windows(counts, budget, rng.randint(0, budget))
    assert all(sum(counts[s:e]) <= budget for s, e in windows)
    owners = assign_owners(windows, len(counts))
    assert all(windows[o][0] <= w < windows[o][1] for w, o in enumerate(owners))
    assert owners == sorted(owners)  # owned words are contiguous per window


def test_encode_labels_first_subtoken_only(tokenizer) -> None:
    words = [["a", "b", "zzqx"]]  # zzqx is split into characters by the tiny vocabulary
    label2id = {"B-CHEM": 0, "O": 1}
    (window,) = encode(tokenizer, words, tags=[["B-CHEM", "O", "O"]], label2id=label2id)
    assert window.input_ids[0] == tokenizer.cls_token_id and window.input_ids[-1] == tokenizer.sep_token_id
    assert window.words == (0, 1, 2)
    assert window.positions[:2] == (1, 2)
    assert len(window.input_ids) == 2 + 2 + 4  # specials, two one-piece words, z ##z ##q ##x
    batch = collate([window], tokenizer.pad_token_id)
    labelled = [(i, v) for i, v in enumerate(batch.labels[0].tolist()) if v != IGNORE_INDEX]
    assert labelled == [(1, 0), (2, 1), (3, 1)]


def test_long_sentence_is_windowed_not_truncated(tokenizer) -> None:
    words = ["aspirin"] * 300
    windows = encode(tokenizer, [words], max_length=32, tags=[["O"] * 300], label2id={"O": 0})
    assert len(windows) > 10
    assert all(len(w) <= 32 for w in windows)
    owned = sorted(w for window in windows for w in window.words)
    assert owned == list(range(300))


def test_word_without_subtokens_gets_unknown_token(tokenizer) -> None:
    (window,) = encode(tokenizer, [["aspirin", "\u200b", "causes"]])
    assert window.words == (0, 1, 2)
    assert window.input_ids[window.positions[1]] == tokenizer.unk_token_id


def test_empty_sentence_gives_no_window(tokenizer) -> None:
    assert encode(tokenizer, [[]]) == []


def test_length_grouped_batches() -> None:
    lengths = [5, 1, 9, 3, 7, 2]
    assert length_grouped_batches(lengths, 2) == [[2, 4], [0, 3], [5, 1]]
    batches = length_grouped_batches(lengths, 2, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches == length_grouped_batches(lengths, 2, random.Random(0))
