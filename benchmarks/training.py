"""Training throughput and peak memory of the default encoder (mixed schedule, four corpora).

Runs one epoch of ``mtbioner.training.train`` on the first ``--limit`` sentences of each
corpus' train split (a fixed number of steps: corpora x limit / batch size) and reads the
training speed that the trainer logs (devel scoring excluded).

    python benchmarks/training.py --data-dir ../shared/data

Writes ``benchmarks/results/training.json`` and ``training.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from mtbioner.corpus import read_corpus
from mtbioner.training import TrainingConfig, train

CORPORA = ["BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--limit", type=int, default=640, help="training sentences per corpus")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoder", default=None, help="encoder folder (default: packaged MiniLM)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    corpora = [
        read_corpus(args.data_dir / name, splits=["train", "devel"], limit=args.limit) for name in CORPORA
    ]
    config = TrainingConfig(epochs=1, limit=args.limit, batch_size=args.batch_size, encoder=args.encoder)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train(corpora, Path(tmp) / "model", config, progress=sys.stderr.isatty())
        log = json.loads((Path(tmp) / "model" / "log.jsonl").read_text().splitlines()[0])
    result = {
        "benchmark": "training",
        "encoder": args.encoder or "all-MiniLM-L6-v2 (packaged)",
        "corpora": CORPORA,
        "schedule": config.schedule,
        "batch_size": args.batch_size,
        "steps": log["step"],
        "sentences": log["train_windows"],
        "train_seconds": log["train_seconds"],
        "sentences_per_s": log["train_windows_per_s"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_seconds_with_setup_and_devel": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "command": "python benchmarks/training.py --data-dir ../shared/data"
        + (f" --limit {args.limit}" if args.limit != 640 else ""),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training.json").write_text(json.dumps(result, indent=2) + "\n")
    table = [
        "| encoder | corpora | batch | steps | sentences/s | peak memory (MB) | machine |",
        "|---|---|---|---|---|---|---|",
        f"| {result['encoder']} | {len(CORPORA)} (mixed) | {args.batch_size} | {result['steps']} | "
        f"{result['sentences_per_s']} | {result['peak_rss_mb']} | {result['machine']} |",
        "",
        f"Command: `{result['command']}`",
    ]
    (args.out / "training.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
