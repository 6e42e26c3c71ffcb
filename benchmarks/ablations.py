"""The ablation table of issue 14: which settings train the most accurate model here, chosen on devel.

Reads the study ``experiments/ablations.yaml``: finished runs from its results folder (written by
``mtbioner experiment run``), partial ones (running or stopped) from their model folder's ``log.jsonl`` (devel F1 after
each epoch), so a screen that is still running already shows its curve, marked as such. Test is
never read here.

    python benchmarks/ablations.py            # writes benchmarks/results/ablations.json and .md
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from _machine import publish

from mtbioner.study.bootstrap import compare_counts, read_predictions, sentence_counts
from mtbioner.study.experiment import load_study, train_command

REPO = Path(__file__).resolve().parent.parent


def run_rows(study_file: Path) -> list[dict]:
    study = load_study(study_file)
    rows = []
    for run in study.runs:
        row = {"run": run.name, "description": run.description, "corpora": run.corpora}
        row["command"] = "mtbioner " + shlex.join(train_command(study, run))
        finished = study.results / f"{run.name}.json"
        log_file = study.models / run.name / "log.jsonl"
        if finished.is_file():
            data = json.loads(finished.read_text(encoding="utf-8"))
            log, row["status"] = data["log"], "finished"
            row["command"] = data["commands"]["train"]
            row["windows_per_s"] = data["train"]["windows_per_s"]
            row["devel_f1"] = {c: round(s["f1"], 2) for c, s in data["scores"].items()}
            row["devel"] = data["scores"]
            predictions = study.results / f"{run.name}.predictions"
            inside = predictions.is_relative_to(REPO)
            row["predictions"] = str(predictions.relative_to(REPO) if inside else predictions)
        elif log_file.is_file():
            log = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()]
            epochs = {**study.budget, **run.options}.get("epochs", "?")
            row["status"] = f"partial: {len(log)} of {epochs} epochs (running or stopped)"
        else:
            rows.append({**row, "status": "not run", "curve": []})
            continue
        row["curve"] = [round(entry["mean_devel_f1"], 2) for entry in log if "mean_devel_f1" in entry]
        row["corpus_curves"] = {
            corpus: [round(entry["devel"][corpus]["f1"], 2) for entry in log if corpus in entry.get("devel", {})]
            for corpus in run.corpora
        }
        if row["curve"]:
            best = max(range(len(row["curve"])), key=row["curve"].__getitem__)
            row["best_epoch"], row["best_devel_f1"] = best + 1, row["curve"][best]
        rows.append(row)
    return rows


FEATURES = {
    "-dict": "dictionary features",
    "-case": "letter-case features",
    "-crf": "CRF head (vs linear)",
    "-tapt": "domain-adapted encoder",
    "-t2": "sampling temperature 2 (vs 1)",
    "-ctx": "document context (64 sub-tokens each side)",
    "-ema": "moving average of the weights (decay 0.999)",
}


def feature_pairs(rows: list[dict]) -> list[tuple[str, dict, dict]]:
    """(feature, run without, run with) for every finished ``X-<feature>`` run whose ``X`` finished too."""
    finished = {row["run"]: row for row in rows if "devel" in row}
    return [
        (feature, finished[name.removesuffix(suffix)], row)
        for name, row in finished.items()
        for suffix, feature in FEATURES.items()
        if name.endswith(suffix) and name.removesuffix(suffix) in finished
    ]


def prf(scores: dict) -> str:
    """``P | R | F1`` cells of a scores dict."""
    return f"{scores['precision']:.2f} | {scores['recall']:.2f} | {scores['f1']:.2f}"


def feature_interval(base: dict, run: dict, corpus: str) -> dict | None:
    """Paired bootstrap (1,000 resamples of devel sentences) of F1 with - without, from stored predictions.

    One seed per run, so the interval covers sentence sampling only, not training noise: a ``tie`` says the
    difference is within what the devel sentences alone could produce.
    """
    files = [REPO / row["predictions"] / f"{corpus}.json.gz" for row in (run, base)]
    if not all(file.is_file() for file in files):
        return None
    counts = [sentence_counts(*read_predictions(file)) for file in files]
    return compare_counts(*counts).to_dict()


def interval_cell(interval: dict | None) -> str:
    if interval is None:
        return "–"
    return f"[{interval['low']:+.2f}, {interval['high']:+.2f}] {interval['verdict']}"


def pair_table(pairs: list[tuple[str, dict, dict]]) -> list[str]:
    """With/without P/R/F1 on devel, per corpus and entity type, with the F1 difference and its interval."""
    if not pairs:
        return ["With/without tables appear here when a feature run and its base run have both finished."]
    lines = [
        "| feature | corpus / type | without: P | R | F1 | with: P | R | F1 | F1 with - without | 95% interval |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for feature, base, run in pairs:
        run.setdefault("intervals", {})
        for corpus, scores in run["devel"].items():
            interval = run["intervals"][corpus] = feature_interval(base, run, corpus)
            without = base["devel"][corpus]
            parts = [(f"**{corpus}**", without, scores, interval_cell(interval))]
            parts += [(f"{corpus} / {t}", without["types"][t], s, "") for t, s in scores["types"].items()]
            for name, a, b, cell in parts:
                lines.append(
                    f"| {feature} (`{run['run']}` vs `{base['run']}`) | {name} | {prf(a)} | {prf(b)} | "
                    f"{b['f1'] - a['f1']:+.2f} | {cell} |"
                )
    return lines


# train-only ablation run -> the full-scale study's run with the same settings trained on train+devel (issue 17)
TRAIN_DEVEL = {"bc5-lr1e-4": "single-BC5CDR", "ncbi-lr1e-4": "single-NCBI-disease"}


def train_devel_rows(results: Path) -> list[dict]:
    """Test F1 of a train-only run (scored once by ``dictionary_test.py``) beside its train+devel twin.

    Devel cannot choose here (one side trains on it), so this is reported, not used to choose: the paper trains
    its final models on train+devel, and so does the shipped model.
    """
    stored = results / "dictionary_test.json"
    if not stored.is_file():
        return []
    train_only = {
        side["run"]: side
        for pair in json.loads(stored.read_text(encoding="utf-8"))
        for side in pair.values()
        if isinstance(side, dict)
    }
    rows = []
    for run, twin in TRAIN_DEVEL.items():
        twin_file = REPO / "experiments" / "results" / "full" / f"{twin}.json"
        if run not in train_only or not twin_file.is_file():
            continue
        full = json.loads(twin_file.read_text(encoding="utf-8"))
        for corpus, scores in full["scores"].items():
            rows.append(
                {
                    "corpus": corpus,
                    "train": run,
                    "train_devel": twin,
                    "train_test": train_only[run]["test"][corpus],
                    "train_devel_test": scores,
                    "command": full["commands"]["train"],
                }
            )
    return rows


def train_devel_table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["Appears when `experiments/results/full/single-BC5CDR.json` (or NCBI-disease) exists."]
    lines = [
        "| corpus | train only (run, its best devel epoch): P | R | F1 | train+devel (study run, epoch 8): P | R | F1 "
        "| F1 change |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        a, b = row["train_test"], row["train_devel_test"]
        lines.append(
            f"| {row['corpus']} (`{row['train']}` / `{row['train_devel']}`) | {prf(a)} | {prf(b)} | "
            f"{b['f1'] - a['f1']:+.2f} |"
        )
    return lines


def corpus_curve_table(rows: list[dict]) -> list[str]:
    """Each corpus' devel curve in the runs that train several: the mean hides a small corpus rising while a
    large one falls, which is what a sampling temperature trades."""
    multi = [row for row in rows if len(row.get("corpus_curves", {})) > 1]
    if not multi:
        return ["Appears when a multi-corpus run has logged an epoch."]
    lines = ["| run | corpus | devel F1 per epoch | best (epoch) |", "|---|---|---|---:|"]
    for row in multi:
        for corpus, curve in row["corpus_curves"].items():
            best = max(range(len(curve)), key=curve.__getitem__) if curve else None
            cell = f"{curve[best]:.2f} ({best + 1})" if best is not None else "–"
            lines.append(f"| `{row['run']}` | {corpus} | {' / '.join(f'{f:.1f}' for f in curve) or '–'} | {cell} |")
    return lines


def markdown(rows: list[dict], study_file: Path, train_devel: list[dict]) -> str:
    lines = [
        "Ablations for the shipped model (issue 14): single-corpus runs trained on train, scored on **devel** "
        "(choices are made on devel; test is scored once, for the shipped model). Encoder all-MiniLM-L6-v2, "
        "batch 32, 128 sub-tokens, weight decay 0.01, seed 42, linear heads unless a row says otherwise.",
        "",
        "| run | what | status | devel F1 per epoch (mean over the run's corpora) | best devel F1 (epoch) |",
        "|---|---|---|---|---:|",
    ]
    for row in rows:
        curve = " / ".join(f"{f:.1f}" for f in row["curve"]) or "–"
        best = f"**{row['best_devel_f1']:.2f}** ({row['best_epoch']})" if "best_epoch" in row else "–"
        lines.append(f"| `{row['run']}` | {row['description']} | {row['status']} | {curve} | {best} |")
    heading = "### With and without the optional features "
    heading += "(devel P/R/F1 of each run's kept model, its best devel epoch)"
    lines += ["", heading, ""]
    lines += [
        "The interval is a paired bootstrap of the F1 difference over devel sentences (1,000 resamples, seed 42, "
        "`mtbioner.study.bootstrap`): `win`/`loss` when it excludes 0, `tie` when it holds 0. Each run has one "
        "training seed, so the interval leaves training noise out.",
        "",
    ]
    lines += pair_table(feature_pairs(rows))
    lines += ["", "### Multi-corpus runs: devel F1 per epoch of each corpus", ""]
    lines += corpus_curve_table(rows)
    lines += ["", "### Train vs train+devel (test F1, reported once, not used to choose)", ""]
    lines += train_devel_table(train_devel)
    lines += ["", "Training commands (a finished run's from its results file, the others' as the study runs them):"]
    lines += ["", "```", *(f"{row['run']}: {row['command']}" for row in rows), "```"]
    lines += [
        "",
        f"Regenerate: `python benchmarks/ablations.py --study {study_file.relative_to(REPO)}`; continue the "
        f"screen: `mtbioner experiment run {study_file.relative_to(REPO)}`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", type=Path, default=REPO / "experiments" / "ablations.yaml")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    study = args.study.resolve()
    rows = run_rows(study)
    train_devel = train_devel_rows(args.out)
    text = markdown(rows, study, train_devel)
    print(text)
    publish(args.out, "ablations", {"runs": rows, "train_vs_train_devel": train_devel}, text)


if __name__ == "__main__":
    main()
