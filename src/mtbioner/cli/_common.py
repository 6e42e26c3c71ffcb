"""What every command shares: option types, logging set-up, small parsers."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import MtbionerError
from ..quiet import quiet_libraries

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder holding corpora by name (default: $MTBIONER_DATA).", show_default=False),
]
Limit = Annotated[int | None, typer.Option(help="Read only the first N sentences of each split (smoke runs).")]


def setup(verbose: bool = True) -> None:
    """Log to stderr (INFO when ``verbose``), and keep the libraries' load-time chatter out."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    quiet_libraries()


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
