"""What machine a benchmark ran on, recorded the same way by every script in ``benchmarks/``.

Two hosts of this project that both call themselves "AMD EPYC" with 2 cores differed by 1.8x in
fp32 matrix-multiply speed (63.7 vs 112-118 GFLOP/s), so a CPU's name is not enough to compare two
results: each one records the CPU family and model, the SIMD extensions that matter for int8 and
fp32 kernels, and a measured matrix-multiply rate. Compare figures only where these match.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SIMD = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def best_rate(run, operations: float, repeats: int = 20, warmup: int = 3) -> float:
    """Best-of-3 rate of ``run()`` in G``operations``/s (``operations`` per call), after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        best = max(best, operations * repeats / (time.perf_counter() - started) / 1e9)
    return best


def matmul_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Best-of-3 fp32 matrix-multiply rate (GFLOP/s) with the current torch threads."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    return best_rate(lambda: a @ b, 2 * size**3, repeats)


def taking_turns(runners: dict[str, Callable], texts: list, rounds: int) -> dict[str, list[float]]:
    """Items/s of each runner per round (best of 3 passes), the runners taking turns so that a slow spell of
    the host hits every one; a warm-up call first, since first calls allocate."""
    import sys

    for run in runners.values():
        run(texts[:64])
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                run(texts)
                best = min(best, time.perf_counter() - started)
            rates[name].append(round(len(texts) / best, 1))
            print(f"{name}: {rates[name][-1]} sentences/s", file=sys.stderr, flush=True)
    return rates


def machine(**extra) -> dict:
    """CPU, cores, SIMD, measured fp32 matmul rate and versions, plus the caller's own facts."""
    import torch

    from mtbioner.host import cpuinfo

    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "cpu": info.get("model name") or platform.processor() or "unknown",
        "cpu_family": info.get("cpu family"),
        "cpu_model": info.get("model"),
        "simd": [flag for flag in SIMD if flag in flags],
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "matmul_gflops": round(matmul_gflops(), 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **extra,
    }


def describe(facts: dict) -> str:
    """One line for a results table: which CPU, how fast."""
    family = f" (family {facts['cpu_family']} model {facts['cpu_model']})" if facts.get("cpu_family") else ""
    simd = ", ".join(facts["simd"]) or "no AVX2" if "simd" in facts else "SIMD not recorded"
    gflops = f"fp32 matmul {facts['matmul_gflops']} GFLOP/s" if "matmul_gflops" in facts else "matmul not measured"
    return f"{facts['cpu']}{family}, {facts['cores']} cores, {simd}, {gflops}"


def publish(out: Path, name: str, data: object, markdown: str) -> None:
    """Write a benchmark's results: ``out/NAME.json`` (the figures) and ``out/NAME.md`` (the table)."""
    from mtbioner.fileio import atomic_write, write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", data)
    with atomic_write(out / f"{name}.md") as handle:
        handle.write(markdown)


def _revision(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


def baseline_and_checkout(baseline: str | None, measure: Callable[[Path], dict]) -> list[dict]:
    """``{"label": ..., **measure(src)}`` for a baseline revision (checked out in a temporary git worktree) and
    for this checkout, in one run, so that code is compared on the same host under the same load."""
    repo = Path(__file__).resolve().parent.parent
    rows = []
    if baseline:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "baseline"
            git = ["git", "-C", str(repo), "worktree"]
            subprocess.run([*git, "add", "--detach", str(tree), baseline], check=True, capture_output=True)
            try:
                rows.append({"label": f"baseline {_revision(tree)}", **measure(tree / "src")})
            finally:
                subprocess.run([*git, "remove", "--force", str(tree)], check=True)
    status = ["git", "-C", str(repo), "status", "--porcelain", "src"]
    dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
    label = f"this checkout {_revision(repo)}" + (" + uncommitted changes" if dirty else "")
    rows.append({"label": label, **measure(repo / "src")})
    return rows
