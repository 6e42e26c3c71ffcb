"""Facts about the CPU a figure was measured on, shared by training records and ``benchmarks/``.

Hosts of this project that share a CPU name differ twice in speed (AVX2 against AVX-512 VNNI),
so a result records the processor's own fields, not only its name.
"""

from __future__ import annotations

from pathlib import Path

# the widest vector instructions first: what decides fp32 and int8 kernel speed on these hosts
INSTRUCTION_SETS = ("avx512_vnni", "avx512f", "avx2")
# instructions that compute bfloat16 in hardware (AVX-512 BF16; AMX tiles)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's ``key: value`` fields from ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def instruction_set(fields: dict[str, str]) -> str | None:
    """The widest of :data:`INSTRUCTION_SETS` the CPU offers, or None."""
    flags = set(fields.get("flags", "").split())
    return next((name for name in INSTRUCTION_SETS if name in flags), None)


def native_bf16(fields: dict[str, str]) -> bool:
    """Whether the CPU computes bfloat16 in hardware (:data:`BF16_FLAGS`).

    Elsewhere PyTorch's bfloat16 autocast runs in software: a training step of the packaged MiniLM (32 x 64
    sub-tokens, forward and backward, one thread) took 36.7 s under autocast against 1.9 s in float32 on an
    AVX2-only AMD EPYC (2026-12-07, ``benchmarks/bf16_step.py``), so ``--bf16`` there would make a run some 19
    times slower.
    """
    return any(flag in fields.get("flags", "").split() for flag in BF16_FLAGS)
