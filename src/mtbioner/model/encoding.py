"""From word lists to model inputs: sub-tokens, first-sub-token labels, windows, batches.

Data flow: ``encode`` turns each sentence into one or more :class:`Window` objects (a
sentence longer than ``max_length`` sub-tokens is cut into overlapping windows, so that
nothing is truncated), and ``collate`` pads a list of windows to the longest one in the
batch. Each word is *owned* by exactly one window (the one where it sits farthest from a
cut edge); only owned words carry a label and produce a prediction.

Document context (``context`` sub-tokens, FLERT: Schweter and Akbik, 2020): a model trained with
it reads each sentence between the end of the sentences before it and the start of those after
it in the same document, up to ``context`` sub-tokens each side; those words carry no label and
get no prediction, they only inform the sentence's own words.
"""

from __future__ import annotations

import math
import random
import threading
import weakref
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
"""Label id of positions that carry no label (non-first sub-tokens, special tokens, padding)."""

PIECE_CACHE_WORDS = 1 << 18
"""Words whose sub-tokens are remembered per tokenizer (about 50 MB at most) before the cache starts over."""

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
            :mod:`mtbioner.model.dictionary`) of each sub-token's word, for dictionary-feature models;
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

    ``dictionary_ids`` is ``[B, T, K]`` (K dictionary types) for dictionary-feature windows. The arrays are
    torch tensors, or numpy arrays from ``collate(..., tensors=False)`` (ONNX Runtime, which needs no torch).
    """

    input_ids: torch.Tensor | np.ndarray
    attention_mask: torch.Tensor | np.ndarray
    labels: torch.Tensor | np.ndarray | None
    windows: list[Window]
    corpus: str | None = None
    token_type_ids: torch.Tensor | np.ndarray | None = None
    dictionary_ids: torch.Tensor | np.ndarray | None = None


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
    if len(windows) == 1:
        return [0] * n_words
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
    context: int = 0,
    surroundings: Sequence[Surroundings] | None = None,
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
            (:meth:`mtbioner.model.dictionary.Dictionary.match`), copied onto each of the word's
            sub-tokens (``dictionary_ids``), as the case classes are.
        context: Sub-tokens of document context each side of a sentence (0: none).
        surroundings: The words before and after each sentence in its document
            (:func:`document_surroundings`, :func:`mtbioner.data.text.text_surroundings`); the last
            ``context`` sub-tokens before and the first ``context`` after go into the sentence's
            first and last window. Without them (or with ``context`` 0) sentences are read alone.

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
    if surroundings is not None and len(surroundings) != len(sentences):
        raise ValueError(f"surroundings has {len(surroundings)} sentences, sentences {len(sentences)}")
    contexts = _contexts(tokenizer, surroundings, context, case) if context > 0 and surroundings else None
    windows: list[Window] = []
    every_piece = word_pieces(tokenizer, sentences)
    for index, words in enumerate(sentences):
        if not words:
            continue
        pieces = every_piece[index]
        lengths = list(map(len, pieces))
        if min(lengths) == 0 or max(lengths) > budget:
            pieces = [_fit(piece, tokenizer, budget) for piece in pieces]
        sentence_tags = tags[index] if tags is not None else None
        cases = [case_type(w) for w in words] if case else None
        found = None
        if matches is not None:
            found = [tuple(ids) for ids in matches[index]]
            if len(found) != len(words):
                raise ValueError(f"sentence {index}: {len(found)} match rows for {len(words)} words")
        around = contexts[index] if contexts is not None else _ALONE
        windows.extend(
            _windows_of(index, pieces, sentence_tags, label2id, (prefix, suffix), budget, stride, cases, found, around)
        )
    return windows


Surroundings = tuple[Sequence[str], Sequence[str]]
"""The words before a sentence and the words after it, in its document (nearest last / first)."""


@dataclass(frozen=True, slots=True)
class _Context:
    """Sub-token ids (and their words' case classes) put before and after a sentence's words."""

    left: tuple[int, ...] = ()
    right: tuple[int, ...] = ()
    left_types: tuple[int, ...] = ()
    right_types: tuple[int, ...] = ()


_ALONE = _Context()


def document_surroundings(
    sentences: Sequence[Sequence[str]], documents: Sequence[Hashable], words: int
) -> list[Surroundings]:
    """Up to ``words`` words before and after each sentence, from its neighbours in the same document.

    ``documents[i]`` names sentence ``i``'s document; sentences of a document are consecutive and in
    order, as in a corpus file (a corpus split without ``-DOCSTART-`` lines is one document). A word
    has at least one sub-token, so ``words`` equal to the sub-token context is always enough.

    >>> document_surroundings([["a", "b"], ["c"], ["d", "e"]], [0, 0, 1], 3)
    [([], ['c']), (['a', 'b'], []), ([], [])]
    """
    result: list[Surroundings] = []
    for index, document in enumerate(documents):
        left: list[str] = []
        before = index - 1
        while before >= 0 and documents[before] == document and len(left) < words:
            left[:0] = sentences[before]
            before -= 1
        right: list[str] = []
        after = index + 1
        while after < len(documents) and documents[after] == document and len(right) < words:
            right.extend(sentences[after])
            after += 1
        result.append((left[-words:] if words else [], right[:words]))
    return result


def _contexts(tokenizer, surroundings: Sequence[Surroundings], context: int, case: bool) -> list[_Context]:
    """The context sub-tokens of every sentence, its words tokenized alone as the sentence's are."""
    lefts = [list(left)[-context:] for left, _ in surroundings]
    rights = [list(right)[:context] for _, right in surroundings]
    pieces = word_pieces(tokenizer, lefts + rights)
    result = []
    for index in range(len(surroundings)):
        sides = []
        for words, word_ids in ((lefts[index], pieces[index]), (rights[index], pieces[len(lefts) + index])):
            ids = tuple(chain.from_iterable(word_ids))
            types = ()
            if case:
                per_word = zip(words, word_ids, strict=True)
                types = tuple(chain.from_iterable((case_type(w),) * len(p) for w, p in per_word))
            sides.append((ids, types))
        (left, left_types), (right, right_types) = sides
        result.append(_Context(left[-context:], right[:context], left_types[-context:], right_types[:context]))
    return result


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


def word_pieces(tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[tuple[int, ...]]]:
    """Sub-token ids of every word of every sentence, as ``is_split_into_words`` tokenization gives them.

    Such tokenization reads each word on its own, so a word's sub-tokens are remembered per
    tokenizer and only words never seen before are tokenized (in one batched call): most words
    of biomedical text recur, and looking them up is an order of magnitude faster than
    tokenizing them again. A tokenizer for which a word's sub-tokens depend on its place in the
    sentence (checked once on a probe sentence) is given whole sentences instead.
    """
    state = _cache_of(tokenizer)
    if state is None:
        return _sentence_pieces(tokenizer, sentences)
    cache, lock = state
    with lock:
        new = list({w for words in sentences for w in words if w not in cache})
        if len(cache) + len(new) > PIECE_CACHE_WORDS:
            cache.clear()  # and these sentences' known words with it: tokenize all of them
            new = list({w for words in sentences for w in words})
        for start in range(0, len(new), 4096):
            part = new[start : start + 4096]
            ids = tokenizer([[w] for w in part], is_split_into_words=True, add_special_tokens=False)["input_ids"]
            cache.update(zip(part, map(tuple, ids), strict=True))
        return [[cache[w] for w in words] for words in sentences]


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROBE = ["Hello", "IL", "-", "2Rα", "naïve", "Hello", "ÉCOLE", "x", "Hello"]


def _cache_of(tokenizer) -> tuple[dict[str, tuple[int, ...]], threading.Lock] | None:
    """The tokenizer's word cache, or ``None`` when its words' sub-tokens depend on their neighbours."""
    try:
        if tokenizer in _CACHES:
            return _CACHES[tokenizer]
    except TypeError:  # not weak-referenceable: no cache
        return None
    whole = _sentence_pieces(tokenizer, [_PROBE])[0]
    alone = [
        tuple(ids)
        for ids in tokenizer([[w] for w in _PROBE], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    ]
    state = ({}, threading.Lock()) if whole == alone else None
    _CACHES[tokenizer] = state
    return state


def _sentence_pieces(tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[tuple[int, ...]]]:
    """Sub-tokens of every word, tokenizing whole sentences (chunks of 1,024 keep memory bounded)."""
    result: list[list[tuple[int, ...]]] = []
    for offset in range(0, len(sentences), 1024):
        part = [list(words) or ["."] for words in sentences[offset : offset + 1024]]
        encoded = tokenizer(part, is_split_into_words=True, add_special_tokens=False)
        for i, words in enumerate(sentences[offset : offset + 1024]):
            pieces: list[list[int]] = [[] for _ in words]
            for token_id, word in zip(encoded["input_ids"][i], encoded.word_ids(i), strict=True):
                if word is not None and words:
                    pieces[word].append(token_id)
            result.append([tuple(p) for p in pieces])
    return result


def _fit(piece: tuple[int, ...], tokenizer, budget: int) -> tuple[int, ...]:
    """A word with no sub-token gets the unknown token; one longer than a window keeps its first ``budget``."""
    if not piece:
        return (tokenizer.unk_token_id,)
    return piece[:budget] if len(piece) > budget else piece


def _windows_of(
    sentence, pieces, sentence_tags, label2id, affixes, budget, stride, cases=None, found=None, around=_ALONE
) -> list[Window]:
    lengths = [len(p) for p in pieces]
    ranges = plan_windows(lengths, budget, stride)
    owners = assign_owners(ranges, len(pieces))
    prefix, suffix = affixes
    none = (0,) * len(found[0]) if found else ()
    result = []
    for index, (start, end) in enumerate(ranges):
        # Document context goes on the sentence's own edges: the first window's left, the last one's right.
        left = around.left if start == 0 else ()
        right = around.right if end == len(pieces) else ()
        before, after = (*prefix, *left), (*right, *suffix)
        offsets = list(accumulate(lengths[start:end], initial=len(before)))
        owned = [w for w in range(start, end) if owners[w] == index] if len(ranges) > 1 else range(start, end)
        labels = None
        if sentence_tags is not None:
            labels = tuple(label2id[sentence_tags[w]] for w in owned)
        token_types = None
        if cases is not None:
            types = chain.from_iterable((cases[w],) * lengths[w] for w in range(start, end))
            left_types = around.left_types if left else ()
            right_types = around.right_types if right else ()
            token_types = (
                (0,) * len(prefix) + left_types + tuple(types) + right_types + (0,) * len(suffix)
            )  # fmt: skip
        dictionary_ids = None
        if found is not None:  # context words are not matched: their evidence is for their own sentence
            tags = chain.from_iterable((found[w],) * lengths[w] for w in range(start, end))
            dictionary_ids = (none,) * len(before) + tuple(tags) + (none,) * len(after)
        result.append(
            Window(
                sentence=sentence,
                input_ids=(*before, *chain.from_iterable(pieces[start:end]), *after),
                words=tuple(owned),
                positions=tuple(offsets[w - start] for w in owned),
                labels=labels,
                token_types=token_types,
                dictionary_ids=dictionary_ids,
            )
        )
    return result


def collate(windows: Sequence[Window], pad_id: int, corpus: str | None = None, tensors: bool = True) -> Batch:
    """Pad windows to the longest in the batch (not to ``max_length``: that halves CPU time).

    ``tensors=False`` leaves the arrays in numpy, for backends that take numpy (ONNX Runtime), so that
    tagging with them never imports torch.

    Labels are placed on the first sub-token of each owned word; every other position gets
    :data:`IGNORE_INDEX`. ``token_type_ids`` (case classes, 0 on padding) and ``dictionary_ids``
    (match tags, 0 on padding) come when the windows have them.
    """
    width = max(len(w) for w in windows)
    rows = len(windows)
    # Filled in numpy (a row copy from a tuple costs a fraction of building a tensor per row), shared with torch.
    input_ids = np.full((rows, width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((rows, width), dtype=np.int64)
    with_labels = all(w.labels is not None for w in windows)
    labels = np.full((rows, width), IGNORE_INDEX, dtype=np.int64) if with_labels else None
    with_types = all(w.token_types is not None for w in windows)
    token_types = np.zeros((rows, width), dtype=np.int64) if with_types else None
    channels = {len(w.dictionary_ids[0]) for w in windows if w.dictionary_ids}
    if len(channels) > 1:
        raise ValueError(f"windows with different numbers of dictionary types: {sorted(channels)}")
    with_dictionary = bool(channels) and all(w.dictionary_ids is not None for w in windows)
    dictionary = np.zeros((rows, width, channels.pop()), dtype=np.int64) if with_dictionary else None
    for row, window in enumerate(windows):
        input_ids[row, : len(window)] = window.input_ids
        attention_mask[row, : len(window)] = 1
        if labels is not None and window.positions:
            labels[row, list(window.positions)] = window.labels
        if token_types is not None:
            token_types[row, : len(window)] = window.token_types
        if dictionary is not None:
            dictionary[row, : len(window)] = window.dictionary_ids
    arrays = [input_ids, attention_mask, labels, token_types, dictionary]
    if tensors:
        import torch

        arrays = [None if a is None else torch.from_numpy(a) for a in arrays]
    input_ids, attention_mask, labels, token_types, dictionary = arrays
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
