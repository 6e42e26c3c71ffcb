"""Facts about the CPU a figure was measured on, shared by training records and ``benchmarks/``.

Hosts of this project that share a CPU name differ twice in speed (AVX2 against AVX-512 VNNI),
so a result records the processor's own fields, not only its name.
"""

from __future__ import annotations

from pathlib import Path

# the widest vector instructions first: what decides fp32 and int8 kernel speed on these hosts
INSTRUCTION_SETS = ("avx512_vnni", "avx512f", "avx2")


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
