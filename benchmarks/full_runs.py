"""Full-length default runs (issue 3's "done when"): 3 and 4 corpora, the paper's 8 epochs, scored on test.

For each model the real CLI is run, exactly as a user would:

    mtbioner train CORPUS... --output WORK/NAME [--encoder PATH]
    mtbioner evaluate WORK/NAME --json WORK/NAME-test.json --predictions WORK/NAME-pred

then the per-epoch log, the training settings and the test scores are collected into
``benchmarks/results/full_runs.json`` and ``full_runs.md``, next to the paper's figures.

On this project's 2-core machines the 3-corpus run takes about 2-3 hours and the 4-corpus one 4-6;
on one GPU a few minutes each. Run both:

    python benchmarks/full_runs.py --data-dir ../shared/data --work runs/full

The published table came from the same CLI commands run by ``benchmarks/device_full_runs.sh`` on
a lent H100, collected here with
``python benchmarks/full_runs.py --collect --work DIR --device-name "1x NVIDIA H100 80GB"``.

``--collect`` only reads an existing WORK folder (e.g. one copied back from a GPU machine: the
model folders are not needed, only ``NAME/log.jsonl``, ``NAME/training.json`` and ``NAME-test.json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mtbioner.fileio import atomic_write
from mtbioner.learn.training import CHECKPOINT_DIR, LOG_FILE, read_training_info

MODELS = {
    "mt3": ["BC2GM", "BC5CDR", "NCBI-disease"],
    "mt4": ["BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA"],
}
# Test F1 in the paper (Khan et al. 2020, MT-BioNER): BioBERT / BERT-base encoders.
PAPER = {
    "mt3": {"BioBERT": {"BC2GM": 83.01, "BC5CDR": 89.5, "NCBI-disease": 88.1}},
    "mt4": {
        "BioBERT": {"BC2GM": 81.55, "BC5CDR": 89.06, "NCBI-disease": 86.68, "JNLPBA": 72.89},
        "BERT-base": {"BC2GM": 79.19, "BC5CDR": 86.85, "NCBI-disease": 85.83, "JNLPBA": 70.12},
    },
}


def run_model(name: str, corpora: list[str], args: argparse.Namespace) -> None:
    """Train (or resume, or skip when finished) then evaluate one model with the CLI."""
    out = args.work / name
    train = ["mtbioner", "train", *corpora, "--data-dir", str(args.data_dir), "--output", str(out), *args.train_args]
    if args.encoder:
        train += ["--encoder", str(args.encoder)]
    interrupted = (out / CHECKPOINT_DIR).is_dir()
    if interrupted:
        train.append("--resume")  # go on from its last epoch
    if interrupted or not read_training_info(out):  # a finished run is not trained again
        subprocess.run(train, check=True)
    evaluate = ["mtbioner", "evaluate", str(out), "--data-dir", str(args.data_dir)]
    evaluate += ["--json", str(args.work / f"{name}-test.json"), "--predictions", str(args.work / f"{name}-pred")]
    subprocess.run(evaluate, check=True)


def collect(work: Path, name: str) -> dict | None:
    folder = work / name
    training = read_training_info(folder)
    if not training or not (work / f"{name}-test.json").exists():
        return None
    log = [json.loads(line) for line in (folder / LOG_FILE).read_text().splitlines() if line.strip()]
    test = json.loads((work / f"{name}-test.json").read_text())["corpora"]
    return {
        "corpora": MODELS[name],
        "device": training.get("device"),
        "torch": training.get("torch"),
        "settings": {k: training["config"][k] for k in ("schedule", "lr", "warmup", "batch_size", "epochs")},
        "train_splits": training["config"]["train_splits"],
        "epochs_done": training.get("epochs_done"),
        "best_epoch": training.get("best_epoch"),
        "train_seconds": round(sum(row["train_seconds"] for row in log), 1),
        "train_windows_per_epoch": log[0]["train_windows"],
        "devel_f1_per_epoch": [row["mean_devel_f1"] for row in log],
        "test": {corpus: {k: round(v[k], 2) for k in ("precision", "recall", "f1")} for corpus, v in test.items()},
        "paper": PAPER[name],
    }


def to_markdown(results: dict) -> str:
    corpora = MODELS["mt4"]
    lines = [
        "# Full-length default runs (8 epochs, test F1)",
        "",
        "| model | encoder | " + " | ".join(corpora) + " |",
        "|---|---|" + "---|" * len(corpora),
    ]
    for name, result in results.items():
        f1 = [f"{result['test'][c]['f1']:.2f}" if c in result["test"] else "-" for c in corpora]
        lines.append(f"| {name} (mtbioner) | {result['encoder']} | " + " | ".join(f1) + " |")
        for encoder, scores in result["paper"].items():
            paper = [f"{scores[c]:.2f}" if c in scores else "-" for c in corpora]
            lines.append(f"| {name} (paper) | {encoder} | " + " | ".join(paper) + " |")
    lines += [
        "",
        "mtbioner: default settings (train split only, best epoch by devel F1); the paper's final models trained on"
        " train+devel.",
        "",
        "| model | device | training windows/epoch | time in training steps, 8 epochs | best epoch |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        lines.append(
            f"| {name} | {result['device']} (torch {result['torch']}) | {result['train_windows_per_epoch']:,} "
            f"| {result['train_seconds']:.0f} s | {result['best_epoch']} of {result['epochs_done']} |"
        )
    lines += ["", "Reproduce: `python benchmarks/full_runs.py --data-dir ../shared/data --work runs/full`", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work", type=Path, default=Path("runs/full"))
    parser.add_argument("--encoder", type=Path, help="a local checkpoint; the packaged MiniLM by default")
    parser.add_argument("--encoder-name", default="all-MiniLM-L6-v2", help="how the table names the encoder")
    parser.add_argument("--device-name", help="how the table names the device (default: torch's, e.g. cuda)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--collect", action="store_true", help="only read an existing --work folder")
    parser.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="more `mtbioner train` options")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    results = {}
    for name in args.models:
        if not args.collect:
            run_model(name, MODELS[name], args)
        result = collect(args.work, name)
        if result is None:
            print(f"error: {args.work}/{name}: no training.json or {name}-test.json to read", file=sys.stderr)
            return 2
        results[name] = {"encoder": args.encoder_name, **result}
        if args.device_name:
            results[name]["device"] = args.device_name
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "full_runs.json") as handle:
        handle.write(json.dumps(results, indent=2) + "\n")
    with atomic_write(args.out / "full_runs.md") as handle:
        handle.write(to_markdown(results))
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
