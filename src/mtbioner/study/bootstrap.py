"""Paired bootstrap confidence intervals for the difference in entity-level F1 of two systems.

Method (Efron & Tibshirani 1993; for NER as in Koehn 2004 / Berg-Kirkpatrick et al. 2012):

1. Both systems tag the same test sentences. For every sentence and system, count the true
   positives (predicted entities whose type, start and end match a gold entity), the predicted
   entities and the gold entities. Entities are read from IOB2 tags exactly as conlleval and
   seqeval's default mode read them (``seqeval...get_entities``: an ``I-X`` after ``O`` opens a
   chunk), so summing the counts over all sentences gives the same micro F1 as
   :func:`mtbioner.runtime.evaluation.score` and conlleval.
2. Draw B resamples (default 1,000) of the n sentences with replacement, with one seeded
   generator; the *same* drawn sentences are used for both systems (paired). For each resample,
   sum the counts and compute F1 = 2 TP / (predicted + gold) of each system (0 when both are 0)
   and the difference A - B, in F1 points (percent).
3. The 95% interval is the 2.5th to 97.5th percentile of the B differences (percentile
   bootstrap). Verdict for A against B: ``win`` when the whole interval is above 0, ``loss``
   when it is below 0, ``tie`` otherwise (the interval holds 0).

The sentence is the resampling unit because entities and errors cluster within sentences (and
documents: sentences of one abstract are not independent either, so these intervals are, if
anything, a little narrow). Each interval is a per-comparison 95% interval, with no correction
for the several comparisons a report makes; read a ``win`` by a hair with that in mind.

Vectorised with numpy: the resampled index matrix (B x n) gathers the per-sentence counts,
so 1,000 resamples over 5,000 sentences take a fraction of a second.

Stored predictions: ``mtbioner experiment run`` keeps, beside each ``RUN.json``, one
``RUN.predictions/CORPUS.json.gz`` per scored corpus (gold and predicted tags of every test
sentence; see :func:`write_predictions`), so that reports can bootstrap without model folders.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MtbionerError
from ..fileio import atomic_write

RESAMPLES = 1000
SEED = 42
CONFIDENCE = 0.95
PREDICTIONS_FORMAT = "mtbioner-predictions/1"


@dataclass(frozen=True)
class Interval:
    """A statistic (F1 points) and its bootstrap percentile interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """System A against system B on the same sentences: F1 of each, and A - B with its interval."""

    f1_a: Interval
    f1_b: Interval
    difference: Interval
    verdict: str  # "win", "loss" or "tie" (for A)
    sentences: int
    resamples: int
    seed: int
    confidence: float
    share_not_better: float  # share of resamples in which A - B <= 0

    def to_dict(self) -> dict:
        return {
            "f1_a": self.f1_a.value,
            "f1_b": self.f1_b.value,
            "difference": self.difference.value,
            "low": self.difference.low,
            "high": self.difference.high,
            "verdict": self.verdict,
            "sentences": self.sentences,
            "resamples": self.resamples,
            "seed": self.seed,
            "confidence": self.confidence,
        }


def sentence_counts(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sentence: true positives, predicted entities, gold entities (an ``(n, 3)`` int array).

    Raises:
        MtbionerError: The two lists differ in length, or a sentence's tag sequences do.
    """
    from seqeval.metrics.sequence_labeling import get_entities

    if len(gold) != len(predicted):
        raise MtbionerError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones")
    counts = np.zeros((len(gold), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise MtbionerError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted ones")
        gold_entities = set(get_entities(list(g)))
        predicted_entities = set(get_entities(list(p)))
        counts[i] = (len(gold_entities & predicted_entities), len(predicted_entities), len(gold_entities))
    return counts


def f1_from_counts(tp, predicted, gold):
    """Entity F1 in percent, 2 TP / (predicted + gold); 0 where there is nothing (numpy-aware)."""
    tp, total = np.asarray(tp, dtype=np.float64), np.asarray(predicted, dtype=np.float64) + np.asarray(gold)
    return np.divide(200.0 * tp, total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The ``(resamples, n)`` sentence indices drawn with replacement (the same for any pair of systems)."""
    if n <= 0:
        raise MtbionerError("no sentences to resample")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n), dtype=np.int32 if n < 2**31 else np.int64)


def resampled_f1(counts: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """F1 of every resample (one row of ``indices`` each) from per-sentence counts."""
    sums = [counts[:, k][indices].sum(axis=1) for k in range(3)]
    return f1_from_counts(*sums)


def _interval(value: float, samples: np.ndarray, confidence: float) -> Interval:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(round(float(value), 4), round(float(low), 4), round(float(high), 4))


def verdict(low: float, high: float) -> str:
    """``win`` when the interval lies above 0, ``loss`` below 0, ``tie`` when it holds 0."""
    return "win" if low > 0 else "loss" if high < 0 else "tie"


def compare_counts(
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
    return_samples: bool = False,
) -> Comparison | tuple[Comparison, np.ndarray]:
    """Paired bootstrap of F1(A) - F1(B) from per-sentence counts of :func:`sentence_counts`.

    Args:
        counts_a: Counts of system A, one row per sentence.
        counts_b: Counts of system B on the same sentences (same gold column).
        resamples: B, the number of resamples.
        seed: Seed of the resampling generator.
        confidence: Coverage of the percentile interval.
        return_samples: Also return the B differences.

    Raises:
        MtbionerError: The two systems were not scored on the same sentences.
    """
    if counts_a.shape != counts_b.shape or not np.array_equal(counts_a[:, 2], counts_b[:, 2]):
        raise MtbionerError(
            "the two systems were not scored on the same sentences "
            f"({len(counts_a)} and {len(counts_b)} sentences, or different gold entities)"
        )
    indices = resample_indices(len(counts_a), resamples, seed)
    f1_a, f1_b = resampled_f1(counts_a, indices), resampled_f1(counts_b, indices)
    diffs = f1_a - f1_b
    observed_a = float(f1_from_counts(*counts_a.sum(axis=0)))
    observed_b = float(f1_from_counts(*counts_b.sum(axis=0)))
    difference = _interval(observed_a - observed_b, diffs, confidence)
    result = Comparison(
        _interval(observed_a, f1_a, confidence),
        _interval(observed_b, f1_b, confidence),
        difference,
        verdict(difference.low, difference.high),
        len(counts_a),
        resamples,
        seed,
        confidence,
        round(float(np.mean(diffs <= 0)), 4),
    )
    return (result, diffs) if return_samples else result


def paired_bootstrap(
    gold: Sequence[Sequence[str]],
    predicted_a: Sequence[Sequence[str]],
    predicted_b: Sequence[Sequence[str]],
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Paired bootstrap of the entity F1 difference of two systems' IOB2 tags on the same sentences.

    Example:
        >>> result = paired_bootstrap(gold, mt4_tags, single_tags)
        >>> result.difference.value, result.difference.low, result.difference.high, result.verdict
    """
    result = compare_counts(
        sentence_counts(gold, predicted_a), sentence_counts(gold, predicted_b), resamples, seed, confidence
    )
    assert isinstance(result, Comparison)
    return result


def f1_interval(
    counts: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE
) -> Interval:
    """One system's F1 with its bootstrap percentile interval."""
    samples = resampled_f1(counts, resample_indices(len(counts), resamples, seed))
    return _interval(float(f1_from_counts(*counts.sum(axis=0))), samples, confidence)


# -- stored predictions ------------------------------------------------------------------------


def read_conlleval(path: str | Path) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tags of each sentence of a ``token gold predicted`` file (blank line between)."""
    gold: list[list[str]] = [[]]
    predicted: list[list[str]] = [[]]
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            if gold[-1]:
                gold.append([])
                predicted.append([])
            continue
        fields = line.rsplit(" ", 2)
        if len(fields) != 3:
            raise MtbionerError(f"{path}:{number}: expected 'token gold predicted', got {line!r}")
        gold[-1].append(fields[1])
        predicted[-1].append(fields[2])
    if not gold[-1]:
        gold.pop()
        predicted.pop()
    return gold, predicted


def write_predictions(
    path: str | Path,
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    **facts: str,
) -> None:
    """Write gold and predicted tags, one space-joined string per sentence, as gzipped JSON.

    The gzip header carries no time stamp, so the same predictions give the same bytes. A test
    set of 5,000 sentences takes well under 100 kB. ``facts`` (run, corpus, split) are stored too.
    """
    if len(gold) != len(predicted):
        raise MtbionerError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones")
    payload = {
        "format": PREDICTIONS_FORMAT,
        **facts,
        "sentences": len(gold),
        "gold": [" ".join(tags) for tags in gold],
        "predicted": [" ".join(tags) for tags in predicted],
    }
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    with atomic_write(path, "wb") as handle:
        handle.write(gzip.compress(data, compresslevel=9, mtime=0))


def read_predictions(path: str | Path) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tags of each sentence from a file of :func:`write_predictions`."""
    try:
        payload = json.loads(gzip.decompress(Path(path).read_bytes()).decode("utf-8"))
    except (OSError, ValueError) as error:
        raise MtbionerError(f"{path}: not a predictions file: {error}") from None
    if payload.get("format") != PREDICTIONS_FORMAT:
        raise MtbionerError(f"{path}: unknown predictions format {payload.get('format')!r}")
    split = lambda text: text.split(" ") if text else []  # noqa: E731
    return [split(s) for s in payload["gold"]], [split(s) for s in payload["predicted"]]
