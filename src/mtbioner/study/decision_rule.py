"""A study's decision rule, written before its runs finish, applied to the stored scores.

A study that asks "does this remedy replace the recipe we ship?" should state its answer's rule before any
run ends, and have it applied the same way every time. Applied by hand, such rules get misread (a gain shown
as +0.30 was once judged on its unrounded value, 0.2999...). So a study file may carry a ``rule`` section:

.. code-block:: yaml

    rule:
      written: 2026-12-06          # when it was written: shown with every verdict
      baseline: ten-t3             # the run a candidate must beat
      candidates: [ten-t2, ten-t3-w2]   # default: every other run
      lead: {corpora: [BC2GM, BC5CDR, NCBI-disease, JNLPBA], by: 0.3}
      guard: {corpora: [linnaeus, AnatEM], by: 0.5}

A candidate **passes** when its mean F1 over the ``lead`` corpora exceeds the baseline's by more than
``lead.by`` and it trails the baseline by no more than ``guard.by`` on each ``guard`` corpus. Of the
candidates that pass, the one with the highest mean over the lead and guard corpora together wins (on a tie,
the one listed first). Every figure is judged as the tables print it: F1 rounded to two decimals, means of
those, differences rounded to two decimals. ``mtbioner experiment decide`` prints the verdicts
(:func:`judge`, :func:`decision`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MtbionerError

_KEYS = ("written", "baseline", "candidates", "lead", "guard")


@dataclass(frozen=True)
class DecisionRule:
    """Which candidate run replaces the baseline run (see the module docstring)."""

    baseline: str
    candidates: tuple[str, ...]
    lead: tuple[str, ...]  # corpora whose mean F1 must lead the baseline's ...
    lead_by: float  # ... by more than this
    guard: tuple[str, ...]  # corpora on none of which a candidate may trail ...
    guard_by: float  # ... by more than this
    written: str = ""

    @property
    def corpora(self) -> tuple[str, ...]:
        """Every corpus the rule reads: the tie-break's mean is over these."""
        return self.lead + tuple(c for c in self.guard if c not in self.lead)

    def describe(self) -> str:
        """The rule in one sentence, as ``experiment decide`` prints it above the verdicts."""
        when = f" (written {self.written})" if self.written else ""
        guard = (
            f" and trails it by no more than {self.guard_by:.2f} on any of {', '.join(self.guard)}"
            if self.guard
            else ""
        )
        return (
            f"rule{when}: a run replaces {self.baseline} when its mean F1 over {', '.join(self.lead)} leads "
            f"{self.baseline}'s by more than {self.lead_by:.2f}{guard}; of those that pass, the highest mean "
            f"over all {len(self.corpora)} corpora wins"
        )


@dataclass(frozen=True)
class Verdict:
    """One candidate judged: ``passes``, ``fails`` or ``pending`` (no result yet), with the figures why."""

    run: str
    state: str
    lead: float | None = None  # candidate's lead-corpora mean minus the baseline's (two decimals)
    mean: float | None = None  # candidate's mean over all the rule's corpora (the tie-break)
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: the state, the lead, and every reason it fails."""
        if self.state == "pending":
            return f"{self.run}: pending ({'; '.join(self.reasons)})"
        figures = f"leads by {self.lead:+.2f}, mean over all {self.mean:.2f}"
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"{self.run}: {self.state} ({figures}){why}"


def parse_rule(file: Path, section: Any, runs: Mapping[str, Sequence[str]]) -> DecisionRule | None:
    """The ``rule`` section of a study file, checked against its runs (``runs``: name -> corpora).

    Raises:
        MtbionerError: Naming the file and the field: an unknown key, a run or corpus the study lacks,
            a threshold that is not a non-negative number.
    """
    if section is None:
        return None
    where = f"{file}: rule"
    if not isinstance(section, dict):
        raise MtbionerError(f"{where}: expected a mapping with baseline, lead and guard")
    unknown = sorted(set(map(str, section)) - set(_KEYS))
    if unknown:
        raise MtbionerError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_KEYS)}")
    baseline = str(section.get("baseline", ""))
    if baseline not in runs:
        raise MtbionerError(f"{where}: baseline {baseline!r} is not a run of the study; runs: {', '.join(runs)}")
    candidates = _names(where, "candidates", section.get("candidates", [r for r in runs if r != baseline]))
    strangers = [c for c in candidates if c not in runs or c == baseline]
    if strangers or not candidates:
        raise MtbionerError(
            f"{where}: candidates must be other runs of the study, got {', '.join(strangers) or 'none'}"
        )
    lead, lead_by = _corpora_and_margin(where, "lead", section.get("lead"), runs[baseline], required=True)
    guard, guard_by = _corpora_and_margin(where, "guard", section.get("guard"), runs[baseline], required=False)
    written = section.get("written")
    return DecisionRule(baseline, candidates, lead, lead_by, guard, guard_by, "" if written is None else str(written))


def _names(where: str, field: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MtbionerError(f"{where}: {field} must be a list of names, got {value!r}")
    return tuple(value)


def _corpora_and_margin(
    where: str, field: str, value: Any, known: Sequence[str], *, required: bool
) -> tuple[tuple[str, ...], float]:
    if value is None and not required:
        return (), 0.0
    if not isinstance(value, dict) or set(value) != {"corpora", "by"}:
        raise MtbionerError(f"{where}: {field} must be a mapping {{corpora: [...], by: NUMBER}}, got {value!r}")
    corpora = _names(where, f"{field}.corpora", value["corpora"])
    missing = [c for c in corpora if c not in known]
    if missing or not corpora:
        raise MtbionerError(
            f"{where}: {field}.corpora must be corpora the baseline scores ({', '.join(known)}), "
            f"got {', '.join(missing) or 'none'}"
        )
    margin = value["by"]
    if isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0:
        raise MtbionerError(f"{where}: {field}.by must be a non-negative number, got {margin!r}")
    return corpora, float(margin)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def judge(rule: DecisionRule, f1: Mapping[str, Mapping[str, float]]) -> list[Verdict]:
    """Every candidate's verdict from stored F1 (``f1``: run -> corpus -> F1 in percent; a missing run: pending)."""
    base = f1.get(rule.baseline)
    verdicts = []
    for run in rule.candidates:
        if base is None or run not in f1:
            waiting = [r for r in (rule.baseline, run) if r not in f1]
            verdicts.append(Verdict(run, "pending", reasons=(f"no result for {' and '.join(waiting)} yet",)))
            continue
        verdicts.append(_judge_one(rule, run, f1[run], base))
    return verdicts


def _judge_one(rule: DecisionRule, run: str, scores: Mapping[str, float], base: Mapping[str, float]) -> Verdict:
    shown = {c: round(scores[c], 2) for c in rule.corpora if c in scores}
    shown_base = {c: round(base[c], 2) for c in rule.corpora if c in base}
    missing = [c for c in rule.corpora if c not in shown or c not in shown_base]
    if missing:
        return Verdict(run, "fails", reasons=(f"no score on {', '.join(missing)}",))
    lead = round(_mean([shown[c] for c in rule.lead]) - _mean([shown_base[c] for c in rule.lead]), 2)
    mean = round(_mean([shown[c] for c in rule.corpora]), 2)
    reasons = []
    if lead <= rule.lead_by:
        reasons.append(f"lead {lead:+.2f} is not more than {rule.lead_by:.2f}")
    for corpus in rule.guard:
        change = round(shown[corpus] - shown_base[corpus], 2)
        if change < -rule.guard_by:
            reasons.append(f"{corpus} {change:+.2f}, down by more than {rule.guard_by:.2f}")
    return Verdict(run, "fails" if reasons else "passes", lead, mean, tuple(reasons))


def decision(rule: DecisionRule, verdicts: Sequence[Verdict]) -> str:
    """The study's answer: the winner, that none passed, or which runs it still waits for."""
    pending = [v.run for v in verdicts if v.state == "pending"]
    passing = sorted((v for v in verdicts if v.state == "passes"), key=lambda v: v.mean or 0.0, reverse=True)
    if pending:
        leader = f"; passing so far: {passing[0].run}" if passing else ""
        return f"decision: waiting for {', '.join(pending)}{leader}"
    if not passing:
        return f"decision: no candidate passes; {rule.baseline} stays"
    return f"decision: {passing[0].run} replaces {rule.baseline} (mean over all {passing[0].mean:.2f})"
