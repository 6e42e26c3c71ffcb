from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from mtbioner.model import encoding
from mtbioner.model.encoding import (
    IGNORE_INDEX,
    _cache_of,
    _sentence_pieces,
    assign_owners,
    case_type,
    collate,
    encode,
    length_grouped_batches,
    plan_windows,
    word_pieces,
)


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


def test_word_pieces_cache_equals_tokenizing_whole_sentences(tokenizer) -> None:
    sentences = [["aspirin", "zzqx", "a"], [], ["zzqx", "\u200b", "causes", "aspirin"], ["b"] * 3]
    expected = _sentence_pieces(tokenizer, sentences)
    assert _cache_of(tokenizer) is not None  # a BERT WordPiece tokenizer reads every word on its own
    assert word_pieces(tokenizer, sentences) == expected
    assert word_pieces(tokenizer, sentences) == expected  # now from the cache


def test_word_pieces_cache_starts_over_when_full(tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(encoding, "PIECE_CACHE_WORDS", 3)
    cache, _ = _cache_of(tokenizer)
    sentences = [["aspirin", "zzqx", "causes", "a", "b"]]
    assert word_pieces(tokenizer, sentences) == _sentence_pieces(tokenizer, sentences)
    word_pieces(tokenizer, [["qq"]])
    assert len(cache) == 1


class _FirstWordDiffers:
    """A tokenizer whose first word of a sequence gets other sub-tokens (its unknown id): no cache is safe."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.unk_token_id = inner.unk_token_id

    def __call__(self, batch, **options):
        encoded = self.inner(batch, **options)
        for i, ids in enumerate(encoded["input_ids"]):
            if len(batch[i]) > 1:
                ids[0] = self.inner.unk_token_id
        return encoded


def test_word_pieces_of_a_context_dependent_tokenizer_come_from_whole_sentences(tokenizer) -> None:
    odd = _FirstWordDiffers(tokenizer)
    sentences = [["aspirin", "causes", "aspirin"], ["b"]]
    assert _cache_of(odd) is None
    pieces = word_pieces(odd, sentences)
    assert pieces == _sentence_pieces(odd, sentences)
    assert pieces[0][0] != pieces[0][2]


@pytest.mark.parametrize("seed", range(10))
def test_windows_hold_each_words_pieces_and_features(tokenizer, seed: int) -> None:
    """Every window is [CLS] + its words' sub-tokens + [SEP]; positions, case and dictionary ids line up."""
    rng = random.Random(seed)
    vocabulary = ["aspirin", "zzqx", "a", "b", "Causes", "DNA", "qzx"]
    sentences = [[rng.choice(vocabulary) for _ in range(rng.randint(1, 40))] for _ in range(5)]
    matches = [[(rng.randint(0, 2), rng.randint(0, 2)) for _ in words] for words in sentences]
    windows = encode(tokenizer, sentences, max_length=rng.randint(8, 40), case=True, matches=matches)
    pieces = word_pieces(tokenizer, sentences)
    owned: dict[int, list[int]] = {}
    for window in windows:
        words = sentences[window.sentence]
        owned.setdefault(window.sentence, []).extend(window.words)
        assert window.input_ids[0] == tokenizer.cls_token_id and window.input_ids[-1] == tokenizer.sep_token_id
        for word, position in zip(window.words, window.positions, strict=True):
            piece = pieces[window.sentence][word]
            assert window.input_ids[position : position + len(piece)] == piece
            assert set(window.token_types[position : position + len(piece)]) == {case_type(words[word])}
            assert set(window.dictionary_ids[position : position + len(piece)]) == {matches[window.sentence][word]}
        assert window.token_types[0] == window.token_types[-1] == 0
        assert window.dictionary_ids[0] == window.dictionary_ids[-1] == (0, 0)
    assert owned == {i: list(range(len(words))) for i, words in enumerate(sentences)}


def test_word_pieces_cache_equals_whole_sentences_on_the_corpora_with_the_real_tokenizer() -> None:
    """The packaged encoder's tokenizer, 300 sentences of each shared corpus: cached words equal whole sentences."""
    from mtbioner.data.corpus import read_corpus
    from mtbioner.model.model import default_encoder

    from .conftest import shared_data_dir

    real = AutoTokenizer.from_pretrained(default_encoder())
    sentences = [
        list(s.tokens)
        for name in ("BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA")
        for s in read_corpus(shared_data_dir() / name, splits=["test"], limit=300).sentences("test")
    ]
    assert _cache_of(real) is not None
    assert word_pieces(real, sentences) == _sentence_pieces(real, sentences)
