"""Dictionary features with and without, on **test**, scored once (issue 18: "choose on devel, report test").

The choice is made on devel (``benchmarks/ablations.py``: every finished ``X-dict`` run beside its base ``X``).
This script then scores the kept model of both runs of each such pair on the test split with the CLI users have
(``mtbioner evaluate MODEL CORPUS --split test``), once: a pair already in the results file is not scored again
(``--force`` re-scores it, and the results say so). Writes ``benchmarks/results/dictionary_test.{json,md}``.

    python benchmarks/dictionary_test.py
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import publish
from ablations import feature_pairs, prf, run_rows

from mtbioner.study.experiment import load_study

REPO = Path(__file__).resolve().parent.parent
FEATURE = "dictionary features"


def _relative(path: Path) -> str:
    """A path as seen from the repository root, where the published commands are run."""
    return os.path.relpath(path, REPO)


def score_on_test(model: Path, corpora: list[str], data_dir: Path) -> tuple[str, dict]:
    """Run ``mtbioner evaluate`` on the test split; returns its command and its ``--json`` report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "scores.json"
        command = ["mtbioner", "evaluate", _relative(model), *corpora, "--data-dir", _relative(data_dir)]
        command += ["--split", "test", "--no-progress"]
        subprocess.run([*command, "--json", str(report)], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
        return shlex.join(command), json.loads(report.read_text(encoding="utf-8"))["corpora"]


def markdown(pairs: list[dict]) -> str:
    lines = [
        "Dictionary features on **test**, scored once after the choice was made on devel "
        "(`benchmarks/results/ablations.md`). Single-corpus models trained on train only, each run's kept model "
        "(its best devel epoch); encoder all-MiniLM-L6-v2, lr 1e-4, warm-up 0.1, 8 epochs, seed 42.",
        "",
        "| corpus / type | devel F1 without | with | test without: P | R | F1 | test with: P | R | F1 | "
        "test F1 with - without |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pair in pairs:
        for corpus, scores in pair["with"]["test"].items():
            without = pair["without"]["test"][corpus]
            devel = (pair["without"]["devel"][corpus], pair["with"]["devel"][corpus])
            parts = [(f"**{corpus}**", without, scores, devel)]
            parts += [
                (f"{corpus} / {t}", without["types"][t], s, (devel[0]["types"][t], devel[1]["types"][t]))
                for t, s in scores["types"].items()
            ]
            for name, a, b, (da, db) in parts:
                lines.append(
                    f"| {name} | {da['f1']:.2f} | {db['f1']:.2f} | {prf(a)} | {prf(b)} | {b['f1'] - a['f1']:+.2f} |"
                )
    lines += ["", "Commands (training: `benchmarks/results/ablations.md`):", "", "```"]
    for pair in pairs:
        lines += [pair["without"]["command"], pair["with"]["command"]]
    lines += ["```", "", "Regenerate: `python benchmarks/dictionary_test.py` (scores a pair only once).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", type=Path, default=REPO / "experiments" / "ablations.yaml")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--force", action="store_true", help="score pairs already scored again")
    args = parser.parse_args()
    study = load_study(args.study.resolve())
    stored = args.out / "dictionary_test.json"
    done = {p["with"]["run"]: p for p in json.loads(stored.read_text(encoding="utf-8"))} if stored.is_file() else {}
    pairs = []
    for feature, base, run in feature_pairs(run_rows(args.study.resolve())):
        if feature != FEATURE:
            continue
        if run["run"] in done and not args.force:
            pairs.append(done[run["run"]])
            continue
        pair = {"scored": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rescored": run["run"] in done}
        for side, row in (("without", base), ("with", run)):
            command, test = score_on_test(study.models / row["run"], row["corpora"], study.data_dir)
            pair[side] = {"run": row["run"], "command": command, "devel": row["devel"], "test": test}
            print(f"{row['run']}: " + ", ".join(f"{c} {s['f1']:.2f}" for c, s in test.items()), file=sys.stderr)
        pairs.append(pair)
    text = markdown(pairs)
    print(text)
    publish(args.out, "dictionary_test", pairs, text)


if __name__ == "__main__":
    main()
