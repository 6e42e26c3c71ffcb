"""Export a trained model to one ONNX graph (encoder + every head) and run it with ONNX Runtime.

Why: the paper's point is a tagger small and fast enough for limited-memory devices. A
torch model folder needs torch (hundreds of MB installed) and runs the encoder eagerly;
an exported folder needs only ONNX Runtime, runs a fused graph, and with int8 weights is
a quarter of the size.

An exported folder holds ``model.onnx`` (inputs ``input_ids`` and ``attention_mask``, plus
``token_type_ids`` with each word's case class for case-feature models and ``dictionary_ids``
(``[B, T, K]`` match tags) for dictionary-feature models, with dynamic batch and
sequence axes, one ``[B, T, C]`` emission output per head), ``dictionary.json`` for
dictionary-feature models, ``config.json`` (the :class:`~mtbioner.model.model_config.TaggerConfig` plus an
``"onnx"`` section that maps heads to outputs and carries the CRF scores) and the tokenizer files. Decoding
(softmax, Viterbi) stays outside the graph, in :mod:`mtbioner.model.decoding`, shared with torch,
so both backends produce entities the same way.

Pipeline: ``torch.onnx.export`` (TorchScript exporter, eager attention so that ONNX
Runtime's BERT fusions recognise the pattern) -> ``onnxruntime.transformers.optimizer``
(fused embedding, attention, GELU and layer-norm kernels) -> optionally int8 with
:mod:`mtbioner.runtime.quantization` (outlier channels of the feed-forward blocks rewritten, then
``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations quantized on the fly; or, for
``int8-static``, ``quantize_static``: activation scales fixed beforehand from calibration sentences of a
corpus's train split or a text file, never a test split).
onnxruntime, onnx and torch are imported inside functions so that ``mtbioner --help``
stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import ModelFormatError, MtbionerError
from .export_calibration import CALIBRATION_SIZE, CalibrationSettings, encoded_calibration, read_calibration
from .export_checks import (
    CheckRow,
    CheckSettings,
    ExportCheckError,
    enforce_checks,
    format_checks,
    read_check_corpora,
    record_checks,
    run_checks,
)
from .onnx_backend import CASE_INPUT, CONFIG_NAME, DICTIONARY_INPUT, ONNX_NAME, OnnxTagger, graph_inputs, open_session

if TYPE_CHECKING:
    from .quantization import OutlierReport

# export_onnx's public face: its settings and results live in export_calibration and export_checks
__all__ = [
    "CALIBRATION_SIZE",
    "DEFAULT_OPSET",
    "CalibrationSettings",
    "CheckRow",
    "CheckSettings",
    "ExportCheckError",
    "ExportReport",
    "GraphSettings",
    "export_onnx",
    "format_checks",
    "read_calibration",
]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


# "int8" is dynamic quantization (activation scales found at run time); "int8-static" fixes them beforehand from
# calibration sentences (mtbioner.runtime.quantization: less work per call, meant for AVX2 hosts without VNNI).
Quantize = Literal["none", "int8", "int8-static"]
QUANTIZE_CHOICES: tuple[str, ...] = ("none", "int8", "int8-static")
# "light" (the default) leaves attention and residual + layer norm unfused (ONNX Runtime's own ops run them). Its
# int8 graph was the faster one, at the same F1, on every CPU measured (benchmarks/fusions.py, BC5CDR test
# sentences/s, light against all): 2-core Xeon with AMX 722 / 637, AMD EPYC with AVX-512 VNNI 440 / 370, AMD EPYC
# with AVX2 only 283 / 259 (benchmarks/results/{xeon-amx,epyc-vnni,epyc-avx2}/fusions.md).
Fusions = Literal["all", "light"]
FUSION_CHOICES: tuple[str, ...] = ("all", "light")


@dataclass(frozen=True)
class GraphSettings:
    """How the graph is built; recorded in ``config.json`` under ``"onnx"``.

    Attributes:
        quantize: ``"none"`` (fp32), ``"int8"`` (dynamic quantization) or ``"int8-static"`` (activation
            scales calibrated beforehand).
        optimize: Apply ONNX Runtime's transformer fusions (attention, GELU, layer norm).
        fusions: With ``optimize``: ``"light"``: GELU and layer norm only, no attention or skip + layer norm
            fusion (the faster int8 graph on AVX2, VNNI and AMX hosts alike, see FUSION_CHOICES), or ``"all"``.
            ``int8-static`` never fuses attention (:attr:`fused_attention`).
        per_channel: int8: one weight scale per output channel instead of per tensor.
        reduce_range: int8: 7-bit weights. With per-channel scales this keeps the emissions
            closest to fp32 on CPUs without VNNI (AVX2's u8 x s8 multiply-add saturates).
        outliers: int8: first rewrite the feed-forward blocks so that their few outlier
            channels no longer set the activation scale (:mod:`mtbioner.runtime.quantization`).
        opset: ONNX opset of the graph.
    """

    quantize: Quantize = "none"
    optimize: bool = True
    per_channel: bool = True
    reduce_range: bool = True
    outliers: bool = True
    opset: int = DEFAULT_OPSET
    fusions: Fusions = "light"
    pruned_heads: bool = False  # the model keeps fewer attention heads than its config names (a student's)

    @property
    def fused_attention(self) -> bool:
        """Whether attention becomes ONNX Runtime's fused ``Attention`` op.

        Not for static int8: that op has no statically quantized form, so its query, key and value projections
        (a quarter of the encoder's multiply-adds) would stay fp32; unfused they are MatMuls, quantized as the rest.
        Not for a student with fewer attention heads either: the fusion assumes the config's head count and a
        query width equal to the hidden size; unfused, its narrower MatMuls run as they are.
        """
        return self.optimize and self.fusions == "all" and self.quantize != "int8-static" and not self.pruned_heads


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote."""

    path: Path
    quantize: str
    size_bytes: int
    seconds: float
    max_abs_diff: float
    checks: list[CheckRow] = field(default_factory=list)


# --------------------------------------------------------------------------- export


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    quantize: Quantize = "none",
    *,
    optimize: bool = True,
    per_channel: bool = True,
    reduce_range: bool = True,
    outliers: bool = True,
    opset: int = DEFAULT_OPSET,
    check: CheckSettings | None = None,
    fusions: Fusions = "light",
    calibration: CalibrationSettings | None = None,
) -> ExportReport:
    """Export a torch model folder to an ONNX model folder that ``Tagger.load`` runs.

    Args:
        model_dir: Folder written by ``mtbioner train`` / ``save_pretrained``.
        out: Destination folder. It is written atomically: an existing export there is
            replaced only when the new one is complete (and has passed ``check``).
        quantize: ``"int8"`` for dynamic int8 quantization, ``"int8-static"`` for static int8 calibrated
            on ``calibration``.
        optimize, per_channel, reduce_range, outliers, opset, fusions: See :class:`GraphSettings`.
        check: Score torch and exported models on these corpora before keeping the export.
        calibration: The sentences ``int8-static`` calibrates on (required with it, refused without).

    Raises:
        MtbionerError: ``model_dir`` is not a model, ``out`` cannot be written, a check or calibration
            corpus is missing, calibration is given without ``int8-static`` (or missing with it), or the
            check failed (:class:`ExportCheckError`).
    """
    from ..fileio import atomic_dir, check_output_folder
    from ..model.attention_heads import kept_heads
    from ..model.model import MultiTaskTagger
    from ..model.model_config import read_config

    if quantize not in QUANTIZE_CHOICES:
        raise MtbionerError(f"--quantize {quantize!r}: use one of {', '.join(QUANTIZE_CHOICES)}")
    if fusions not in FUSION_CHOICES:
        raise MtbionerError(f"--fusions {fusions!r}: use one of {', '.join(FUSION_CHOICES)}")
    _check_calibration(quantize, calibration)
    model_dir, out = Path(model_dir), Path(out)
    _check_source(model_dir)
    source_config = read_config(model_dir)
    pruned = kept_heads(source_config.encoder_config) is not None
    graph = GraphSettings(quantize, optimize, per_channel, reduce_range, outliers, opset, fusions, pruned)
    check_output_folder(out, CONFIG_NAME, sources=(model_dir,))
    corpora = read_check_corpora(check) if check else []
    text = read_calibration(calibration, source_config.context) if calibration else None
    started = time.perf_counter()
    model = MultiTaskTagger.from_pretrained(model_dir)
    try:
        with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="mtbioner-export-") as scratch:
            model.tokenizer.save_pretrained(str(tmp))
            if model.dictionary is not None:
                model.dictionary.save(tmp)
            feeds = encoded_calibration(model, tmp, text) if text is not None else None
            diff, outlier_report = _write_graph(model, tmp / ONNX_NAME, Path(scratch), graph, feeds)
            recorded = None
            if text is not None and calibration is not None and feeds is not None:
                recorded = text.summary(calibration.size, len(feeds))
            _write_config(model, tmp / CONFIG_NAME, graph, model_dir, outlier_report, recorded)
            rows = run_checks(model, OnnxTagger.from_pretrained(tmp), corpora, check) if check else []
            enforce_checks(rows, check, out)
            if check is not None:
                record_checks(tmp / CONFIG_NAME, rows, check)
    except OSError as exc:
        raise MtbionerError(f"{out}: cannot write the export: {exc.strerror or exc}") from exc
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ExportReport(out, quantize, size, time.perf_counter() - started, diff, rows)


def _check_calibration(quantize: str, calibration: CalibrationSettings | None) -> None:
    """Calibration text goes with ``int8-static`` and nothing else."""
    if quantize == "int8-static" and calibration is None:
        raise MtbionerError(
            "--quantize int8-static needs --calibration CORPUS or FILE.txt: real sentences (a corpus's train split, "
            "never test) that fix the activation scales"
        )
    if quantize != "int8-static" and calibration is not None:
        raise MtbionerError(
            f"--calibration {calibration.source}: only --quantize int8-static reads calibration text "
            f"(this export is --quantize {quantize}); add --quantize int8-static or drop --calibration"
        )


def _check_source(model_dir: Path) -> None:
    """Name the usual mistakes before loading anything."""
    from ..model.model import WEIGHTS_NAME

    if (model_dir / ONNX_NAME).is_file():
        raise ModelFormatError(f"{model_dir}: already an exported ONNX model; export the torch model folder instead")
    if not model_dir.is_dir():
        raise ModelFormatError(f"{model_dir}: no such model folder")
    if not (model_dir / CONFIG_NAME).is_file() or not (model_dir / WEIGHTS_NAME).is_file():
        raise ModelFormatError(
            f"{model_dir}: not an mtbioner model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}; "
            f"train one with mtbioner train)"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter/optimizer/quantizer chatter (tracer warnings, 'consider pre-processing')."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _write_graph(
    model, path: Path, scratch: Path, graph: GraphSettings, feeds: list[dict[str, np.ndarray]] | None = None
) -> tuple[float, OutlierReport | None]:
    """Trace, check against torch, fuse and quantize (``feeds``: the calibration batches of ``int8-static``).

    Returns the fp32 graph's largest deviation from torch and, for int8, what the outlier
    rewrites moved.
    """
    traced = scratch / "traced.onnx"
    with _quiet():
        _trace(model, traced, graph.opset)
    current = traced
    if graph.optimize:
        current = scratch / "optimized.onnx"
        with _quiet():
            _optimize(traced, current, model.encoder.config, graph)
    diff = _compare_with_torch(model, current)
    report = None
    if graph.quantize == "int8-static":
        from .quantization import quantize_int8_static

        if not feeds:
            raise MtbionerError("int8-static: the calibration text gave no sentence to calibrate on")
        quantized = scratch / "quantized.onnx"
        with _quiet():
            report = quantize_int8_static(
                current,
                quantized,
                feeds,
                per_channel=graph.per_channel,
                reduce_range=graph.reduce_range,
                outliers=graph.outliers,
                scratch=scratch,
            )
        current = quantized
    elif graph.quantize == "int8":
        from .quantization import quantize_int8

        quantized = scratch / "quantized.onnx"
        with _quiet():
            report = quantize_int8(
                current,
                quantized,
                per_channel=graph.per_channel,
                reduce_range=graph.reduce_range,
                outliers=graph.outliers,
                scratch=scratch,
            )
        current = quantized
    os.replace(current, path)
    return diff, report


def _wrapper(model):
    """An ``nn.Module`` returning every head's emissions, in config order, from one encoder pass."""
    from torch import nn

    optional = graph_inputs(model.config)[2:]  # case classes and/or dictionary match tags, in this order

    class Graph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, first=None, second=None):
            extra = dict(zip(optional, (first, second), strict=False))
            out = self.model.forward_all(
                input_ids,
                attention_mask,
                token_type_ids=extra.get(CASE_INPUT),
                dictionary_ids=extra.get(DICTIONARY_INPUT),
            )
            return tuple(out[name] for name in self.model.corpora)

    return Graph().eval()


def _dummy_batch(model, rows: int, length: int, seed: int) -> tuple:
    """Random ids with padding in every other row, so the traced graph keeps the mask path
    (and random case classes and dictionary match tags for the models that read them)."""
    import torch

    from ..model.encoding import CASE_TYPES

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.encoder.config.vocab_size, (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1::2, length // 2 :] = 0
    batch = [ids, mask]
    if model.config.case_features:
        batch.append(torch.randint(0, CASE_TYPES, (rows, length), generator=generator))
    if model.config.dictionary_features:
        batch.append(random_matches(len(model.config.dictionary_types), (rows, length), generator))
    return tuple(batch)


def random_matches(channels: int, shape: tuple[int, int], generator):
    """``[*shape, channels]`` dictionary match tags: channel t holds 0, ``1 + 2t`` or ``2 + 2t`` at random."""
    import torch

    state = torch.randint(0, 3, (*shape, channels), generator=generator)
    base = 2 * torch.arange(channels)
    return torch.where(state == 0, 0, base + state)


def _trace(model, path: Path, opset: int) -> None:
    """TorchScript export with dynamic batch/sequence axes.

    Eager attention gives the MatMul/Softmax pattern that ONNX Runtime fuses into its
    ``Attention`` kernel (the SDPA export is left unfused). The dynamo exporter would need
    onnxscript, an extra dependency, for no gain here.
    """
    import torch

    model.eval()
    with contextlib.suppress(AttributeError, ValueError):
        model.encoder.set_attn_implementation("eager")
    outputs = [output_name(i) for i in range(len(model.corpora))]
    inputs = graph_inputs(model.config)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*inputs, *outputs)}
    torch.onnx.export(
        _wrapper(model),
        _dummy_batch(model, 2, 8, seed=0),
        str(path),
        dynamo=False,
        input_names=list(inputs),
        output_names=outputs,
        dynamic_axes=axes,
        opset_version=opset,
        do_constant_folding=True,
    )
    model.eval()  # the exporter restores the wrapper's (training) mode on the way out


def output_name(index: int) -> str:
    """Name of the graph output of the ``index``-th head (head names can hold any character)."""
    return f"emissions_{index}"


def _optimize(source: Path, target: Path, encoder_config, graph: GraphSettings) -> None:
    """ONNX Runtime's offline transformer fusions (no-ops for patterns it does not recognise).

    Attention is fused only where :attr:`GraphSettings.fused_attention` says. Static int8 also leaves the
    embeddings' layer norm unfused: the fused op has no statically quantized form, while unfused it is Gathers
    and a LayerNormalization that static int8 handles like the rest.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_attention = graph.fused_attention
    if graph.quantize == "int8-static":
        options.enable_embed_layer_norm = False
    if graph.fusions == "light":
        options.enable_skip_layer_norm = False
        options.enable_bias_skip_layer_norm = False
    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=int(getattr(encoder_config, "num_attention_heads", 0) or 0),
        hidden_size=int(getattr(encoder_config, "hidden_size", 0) or 0),
        optimization_options=options,
    )
    logger.debug("fused operators: %s", optimized.get_fused_operator_statistics())
    optimized.save_model_to_file(str(target))


def _compare_with_torch(model, path: Path) -> float:
    """Largest emission difference on a batch shaped unlike the trace; a mismatch is a bug."""
    import torch

    batch = _dummy_batch(model, 3, 13, seed=1)
    with torch.inference_mode():
        expected = [t.numpy() for t in _wrapper(model)(*batch)]
    session = open_session(path, threads=None)
    got = session.run(None, {name: t.numpy() for name, t in zip(graph_inputs(model.config), batch, strict=True)})
    real = batch[1].numpy().astype(bool)
    diff = max(float(np.abs(a - b)[real].max()) for a, b in zip(got, expected, strict=True))
    if not diff < 1e-3:
        raise RuntimeError(f"exported graph deviates from torch by {diff:g}: please report this as a bug")
    return diff


def _write_config(
    model,
    path: Path,
    graph: GraphSettings,
    source: Path,
    outliers: OutlierReport | None,
    calibration: dict | None = None,
) -> None:
    import onnxruntime
    import torch

    from ..fileio import write_json

    crf = {}
    for name, decoder in model.decoders().items():
        if decoder.kind == "crf":
            crf[name] = {key: getattr(decoder, key).tolist() for key in ("start", "end", "transitions")}
    data = model.config.to_dict()
    data["onnx"] = {
        "file": ONNX_NAME,
        "inputs": list(graph_inputs(model.config)),
        "outputs": {name: output_name(i) for i, name in enumerate(model.corpora)},
        "crf": crf,
        "quantize": graph.quantize,
        "per_channel": graph.per_channel if graph.quantize != "none" else None,
        "reduce_range": graph.reduce_range if graph.quantize != "none" else None,
        "outliers": outliers.summary() if outliers is not None and graph.outliers else None,
        "optimized": graph.optimize,
        "fusions": graph.fusions if graph.optimize else None,
        "fused_attention": graph.fused_attention,
        "calibration": calibration,
        "opset": graph.opset,
        "exported_from": str(source),
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
    }
    write_json(path, data)
