"""Raw text to sentences and words with exact character offsets, and annotations onto words.

The four training corpora (BC2GM, BC5CDR, NCBI-disease, JNLPBA as distributed by Crichton et
al. 2017) were tokenized by splitting on whitespace and cutting *every* punctuation mark or
symbol into a token of its own: ``43 - kb``, ``2 . 5``, ``C ( 2 )``, ``and / or``. Three of
them follow that rule exactly; JNLPBA keeps its original GENIA joins (``IL-2``, ``C/EBP``,
``CD4+``), and every JNLPBA token is still a concatenation of ours. So the finest split is the
one tokenization in which an entity of any corpus starts and ends on word boundaries, and the
tagger uses it for every head. ``retokenize`` brings JNLPBA-style training sentences to it.

Sentences come from sentencex (Wikimedia's Rust segmenter), chosen against pysbd, syntok,
blingfire and a regex baseline in ``benchmarks/sentence_splitting.py``: mean boundary F1 97.7%
on the corpora's rebuilt abstracts, 0.1 point from the best library, with exact character
offsets, no dependencies, a 2026 release and tens of millions of characters per second. Its
boundaries are only hints, snapped to word starts, so the guarantees below never depend on it.

Guarantees, for any ``str`` (combining marks, emoji, tabs, CRLF, zero-width characters):
``token.text == text[token.start:token.end]``; tokens are in order, never overlap, never
contain a character for which ``str.isspace()`` is true, and together cover every other one.
"""

from __future__ import annotations

import bisect
import heapq
import re
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any, NamedTuple

import regex

__all__ = [
    "TaggedSentence",
    "TextSentence",
    "Token",
    "annotations_to_sentences",
    "retokenize",
    "sentence_bounds",
    "sentence_spans",
    "split_sentences",
    "tokenize_words",
]

# Exactly the characters for which str.isspace() is true (checked over all code points in
# tests), spelled out so that both regex engines agree on what a separator is.
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Letters, numbers, combining marks and invisible format characters (ZWJ, soft hyphen) make
# words; anything else is a one-character token, keeping the marks that follow it.
_WORD = r"\p{L}\p{N}\p{M}\p{Cf}"
_TOKEN = regex.compile(rf"[{_WORD}]+|[^{_WORD}{_SPACE}][\p{{M}}\p{{Cf}}]*")
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# A whole whitespace run holding a line break (line breaks are whitespace, so the match is the run).
_BREAK_RUN = re.compile(rf"[{_SPACE}]*(?:{_LINE_BREAK.pattern})[{_SPACE}]*")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Whitespace outside ASCII (no-break, thin, ideographic space...): sentencex 1.0.32 panics on a one-letter word, such
# a space and a full stop ("Z\u00a0. Next": it slices the UTF-8 bytes inside the space), so it reads them as " ".
_WIDE_SPACE = re.compile(r"[^\S\x00-\x7f]")


class Token(NamedTuple):
    """One word: ``text == original[start:end]`` (half-open character offsets).

    A named tuple rather than a dataclass: tagging makes one per word, and a tuple is built in a
    third of the time.
    """

    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TextSentence:
    """A sentence: its words, and the span from its first word's start to its last word's end."""

    start: int
    end: int
    tokens: tuple[Token, ...]


def tokenize_words(text: str, start: int = 0) -> list[Token]:
    """Split ``text`` into words the way the training corpora were tokenized.

    Whitespace separates words; runs of letters, digits and combining marks are words; every
    other character (punctuation, symbols, emoji) is a word of its own.

    Args:
        text: The string to tokenize.
        start: Added to every offset, for tokenizing a slice of a larger document.

    Returns:
        The words in order, with offsets into the larger document.

    Example:
        >>> [t.text for t in tokenize_words("IL-2Rα (CD25+) at 2.5 ng/ml.")]
        ['IL', '-', '2Rα', '(', 'CD25', '+', ')', 'at', '2', '.', '5', 'ng', '/', 'ml', '.']
        >>> tokenize_words("a b", start=10)[1]
        Token(text='b', start=12, end=13)
    """
    # findall and str.find beat match objects by a third: only whitespace lies between two words and a
    # word holds none, so the next occurrence of a word from the previous word's end is where it matched.
    tokens: list[Token] = []
    position, find, new = 0, text.find, tuple.__new__
    for word in _TOKEN.findall(text):
        first = find(word, position)
        position = first + len(word)
        tokens.append(new(Token, (word, first + start, position + start)))
    return tokens


def split_sentences(text: str) -> list[TextSentence]:
    """Split ``text`` into sentences of words, all offsets into ``text``.

    A paragraph break (whitespace holding two or more line breaks) always ends a sentence;
    elsewhere sentencex decides (a single line break does not, so hard-wrapped text stays
    whole). A sentence start that the library places inside a word moves to the next word, so
    sentences are always whole runs of ``tokenize_words(text)``.

    Args:
        text: A document.

    Returns:
        Non-empty sentences in order; empty when ``text`` holds only whitespace.

    Example:
        >>> [[t.text for t in s.tokens] for s in split_sentences("TNF-α rose. It fell (p<0.05).")]
        [['TNF', '-', 'α', 'rose', '.'], ['It', 'fell', '(', 'p', '<', '0', '.', '05', ')', '.']]
    """
    tokens = tokenize_words(text)
    if not tokens:
        return []
    return [_sentence(tokens[a:b]) for a, b in pairwise(_sentence_edges(text, [t.start for t in tokens]))]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Where :func:`split_sentences`'s sentences start and end in ``text``, without making their words.

    >>> sentence_spans("TNF-α rose. It fell (p<0.05).")
    [(0, 11), (12, 29)]
    """
    return list(zip(*sentence_bounds(text), strict=True))


def sentence_bounds(text: str) -> tuple[array, array]:
    """The starts and the ends of :func:`split_sentences`'s sentences in ``text``, as two arrays of offsets.

    A server's queue keeps only these, and refuses a request past its sentence limit once they are counted.
    Splitting first made every word: a 0.5 MB text of 50,001 short sentences took 56 MB of Python objects at
    peak, and each such request, refused, left a worker a few MB higher (issue 43). Python's allocator gives its
    1 MiB arenas back only when all their objects are gone, and the tens of thousands of small objects that a
    split makes interleave with those that other requests make meanwhile: so here every offset, cut and bound
    is a machine integer in an array, and a request is counted before a tuple is made for any sentence. What
    remains is the sentence library's own list of sentences (``_library_starts``).

    >>> [list(offsets) for offsets in sentence_bounds("TNF-α rose. It fell (p<0.05).")]
    [[0, 12], [11, 29]]
    """
    starts, ends = array("q"), array("q")
    for match in _TOKEN.finditer(text):
        starts.append(match.start())
        ends.append(match.end())
    if not starts:
        return array("q"), array("q")
    edges = _sentence_edges(text, starts)
    return array("q", (starts[edge] for edge in edges[:-1])), array("q", (ends[edge - 1] for edge in edges[1:]))


def _sentence_edges(text: str, word_starts: Sequence[int]) -> array:
    """The index of each sentence's first word in ``text``, then the number of words, from the words' starts.

    A sentence starts at the first word at or after each start proposed by a paragraph break or sentencex; both
    propose in order, so the cuts come out sorted, each kept once, with no set or list of them.
    """
    edges, words = array("q", [0]), len(word_starts)
    for start in heapq.merge(_paragraph_starts(text), _library_starts(text)):
        cut = bisect.bisect_left(word_starts, start)
        if edges[-1] < cut < words:
            edges.append(cut)
    edges.append(words)
    return edges


def text_surroundings(text: str, sentence: TextSentence, words: int) -> tuple[list[str], list[str]]:
    """Up to ``words`` words of ``text`` before and after ``sentence``: its document context.

    The text is the document, so this is what :func:`mtbioner.model.encoding.document_surroundings` gives for a
    corpus' sentences, read straight from the characters around the sentence (a server that tags one
    sentence of a text at a time has no list of its neighbours). Lone surrogates become U+FFFD, as in the
    sentence itself, so that a tokenizer can read them.

    >>> text = "IL-2 binds. Its receptor, CD25, rose. Then it fell."
    >>> text_surroundings(text, split_sentences(text)[1], 3)
    (['2', 'binds', '.'], ['Then', 'it', 'fell'])
    """
    if words <= 0:
        return [], []
    reach = 32 * words  # characters; words are far shorter, so this holds ``words`` of them
    cut = max(0, sentence.start - reach)
    left = [t.text for t in tokenize_words(_SURROGATE.sub("\ufffd", text[cut : sentence.start]))]
    if cut > 0:
        left = left[1:]  # perhaps the end of a word cut in two
    stop = min(len(text), sentence.end + reach)
    right = [t.text for t in tokenize_words(_SURROGATE.sub("\ufffd", text[sentence.end : stop]))]
    if stop < len(text):
        right = right[:-1]
    return left[-words:], right[:words]


def retokenize(tokens: Sequence[str], tags: Sequence[str]) -> tuple[list[str], list[str]]:
    """Re-split already tokenized, IOB2-tagged words with ``tokenize_words``.

    For JNLPBA, whose joins (``IL-2``) differ from the tagger's words: a split word keeps its
    tag on the first piece and passes ``I-TYPE`` (or ``O``) to the rest, so entities keep their
    extent.

    Example:
        >>> retokenize(["IL-2", "gene"], ["B-protein", "O"])
        (['IL', '-', '2', 'gene'], ['B-protein', 'I-protein', 'I-protein', 'O'])
    """
    new_tokens: list[str] = []
    new_tags: list[str] = []
    for token, tag in zip(tokens, tags, strict=True):
        pieces = [t.text for t in tokenize_words(token)] or [token]
        inside = "O" if tag == "O" else "I-" + tag.partition("-")[2]
        new_tokens.extend(pieces)
        new_tags.extend([tag] + [inside] * (len(pieces) - 1))
    return new_tokens, new_tags


class TaggedSentence(NamedTuple):
    """Words and IOB2 tags of one sentence, and the index of its document.

    A tuple in the field order of ``mtbioner.data.corpus.Sentence``, so ``Sentence(*s)`` converts it.
    """

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    document: int


def annotations_to_sentences(
    text: str, annotations: Sequence[Mapping[str, Any]], *, source: str, document: int = 0
) -> tuple[list[TaggedSentence], list[str]]:
    """Turn one annotated document into IOB2 word sentences, reporting what had to change.

    Training must see the words the tagger will see, so sentences come from ``split_sentences``,
    cut further at every line break (brat cannot annotate across one; PubTator's title is one).
    An annotation that does not start and end on word boundaries is widened to the words it
    touches; a discontinuous one (several ``fragments``) cannot be IOB2 and is left out; of two
    overlapping ones the longer is kept (ties: the earlier). Each case yields a warning naming
    ``source`` and the annotation id, so nothing is lost silently. Sentences that a kept
    annotation crosses are merged.

    Args:
        text: The document.
        annotations: Dicts with ``start``, ``end``, ``type`` and optionally ``id``, ``text``
            (checked against the offsets) and ``fragments``.
        source: File named in warnings.
        document: Document index stored in each sentence.

    Returns:
        The sentences, and one warning per annotation that was changed or left out.
    """
    sentences = _cut_at_line_breaks(text, split_sentences(text))
    tokens = [t for sentence in sentences for t in sentence]
    starts, ends = [t.start for t in tokens], [t.end for t in tokens]
    warnings: list[str] = []
    spans: list[tuple[int, int, int, str, Mapping[str, Any]]] = []  # length, first, end token, name, ann
    for order, ann in enumerate(annotations):
        name = str(ann.get("id", f"annotation {order + 1}"))
        where = f"{source}: {name}"
        start, end = ann["start"], ann["end"]
        if len(ann.get("fragments", ())) > 1:
            warnings.append(f"{where}: discontinuous annotation {ann['fragments']} left out")
            continue
        if not 0 <= start < end <= len(text) or not text[start:end].strip():
            warnings.append(f"{where}: offsets {start}..{end} hold no word of the text; left out")
            continue
        core = text[start:end]
        if "text" in ann and ann["text"] != core:
            warnings.append(f"{where}: text {ann['text']!r} differs from {core!r} at its offsets")
        first, last = bisect.bisect_right(ends, start), bisect.bisect_left(starts, end)
        trimmed = (start + len(core) - len(core.lstrip()), end - len(core) + len(core.rstrip()))
        if (starts[first], ends[last - 1]) != trimmed:
            wide = text[starts[first] : ends[last - 1]]
            warnings.append(f"{where}: {core!r} is not on word boundaries; widened to {wide!r}")
        spans.append((end - start, first, last, name, ann))
    owner: list[str | None] = [None] * len(tokens)
    tags = ["O"] * len(tokens)
    for _, first, last, name, ann in sorted(spans, key=lambda s: (-s[0], s[1])):
        rival = next((o for o in owner[first:last] if o is not None), None)
        if rival is not None:
            warnings.append(f"{source}: {name} overlaps {rival}, which is longer (or as long and earlier); left out")
            continue
        owner[first:last] = [name] * (last - first)
        tags[first:last] = [f"B-{ann['type']}"] + [f"I-{ann['type']}"] * (last - first - 1)
    result: list[TaggedSentence] = []
    position = 0
    for sentence in sentences:
        words = tuple(t.text for t in sentence)
        labels = tuple(tags[position : position + len(sentence)])
        if result and labels and labels[0].startswith("I-"):  # an entity crosses: merge
            result[-1] = TaggedSentence(result[-1].tokens + words, result[-1].tags + labels, document)
        else:
            result.append(TaggedSentence(words, labels, document))
        position += len(sentence)
    return result, warnings


def sentence_from(piece: str, start: int) -> TextSentence:
    """The sentence whose characters are ``piece``, found at ``start`` of its document: its words read again.

    For a queue of sentences (the server's): it keeps each sentence's two offsets, not its words, and reads them
    again when the sentence's turn comes. Words cost ~200 bytes each as Python objects (8,000 queued questions:
    14 MB, issue 43); reading them again costs ~1 microsecond a word. ``piece`` is one of
    :func:`split_sentences`'s sentences, ``text[sentence.start:sentence.end]``, so it gives the same words.

    >>> text = "TNF-α rose. It fell."
    >>> second = split_sentences(text)[1]
    >>> sentence_from(text[second.start : second.end], second.start) == second
    True
    """
    tokens = tokenize_words(piece, start)
    if not tokens:
        raise ValueError(f"no words in the sentence at {start}: {piece!r}")
    return _sentence(tokens)


def _sentence(tokens: list[Token]) -> TextSentence:
    return TextSentence(tokens[0].start, tokens[-1].end, tuple(tokens))


def _paragraph_starts(text: str) -> Iterator[int]:
    """Offsets just after each whitespace run that holds two or more line breaks."""
    for run in _BREAK_RUN.finditer(text):
        if len(_LINE_BREAK.findall(run.group())) >= 2:
            yield run.end()


def _library_starts(text: str) -> array:
    """Sentence start offsets proposed by sentencex (character offsets into ``text``), in order."""
    import sentencex  # a compiled extension, imported on first use to keep ``import mtbioner`` light

    # sentencex encodes to UTF-8, which lone surrogates cannot pass, and panics on some wide spaces (_WIDE_SPACE);
    # one character for one keeps every offset.
    safe = _WIDE_SPACE.sub(" ", _SURROGATE.sub("\ufffd", text))
    # Its sentences as strings, which follow one another through the text, cost a tenth of its boundaries (a dict
    # per sentence: 29 MB at peak for a 0.5 MB text of 50,001 sentences, against 3.6); their starts are the
    # running sum of their lengths. Should they ever not make up the text, the boundaries decide.
    pieces = list(sentencex.segment("en", safe))
    if "".join(pieces) == safe:
        return array("q", accumulate((len(piece) for piece in pieces[:-1]), initial=0)) if pieces else array("q")
    return array("q", sorted(b["start_index"] for b in sentencex.get_sentence_boundaries("en", safe)))


def _cut_at_line_breaks(text: str, sentences: Sequence[TextSentence]) -> list[list[Token]]:
    """Split sentences further so that none spans a line break."""
    breaks = [m.end() for m in _LINE_BREAK.finditer(text)]
    pieces: list[list[Token]] = []
    for sentence in sentences:
        piece: list[Token] = []
        for token in sentence.tokens:
            if piece and bisect.bisect_right(breaks, piece[-1].end) != bisect.bisect_right(breaks, token.start):
                pieces.append(piece)
                piece = []
            piece.append(token)
        pieces.append(piece)
    return pieces
