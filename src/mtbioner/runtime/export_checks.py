"""``export --check``: the torch model and its export scored on the same corpora by the same code; an export that
loses more F1 than ``--max-drop`` is refused (nothing written), and what was measured travels in its config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import MtbionerError
from .onnx_backend import OnnxTagger

if TYPE_CHECKING:
    from ..data.corpus import Corpus


@dataclass
class CheckSettings:
    """What ``--check`` scores: both models on one split of some corpora.

    Attributes:
        corpora: Corpus names/folders, or ``HEAD=PATH`` to score a folder with a named head.
        data_dir: Folder holding corpora by name (default ``$MTBIONER_DATA``).
        split: Split to score.
        limit: Read only the first N sentences (smoke runs).
        max_drop: Largest F1 loss (points) the exported model may show on any corpus; a
            bigger loss aborts the export and nothing is written.
        batch_size: Windows per inference batch.
    """

    corpora: list[str]
    data_dir: Path | None = None
    split: str = "test"
    limit: int | None = None
    max_drop: float = 0.5
    batch_size: int = INFERENCE_BATCH_SIZE

    def __post_init__(self) -> None:
        """Fail before the (minute-long) export, not after it."""
        if self.batch_size < 1:
            raise MtbionerError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise MtbionerError(f"--limit must be at least 1, not {self.limit}")
        if self.max_drop != self.max_drop:  # NaN: every comparison false, so the check would pass anything
            raise MtbionerError("--max-drop must be a number of F1 points, not nan")


@dataclass
class CheckRow:
    """F1 of the torch and the exported model on one corpus, and how many sentences changed."""

    corpus: str
    head: str
    sentences: int
    torch_f1: float
    onnx_f1: float
    changed: int

    @property
    def drop(self) -> float:
        return self.torch_f1 - self.onnx_f1


class ExportCheckError(MtbionerError):
    """``--check`` found the exported model worse than allowed; nothing was written."""

    def __init__(self, message: str, rows: list[CheckRow]) -> None:
        super().__init__(message)
        self.rows = rows


def read_check_corpora(check: CheckSettings) -> list[tuple[str, Corpus]]:
    """(head, corpus) pairs, read before the export so a typo fails in seconds, not minutes."""
    from ..data.corpus import read_corpus, resolve_corpus

    pairs = []
    for spec in check.corpora:
        head, sep, path = spec.partition("=")
        corpus = read_corpus(resolve_corpus(path if sep else spec, check.data_dir), [check.split], check.limit)
        pairs.append((head if sep else corpus.name, corpus))
    return pairs


def run_checks(model, exported: OnnxTagger, corpora: list[tuple[str, Corpus]], check: CheckSettings) -> list[CheckRow]:
    """Score both models on every check corpus with the same evaluation code."""
    from .evaluation import evaluate_corpus

    rows = []
    for head, corpus in corpora:
        if head not in model.config.corpora:
            raise MtbionerError(
                f"--check {corpus.name}: the model has no head {head!r} (heads: {model.corpora}); "
                f"use HEAD=PATH to score a folder with a named head"
            )
        torch_report, torch_tags = evaluate_corpus(model, corpus, check.split, head, check.batch_size)
        onnx_report, onnx_tags = evaluate_corpus(exported, corpus, check.split, head, check.batch_size)
        changed = sum(a != b for a, b in zip(torch_tags, onnx_tags, strict=True))
        rows.append(
            CheckRow(
                torch_report.corpus,
                head,
                torch_report.sentences,
                torch_report.overall.f1,
                onnx_report.overall.f1,
                changed,
            )
        )
    return rows


def enforce_checks(rows: list[CheckRow], check: CheckSettings | None, out: Path) -> None:
    if check is None:
        return
    worst = max(rows, key=lambda r: r.drop, default=None)
    if worst is not None and worst.drop > check.max_drop:
        raise ExportCheckError(
            f"the export loses {worst.drop:.2f} F1 points on {worst.corpus} ({worst.torch_f1:.2f} -> "
            f"{worst.onnx_f1:.2f}), more than --max-drop {check.max_drop:g}; nothing was written to {out}",
            rows,
        )


def record_checks(config_file: Path, rows: list[CheckRow], check: CheckSettings) -> None:
    """Keep what ``--check`` measured in the export's config (``onnx.check``), so the figures travel with the model
    (``mtbioner info`` shows them) instead of living only in a build log."""
    from ..fileio import write_json

    data = json.loads(config_file.read_text(encoding="utf-8"))
    data["onnx"]["check"] = {
        "split": check.split,
        "limit": check.limit,
        "max_drop": check.max_drop,
        "rows": [{**asdict(r), "drop": round(r.drop, 4)} for r in rows],
    }
    write_json(config_file, data)


def format_checks(rows: Sequence[CheckRow], split: str) -> str:
    """A plain-text table of torch vs exported F1 per corpus."""
    header = f"{'corpus (' + split + ')':<24} {'torch F1':>9} {'onnx F1':>9} {'change':>7} {'sentences changed':>18}"
    lines = [header, "-" * len(header)]
    for r in rows:
        name = r.corpus if r.head == r.corpus else f"{r.corpus} (head {r.head})"
        changed = f"{r.changed} / {r.sentences}"
        lines.append(f"{name:<24} {r.torch_f1:9.2f} {r.onnx_f1:9.2f} {r.onnx_f1 - r.torch_f1:+7.2f} {changed:>18}")
    return "\n".join(lines)
