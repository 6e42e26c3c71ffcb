"""A study file: its runs, their options over a shared budget, where results go (parsed and checked).

Kept apart from :mod:`mtbioner.study.experiment`, which runs a study, so that the modules that describe
what a run was (:mod:`mtbioner.study.experiment_existing`, the reports) can name ``Run`` and ``Study``
without importing the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MtbionerError
from .decision_rule import DecisionRule, parse_rule
from .experiment_encoders import EncoderRecipe, parse_encoders, resolve

# Options of ``mtbioner train`` a study may set, with the flag each becomes.
TRAIN_OPTIONS = {
    "schedule": "--schedule",
    "head": "--head",
    "heads": "--head",  # {corpus: kind}: one ``--head NAME=KIND`` each
    "lr": "--lr",
    "warmup": "--warmup",
    "weight_decay": "--weight-decay",
    "batch_size": "--batch-size",
    "epochs": "--epochs",
    "max_length": "--max-length",
    "seed": "--seed",
    "limit": "--limit",
    "encoder": "--encoder",
    "train_splits": "--train-splits",
    "sampling_temperature": "--sampling-temperature",
    "context": "--context",
    "ema": "--ema",
    "loss_weights": "--loss-weight",  # {corpus: lambda}: one ``--loss-weight NAME=FLOAT`` each
}
FLAGS = {
    "freeze_encoder": "--freeze-encoder",
    "case_features": "--case-features",
    "dictionary_features": "--dictionary-features",
    "bf16": "--bf16",  # recorded as mixed_precision "bf16": a speed setting, not checked against a model
}
# Keys of a run that are not training options.
RUN_KEYS = ("corpora", "evaluate", "description", "evaluate_split", "model")
# Reports a study file may ask for (``report:``): mtbioner.study.report and mtbioner.study.report_full.
REPORT_KINDS = ("default", "full")


@dataclass
class Run:
    """One system of a study: corpora, options over the budget, and whether to score on test."""

    name: str
    corpora: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    evaluate: bool = True
    description: str = ""
    split: str | None = None  # the split to score (``evaluate_split``); None: the study's
    model: str | None = None  # an existing model scored instead of trained: a folder or a shipped model's name


@dataclass
class Study:
    """A parsed study file; paths are resolved against the file's folder."""

    path: Path
    data_dir: Path
    results: Path
    models: Path
    budget: dict[str, Any]
    runs: list[Run]
    split: str = "test"
    report: dict[str, Any] = field(default_factory=dict)  # the ``report`` section; {} for the default report
    encoders: dict[Path, EncoderRecipe] = field(default_factory=dict)  # folders the runner pre-trains
    rule: DecisionRule | None = None  # the ``rule`` section: which run replaces which (experiment decide)

    def split_of(self, run: Run) -> str:
        """The split a run is scored on."""
        return run.split or self.split


def load_study(path: str | Path) -> Study:
    """Read and check a study file.

    Raises:
        MtbionerError: The file is missing, not YAML, or has an unknown run option.
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        raise MtbionerError(f"study file {file} not found")
    raw = file.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise MtbionerError(f"{file}:{line}: not UTF-8 (byte 0x{raw[error.start]:02x})") from None
    except yaml.YAMLError as error:
        raise MtbionerError(f"{file}{_yaml_place(error)}: not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), dict) or not data["runs"]:
        raise MtbionerError(f"{file}: expected a mapping with 'runs' (run name -> corpora and options)")

    def place(key: str, default: str) -> Path:
        return resolve(file.parent, data.get(key, default))

    budget = dict(data.get("budget") or {})
    _check_options(file, "budget", budget)
    runs = []
    for name, spec in data["runs"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("corpora"), list) or not spec["corpora"]:
            raise MtbionerError(f"{file}: run {name!r} needs a 'corpora' list, e.g. corpora: [BC5CDR, NCBI-disease]")
        options = {k: v for k, v in spec.items() if k not in RUN_KEYS}
        _check_options(file, f"run {name!r}", options)
        runs.append(
            Run(
                str(name),
                list(spec["corpora"]),
                options,
                bool(spec.get("evaluate", True)),
                spec.get("description", ""),
                spec.get("evaluate_split"),
                None if spec.get("model") is None else str(spec["model"]),
            )
        )
    report = data.get("report") or {}
    if isinstance(report, str):
        report = {"kind": report}
    if not isinstance(report, dict) or report.get("kind", "default") not in REPORT_KINDS:
        raise MtbionerError(
            f"{file}: 'report' must be one of {', '.join(REPORT_KINDS)} or a mapping with 'kind' (one of them)"
        )
    return Study(
        file,
        place("data_dir", "../shared/data"),
        place("results", "results"),
        place("models", "runs"),
        budget,
        runs,
        str(data.get("split", "test")),
        report,
        parse_encoders(file, data.get("encoders")),
        parse_rule(file, data.get("rule"), {run.name: run.corpora for run in runs}),
    )


def _check_options(file: Path, where: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(TRAIN_OPTIONS) - set(FLAGS))
    if unknown:
        known = ", ".join(sorted({*TRAIN_OPTIONS, *FLAGS}))
        raise MtbionerError(f"{file}: {where}: unknown option(s) {', '.join(unknown)}; known: {known}")


def _yaml_place(error: Exception) -> str:
    """``:LINE:COLUMN`` (1-based) of a YAML error, where PyYAML marks one."""
    mark = getattr(error, "problem_mark", None)
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def _yaml_problem(error: Exception) -> str:
    """PyYAML's own words for the problem, on one line (its ``str`` adds quoted source lines and carets)."""
    words = [getattr(error, "context", None), getattr(error, "problem", None)]
    return "; ".join(w for w in words if w) or " ".join(str(error).split())
