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
import json
import logging
import os
import random
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import ModelFormatError, MtbionerError
from .onnx_backend import CASE_INPUT, CONFIG_NAME, DICTIONARY_INPUT, ONNX_NAME, OnnxTagger, graph_inputs, open_session

if TYPE_CHECKING:
    from ..data.corpus import Corpus
    from ..model.encoding import Surroundings
    from .quantization import OutlierReport

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


# "int8" is dynamic quantization (activation scales found at run time); "int8-static" fixes them beforehand from
# calibration sentences (mtbioner.runtime.quantization: less work per call, meant for AVX2 hosts without VNNI).
Quantize = Literal["none", "int8", "int8-static"]
QUANTIZE_CHOICES: tuple[str, ...] = ("none", "int8", "int8-static")
#: Calibration sentences static int8 reads by default: enough for stable MinMax ranges, seconds to run.
CALIBRATION_SIZE = 256
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


@dataclass(frozen=True)
class CalibrationSettings:
    """Where ``int8-static`` takes the sentences that fix its activation scales.

    Attributes:
        source: A corpus (folder, one-file corpus or name under ``data_dir``), of which only the **train** split
            is read, or a ``.txt`` file (one text per line; ``.jsonl`` with a ``"text"`` per line works too),
            split into sentences as ``mtbioner tag`` splits its input.
        data_dir: Folder holding corpora by name (default ``$MTBIONER_DATA``).
        size: Sentences to calibrate on: a seeded sample spread over a corpus's train split, or a file's first.
    """

    source: str
    data_dir: Path | None = None
    size: int = CALIBRATION_SIZE

    def __post_init__(self) -> None:
        """Fail before the export, not after it."""
        if self.size < 1:
            raise MtbionerError(f"--calibration-size must be at least 1, not {self.size}")
        if not self.source.strip():
            raise MtbionerError("--calibration: empty; give a corpus (its train split is read) or a .txt file")


@dataclass
class CalibrationText:
    """The calibration sentences as words, with the words around each for models that read document context."""

    source: str
    split: str | None
    words: list[list[str]]
    surroundings: list[Surroundings] | None = None

    def summary(self, requested: int, batches: int) -> dict:
        """What ``config.json`` records: where the sentences came from, how many, and the method."""
        return {
            "source": self.source,
            "split": self.split,
            "sentences": len(self.words),
            "requested": requested,
            "batches": batches,
            "method": "MinMax",
            "format": "QDQ",
            "activations": "QUInt8",
        }


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
        if self.max_drop != self.max_drop:  # NaN: every comparison false, so the check would pass anything
            raise MtbionerError("--max-drop must be a number of F1 points, not nan")


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
    corpora = _read_check_corpora(check) if check else []
    text = read_calibration(calibration, source_config.context) if calibration else None
    started = time.perf_counter()
    model = MultiTaskTagger.from_pretrained(model_dir)
    try:
        with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="mtbioner-export-") as scratch:
            model.tokenizer.save_pretrained(str(tmp))
            if model.dictionary is not None:
                model.dictionary.save(tmp)
            feeds = _calibration_feeds(model, tmp, text) if text is not None else None
            diff, outlier_report = _write_graph(model, tmp / ONNX_NAME, Path(scratch), graph, feeds)
            recorded = None
            if text is not None and calibration is not None and feeds is not None:
                recorded = text.summary(calibration.size, len(feeds))
            _write_config(model, tmp / CONFIG_NAME, graph, model_dir, outlier_report, recorded)
            rows = _run_checks(model, OnnxTagger.from_pretrained(tmp), corpora, check) if check else []
            _enforce(rows, check, out)
            if check is not None:
                _record_checks(tmp / CONFIG_NAME, rows, check)
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


# --------------------------------------------------------------------------- --calibration


def read_calibration(settings: CalibrationSettings, context: int = 0) -> CalibrationText:
    """Read the calibration sentences, before the export so that a typo fails in seconds.

    A corpus gives ``settings.size`` sentences of its **train** split only (a seeded sample spread over the
    split, not its first documents); a test split is never read. A ``.txt``/``.jsonl`` file gives its first
    ``settings.size`` sentences, split from each text as ``mtbioner tag`` splits them. ``context``: words of
    document context the model reads each side of a sentence (its config's ``context``).

    Raises:
        MtbionerError: The file or corpus is missing, the corpus has no train split (or is named like a test
            split), or there is no sentence in it; the message starts with ``--calibration``.
    """
    spec = settings.source
    if Path(spec).suffix.lower() in (".txt", ".jsonl"):
        return _read_calibration_file(Path(spec).expanduser(), settings.size, context)
    from ..data.corpus import SPLITS, has_split, read_corpus, resolve_corpus
    from ..model.encoding import document_surroundings

    try:
        path = resolve_corpus(spec, settings.data_dir)
    except MtbionerError as exc:
        raise MtbionerError(f"--calibration {spec}: {exc}") from exc
    if not any(has_split(path, split) for split in SPLITS):  # a one-split corpus is read whole: its name decides
        _refuse_test_split(path, spec)
    try:
        corpus = read_corpus(path, ["train"])
    except MtbionerError as exc:
        raise MtbionerError(
            f"--calibration {spec}: static int8 calibrates on a corpus's train split only, never its test split: {exc}"
        ) from exc
    sentences = [s for s in corpus.sentences("train") if s.tokens]
    if not sentences:
        raise MtbionerError(f"--calibration {spec}: the train split of {path} holds no sentence")
    words = [list(s.tokens) for s in sentences]
    around = document_surroundings(words, [s.document for s in sentences], context) if context else None
    chosen = sorted(random.Random(0).sample(range(len(words)), min(settings.size, len(words))))
    return CalibrationText(
        str(path), "train", [words[i] for i in chosen], [around[i] for i in chosen] if around is not None else None
    )


def _read_calibration_file(path: Path, size: int, context: int) -> CalibrationText:
    """The first ``size`` sentences of a text file's texts (one per line), with their document context."""
    from ..data.formats import read_documents
    from ..data.text import text_surroundings
    from .tagging import Tagger

    if not path.is_file():
        raise MtbionerError(
            f"--calibration {path}: no such file; give a .txt file (one text per line) or a corpus, whose train "
            f"split is read"
        )
    _refuse_test_split(path, str(path))
    words: list[list[str]] = []
    around: list[Surroundings] = []
    try:
        for _, record in read_documents(path):
            text = record["text"]
            for sentence in Tagger.split(text):
                words.append([token.text for token in sentence.tokens])
                around.append(text_surroundings(text, sentence, context))
            if len(words) >= size:
                break
    except MtbionerError as exc:
        raise MtbionerError(f"--calibration {path}: {exc}") from exc
    if not words:
        raise MtbionerError(f"--calibration {path}: holds no text to calibrate on")
    return CalibrationText(str(path), None, words[:size], around[:size] if context else None)


def _refuse_test_split(path: Path, spec: str) -> None:
    """A file or one-split folder named like a test split (``test.pubtator``, ``test/a.txt``): not calibration."""
    names = {path.name.split(".")[0].lower(), path.parent.name.lower()}
    if "test" in names:
        raise MtbionerError(
            f"--calibration {spec}: {path} looks like a test split; calibrate on training text (give the corpus "
            f"folder, whose train split is read, or a text file of your own)"
        )


def _calibration_feeds(model, folder: Path, text: CalibrationText) -> list[dict[str, np.ndarray]]:
    """Calibration batches encoded as the exported folder's runtime will encode text: with the tokenizer
    and dictionary read back from ``folder`` as ``OnnxTagger.from_pretrained`` reads them."""
    from ..model.dictionary import Dictionary
    from ..model.fast_tokenizer import load_tokenizer
    from .quantization import calibration_feeds

    dictionary = Dictionary.load(folder) if model.config.dictionary_features else None
    return calibration_feeds(model.config, load_tokenizer(folder), text.words, text.surroundings, dictionary)


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


def _record_checks(config_file: Path, rows: list[CheckRow], check: CheckSettings) -> None:
    """Keep what ``--check`` measured in the export's config (``onnx.check``), so the figures travel with the model
    (``mtbioner info`` shows them) instead of living only in a build log."""
    from ..fileio import write_json

    data = json.loads(config_file.read_text(encoding="utf-8"))
    data["onnx"]["check"] = {
        "split": check.split,
        "limit": check.limit,
        "max_drop": check.max_drop,
        "rows": [{**asdict(r), "drop": round(r.drop, 4)} for r in rows],
    }
    write_json(config_file, data)


def format_checks(rows: Sequence[CheckRow], split: str) -> str:
    """A plain-text table of torch vs exported F1 per corpus."""
    header = f"{'corpus (' + split + ')':<24} {'torch F1':>9} {'onnx F1':>9} {'change':>7} {'sentences changed':>18}"
    lines = [header, "-" * len(header)]
    for r in rows:
        name = r.corpus if r.head == r.corpus else f"{r.corpus} (head {r.head})"
        changed = f"{r.changed} / {r.sentences}"
        lines.append(f"{name:<24} {r.torch_f1:9.2f} {r.onnx_f1:9.2f} {r.onnx_f1 - r.torch_f1:+7.2f} {changed:>18}")
    return "\n".join(lines)
