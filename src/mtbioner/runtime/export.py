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
``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations quantized on the fly).
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import ModelFormatError, MtbionerError
from .onnx_backend import CASE_INPUT, CONFIG_NAME, DICTIONARY_INPUT, ONNX_NAME, OnnxTagger, graph_inputs, open_session

if TYPE_CHECKING:
    from ..data.corpus import Corpus
    from .quantization import OutlierReport

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


Quantize = Literal["none", "int8"]
QUANTIZE_CHOICES: tuple[str, ...] = ("none", "int8")
# "light" leaves attention and residual + layer norm unfused (ONNX Runtime's own ops run them): on a 2-core Xeon
# with AMX its int8 graph tagged 722 BC5CDR sentences/s against 637 with every fusion, same F1
# (benchmarks/fusions.py, benchmarks/results/xeon-amx/fusions.md).
Fusions = Literal["all", "light"]
FUSION_CHOICES: tuple[str, ...] = ("all", "light")


@dataclass(frozen=True)
class GraphSettings:
    """How the graph is built; recorded in ``config.json`` under ``"onnx"``.

    Attributes:
        quantize: ``"none"`` (fp32) or ``"int8"`` (dynamic quantization).
        optimize: Apply ONNX Runtime's transformer fusions (attention, GELU, layer norm).
        fusions: With ``optimize``: ``"all"`` of them, or ``"light"``: GELU and layer norm only, no
            attention or skip + layer norm fusion (faster int8 on CPUs with AMX, see FUSION_CHOICES).
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
    fusions: Fusions = "all"


@dataclass
class CheckSettings:
    """What ``--check`` scores: both models on one split of some corpora.

    Attributes:
        corpora: Corpus names/folders, or ``HEAD=PATH`` to score a folder with a named head.
        data_dir: Folder holding corpora by name (default ``$MTBIONER_DATA``).
        split: Split to score.
        limit: Read only the first N sentences (smoke runs).
        max_drop: Largest F1 loss (points) the exported model may show on any corpus; a
            bigger loss aborts the export and nothing is written.
        batch_size: Windows per inference batch.
    """

    corpora: list[str]
    data_dir: Path | None = None
    split: str = "test"
    limit: int | None = None
    max_drop: float = 0.5
    batch_size: int = INFERENCE_BATCH_SIZE

    def __post_init__(self) -> None:
        """Fail before the (minute-long) export, not after it."""
        if self.batch_size < 1:
            raise MtbionerError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise MtbionerError(f"--limit must be at least 1, not {self.limit}")


@dataclass
class CheckRow:
    """F1 of the torch and the exported model on one corpus, and how many sentences changed."""

    corpus: str
    head: str
    sentences: int
    torch_f1: float
    onnx_f1: float
    changed: int

    @property
    def drop(self) -> float:
        return self.torch_f1 - self.onnx_f1


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote."""

    path: Path
    quantize: str
    size_bytes: int
    seconds: float
    max_abs_diff: float
    checks: list[CheckRow] = field(default_factory=list)


class ExportCheckError(MtbionerError):
    """``--check`` found the exported model worse than allowed; nothing was written."""

    def __init__(self, message: str, rows: list[CheckRow]) -> None:
        super().__init__(message)
        self.rows = rows


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
    fusions: Fusions = "all",
) -> ExportReport:
    """Export a torch model folder to an ONNX model folder that ``Tagger.load`` runs.

    Args:
        model_dir: Folder written by ``mtbioner train`` / ``save_pretrained``.
        out: Destination folder. It is written atomically: an existing export there is
            replaced only when the new one is complete (and has passed ``check``).
        quantize: ``"int8"`` for dynamic int8 quantization of the weights.
        optimize, per_channel, reduce_range, outliers, opset, fusions: See :class:`GraphSettings`.
        check: Score torch and exported models on these corpora before keeping the export.

    Raises:
        MtbionerError: ``model_dir`` is not a model, ``out`` cannot be written, a check
            corpus is missing, or the check failed (:class:`ExportCheckError`).
    """
    from ..fileio import atomic_dir
    from ..model.model import MultiTaskTagger

    if quantize not in QUANTIZE_CHOICES:
        raise MtbionerError(f"--quantize {quantize!r}: use one of {', '.join(QUANTIZE_CHOICES)}")
    if fusions not in FUSION_CHOICES:
        raise MtbionerError(f"--fusions {fusions!r}: use one of {', '.join(FUSION_CHOICES)}")
    model_dir, out = Path(model_dir), Path(out)
    graph = GraphSettings(quantize, optimize, per_channel, reduce_range, outliers, opset, fusions)
    _check_source(model_dir)
    _check_destination(model_dir, out)
    corpora = _read_check_corpora(check) if check else []
    started = time.perf_counter()
    model = MultiTaskTagger.from_pretrained(model_dir)
    try:
        with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="mtbioner-export-") as scratch:
            diff, outlier_report = _write_graph(model, tmp / ONNX_NAME, Path(scratch), graph)
            _write_config(model, tmp / CONFIG_NAME, graph, model_dir, outlier_report)
            model.tokenizer.save_pretrained(str(tmp))
            if model.dictionary is not None:
                model.dictionary.save(tmp)
            rows = _run_checks(model, OnnxTagger.from_pretrained(tmp), corpora, check) if check else []
            _enforce(rows, check, out)
    except OSError as exc:
        raise MtbionerError(f"{out}: cannot write the export: {exc.strerror or exc}") from exc
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ExportReport(out, quantize, size, time.perf_counter() - started, diff, rows)


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


def _check_destination(model_dir: Path, out: Path) -> None:
    """Refuse to overwrite the source or a folder that is not a model; fail early if unwritable."""
    if out.exists() and out.resolve() == model_dir.resolve():
        raise MtbionerError(f"{out}: the output folder must differ from the model folder")
    if out.is_file():
        raise MtbionerError(f"{out}: is a file; give a folder to write the export to")
    if out.is_dir() and any(out.iterdir()) and not (out / CONFIG_NAME).is_file():
        raise MtbionerError(f"{out}: exists and is not a model folder; refusing to replace it (choose another)")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc
        raise MtbionerError(f"{out}: cannot create the output folder's parent {parent}: {reason}") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MtbionerError(f"{out}: cannot write in {parent} (permission denied)")


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


def _write_graph(model, path: Path, scratch: Path, graph: GraphSettings) -> tuple[float, OutlierReport | None]:
    """Trace, check against torch, fuse and quantize.

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
            _optimize(traced, current, model.encoder.config, graph.fusions)
    diff = _compare_with_torch(model, current)
    report = None
    if graph.quantize == "int8":
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


def _optimize(source: Path, target: Path, encoder_config, fusions: Fusions = "all") -> None:
    """ONNX Runtime's offline transformer fusions (no-ops for patterns it does not recognise)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    if fusions == "light":
        options.enable_attention = False
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


def _write_config(model, path: Path, graph: GraphSettings, source: Path, outliers: OutlierReport | None) -> None:
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
        "opset": graph.opset,
        "exported_from": str(source),
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
    }
    write_json(path, data)


# --------------------------------------------------------------------------- --check


def _read_check_corpora(check: CheckSettings) -> list[tuple[str, Corpus]]:
    """(head, corpus) pairs, read before the export so a typo fails in seconds, not minutes."""
    from ..data.corpus import read_corpus, resolve_corpus

    pairs = []
    for spec in check.corpora:
        head, sep, path = spec.partition("=")
        corpus = read_corpus(resolve_corpus(path if sep else spec, check.data_dir), [check.split], check.limit)
        pairs.append((head if sep else corpus.name, corpus))
    return pairs


def _run_checks(
    model, exported: OnnxTagger, corpora: list[tuple[str, Corpus]], check: CheckSettings
) -> list[CheckRow]:
    """Score both models on every check corpus with the same evaluation code."""
    from .evaluation import evaluate_corpus

    rows = []
    for head, corpus in corpora:
        if head not in model.config.corpora:
            raise MtbionerError(
                f"--check {corpus.name}: the model has no head {head!r} (heads: {model.corpora}); "
                f"use HEAD=PATH to score a folder with a named head"
            )
        torch_report, torch_tags = evaluate_corpus(model, corpus, check.split, head, check.batch_size)
        onnx_report, onnx_tags = evaluate_corpus(exported, corpus, check.split, head, check.batch_size)
        changed = sum(a != b for a, b in zip(torch_tags, onnx_tags, strict=True))
        rows.append(
            CheckRow(
                torch_report.corpus,
                head,
                torch_report.sentences,
                torch_report.overall.f1,
                onnx_report.overall.f1,
                changed,
            )
        )
    return rows


def _enforce(rows: list[CheckRow], check: CheckSettings | None, out: Path) -> None:
    if check is None:
        return
    worst = max(rows, key=lambda r: r.drop, default=None)
    if worst is not None and worst.drop > check.max_drop:
        raise ExportCheckError(
            f"the export loses {worst.drop:.2f} F1 points on {worst.corpus} ({worst.torch_f1:.2f} -> "
            f"{worst.onnx_f1:.2f}), more than --max-drop {check.max_drop:g}; nothing was written to {out}",
            rows,
        )


def format_checks(rows: Sequence[CheckRow], split: str) -> str:
    """A plain-text table of torch vs exported F1 per corpus."""
    header = f"{'corpus (' + split + ')':<24} {'torch F1':>9} {'onnx F1':>9} {'change':>7} {'sentences changed':>18}"
    lines = [header, "-" * len(header)]
    for r in rows:
        name = r.corpus if r.head == r.corpus else f"{r.corpus} (head {r.head})"
        changed = f"{r.changed} / {r.sentences}"
        lines.append(f"{name:<24} {r.torch_f1:9.2f} {r.onnx_f1:9.2f} {r.onnx_f1 - r.torch_f1:+7.2f} {changed:>18}")
    return "\n".join(lines)
