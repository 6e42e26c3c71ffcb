"""``mtbioner export``: a model to one ONNX graph, optionally int8, checked against torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import MtbionerError
from ..runtime.export import (
    CALIBRATION_SIZE,
    DEFAULT_OPSET,
    CalibrationSettings,
    CheckSettings,
    ExportCheckError,
    export_onnx,
    format_checks,
)
from ._common import setup


def export_command(
    model: Annotated[Path, typer.Argument(help="Trained (torch) model folder.")],
    out: Annotated[Path, typer.Argument(help="Folder to write the ONNX model to.")],
    quantize: Annotated[
        str,
        typer.Option(
            metavar="none|int8|int8-static",
            help="none (fp32), int8 (dynamic quantization, ~4x smaller) or int8-static (activation scales fixed "
            "beforehand from --calibration text: less work per call, for AVX2 hosts).",
        ),
    ] = "none",
    calibration: Annotated[
        str | None,
        typer.Option(
            metavar="CORPUS|FILE.txt",
            help="int8-static: calibrate on this corpus's train split (never test; a name under --data-dir or a "
            "folder) or on a .txt file, one text per line.",
        ),
    ] = None,
    calibration_size: Annotated[
        int | None,
        typer.Option(help=f"int8-static: sentences to calibrate on (default {CALIBRATION_SIZE})."),
    ] = None,
    check: Annotated[
        list[str] | None,
        typer.Option(help="Score torch vs export on CORPUS (repeatable or comma-separated; HEAD=PATH works)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Folder holding --check and --calibration corpora by name (default: $MTBIONER_DATA)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split --check scores.")] = "test",
    limit: Annotated[int | None, typer.Option(help="--check only the first N sentences of each corpus.")] = None,
    max_drop: Annotated[float, typer.Option(help="Abort (write nothing) if --check loses more F1 points.")] = 0.5,
    optimize: Annotated[bool, typer.Option(help="Apply ONNX Runtime's transformer fusions.")] = True,
    fusions: Annotated[
        str,
        typer.Option(
            metavar="light|all",
            help="With --optimize: light (no attention / skip-layer-norm fusion: the faster int8 graph on the "
            "AVX2, VNNI and AMX CPUs measured) or every fusion.",
        ),
    ] = "light",
    per_channel: Annotated[
        bool, typer.Option("--per-channel/--per-tensor", help="int8: a weight scale per output channel or per tensor.")
    ] = True,
    reduce_range: Annotated[
        bool, typer.Option("--reduce-range/--full-range", help="int8: 7-bit weights (closer to fp32 without VNNI).")
    ] = True,
    outliers: Annotated[
        bool,
        typer.Option(
            "--outliers/--plain",
            help="int8: first move the feed-forward outlier channels out of the int8 scale's way, or plain "
            "dynamic quantization.",
        ),
    ] = True,
    batch_size: Annotated[int, typer.Option(help="Windows per inference batch for --check.")] = INFERENCE_BATCH_SIZE,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = DEFAULT_OPSET,
) -> None:
    """Export a model to one ONNX graph (encoder + all heads) for ONNX Runtime; optionally int8.

    The folder works everywhere a model folder does (tag, evaluate, info, serve, Tagger.load).

    Examples:
      mtbioner export m m-onnx
      mtbioner export m m-int8 --quantize int8 --check BC5CDR,NCBI-disease --data-dir ../shared/data
      mtbioner export m m-static --quantize int8-static --calibration BC5CDR --data-dir ../shared/data
    """
    setup(verbose=False)
    specs = [s.strip() for item in (check or []) for s in item.split(",") if s.strip()]
    settings = CheckSettings(specs, data_dir, split, limit, max_drop, batch_size) if specs else None
    if not specs and (limit is not None or split != "test"):
        raise MtbionerError("--split and --limit choose what --check scores; add --check CORPUS")
    if calibration_size is not None and calibration is None:
        raise MtbionerError("--calibration-size needs --calibration (and --quantize int8-static)")
    calibrate = None
    if calibration is not None:
        calibrate = CalibrationSettings(
            calibration, data_dir, CALIBRATION_SIZE if calibration_size is None else calibration_size
        )
    try:
        report = export_onnx(
            model,
            out,
            quantize,
            optimize=optimize,
            per_channel=per_channel,
            reduce_range=reduce_range,
            outliers=outliers,
            opset=opset,
            check=settings,
            fusions=fusions,
            calibration=calibrate,
        )
    except ExportCheckError as exc:
        typer.echo(format_checks(exc.rows, split))
        raise
    if report.checks:
        typer.echo(format_checks(report.checks, split))
    typer.echo(
        f"exported {model} -> {out} ({report.quantize if report.quantize != 'none' else 'fp32'}, "
        f"{report.size_bytes / 1e6:.1f} MB, {report.seconds:.0f} s)"
    )
