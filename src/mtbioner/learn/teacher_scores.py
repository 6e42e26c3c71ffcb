"""The teacher's scores at every owned word of every training window, computed once and kept for reuse.

The teacher is fixed and in eval mode, so a window's scores are the same every epoch: one pass before
training replaces a teacher forward per batch per epoch (for a half-depth student, a third of each step).
That pass is not free either: over the ten corpora's train splits it took about 20 minutes on one thread of
an AVX2 CPU with a training beside it, and long distillations here are resumed in every working session. So
the scores are saved into the checkpoint (float32, as computed: a resumed run learns from exactly what an
uninterrupted one does) and a resume reads them back; a file named by ``distill --teacher-scores`` lets runs
of one teacher over the same windows share them. Saved scores are used only when the teacher folder and the
windows' fingerprints match; otherwise they are computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..model.encoding import Window, collate, length_grouped_batches
from ..model.model import MultiTaskTagger

logger = logging.getLogger(__name__)

SCORES_NAME = "teacher_scores.safetensors"
"""File name of the saved scores, inside a distillation's ``checkpoint/`` folder."""


class HasWindows(Protocol):
    """A batch source (:class:`mtbioner.learn.distillation_data.Source`): all this module reads of one."""

    windows: list[Window]


def _starts(sources: Mapping[str, HasWindows]) -> dict[str, list[int]]:
    """Per source, where each window's words begin in its score rows (and, last, how many rows)."""
    return {
        name: list(accumulate((len(w.words) for w in source.windows), initial=0))
        for name, source in sources.items()
        if source.windows
    }


def fingerprints(sources: Mapping[str, HasWindows]) -> dict[str, str]:
    """Per source, a SHA-256 of what the teacher reads of its windows (sub-tokens, owned positions, case and
    dictionary features): saved scores are used only for windows with the same fingerprints."""
    found = {}
    for name, source in sources.items():
        if source.windows:
            digest = hashlib.sha256()
            for w in source.windows:
                digest.update(repr((w.input_ids, w.positions, w.token_types, w.dictionary_ids)).encode())
            found[name] = digest.hexdigest()
    return found


class TeacherScores:
    """Each source's ``[words, C]`` tensor per head, its windows' owned words one after another."""

    def __init__(
        self, scores: dict[str, dict[str, torch.Tensor]], starts: dict[str, list[int]], windows: dict[str, str]
    ) -> None:
        self.scores = scores
        self.starts = starts
        self.windows = windows  # the scored windows' fingerprints, saved with the scores
        self.kept_at: Path | None = None  # where a checkpoint's copy lies, for the next checkpoint to link

    @classmethod
    def compute(
        cls, teacher: MultiTaskTagger, sources: Mapping[str, HasWindows], batch_size: int, progress: bool = False
    ) -> TeacherScores:
        """Run the teacher once over every window (length-grouped batches) and keep the owned words' scores."""
        device = next(teacher.parameters()).device
        pad_id = teacher.tokenizer.pad_token_id or 0
        heads = list(teacher.config.corpora)
        scores: dict[str, dict[str, torch.Tensor]] = {}
        total = sum(len(s.windows) for s in sources.values())
        bar = tqdm(total=total, desc="teacher scores", unit="win", disable=not progress, leave=False)
        for name, source in sources.items():
            if not source.windows:
                continue
            rows: dict[int, dict[str, torch.Tensor]] = {}
            for indices in length_grouped_batches([len(w) for w in source.windows], batch_size):
                batch = collate([source.windows[i] for i in indices], pad_id)
                types = None if batch.token_type_ids is None else batch.token_type_ids.to(device)
                matched = None if batch.dictionary_ids is None else batch.dictionary_ids.to(device)
                with torch.inference_mode():
                    out = teacher.forward_all(
                        batch.input_ids.to(device), batch.attention_mask.to(device), None, types, matched
                    )
                for row, index in enumerate(indices):
                    positions = list(source.windows[index].positions)
                    rows[index] = {head: value[row, positions].float().cpu() for head, value in out.items()}
                bar.update(len(indices))
            scores[name] = {head: torch.cat([rows[i][head] for i in range(len(source.windows))]) for head in heads}
        bar.close()
        return cls(scores, _starts(sources), fingerprints(sources))

    def batch(self, source: str, indices: Sequence[int], device: torch.device | str) -> dict[str, torch.Tensor]:
        """Every head's scores at the owned words of these windows, in the order the word mask reads them."""
        starts = self.starts[source]
        index = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in indices])
        return {head: scores[index].to(device) for head, scores in self.scores[source].items()}

    def save(self, path: Path, teacher: str) -> None:
        """Write the scores to one safetensors file, with the teacher they came from and the fingerprints of the
        windows they score. Written aside and renamed into place: a reader never sees half a file.
        """
        tensors = {
            f"{source}\n{head}": t.contiguous() for source, heads in self.scores.items() for head, t in heads.items()
        }
        metadata = {"teacher": teacher, "windows": json.dumps(self.windows, sort_keys=True)}
        partial = path.with_name(path.name + ".partial")
        save_file(tensors, str(partial), metadata=metadata)
        partial.replace(path)

    @classmethod
    def load(
        cls, path: Path, sources: Mapping[str, HasWindows], teacher: str, heads: Sequence[str]
    ) -> TeacherScores | None:
        """The scores :meth:`save` wrote, or None when there are none or they do not fit these windows and heads.

        ``teacher`` names the teacher the run learns from (its folder, as recorded); scores of another are
        not used.
        """
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as file:
                metadata = file.metadata() or {}
                tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (not a dict)
            windows = json.loads(metadata.get("windows", "null"))
        except (OSError, SafetensorError, json.JSONDecodeError) as error:
            logger.warning("%s: unreadable (%s); computing the teacher's scores again", path, error)
            return None
        expected = fingerprints(sources)
        if metadata.get("teacher") != teacher or windows != expected:
            logger.warning("%s: saved for other windows or another teacher; computing the scores again", path)
            return None
        starts = _starts(sources)
        scores: dict[str, dict[str, torch.Tensor]] = {}
        for source, offsets in starts.items():
            scores[source] = {head: tensors.get(f"{source}\n{head}") for head in heads}  # type: ignore[misc]
            if any(t is None or t.shape[0] != offsets[-1] for t in scores[source].values()):
                logger.warning("%s: heads or rows do not match the model; computing the scores again", path)
                return None
        return cls(scores, starts, expected)
