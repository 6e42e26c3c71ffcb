"""Where each run of a study stands, read from its files: scored, trained, in progress (and how far), or not started.

A study of ten-corpus runs outlasts many working sessions on a small CPU: each session resumes it and first needs
to know what finished, what is half-way and how far. ``mtbioner experiment status`` answers from the result
files, the model folders' checkpoints and their logs, without loading a model or touching the runs.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .experiment import model_path, run_log
from .study_file import Run, Study


@dataclass(frozen=True)
class RunStatus:
    """One run: ``state`` is ``scored``, ``trained`` (not yet scored), ``in progress`` or ``not started``."""

    run: str
    state: str
    detail: str = ""

    def describe(self) -> str:
        """One line, as ``experiment status`` prints it."""
        return f"{self.run}: {self.state}" + (f" ({self.detail})" if self.detail else "")


def _json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _when(file: Path) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(file.stat().st_mtime))


def _scored(study: Study, run: Run, record: dict[str, Any]) -> RunStatus:
    f1 = [s["f1"] for s in record.get("scores", {}).values() if isinstance(s, dict) and "f1" in s]
    mean = f"mean {study.split_of(run)} F1 {sum(f1) / len(f1):.2f} over {len(f1)} corpora" if f1 else "no scores"
    finished = record.get("finished")
    return RunStatus(run.name, "scored", f"{mean}; finished {finished}" if finished else mean)


def _in_progress(name: str, folder: Path, log: Path) -> RunStatus:
    state = _json(folder / "checkpoint" / "state.json")
    info = _json(folder / "training.json")
    step, total = state.get("step"), info.get("total_steps")
    where = f"step {step} of {total} ({100 * step / total:.0f}%)" if step is not None and total else f"step {step}"
    epochs = info.get("config", {}).get("epochs")
    epoch = f"epoch {state.get('epoch', 0) + 1}" + (f" of {epochs}" if epochs else "")
    last = _last_entry(folder / "log.jsonl")
    devel = last.get("devel", {}) if last else {}
    f1 = [s["f1"] for s in devel.values() if isinstance(s, dict) and "f1" in s]
    after = f"; devel mean {sum(f1) / len(f1):.2f} after epoch {last.get('epoch')}" if f1 else ""
    checkpoint = _when(folder / "checkpoint" / "state.json")
    left = _hours_left(log)
    pace = f"; about {left} h of steps left at its pace then" if left else ""
    return RunStatus(name, "in progress", f"{epoch}, {where}; checkpoint {checkpoint}{pace}{after}")


def _hours_left(log: Path) -> str | None:
    """The estimate of the log's last ``checkpoint:`` line (``training.checkpoint_line``), or None."""
    try:
        found = _HOURS_LEFT.findall(log.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return found[-1] if found else None


_HOURS_LEFT = re.compile(r"^checkpoint: .*, about ([0-9.]+) h of steps left$", re.MULTILINE)


def _last_entry(file: Path) -> dict[str, Any]:
    """The log's last epoch entry ({} when there is none, or the last line is cut off mid-write)."""
    try:
        lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        entry = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}
    return entry if isinstance(entry, dict) else {}


def study_status(study: Study) -> list[RunStatus]:
    """Every run of the study, in the study file's order."""
    found = []
    for run in study.runs:
        record = _json(study.results / f"{run.name}.json")
        folder = study.models / run.name if run.model is None else model_path(study, run)
        if record:
            found.append(_scored(study, run, record))
        elif (folder / "checkpoint" / "state.json").is_file():
            found.append(_in_progress(run.name, folder, run_log(study, run)))
        elif (folder / "training.json").is_file() or (run.model is not None and folder.is_dir()):
            found.append(RunStatus(run.name, "trained", f"not scored yet; model {folder}"))
        else:
            found.append(RunStatus(run.name, "not started"))
    return found
