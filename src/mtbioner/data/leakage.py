"""Keep evaluation text out of training: sentences that also occur in a scored split are removed.

Corpora from one collection share sources: GENIA abstracts are in JNLPBA and BioNLP09, and
BioCreative abstracts in BC2GM and the GENIA event sets, so about 2,000 of JNLPBA's training
sentences are BioNLP09 test sentences. A model trained on JNLPBA and scored on BioNLP09 test
would be scored on text it learned. The rule: a run never trains or selects on a sentence whose
text occurs in a split it is scored on, that is the test split of every corpus it trains on, plus
the devel and test splits of every *held-out* corpus (one it is scored on without training on it,
e.g. the left-out corpora of a cross-corpus comparison).

Texts are compared without spaces and case (:func:`sentence_key`), since the corpora tokenise the
same sentence differently (JNLPBA keeps ``IL-2`` whole, BC2GM splits it). Short generic sentences
(``Results``) match too; removing them is harmless and keeps the rule exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from ..errors import MtbionerError
from .corpus import Corpus, Split, has_split, read_corpus

logger = logging.getLogger(__name__)

Forbidden = dict[str, set[str]]
"""Scored split (``"CORPUS/split"``) -> keys of its sentences."""


def sentence_key(tokens: Iterable[str]) -> str:
    """A sentence's text as compared across corpora: tokens joined without spaces, case folded."""
    return "".join(tokens).casefold()


def scored_texts(
    trained: Mapping[str, str | Path], held_out: Sequence[str | Path] = (), *, held_out_splits: Sequence[str] = ()
) -> Forbidden:
    """The sentence keys of every split a run is scored on.

    Args:
        trained: Name -> folder of each corpus the run trains on: its ``test`` split is scored on
            (a corpus without one contributes nothing).
        held_out: Folders of corpora scored without training on them: their ``devel`` and
            ``test`` splits (those present), or only ``held_out_splits`` when given.
        held_out_splits: Override of the held-out corpora's scored splits.

    Raises:
        MtbionerError: A held-out folder is not a corpus.
        CorpusFormatError: A scored split is malformed.
    """
    forbidden: Forbidden = {}
    for path in trained.values():
        forbidden.update(_read_present(Path(path), ("test",)))
    for path in held_out:
        splits = tuple(held_out_splits) or ("devel", "test")
        found = _read_present(Path(path), splits)
        if not found:
            raise MtbionerError(f"held-out corpus {path}: no {' or '.join(splits)} split to keep out of training")
        forbidden.update(found)
    return forbidden


def _read_present(path: Path, splits: tuple[str, ...]) -> Forbidden:
    found: Forbidden = {}
    present = [split for split in splits if has_split(path, split)]
    if not present:
        return found
    corpus = read_corpus(path, splits=present)
    for split, loaded in corpus.splits.items():
        found[f"{corpus.name}/{split}"] = {sentence_key(s.tokens) for s in loaded.sentences}
    return found


def remove_leaks(corpora: Sequence[Corpus], forbidden: Forbidden) -> tuple[list[Corpus], dict[str, dict[str, dict]]]:
    """The corpora without sentences that occur in a scored split, and what was removed.

    Only splits that are trained or selected on are filtered: a corpus's own ``test`` split (if
    loaded) is left as it is.

    Returns:
        The filtered corpora and, per corpus and split, ``{"removed": n, "kept": n, "found_in":
        {"CORPUS/split": n}}`` (a sentence found in several scored splits counts once in ``removed``
        and once under each of them).
    """
    counts: dict[str, dict[str, dict]] = {}
    result = []
    for corpus in corpora:
        splits: dict[str, Split] = {}
        for name, split in corpus.splits.items():
            if name == "test":
                splits[name] = split
                continue
            kept, found_in = [], {}
            for sentence in split.sentences:
                key = sentence_key(sentence.tokens)
                hits = [scored for scored, keys in forbidden.items() if key in keys]
                for scored in hits:
                    found_in[scored] = found_in.get(scored, 0) + 1
                if not hits:
                    kept.append(sentence)
            removed = len(split.sentences) - len(kept)
            counts.setdefault(corpus.name, {})[name] = {
                "removed": removed,
                "kept": len(kept),
                "found_in": dict(sorted(found_in.items())),
            }
            if removed:
                logger.info("%s/%s: removed %d sentences found in scored splits", corpus.name, name, removed)
            splits[name] = replace(split, sentences=kept) if removed else split
        result.append(replace(corpus, splits=splits))
    return result, counts
