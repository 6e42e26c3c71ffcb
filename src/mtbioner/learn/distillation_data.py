"""What a student learns from: the corpora (gold labels of the head of the same name) and raw texts, as windows.

Like training, distillation never reads a sentence of a split the student is scored on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.corpus import Corpus
from ..data.text import text_surroundings
from ..errors import CorpusFormatError, MtbionerError
from ..model.encoding import Window, document_surroundings, encode
from ..model.model import MultiTaskTagger
from .training import without_scored_text

TEXT_SOURCE = "<raw text>"
"""Batch-source name of the raw (unlabelled) texts."""


@dataclass
class Source:
    """The windows of one batch source; ``gold`` is the head whose labels they carry (None: raw text)."""

    name: str
    windows: list[Window]
    gold: str | None
    sentences: int


def read_sources(
    sources: Sequence[str],
    data_dir: str | Path | None,
    splits: Sequence[str],
    limit: int | None,
    held_out: Sequence[str | Path] = (),
) -> tuple[list[Corpus], list[str], dict[str, int], dict]:
    """Corpora (the ``splits`` and devel, without sentences of a split the student is scored on) and raw texts
    (``.txt``, ``.jsonl``, ``.pubtator`` files).

    Scored splits are, as in training (:func:`~mtbioner.learn.training.without_scored_text`), the test splits of
    the corpora distilled on and the devel and test splits of the ``held_out`` corpora (folders): a student of a
    leave-out model is scored on the corpora its teacher left out, so it must not learn from their sentences
    either (some BioNLP09 sentences are in BC2GM's and JNLPBA's test sets).

    Returns:
        The corpora, the raw texts (exact duplicates dropped), how many texts each file gave, and what was
        removed (per corpus and split, as :func:`~mtbioner.data.leakage.remove_leaks` counts it).
    """
    from ..data.corpus import read_corpus, resolve_corpus
    from .pretraining import TEXT_SUFFIXES, file_texts

    if "test" in splits:
        raise MtbionerError("distillation never reads a corpus' test split: use train and/or devel")
    corpora: list[Corpus] = []
    texts: list[str] = []
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for source in sources:
        file = Path(source).expanduser()
        if file.is_file() and file.suffix.lower() in TEXT_SUFFIXES:
            before = len(texts)
            for text in file_texts(file, limit):
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
            counts[source] = len(texts) - before
        else:
            path = resolve_corpus(source, data_dir)
            wanted = list(dict.fromkeys([*splits, "devel"]))
            try:
                corpus = read_corpus(path, splits=wanted, limit=limit)
            except CorpusFormatError as exc:
                if "devel" in splits or "missing split 'devel'" not in str(exc):
                    raise
                corpus = read_corpus(path, splits=list(splits), limit=limit)  # no devel: not scored
            corpora.append(corpus)
    # like training, never learn from a sentence of a scored split
    corpora, leakage = without_scored_text(corpora, [str(path) for path in held_out])
    return corpora, texts, counts, leakage


def build_sources(
    teacher: MultiTaskTagger, corpora: Sequence[Corpus], texts: Sequence[str], splits: Sequence[str]
) -> dict[str, Source]:
    """Windows of each corpus (gold labels of the head of the same name) and of the raw texts."""
    from ..runtime.tagging import Tagger

    config = teacher.config
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise MtbionerError(f"two corpora share a name: {names}; corpus names (folder names) must be unique")
    out: dict[str, Source] = {}
    for corpus in corpora:
        if corpus.name not in config.corpora:
            raise MtbionerError(
                f"the teacher has no head {corpus.name!r} (its heads: {', '.join(config.corpora)}); "
                "give that corpus' text as a raw-text file instead"
            )
        labels = config.corpora[corpus.name].labels
        used = [split for split in splits if split in corpus.splits]
        sentences = [s for split in used for s in corpus.sentences(split)]
        unknown = sorted({t for s in sentences for t in s.tags} - set(labels))
        if unknown:
            raise MtbionerError(f"{corpus.name}: labels {unknown} are not in the teacher's head ({labels})")
        words = [s.tokens for s in sentences]
        documents = [(split, s.document) for split in used for s in corpus.sentences(split)]
        windows = encode(
            teacher.tokenizer,
            words,
            config.max_length,
            config.stride,
            tags=[s.tags for s in sentences],
            label2id={label: i for i, label in enumerate(labels)},
            case=config.case_features,
            matches=_matches(teacher, words),
            context=config.context,
            surroundings=document_surroundings(words, documents, config.context) if config.context else None,
        )
        out[corpus.name] = Source(corpus.name, windows, corpus.name, len(sentences))
    if texts:
        read = [(text, s) for text in texts for s in Tagger.split(text)]
        words = [[t.text for t in s.tokens] for _, s in read]
        surroundings = [text_surroundings(text, s, config.context) for text, s in read] if config.context else None
        windows = encode(
            teacher.tokenizer, words, config.max_length, config.stride, case=config.case_features,
            matches=_matches(teacher, words), context=config.context, surroundings=surroundings,
        )  # fmt: skip
        out[TEXT_SOURCE] = Source(TEXT_SOURCE, windows, None, len(words))
    if not any(s.windows for s in out.values()):
        raise MtbionerError("no text to distill on: name corpora (train split) or raw-text files with text in them")
    return out


def _matches(teacher: MultiTaskTagger, sentences: Sequence[Sequence[str]]) -> list | None:
    """Dictionary match tags for a dictionary-feature teacher, as tagging computes them (the whole dictionary).

    Training hid each sentence's own fold of terms; here the student learns what the teacher does at
    inference, so both see the tags a user's text would get.
    """
    if not teacher.config.dictionary_features:
        return None
    return [teacher.dictionary.match(words) for words in sentences]
