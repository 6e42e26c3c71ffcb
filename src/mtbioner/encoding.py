"""From word lists to model inputs: sub-tokens, first-sub-token labels, windows, batches.

Data flow: ``encode`` turns each sentence into one or more :class:`Window` objects (a
sentence longer than ``max_length`` sub-tokens is cut into overlapping windows, so that
nothing is truncated), and ``collate`` pads a list of windows to the longest one in the
batch. Each word is *owned* by exactly one window (the one where it sits farthest from a
cut edge); only owned words carry a label and produce a prediction.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
"""Label id of positions that carry no label (non-first sub-tokens, special tokens, padding)."""

CASE_TYPES = 4
"""Case classes of a word (:func:`case_type`), fed to the encoder as token types by case-feature models."""


def case_type(word: str) -> int:
    """The word's letter case, which an uncased tokenizer throws away ("BRCA1" and "brca1" become one id).

    0: no capital (``p53``, ``kinase``, ``1.5``), also special tokens and padding; 1: one leading
    capital (``Tamoxifen``, ``A``); 2: two or more capitals and no lower-case letter (``BRCA1``, ``TNF``);
    3: mixed (``mRNA``, ``IgG``, ``McCune``).

    >>> [case_type(w) for w in ("p53", "Tamoxifen", "BRCA1", "mRNA")]
    [0, 1, 2, 3]
    """
    capitals = sum(1 for c in word if c.isupper())
    if capitals == 0:
        return 0
    if not any(c.islower() for c in word):
        return 2 if capitals > 1 else 1
    return 1 if capitals == 1 and word[0].isupper() else 3


@dataclass(frozen=True, slots=True)
class Window:
    """A piece of one sentence that fits into the encoder.

    Attributes:
        sentence: Index of the sentence in the list given to :func:`encode`.
        input_ids: Sub-token ids, with the special tokens ([CLS] ... [SEP]).
        words: Indices (in the sentence) of the words this window owns.
        positions: Position in ``input_ids`` of the first sub-token of each owned word.
        labels: Label id of each owned word, or ``None`` at inference time.
        token_types: Case class (:func:`case_type`) of each sub-token's word, for case-feature
            models; ``None`` otherwise.
        dictionary_ids: Dictionary match-tag ids (one per dictionary type, see
            :mod:`mtbioner.dictionary`) of each sub-token's word, for dictionary-feature models;
            ``None`` otherwise. Special tokens get all zeros (no match).
    """

    sentence: int
    input_ids: tuple[int, ...]
    words: tuple[int, ...]
    positions: tuple[int, ...]
    labels: tuple[int, ...] | None = None
    token_types: tuple[int, ...] | None = None
    dictionary_ids: tuple[tuple[int, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(slots=True)
class Batch:
    """Padded tensors for a list of windows of one corpus (``corpus`` is None at inference).

    ``dictionary_ids`` is ``[B, T, K]`` (K dictionary types) for dictionary-feature windows.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    windows: list[Window]
    corpus: str | None = None
    token_type_ids: torch.Tensor | None = None
    dictionary_ids: torch.Tensor | None = None


def plan_windows(counts: Sequence[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Cut a sentence into overlapping word ranges of at most ``budget`` sub-tokens.

    Args:
        counts: Sub-tokens per word (each already at most ``budget``).
        budget: Sub-tokens available per window (``max_length`` minus special tokens).
        stride: Sub-tokens that consecutive windows should share (the context both sides
            of a cut).

    Returns:
        Half-open ``(first_word, end_word)`` ranges covering every word.

    >>> plan_windows([1, 1, 1, 1, 1, 1], budget=4, stride=2)
    [(0, 4), (2, 6)]
    """
    n = len(counts)
    if sum(counts) <= budget:
        return [(0, n)]
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end, total = start, 0
        while end < n and total + counts[end] <= budget:
            total += counts[end]
            end += 1
        windows.append((start, end))
        if end >= n:
            return windows
        # Step back from the end so that the next window re-reads about `stride` sub-tokens.
        nxt, overlap = end, 0
        while nxt - 1 > start and overlap + counts[nxt - 1] <= stride:
            nxt -= 1
            overlap += counts[nxt]
        start = nxt


def assign_owners(windows: Sequence[tuple[int, int]], n_words: int) -> list[int]:
    """For each word, the window in which it has the most context on its closer side.

    A window edge that is also the sentence edge is not a cut, so it counts as unlimited
    context.

    >>> assign_owners([(0, 4), (2, 6)], 6)
    [0, 0, 0, 1, 1, 1]
    """
    owners = []
    for word in range(n_words):
        best, best_context = -1, -1.0
        for index, (start, end) in enumerate(windows):
            if not start <= word < end:
                continue
            left = word - start if start > 0 else math.inf
            right = end - 1 - word if end < n_words else math.inf
            context = min(left, right)
            if context > best_context:
                best, best_context = index, context
        owners.append(best)
    return owners


def encode(
    tokenizer,
    sentences: Sequence[Sequence[str]],
    max_length: int = 128,
    stride: int | None = None,
    tags: Sequence[Sequence[str]] | None = None,
    label2id: dict[str, int] | None = None,
    case: bool = False,
    matches: Sequence[Sequence[Sequence[int]]] | None = None,
) -> list[Window]:
    """Tokenize sentences (lists of words) into windows of at most ``max_length`` sub-tokens.

    Args:
        tokenizer: A Hugging Face fast tokenizer.
        sentences: Words of each sentence.
        max_length: Sub-tokens per window, special tokens included (the paper's 128).
        stride: Sub-tokens shared by consecutive windows; default a quarter of the window.
        tags: Optional IOB2 tags of each sentence (training and evaluation).
        label2id: Label ids; required with ``tags``.
        case: Give each window the case class of every sub-token's word (``token_types``).
        matches: Dictionary match-tag ids of every word of every sentence
            (:meth:`mtbioner.dictionary.Dictionary.match`), copied onto each of the word's
            sub-tokens (``dictionary_ids``), as the case classes are.

    Returns:
        Windows in sentence order. A word the tokenizer maps to no sub-token (a lone
        zero-width character, say) is given the unknown token so that it still gets a
        prediction; a word longer than a window keeps its first ``max_length - 2`` sub-tokens.
    """
    prefix, suffix = special_affixes(tokenizer)
    specials = len(prefix) + len(suffix)
    budget = max_length - specials
    if budget < 1:
        raise ValueError(f"max_length={max_length} leaves no room for words after {specials} special tokens")
    stride = budget // 4 if stride is None else min(stride, budget - 1)
    if tags is not None and label2id is None:
        raise ValueError("label2id is required when tags are given")
    if matches is not None and len(matches) != len(sentences):
        raise ValueError(f"matches has {len(matches)} sentences, sentences {len(sentences)}")
    windows: list[Window] = []
    chunk = 1024  # tokenize in chunks: one call per sentence is slow, one call for all is memory-hungry
    for offset in range(0, len(sentences), chunk):
        part = [list(words) for words in sentences[offset : offset + chunk]]
        nonempty = [words if words else ["."] for words in part]
        encoded = tokenizer(nonempty, is_split_into_words=True, add_special_tokens=False)
        for i, words in enumerate(part):
            if not words:
                continue
            pieces = _word_pieces(encoded["input_ids"][i], encoded.word_ids(i), len(words), tokenizer, budget)
            sentence_tags = tags[offset + i] if tags is not None else None
            cases = [case_type(w) for w in words] if case else None
            found = None
            if matches is not None:
                found = [tuple(ids) for ids in matches[offset + i]]
                if len(found) != len(words):
                    raise ValueError(f"sentence {offset + i}: {len(found)} match rows for {len(words)} words")
            windows.extend(
                _windows_of(
                    offset + i, pieces, sentence_tags, label2id, (prefix, suffix), budget, stride, cases, found
                )
            )
    return windows


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Special token ids the tokenizer puts before and after one sequence ([CLS] / [SEP], <s> / </s>).

    Found by encoding a one-word sequence, so that any Hugging Face tokenizer works
    without knowing its model type.
    """
    encoded = tokenizer(["a"], is_split_into_words=True, add_special_tokens=True)
    word_ids = encoded.word_ids(0)
    first = word_ids.index(0)
    last = len(word_ids) - 1 - word_ids[::-1].index(0)
    ids = encoded["input_ids"]
    return list(ids[:first]), list(ids[last + 1 :])


def _word_pieces(ids: list[int], word_ids: list[int | None], n_words: int, tokenizer, budget: int) -> list[list[int]]:
    pieces: list[list[int]] = [[] for _ in range(n_words)]
    for token_id, word in zip(ids, word_ids, strict=True):
        if word is not None:
            pieces[word].append(token_id)
    for index, piece in enumerate(pieces):
        if not piece:
            pieces[index] = [tokenizer.unk_token_id]
        elif len(piece) > budget:
            pieces[index] = piece[:budget]
    return pieces


def _windows_of(
    sentence, pieces, sentence_tags, label2id, affixes, budget, stride, cases=None, found=None
) -> list[Window]:
    ranges = plan_windows([len(p) for p in pieces], budget, stride)
    owners = assign_owners(ranges, len(pieces))
    none = (0,) * len(found[0]) if found else ()
    result = []
    for index, (start, end) in enumerate(ranges):
        ids: list[int] = []
        types: list[int] = []
        dictionary: list[tuple[int, ...]] = []
        owned_words, owned_positions = [], []
        for word in range(start, end):
            if owners[word] == index:
                owned_words.append(word)
                owned_positions.append(len(ids) + len(affixes[0]))
            ids.extend(pieces[word])
            if cases is not None:
                types.extend([cases[word]] * len(pieces[word]))
            if found is not None:
                dictionary.extend([found[word]] * len(pieces[word]))
        labels = None
        if sentence_tags is not None:
            labels = tuple(label2id[sentence_tags[w]] for w in owned_words)
        token_types = None
        if cases is not None:
            token_types = (0,) * len(affixes[0]) + tuple(types) + (0,) * len(affixes[1])
        dictionary_ids = None
        if found is not None:
            dictionary_ids = (none,) * len(affixes[0]) + tuple(dictionary) + (none,) * len(affixes[1])
        result.append(
            Window(
                sentence=sentence,
                input_ids=tuple(affixes[0] + ids + affixes[1]),
                words=tuple(owned_words),
                positions=tuple(owned_positions),
                labels=labels,
                token_types=token_types,
                dictionary_ids=dictionary_ids,
            )
        )
    return result


def collate(windows: Sequence[Window], pad_id: int, corpus: str | None = None) -> Batch:
    """Pad windows to the longest in the batch (not to ``max_length``: that halves CPU time).

    Labels are placed on the first sub-token of each owned word; every other position gets
    :data:`IGNORE_INDEX`. ``token_type_ids`` (case classes, 0 on padding) and ``dictionary_ids``
    (match tags, 0 on padding) come when the windows have them.
    """
    width = max(len(w) for w in windows)
    input_ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(windows), width), dtype=torch.long)
    with_labels = all(w.labels is not None for w in windows)
    labels = torch.full((len(windows), width), IGNORE_INDEX, dtype=torch.long) if with_labels else None
    with_types = all(w.token_types is not None for w in windows)
    token_types = torch.zeros((len(windows), width), dtype=torch.long) if with_types else None
    channels = {len(w.dictionary_ids[0]) for w in windows if w.dictionary_ids}
    if len(channels) > 1:
        raise ValueError(f"windows with different numbers of dictionary types: {sorted(channels)}")
    with_dictionary = bool(channels) and all(w.dictionary_ids is not None for w in windows)
    dictionary = torch.zeros((len(windows), width, channels.pop()), dtype=torch.long) if with_dictionary else None
    for row, window in enumerate(windows):
        input_ids[row, : len(window)] = torch.tensor(window.input_ids)
        attention_mask[row, : len(window)] = 1
        if labels is not None and window.positions:
            labels[row, list(window.positions)] = torch.tensor(window.labels)
        if token_types is not None:
            token_types[row, : len(window)] = torch.tensor(window.token_types)
        if dictionary is not None:
            dictionary[row, : len(window)] = torch.tensor(window.dictionary_ids)
    return Batch(input_ids, attention_mask, labels, list(windows), corpus, token_types, dictionary)


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random | None = None
) -> list[list[int]]:
    """Group indices into batches of similar length.

    Without ``rng`` (inference) indices are sorted by length. With ``rng`` (training) they
    are shuffled, cut into mega-batches of 50 batches, sorted by length inside each
    mega-batch and cut into batches, whose order is shuffled again: similar lengths, yet a
    different mix every epoch.
    """
    indices = list(range(len(lengths)))
    if rng is None:
        indices.sort(key=lambda i: lengths[i], reverse=True)
        return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    rng.shuffle(indices)
    mega = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(indices), mega):
        group = sorted(indices[start : start + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches
