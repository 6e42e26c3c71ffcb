"""Run a study described in a YAML file: several training runs under one budget, each scored.

A study file names a shared ``budget`` (training options every run gets, so that systems
are compared on equal terms) and ``runs``, each a set of corpora plus its own options
(schedule, head, frozen encoder, train splits). Every run goes through the real CLI in a
child process (``python -m mtbioner train`` then ``evaluate``), so what is recorded is what
a user would get, and each child's peak memory is read from the OS when it exits.

Each finished run writes ``RESULTS/RUN.json``: the commands, the commit, timings, hardware,
peak memory, the per-epoch training log, the encoder updates (steps) and the test scores; and
``RESULTS/RUN.predictions/CORPUS.json.gz``, the gold and predicted tags of every scored sentence
(:func:`mtbioner.study.bootstrap.write_predictions`), from which reports draw bootstrap intervals
without the model folders. A rerun skips finished runs and resumes an interrupted training
(``--resume``), so a study can span several sessions.

Paths in a study file (``data_dir``, ``results``, ``models`` and a relative ``encoder``) are
relative to the file's folder. A run may set ``evaluate_split`` (default: the study's
``split``). An optional ``report`` section chooses and configures the report
(``mtbioner.study.report`` by default, ``kind: full`` for :mod:`mtbioner.study.report_full`); an optional
``encoders`` section says how to pre-train the encoder folders runs name
(:mod:`mtbioner.study.experiment_encoders`), which the runner then makes before the first run that needs one.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import MtbionerError
from ..fileio import write_json
from ..host import cpuinfo, instruction_set
from .experiment_encoders import EncoderRecipe, pretrain_command, recipe_mismatch, resolve, settings
from .experiment_existing import existing_model_record, settings_mismatch
from .study_file import FLAGS, TRAIN_OPTIONS, Run, Study, load_study

__all__ = ["FLAGS", "TRAIN_OPTIONS", "Run", "Study", "load_study", "pretrain_command", "run_study", "train_command"]

logger = logging.getLogger(__name__)


def train_command(study: Study, run: Run) -> list[str]:
    """The ``mtbioner train`` arguments of a run (budget first, the run's options override it)."""
    options = {**study.budget, **run.options}
    if options.get("encoder"):
        options["encoder"] = str(encoder_path(study, options["encoder"]))
    args = ["train", *run.corpora, "--data-dir", str(study.data_dir), "--output", str(study.models / run.name)]
    for key, value in options.items():
        if key in FLAGS:
            args += [FLAGS[key]] if value else []
        elif isinstance(value, dict):
            args += [word for name, kind in value.items() for word in (TRAIN_OPTIONS[key], f"{name}={kind}")]
        elif isinstance(value, list):
            args += [TRAIN_OPTIONS[key], ",".join(map(str, value))]
        else:
            args += [TRAIN_OPTIONS[key], str(value)]
    return [*args, "--no-progress"]


def encoder_path(study: Study, encoder: str | Path) -> Path:
    """A run's encoder folder; a relative one is relative to the study file's folder."""
    return resolve(study.path.parent, encoder)


def run_log(study: Study, run: Run) -> Path:
    """Where ``experiment run`` appends a run's training and scoring output (beside its model folder)."""
    return study.models / f"{run.name}.log"


def model_path(study: Study, run: Run) -> Path:
    """A run's model: its folder under ``models``, or the existing model its ``model`` names (a folder,
    relative to the study file's folder, or a shipped model's name)."""
    if run.model is None:
        return study.models / run.name
    from ..runtime.shipped import resolve_model

    path = encoder_path(study, run.model)
    return path if path.is_dir() else resolve_model(run.model)


def evaluate_command(study: Study, run: Run, json_file: Path, predictions: Path | None = None) -> list[str]:
    """The ``mtbioner evaluate`` arguments of a run; ``predictions``: folder for ``CORPUS.txt`` files."""
    model = model_path(study, run)
    args = [
        "evaluate",
        str(model),
        *run.corpora,
        "--data-dir",
        str(study.data_dir),
        "--split",
        study.split_of(run),
        "--json",
        str(json_file),
    ]
    if predictions is not None:
        args += ["--predictions", str(predictions)]
    return [*args, "--no-progress"]


def predictions_file(results: Path, run: str, corpus: str) -> Path:
    """Where the stored predictions of a run on a corpus are (``RESULTS/RUN.predictions/CORPUS.json.gz``)."""
    return results / f"{run}.predictions" / f"{corpus}.json.gz"


def _child(args: list[str], log: Path) -> tuple[float, float]:
    """Run ``python -m mtbioner ARGS``; its wall time and peak RSS in MB (from ``wait4``)."""
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ mtbioner {' '.join(args)}\n")
        out.flush()
        child = subprocess.Popen([sys.executable, "-m", "mtbioner", *args], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise MtbionerError(f"command failed (exit {child.returncode}): mtbioner {' '.join(args)}; see {log}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(status, capture_output=True, text=True)
        return head + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hardware() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    facts = cpuinfo()
    return {
        "cpu": facts.get("model name") or platform.processor(),
        "isa": instruction_set(facts),  # the same model name can hide hosts twice as fast as each other
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _model_facts(folder: Path) -> dict[str, Any]:
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "checkpoint" not in p.parts)
    training = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return {"size_mb": round(size / 1e6, 1), "training": training, "log": log}


def _record_training(record: dict[str, Any], model: Path) -> None:
    """The model's size, training log, speed and encoder updates, from the folder ``train`` wrote."""
    facts = _model_facts(model)
    record["model"] = {"size_mb": facts["size_mb"], "training_sentences": facts["training"]["training_sentences"]}
    record["log"] = facts["log"]
    windows = sum(e["train_windows"] for e in facts["log"])
    train_time = sum(e["train_seconds"] for e in facts["log"])
    record["train"]["windows_per_s"] = round(windows / train_time, 2) if train_time else None
    record["train"]["epoch_seconds"] = [e["train_seconds"] for e in facts["log"]]
    # encoder updates: one optimizer step per batch (what the equal-updates controls match)
    record["train"]["steps_per_epoch"] = facts["training"].get("steps_per_epoch")
    record["train"]["total_steps"] = facts["training"].get("total_steps")
    # what the trainer ran in: "no" where the study asked for bf16 on a CPU without bfloat16 (cli._common)
    record["train"]["mixed_precision"] = facts["training"].get("config", {}).get("mixed_precision")


def _recipe(study: Study, options: dict[str, Any]) -> EncoderRecipe | None:
    """The ``encoders`` recipe of a run's encoder, if the study declares one."""
    return study.encoders.get(encoder_path(study, options["encoder"])) if options.get("encoder") else None


def _prepare_encoder(study: Study, recipe: EncoderRecipe, log: Path) -> None:
    """Pre-train (or resume, or just check) a declared encoder folder before a run trains on it."""
    folder, info_file = recipe.path, recipe.path / "pretraining.json"
    if folder.exists():
        if not info_file.is_file():
            raise MtbionerError(
                f"{folder} holds no pretraining.json, so it was not made by the study's recipe for it "
                f"({study.path}, encoders); move it away or drop the recipe"
            )
        wrong = recipe_mismatch(recipe, json.loads(info_file.read_text(encoding="utf-8")))
        if wrong:
            raise MtbionerError(f"{folder} was pre-trained with other settings than its recipe: " + "; ".join(wrong))
        if not (folder / "checkpoint").exists():
            return
        args = ["pretrain", "--output", str(folder), "--resume", "--no-progress"]
    else:
        args = pretrain_command(recipe, study.data_dir)
    logger.info(f"[encoder {folder.name}] pre-training: mtbioner {' '.join(args)}")
    _child(args, log)


def _check_encoder(study: Study, options: dict[str, Any]) -> None:
    """Refuse an encoder folder that is missing or whose pre-training has not finished yet."""
    if not options.get("encoder"):
        return
    folder = encoder_path(study, options["encoder"])
    if not (folder / "config.json").is_file():
        raise MtbionerError(f"encoder {folder} not found (no config.json); train it first or skip the run (--only)")
    if (folder / "checkpoint").exists():
        raise MtbionerError(
            f"encoder {folder} is still being pre-trained (it holds checkpoint/); wait for `mtbioner pretrain` "
            "to finish, or run the other runs with --only"
        )


def _check_trained_as(model: Path, study: Study, run: Run) -> None:
    """Refuse a finished model folder whose recorded corpora or settings are not the run's.

    A model trained elsewhere with the run's exact command (say, the shipped model's build) may be
    placed or linked at the run's model path and is then scored instead of trained again; a folder
    from other settings would silently stand for the wrong run.
    """
    training = json.loads((model / "training.json").read_text(encoding="utf-8"))
    config, options = training.get("config", {}), {**study.budget, **run.options}
    if options.get("encoder"):
        options["encoder"] = str(encoder_path(study, options["encoder"]))
    wrong = settings_mismatch(config, options, [*TRAIN_OPTIONS, *FLAGS])
    if set(training.get("corpora", {})) != set(run.corpora):
        wrong.append(f"corpora: {sorted(training.get('corpora', {}))} (the run wants {sorted(run.corpora)})")
    if wrong:
        raise MtbionerError(f"{model} was trained with other settings than run {run.name!r}: " + "; ".join(wrong))


def _finished(folder: Path) -> bool:
    info = folder / "training.json"
    return info.is_file() and not (folder / "checkpoint").exists()


def run_study(study: Study, only: list[str] | None = None) -> list[Path]:
    """Run every unfinished run of a study (or the named ones); returns the result files written."""
    names = [run.name for run in study.runs]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise MtbionerError(f"no run named {', '.join(unknown)} in {study.path}; runs: {', '.join(names)}")
    for recipe in study.encoders.values():  # a value `mtbioner pretrain` would refuse stops the study before any run
        try:
            settings(recipe.options)
        except (MtbionerError, TypeError) as error:
            raise MtbionerError(f"{study.path}: encoder {recipe.path}: {error}") from None
    study.results.mkdir(parents=True, exist_ok=True)
    study.models.mkdir(parents=True, exist_ok=True)
    written = []
    for run in study.runs:
        if only and run.name not in only:
            continue
        result = study.results / f"{run.name}.json"
        if result.is_file():
            logger.info(f"[{run.name}] done already: {result}")
            continue
        written.append(_run_one(study, run, result))
    return written


def _run_one(study: Study, run: Run, result: Path) -> Path:
    model = study.models / run.name
    log = run_log(study, run)
    train_args = train_command(study, run)
    record: dict[str, Any] = {
        "run": run.name,
        "description": run.description,
        "corpora": run.corpora,
        "options": {**study.budget, **run.options},
        "commands": {"train": "mtbioner " + " ".join(train_args)},
        "commit": _commit(),
        "hardware": hardware(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # other work on the machine slows every timing: a load far above the core count says so (see the report)
        "load_average": {"start": [round(x, 2) for x in os.getloadavg()]},
    }
    recipe = _recipe(study, record["options"])
    if recipe is not None:  # the encoder's own command comes first
        pretrain = "mtbioner " + " ".join(pretrain_command(recipe, study.data_dir))
        record["commands"] = {"pretrain": pretrain, **record["commands"]}
    if run.model is not None:
        existing = existing_model_record(study, run, model_path(study, run), TRAIN_OPTIONS, FLAGS)
        record["commands"]["train"] = existing.pop("command")
        record.update(existing)
    elif not _finished(model):
        if recipe is not None:
            _prepare_encoder(study, recipe, study.models / f"{recipe.path.name}.pretrain.log")
        _check_encoder(study, record["options"])
        resume = model.is_dir() and (model / "checkpoint").exists()
        logger.info(f"[{run.name}] {'resuming' if resume else 'training'}: mtbioner {' '.join(train_args)}")
        seconds, peak = _child(train_args + (["--resume"] if resume else []), log)
        record["train"] = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak), "resumed": resume}
    else:
        _check_trained_as(model, study, run)
        record["train"] = {"seconds": None, "peak_rss_mb": None, "resumed": "trained before this invocation"}
    if run.model is None:
        _record_training(record, model)
    if run.evaluate:
        from .bootstrap import read_conlleval, write_predictions  # numpy only when scoring

        split = study.split_of(run)
        scores_file = study.models / f"{run.name}.scores.json"
        conll = study.models / f"{run.name}.predictions"
        eval_args = evaluate_command(study, run, scores_file, conll)
        record["commands"]["evaluate"] = "mtbioner " + " ".join(eval_args)
        logger.info(f"[{run.name}] scoring: mtbioner {' '.join(eval_args)}")
        seconds, peak = _child(eval_args, log)
        record["evaluate"] = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak), "split": split}
        record["scores"] = json.loads(scores_file.read_text(encoding="utf-8"))["corpora"]
        record["predictions"] = {}
        for corpus in record["scores"]:
            gold, predicted = read_conlleval(conll / f"{corpus}.txt")
            target = predictions_file(study.results, run.name, corpus)
            write_predictions(target, gold, predicted, run=run.name, corpus=corpus, split=split)
            record["predictions"][corpus] = str(target.relative_to(study.results))
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(result, record)
    logger.info(f"[{run.name}] wrote {result}")
    return result
