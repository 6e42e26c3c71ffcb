"""The sentences static int8 (``export --quantize int8-static``) fixes its activation scales on (``--calibration``):
a corpus's train split (never a test split) or a text file, read before the export so a typo fails in seconds, and
encoded exactly as the exported folder's runtime will encode text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MtbionerError

if TYPE_CHECKING:
    from ..model.encoding import Surroundings

#: Calibration sentences static int8 reads by default: enough for stable MinMax ranges, seconds to run.
CALIBRATION_SIZE = 256


@dataclass(frozen=True)
class CalibrationSettings:
    """Where ``int8-static`` takes the sentences that fix its activation scales.

    Attributes:
        source: A corpus (folder, one-file corpus or name under ``data_dir``), of which only the **train** split
            is read, or a ``.txt`` file (one text per line; ``.jsonl`` with a ``"text"`` per line works too),
            split into sentences as ``mtbioner tag`` splits its input.
        data_dir: Folder holding corpora by name (default ``$MTBIONER_DATA``).
        size: Sentences to calibrate on: a seeded sample spread over a corpus's train split, or a file's first.
    """

    source: str
    data_dir: Path | None = None
    size: int = CALIBRATION_SIZE

    def __post_init__(self) -> None:
        """Fail before the export, not after it."""
        if self.size < 1:
            raise MtbionerError(f"--calibration-size must be at least 1, not {self.size}")
        if not self.source.strip():
            raise MtbionerError("--calibration: empty; give a corpus (its train split is read) or a .txt file")


@dataclass
class CalibrationText:
    """The calibration sentences as words, with the words around each for models that read document context."""

    source: str
    split: str | None
    words: list[list[str]]
    surroundings: list[Surroundings] | None = None

    def summary(self, requested: int, batches: int) -> dict:
        """What ``config.json`` records: where the sentences came from, how many, and the method."""
        return {
            "source": self.source,
            "split": self.split,
            "sentences": len(self.words),
            "requested": requested,
            "batches": batches,
            "method": "MinMax",
            "format": "QDQ",
            "activations": "QUInt8",
        }


def read_calibration(settings: CalibrationSettings, context: int = 0) -> CalibrationText:
    """Read the calibration sentences, before the export so that a typo fails in seconds.

    A corpus gives ``settings.size`` sentences of its **train** split only (a seeded sample spread over the
    split, not its first documents); a test split is never read. A ``.txt``/``.jsonl`` file gives its first
    ``settings.size`` sentences, split from each text as ``mtbioner tag`` splits them. ``context``: words of
    document context the model reads each side of a sentence (its config's ``context``).

    Raises:
        MtbionerError: The file or corpus is missing, the corpus has no train split (or is named like a test
            split), or there is no sentence in it; the message starts with ``--calibration``.
    """
    spec = settings.source
    if Path(spec).suffix.lower() in (".txt", ".jsonl"):
        return _read_calibration_file(Path(spec).expanduser(), settings.size, context)
    from ..data.corpus import SPLITS, has_split, read_corpus, resolve_corpus
    from ..model.encoding import document_surroundings

    try:
        path = resolve_corpus(spec, settings.data_dir)
    except MtbionerError as exc:
        raise MtbionerError(f"--calibration {spec}: {exc}") from exc
    if not any(has_split(path, split) for split in SPLITS):  # a one-split corpus is read whole: its name decides
        _refuse_test_split(path, spec)
    try:
        corpus = read_corpus(path, ["train"])
    except MtbionerError as exc:
        raise MtbionerError(
            f"--calibration {spec}: static int8 calibrates on a corpus's train split only, never its test split: {exc}"
        ) from exc
    sentences = [s for s in corpus.sentences("train") if s.tokens]
    if not sentences:
        raise MtbionerError(f"--calibration {spec}: the train split of {path} holds no sentence")
    words = [list(s.tokens) for s in sentences]
    around = document_surroundings(words, [s.document for s in sentences], context) if context else None
    chosen = sorted(random.Random(0).sample(range(len(words)), min(settings.size, len(words))))
    return CalibrationText(
        str(path), "train", [words[i] for i in chosen], [around[i] for i in chosen] if around is not None else None
    )


def _read_calibration_file(path: Path, size: int, context: int) -> CalibrationText:
    """The first ``size`` sentences of a text file's texts (one per line), with their document context."""
    from ..data.formats import read_documents
    from ..data.text import text_surroundings
    from .tagging import Tagger

    if not path.is_file():
        raise MtbionerError(
            f"--calibration {path}: no such file; give a .txt file (one text per line) or a corpus, whose train "
            f"split is read"
        )
    _refuse_test_split(path, str(path))
    words: list[list[str]] = []
    around: list[Surroundings] = []
    try:
        for _, record in read_documents(path):
            text = record["text"]
            for sentence in Tagger.split(text):
                words.append([token.text for token in sentence.tokens])
                around.append(text_surroundings(text, sentence, context))
            if len(words) >= size:
                break
    except MtbionerError as exc:
        raise MtbionerError(f"--calibration {path}: {exc}") from exc
    if not words:
        raise MtbionerError(f"--calibration {path}: holds no text to calibrate on")
    return CalibrationText(str(path), None, words[:size], around[:size] if context else None)


def _refuse_test_split(path: Path, spec: str) -> None:
    """A file or one-split folder named like a test split (``test.pubtator``, ``test/a.txt``): not calibration."""
    names = {path.name.split(".")[0].lower(), path.parent.name.lower()}
    if "test" in names:
        raise MtbionerError(
            f"--calibration {spec}: {path} looks like a test split; calibrate on training text (give the corpus "
            f"folder, whose train split is read, or a text file of your own)"
        )


def encoded_calibration(model, folder: Path, text: CalibrationText) -> list[dict[str, np.ndarray]]:
    """Calibration batches encoded as the exported folder's runtime will encode text: with the tokenizer
    and dictionary read back from ``folder`` as ``OnnxTagger.from_pretrained`` reads them."""
    from ..model.dictionary import Dictionary
    from ..model.fast_tokenizer import load_tokenizer
    from .quantization import calibration_feeds

    dictionary = Dictionary.load(folder) if model.config.dictionary_features else None
    return calibration_feeds(model.config, load_tokenizer(folder), text.words, text.surroundings, dictionary)
