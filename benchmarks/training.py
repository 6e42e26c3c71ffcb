"""Training throughput and peak memory of the default encoder (mixed schedule, four corpora).

Runs one epoch of ``mtbioner.learn.training.train`` on the first ``--limit`` sentences of each
corpus' train split (a fixed number of steps: corpora x limit / batch size) and reads the
training speed that the trainer logs (devel scoring excluded).

It also measures what the CPU can do at best, so the figure can be judged: the fp32 matrix
multiply rate of this machine (GFLOP/s, same threads) and the compute one training sentence
needs (about 6 x non-embedding parameters x sub-tokens per padded sentence: forward 2, backward
4). Their ratio is the ceiling on sentences/s that no training loop could pass here.

    python benchmarks/training.py --data-dir ../shared/data

Writes ``benchmarks/results/training.json`` and ``training.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import describe, machine

from mtbioner.data.corpus import read_corpus
from mtbioner.learn.training import TrainingConfig, _training_windows, schedule_batches, train
from mtbioner.model.model import MultiTaskTagger

CORPORA = ["BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA"]
GOAL = 35.0  # sentences/s on 2 cores (issue 3)


def padded_tokens_per_sentence(model: MultiTaskTagger, corpora, config: TrainingConfig) -> float:
    """Mean sub-tokens per sentence as the epoch's length-grouped batches pad them."""
    windows = {c.name: _training_windows(c, config, model) for c in corpora}
    lengths = {name: [len(w) for w in ws] for name, ws in windows.items()}
    batches = schedule_batches(lengths, config.batch_size, config.schedule, config.seed, 0)
    padded = sum(len(idx) * max(lengths[name][i] for i in idx) for name, idx in batches)
    return padded / sum(len(idx) for _, idx in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--limit", type=int, default=640, help="training sentences per corpus")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoder", default=None, help="encoder folder (default: packaged MiniLM)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    corpora = [read_corpus(args.data_dir / name, splits=["train", "devel"], limit=args.limit) for name in CORPORA]
    config = TrainingConfig(epochs=1, limit=args.limit, batch_size=args.batch_size, encoder=args.encoder)
    load_before = os.getloadavg()
    facts = machine()
    gflops = facts["matmul_gflops"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = train(corpora, Path(tmp) / "model", config, progress=sys.stderr.isatty())
        log = json.loads((Path(tmp) / "model" / "log.jsonl").read_text().splitlines()[0])
    wall = time.perf_counter() - started
    tokens = padded_tokens_per_sentence(model, corpora, config)
    # embedding tables are looked up, not multiplied: they cost no FLOPs worth counting
    dense = sum(p.numel() for name, p in model.encoder.named_parameters() if "embeddings" not in name)
    gflop_per_sentence = 6 * dense * tokens / 1e9
    ceiling = gflops / gflop_per_sentence
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
        "wall_seconds_with_setup_and_devel": round(wall, 1),
        "goal_sentences_per_s": GOAL,
        "goal_met": log["train_windows_per_s"] >= GOAL,
        "matmul_gflops": round(gflops, 1),
        "padded_subtokens_per_sentence": round(tokens, 1),
        "encoder_non_embedding_parameters": dense,
        "gflop_per_training_sentence": round(gflop_per_sentence, 2),
        "compute_ceiling_sentences_per_s": round(ceiling, 1),
        "share_of_ceiling": round(log["train_windows_per_s"] / ceiling, 2),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "threads": torch.get_num_threads(),
        "machine": facts,
        "command": "python benchmarks/training.py --data-dir ../shared/data"
        + (f" --limit {args.limit}" if args.limit != 640 else ""),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training.json").write_text(json.dumps(result, indent=2) + "\n")
    table = [
        "| encoder | corpora | batch | steps | sentences/s | peak memory (MB) | threads |",
        "|---|---|---|---|---|---|---|",
        f"| {result['encoder']} | {len(CORPORA)} (mixed) | {args.batch_size} | {result['steps']} | "
        f"{result['sentences_per_s']} | {result['peak_rss_mb']} | {result['threads']} |",
        "",
        f"Machine: {describe(facts)}; torch {facts['torch']}.",
        "",
        f"Goal: >= {GOAL:g} sentences/s: **{'met' if result['goal_met'] else 'not met'}**.",
        "",
        f"Ceiling on this machine: fp32 matrix multiply runs at {result['matmul_gflops']} GFLOP/s; a training "
        f"sentence is {result['padded_subtokens_per_sentence']} padded sub-tokens x 6 x "
        f"{dense / 1e6:.1f}M non-embedding parameters = {result['gflop_per_training_sentence']} GFLOP, so no loop "
        f"can pass {result['compute_ceiling_sentences_per_s']} sentences/s here; mtbioner reaches "
        f"{result['share_of_ceiling']:.0%} of it.",
        "",
        f"Load average before/after (1, 5, 15 min): {result['load_average_before']} / {result['load_average_after']}.",
        "",
        f"Command: `{result['command']}`",
    ]
    (args.out / "training.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
