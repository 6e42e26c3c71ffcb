"""Float32 against bfloat16-autocast training (``mtbioner train --bf16``): speed and devel F1 in one run.

Trains the same model twice with the same seed and settings, once per precision, with the real CLI
(``--output WORK/<precision>``; a finished run there is read, not repeated), and reads the trainer's
log: windows per second and devel F1 after each epoch. bfloat16 pays only on CPUs with native
bfloat16 matrix kernels (AMX, AVX-512 BF16); on other CPUs ``--bf16`` trains in float32 (emulated bfloat16 was
19x slower on an AVX2 EPYC: ``benchmarks/bf16_step.py``), so there is nothing to compare and the script stops
before training.

    python benchmarks/precision.py --data-dir ../shared/data --work /tmp/precision

Writes ``benchmarks/results/precision.json`` and ``precision.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _machine import describe, machine, publish

from mtbioner.host import cpuinfo, native_bf16

PRECISIONS = {"fp32": [], "bf16": ["--bf16"]}


def run(corpus: str, data_dir: Path, output: Path, epochs: int, flags: list[str]) -> list[dict]:
    """The epochs of one finished run in ``output``, training it first when it is not there."""
    log = output / "log.jsonl"
    if not log.is_file() or len(log.read_text().splitlines()) < epochs:
        command = [sys.executable, "-m", "mtbioner", "train", corpus, "--data-dir", str(data_dir)]
        command += ["--lr", "1e-4", "--warmup", "0.1", "--epochs", str(epochs), "--output", str(output)]
        subprocess.run([*command, *flags, "--no-progress"], check=True)
    return [json.loads(line) for line in log.read_text().splitlines()]


def table(results: dict, corpus: str, facts: dict, command: str) -> str:
    lines = [
        f"| precision | epoch | training windows/s | {corpus} devel F1 | train loss |",
        "|---|---|---|---|---|",
    ]
    for precision, epochs in results.items():
        for entry in epochs:
            f1 = entry["devel"][corpus]["f1"]
            lines.append(
                f"| {precision} | {entry['epoch']} | {entry['train_windows_per_s']:.1f} | {f1:.2f} "
                f"| {entry['train_loss']:.4f} |"
            )
    fp32, bf16 = (results[p][-1]["train_windows_per_s"] for p in ("fp32", "bf16"))
    return "\n".join(
        [
            *lines,
            "",
            f"bfloat16 autocast trains at {bf16 / fp32:.2f}x the float32 speed here. One seed: the F1 rows show that",
            "the two runs learn alike, not which is better.",
            "",
            f"Machine: {describe(facts)}.",
            "",
            f"Command: `{command}`",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--corpus", default="NCBI-disease")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True, help="folder for the two runs (kept; reused)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if not native_bf16(cpuinfo()):
        sys.exit("this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX): --bf16 trains in float32 here")

    results = {p: run(args.corpus, args.data_dir, args.work / p, args.epochs, f) for p, f in PRECISIONS.items()}
    facts = machine()
    command = f"python benchmarks/precision.py --data-dir ../shared/data --work WORK --epochs {args.epochs}"
    data = {"machine": facts, "corpus": args.corpus, "epochs": results}
    publish(args.out, "precision", data, table(results, args.corpus, facts, command))


if __name__ == "__main__":
    main()
