"""Entity-level precision, recall and F1 per corpus and per entity type.

Scores come from seqeval in its default mode, which reads chunks exactly as conlleval
does (an ``I-X`` after ``O`` opens a chunk): exact span and type match, micro-averaged
within a corpus. Scores are in percent.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities

from ..constants import INFERENCE_BATCH_SIZE
from ..fileio import atomic_write, write_json
from ..model.encoding import document_surroundings
from .inference import predict_tags

if TYPE_CHECKING:
    from ..data.corpus import Corpus, Sentence


@dataclass(frozen=True)
class Scores:
    """Precision, recall and F1 in percent; ``support`` is the number of gold entities."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class CorpusReport:
    """Scores of one corpus split, overall and per entity type."""

    corpus: str
    head: str
    split: str
    sentences: int
    overall: Scores
    predicted: int
    types: dict[str, Scores] = field(default_factory=dict)
    seconds: float = 0.0  # time to tag the split (tokenizing, encoder, decoding), not scoring

    def to_dict(self) -> dict:
        return {
            "precision": self.overall.precision,
            "recall": self.overall.recall,
            "f1": self.overall.f1,
            "support": self.overall.support,
            "predicted": self.predicted,
            "sentences": self.sentences,
            "head": self.head,
            "split": self.split,
            "seconds": round(self.seconds, 3),
            "types": {name: asdict(s) for name, s in self.types.items()},
        }


def score(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> tuple[Scores, dict[str, Scores], int]:
    """Overall and per-type scores of predicted against gold label sequences.

    Returns:
        Overall micro-averaged scores, scores per entity type (every type found in gold
        or predictions), and the number of predicted entities.
    """
    gold, predicted = [list(s) for s in gold], [list(s) for s in predicted]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classification_report(gold, predicted, output_dict=True, zero_division=0)

    def scores(row: dict) -> Scores:
        return Scores(
            round(100 * float(row["precision"]), 4),
            round(100 * float(row["recall"]), 4),
            round(100 * float(row["f1-score"]), 4),
            int(row["support"]),
        )

    types = {name: scores(row) for name, row in sorted(report.items()) if not name.endswith(" avg")}
    n_predicted = sum(len(get_entities(s)) for s in predicted)
    return scores(report["micro avg"]), types, n_predicted


def evaluate_corpus(
    model,
    corpus: Corpus,
    split: str = "test",
    head: str | None = None,
    batch_size: int = INFERENCE_BATCH_SIZE,
    progress: bool = False,
) -> tuple[CorpusReport, list[list[str]]]:
    """Tag one split of a corpus with a head (by default the one named like the corpus) and score it.

    Returns:
        The report and the predicted labels of each sentence (for conlleval output).
    """
    head = head or corpus.name
    sentences = corpus.sentences(split)
    started = time.perf_counter()
    words = [s.tokens for s in sentences]
    context = model.config.context
    surroundings = document_surroundings(words, [s.document for s in sentences], context) if context else None
    predicted = predict_tags(model, words, head, batch_size, progress, surroundings)
    seconds = time.perf_counter() - started
    overall, types, n_predicted = score([s.tags for s in sentences], predicted)
    report = CorpusReport(corpus.name, head, split, len(sentences), overall, n_predicted, types, seconds)
    return report, predicted


def write_conlleval(path: str | Path, sentences: Sequence[Sentence], predicted: Sequence[Sequence[str]]) -> None:
    """Write ``token gold predicted`` lines, a blank line between sentences (conlleval's input).

    Spaces inside a token would split conlleval's columns, so they are written as ``_``.
    """
    with atomic_write(path) as handle:
        for sentence, tags in zip(sentences, predicted, strict=True):
            for token, gold, pred in zip(sentence.tokens, sentence.tags, tags, strict=True):
                handle.write(f"{token.replace(' ', '_')} {gold} {pred}\n")
            handle.write("\n")


def reports_to_json(reports: Sequence[CorpusReport]) -> dict:
    """``{"corpora": {NAME: {...}}}`` as written by ``mtbioner evaluate --json``."""
    return {"corpora": {r.corpus: r.to_dict() for r in reports}}


def write_json_report(path: str | Path, reports: Sequence[CorpusReport]) -> None:
    write_json(path, reports_to_json(reports))


def format_table(reports: Sequence[CorpusReport]) -> str:
    """A plain-text table: one row per corpus, then one row per entity type."""
    header = f"{'corpus / type':<28} {'P':>7} {'R':>7} {'F1':>7} {'gold':>7} {'sents':>7}"
    lines = [header, "-" * len(header)]
    for r in reports:
        name = r.corpus if r.head == r.corpus else f"{r.corpus} (head {r.head})"
        o = r.overall
        lines.append(f"{name:<28} {o.precision:7.2f} {o.recall:7.2f} {o.f1:7.2f} {o.support:7d} {r.sentences:7d}")
        for type_name, s in r.types.items():
            lines.append(f"  {type_name:<26} {s.precision:7.2f} {s.recall:7.2f} {s.f1:7.2f} {s.support:7d}")
    return "\n".join(lines)
