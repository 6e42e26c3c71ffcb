"""What the benchmarks that measure one set-up per fresh process share: the child's run and its one JSON line.

A process's memory and speed carry what earlier set-ups left (the allocator's arenas, ONNX Runtime's pools, the
tokenizer's cache), so ``server_memory.py`` and ``server_batch.py`` run each set-up in a process of its own:
the script itself again, with the child's flags, printing its result as its last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def batch_sizes(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """``--batch-sizes`` as whole numbers of at least 1 (a usage error names the flag otherwise)."""
    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes: comma-separated whole numbers, not {text!r}")
    if min(sizes) < 1:
        parser.error("--batch-sizes: each at least 1")
    return sizes


def run_fresh(script: str, argv: list[str], what: str, env: dict[str, str] | None = None) -> dict | None:
    """Run ``script`` with ``argv`` in a new process (with ``env``, when given, as its environment) and return the
    JSON of its last line; ``None`` (after saying which set-up failed) when it exits with an error, whose log is
    then above on stderr."""
    done = subprocess.run([sys.executable, script, *argv], stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode:
        print(f"error: {what} failed (exit {done.returncode}); its log is above", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])
