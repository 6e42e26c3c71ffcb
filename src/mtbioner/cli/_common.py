"""What every command shares: option types, logging set-up, small parsers."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import MtbionerError
from ..host import cpuinfo, native_bf16
from ..quiet import quiet_libraries

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder holding corpora by name (default: $MTBIONER_DATA).", show_default=False),
]
Limit = Annotated[int | None, typer.Option(help="Read only the first N sentences of each split (smoke runs).")]
Bf16 = Annotated[
    bool,
    typer.Option(
        "--bf16",
        help="Forward pass under bfloat16 autocast (weights, optimizer, loss stay float32): ~1.5x faster "
        "on CPUs with AMX or AVX-512 BF16 and on GPUs; elsewhere bfloat16 is software, many times slower, so the "
        "run trains in float32 and says so.",
    ),
]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --output.")]


def setup(verbose: bool = True) -> None:
    """Log to stderr (INFO when ``verbose``), and keep the libraries' load-time chatter out."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    quiet_libraries()


def mixed_precision(bf16: bool) -> str:
    """``--bf16`` as the trainers' ``mixed_precision``: ``"bf16"`` on a GPU or a CPU with bfloat16 instructions.

    On a CPU without them bfloat16 autocast is emulated and many times slower (:func:`mtbioner.host.native_bf16`),
    so the run trains in float32 and says so: ``--bf16`` is a speed setting, and a study file that asks for it on
    a fast host must not stall a run on a slower one.
    """
    if not bf16:
        return "no"
    import torch

    if torch.cuda.is_available() or native_bf16(cpuinfo()):
        return "bf16"
    typer.echo(
        "warning: --bf16 ignored: this CPU computes bfloat16 in software (no AVX-512 BF16 or AMX), where it runs "
        "many times slower than float32; training in float32",
        err=True,
    )
    return "no"


def resumed_precision(recorded: dict) -> str:
    """The precision a resumed run goes on in: its recorded one, unless that is bf16 and this host has none."""
    return mixed_precision(recorded.get("mixed_precision", "no") == "bf16")


def parse_heads(items: list[str]) -> tuple[str, dict[str, str]]:
    """``--head`` values: a bare kind for every corpus (the last one given), ``NAME=KIND`` for one corpus."""
    default, heads = "linear", {}
    for item in items:
        name, sep, kind = item.rpartition("=")
        if kind not in ("linear", "crf") or (sep and not name):
            raise MtbionerError(f"--head {item!r}: expected linear, crf or NAME=KIND, e.g. JNLPBA=crf")
        if sep:
            heads[name] = kind
        else:
            default = kind
    return default, heads


def parse_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            weights[name] = float(value)
        except ValueError:
            raise MtbionerError(f"--loss-weight {item!r}: expected NAME=FLOAT, e.g. BC2GM=0.5") from None
    return weights
