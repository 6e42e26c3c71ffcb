"""A study run that scores an existing model instead of training one (``model:`` in a study file).

Why: the shipped ``default`` model was trained with the full-scale study's exact MT-4 command
(``benchmarks/ship_model.py``), and only its int8 export is kept (the torch folder is not in the
repository). Training it again would cost 4-8 CPU hours for the same model. A run may therefore
name it (or any model folder); the runner then checks that the model was trained as the run
would train it, and scores it like any other run.

What stands in for the training record, which an export does not carry:

* the train command: the one the model's ``model_report.json`` records (``benchmarks/ship_model.py``
  writes it); every option of the run must be what that command used (given there, or
  ``mtbioner train``'s default). A torch folder ``train`` wrote is placed at the run's model path
  instead (its ``training.json`` is checked, :func:`mtbioner.study.experiment.run_study`);
* the encoder updates: counted exactly as ``mtbioner train`` counts them, from the same windows
  (the model's own tokenizer and window length) and the same batch schedule.

A shipped model is scored as it ships (int8), which costs it up to a few tenths of F1 against
its fp32 weights (the export's check); the record says so.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MtbionerError

if TYPE_CHECKING:
    from .study_file import Run, Study


def existing_model_record(
    study: Study, run: Run, folder: Path, options_flags: dict[str, str], switches: dict[str, str]
) -> dict[str, Any]:
    """``command``, ``train`` and ``model`` entries of the run's record, after checking the model.

    ``options_flags`` and ``switches`` map study options to ``mtbioner train`` flags (with and without a value).

    Raises:
        MtbionerError: The model is missing or was trained otherwise than the run says.
    """
    if not (folder / "config.json").is_file():
        raise MtbionerError(f"run {run.name!r}: model {run.model} not found (no {folder}/config.json)")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if set(config.get("corpora", {})) != set(run.corpora):
        raise MtbionerError(
            f"run {run.name!r}: model {folder} has heads {sorted(config.get('corpora', {}))}, "
            f"the run wants {sorted(run.corpora)}"
        )
    command = recorded_train_command(folder)
    options = {**study.budget, **run.options}
    used = command_options(command, options_flags, switches)
    wrong = settings_mismatch(used, options, [*options_flags, *switches])
    if wrong:
        raise MtbionerError(f"{folder} was trained with other settings than run {run.name!r}: " + "; ".join(wrong))
    windows, steps = count_updates(study, run, folder, options)
    exported = (folder / "model.onnx").is_file()
    quantized = config.get("onnx", {}).get("quantize")
    return {
        "command": command,
        "train": {
            "seconds": None,
            "peak_rss_mb": None,
            "resumed": f"not trained by this runner: the existing model {run.model} ({folder.name})",
            "steps_per_epoch": steps,
            "total_steps": steps * int(options.get("epochs", _defaults()["epochs"])),
        },
        "model": {
            "size_mb": round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6, 1),
            "training_sentences": windows,
            "existing": str(run.model),
            "scored_as": f"ONNX {quantized or 'fp32'}" if exported else "torch",
        },
        "log": [],
    }


def recorded_train_command(folder: Path) -> str:
    """The ``mtbioner train`` command a model's ``model_report.json`` records (``benchmarks/ship_model.py``
    writes it beside every shipped model)."""
    report = folder / "model_report.json"
    commands = json.loads(report.read_text(encoding="utf-8")).get("commands", []) if report.is_file() else []
    found = [c for c in commands if isinstance(c, str) and c.startswith("mtbioner train ")]
    if not found:
        raise MtbionerError(f"{folder}: records no `mtbioner train` command (model_report.json 'commands')")
    return found[0]


def command_options(command: str, options_flags: dict[str, str], switches: dict[str, str]) -> dict[str, Any]:
    """The study options a train command used: given on it, else ``mtbioner train``'s defaults."""
    words = shlex.split(command)
    defaults = _defaults()
    # A dict-valued option (``heads``) is given as repeated ``FLAG NAME=VALUE``, possibly sharing its flag
    # with a plain one (``--head crf``): the value's ``=`` tells them apart.
    per_name = {flag: key for key, flag in options_flags.items() if isinstance(defaults.get(key), dict)}
    flags = {flag: key for key, flag in options_flags.items() if key not in per_name.values()}
    switched = {flag: key for key, flag in switches.items()}
    used = {key: value for key, value in defaults.items() if key in options_flags or key in switches}
    for index, word in enumerate(words):
        value = words[index + 1] if index + 1 < len(words) else None
        if word in per_name and value is not None and "=" in value:
            name, _, item = value.rpartition("=")
            used[per_name[word]] = {**used[per_name[word]], name: _value(item)}
        elif word in flags and value is not None:
            used[flags[word]] = _value(value)
        elif word in switched:
            used[switched[word]] = True
    if isinstance(used.get("train_splits"), str):
        used["train_splits"] = used["train_splits"].split(",")
    return used


def count_updates(study: Study, run: Run, folder: Path, options: dict[str, Any]) -> tuple[dict[str, int], int]:
    """Training windows per corpus and batches (encoder updates) per epoch, as ``mtbioner train`` counts them."""
    from transformers import AutoTokenizer

    from ..data.corpus import read_corpus
    from ..learn.training import schedule_batches, without_scored_text
    from ..model.encoding import encode

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    lengths: dict[str, list[int]] = {}
    max_length = int(options.get("max_length", config["max_length"]))
    defaults = _defaults()
    splits = list(options.get("train_splits", defaults["train_splits"]))
    corpora = [read_corpus(study.data_dir / name, splits=splits) for name in run.corpora]
    corpora, _ = without_scored_text(corpora, list(options.get("held_out", [])))  # as train removes them
    for name, corpus in zip(run.corpora, corpora, strict=True):
        sentences = [s.tokens for split in splits for s in corpus.sentences(split)]
        windows = encode(tokenizer, sentences, max_length, config.get("stride"))
        lengths[name] = [len(w) for w in windows]
    batches = schedule_batches(
        lengths,
        int(options.get("batch_size", defaults["batch_size"])),
        options.get("schedule", defaults["schedule"]),
        int(options.get("seed", defaults["seed"])),
        0,
        float(options.get("sampling_temperature", defaults["sampling_temperature"])),
    )
    return {name: len(lens) for name, lens in lengths.items()}, len(batches)


def settings_mismatch(recorded: dict[str, Any], options: dict[str, Any], keys: list[str]) -> list[str]:
    """Settings a model was trained with that are not the run's, one line each.

    The run wants its options (budget and run) and ``mtbioner train``'s defaults for every other key, so a
    model trained with, say, a CRF head cannot stand for a run that never named one. Keys the record
    lacks (older records) are not checked.
    """
    defaults = _defaults()
    wanted = {key: options[key] if key in options else defaults.get(key) for key in dict.fromkeys(keys)}
    return [
        f"{key}: {recorded[key]!r} (the run wants {value!r})"
        for key, value in wanted.items()
        if key in recorded and recorded[key] != value and not same_number(recorded[key], value)
    ]


def same_number(a: Any, b: Any) -> bool:
    """Two settings that are the same number (1e-4 written as 0.0001, 8 as 8.0)."""
    return isinstance(a, int | float) and isinstance(b, int | float) and float(a) == float(b)


def _defaults() -> dict[str, Any]:
    from ..learn.training import TrainingConfig

    return {f.name: getattr(TrainingConfig(), f.name) for f in fields(TrainingConfig)}


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
