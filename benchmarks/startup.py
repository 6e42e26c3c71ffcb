"""Start-up of tagging with the shipped (ONNX int8) model: what a short CLI call or a small device pays first.

For this checkout and, with ``--baseline REV``, an earlier revision (a temporary git worktree), in one run:

- ``mtbioner tag "<demo sentence>"`` as a new process, wall time (median of ``--repeats``);
- in a fresh Python: ``Tagger.load()`` then one sentence tagged: time to the first entities, peak resident
  memory, and whether torch / transformers were imported.

    python benchmarks/startup.py --baseline 5b3f1e2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import baseline_and_checkout, describe, machine, publish

REPO = Path(__file__).resolve().parent.parent
DEMO = "Mutations in BRCA1 cause breast cancer after tamoxifen treatment."
CHILD = """
import json, resource, sys, time
started = time.perf_counter()
import mtbioner
from mtbioner import Tagger
entities = Tagger.load()(sys.argv[1])
seconds = time.perf_counter() - started
print(json.dumps({
    "mtbioner_file": mtbioner.__file__, "entities": len(entities), "seconds": seconds,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
}))
"""


def measure(src: Path, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cli, api = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mtbioner", "tag", DEMO], env=env, check=True, capture_output=True)
        cli.append(time.perf_counter() - started)
        done = subprocess.run([sys.executable, "-c", CHILD, DEMO], env=env, check=True, capture_output=True, text=True)
        api.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not Path(api[0]["mtbioner_file"]).resolve().is_relative_to(src.resolve()):
        sys.exit(f"the child imported {api[0]['mtbioner_file']}, not the tree under {src}")
    return {
        "cli_seconds": round(statistics.median(cli), 3),
        "load_and_tag_seconds": round(statistics.median(r["seconds"] for r in api), 3),
        "peak_mb": round(statistics.median(r["peak_mb"] for r in api), 1),
        "entities": api[0]["entities"],
        "imports_torch": api[0]["torch"],
        "imports_transformers": api[0]["transformers"],
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Start-up with the shipped `default` model (int8 ONNX), on {meta['host']}; median of {meta['repeats']} "
        f"runs each. Load average before the run: {meta['load_before']}.",
        "",
        '| code | `mtbioner tag "..."` wall s | `Tagger.load()` + 1 sentence, s | peak memory MB | imports torch '
        "| imports transformers | entities |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['cli_seconds']:.2f} | {row['load_and_tag_seconds']:.2f} | {row['peak_mb']:.0f} "
            f"| {'yes' if row['imports_torch'] else 'no'} | {'yes' if row['imports_transformers'] else 'no'} "
            f"| {row['entities']} |"
        )
    lines += ["", f"Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="git revision to measure beside this checkout")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    rows = baseline_and_checkout(args.baseline, lambda src: measure(src, args.repeats))
    facts = machine()
    meta = {
        "host": describe(facts),
        "repeats": args.repeats,
        "load_before": load_before,
        "command": "python benchmarks/startup.py " + shlex.join(sys.argv[1:]),
    }
    text = markdown(rows, meta)
    print(text)
    publish(args.out, "startup", {"machine": facts, **meta, "rows": rows}, text)


if __name__ == "__main__":
    main()
