"""int8 quantization of an exported graph (dynamic or static), with outlier channels taken care of first.

Why: ``onnxruntime.quantization.quantize_dynamic`` gives every MatMul int8 weights (one scale
per output channel) and quantizes its input at run time with *one* scale for the whole
tensor. BERT-style encoders have a few hidden channels whose activations are an order of
magnitude larger than the rest, and one scale per tensor spends most of its 256 levels on
them. Measured on the default encoder fine-tuned on four corpora: hidden channel 99 of every
feed-forward (FFN) input reaches 22-30 against a median channel maximum near 2, and one or two
of the 1,536 FFN intermediate channels per layer reach 14-24. Those two MatMuls caused most of
the int8 model's drift from fp32 (per-token KL divergence of the emissions 4e-3, one token label
in a hundred changed; JNLPBA lost 0.5-0.8 F1).

Two exact rewrites of the fp32 graph, before ``quantize_dynamic``, remove them:

* FFN output (mixed-precision decomposition, as LLM.int8(), Dettmers et al. 2022): the few
  intermediate channels with outlier activations are zeroed in the int8 path and computed by a
  small fp32 side path, ``GELU(x W1[:, k] + b1[k]) W2[k, :]``, added back to the output: a
  [hidden x k] and a [k x hidden] product with k of one or two.
* FFN input (migration, as SmoothQuant, Xiao et al. 2023, but only on outlier channels): those
  input channels are divided by ``s`` in front of the MatMul and the matching weight rows are
  multiplied by ``s``, bringing them to the level of the other channels. The weights, quantized
  per output channel, absorb that easily.

Both rewrites leave the fp32 function unchanged (up to float rounding); only what int8 has to
represent changes. On the default encoder they cut the emission KL to fp32 three- to four-fold at
the same size, for 1.5-3% of int8 inference time (side path, scaling and add).

Outlier channels are found without data, on random token ids: they are a property of the
weights (on the default encoder the random ids find the same channels as corpus text).
The rewrites apply to ONNX Runtime's fused BERT pattern (``MatMul -> BiasGelu -> MatMul``);
a graph without it is quantized as it is.

Static int8 (:func:`quantize_int8_static`, ``export --quantize int8-static``). Dynamic quantization finds
each MatMul input's scale at run time: a min/max pass over the activation on every call, then the
quantization with that scale. Static quantization fixes those scales ahead of time from calibration text,
so a call only scales and rounds with constants. That removes a pass over every quantized activation per
call, work that weighs most where the int8 products are slowest: AVX2 CPUs without VNNI. The choices follow
``onnxruntime.quantization.quantize_static``'s docstring ("Choosing parameters for CPU inference"):

* Format QDQ (QuantizeLinear/DequantizeLinear pairs around float ops), which ONNX Runtime recommends for CPU
  since 1.11: at load time it fuses ``DQ(x), DQ(W) -> MatMul`` into ``MatMulIntegerToFloat`` (uint8 x int8
  in, float out). MatMul outputs are left unquantized (``OpTypesToExcludeOutputQuantization``), so no op has
  to requantize (QOperator's ``QLinearMatMul`` would, followed by a DequantizeLinear).
* Activations QUInt8 (asymmetric), weights QInt8 per output channel, ``reduce_range`` (7-bit weights): the
  u8 x s8 products x86 kernels implement, and what the docstring gives for x86 without VNNI, whose u8 x s8
  multiply-add can saturate (the export's defaults, shared with dynamic int8; ``--full-range`` for VNNI hosts).
* Calibration MinMax: the range an activation reaches over the calibration sentences. It is what dynamic
  quantization does per batch (the method the int8 export was validated with), and the reason to prefer
  Percentile or Entropy (a few outlier values stretching the range) is what the outlier rewrites above
  already remove, exactly, from the feed-forward blocks. MinMax also reduces each tensor inside the graph
  (ReduceMin/ReduceMax), whereas ONNX Runtime's Percentile and Entropy calibrators keep every activation of
  every batch for their histograms and need all batches of one shape: the runtime's batches vary in length
  (padded to their longest window), and padding them all to ``max_length`` would calibrate on other inputs.
* Only MatMuls with a weight matrix are quantized: the linear layers and the heads. Softmax, GELU and layer
  norms stay float, and so do the attention products of two activations (scores and mixing), whose ranges
  change with every sentence. ONNX Runtime's fused ``Attention`` op has no static int8 form (only dynamic:
  ``QAttention``), so a static graph is built with attention unfused and its query, key and value projections
  become MatMuls like the others (:func:`mtbioner.runtime.export.export_onnx`).
* The embedding tables are stored in int8 as dynamic int8 stores them: ONNX Runtime gathers int8 rows and
  dequantizes only those, with the table's fixed scale (no run-time pass). Left fp32, the word embeddings
  alone kept an all-MiniLM-L6-v2 static export at 59 MB instead of 23. Dictionary match-tag tables stay fp32.
* The outlier rewrites are applied first here too (``outliers``): a static scale is one scale per tensor just
  as a dynamic one is, and a channel 10x larger than the rest costs static int8 the same levels
  (``tests/test_quantization.py`` measures it on planted outliers).

The calibration batches are encoded by the runtime's own code (:func:`calibration_feeds`), so they carry
the inputs a tagging call gives the graph: the same windows, padding, case classes and dictionary match tags.
Calibration text must never come from a test split (the export reads a corpus's train split only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..constants import INFERENCE_BATCH_SIZE

if TYPE_CHECKING:
    from ..model.encoding import Surroundings
    from ..model.model_config import TaggerConfig

#: A channel is an outlier when its largest magnitude exceeds this many times the median
#: channel's (on the default encoder the outliers are 7-15x; ordinary channels stay under 3x).
OUTLIER_FACTOR = 4.0
#: Random calibration batches: rows x tokens, this many of them.
CALIBRATION_SHAPE = (32, 48)
CALIBRATION_BATCHES = 8


@dataclass
class OutlierReport:
    """Which channels the rewrites moved, per FFN block (recorded in the export's config)."""

    split: dict[str, list[int]] = field(default_factory=dict)
    smoothed: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {
            "ffn_output_channels_fp32": sum(map(len, self.split.values())),
            "ffn_input_channels_smoothed": sum(map(len, self.smoothed.values())),
        }


@dataclass(frozen=True)
class _FfnBlock:
    """The fused feed-forward pattern: ``up`` (MatMul) -> ``gelu`` (BiasGelu) -> ``down`` (MatMul)."""

    up: object
    gelu: object
    down: object


def quantize_int8(
    source: Path,
    target: Path,
    *,
    per_channel: bool = True,
    reduce_range: bool = True,
    outliers: bool = True,
    scratch: Path | None = None,
) -> OutlierReport:
    """Write a dynamically int8-quantized copy of the fp32 graph ``source`` to ``target``.

    Args:
        outliers: Apply the outlier rewrites (module docstring) before quantizing.
        scratch: Folder for the rewritten fp32 graph (default: next to ``target``).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    report, keep_fp32 = OutlierReport(), []
    graph_path = source
    model = onnx.load(str(source))
    # The dictionary match-tag table (a few rows) stays fp32: int8 would save nothing and add error.
    dictionary_gathers = [n.name for n in model.graph.node if n.op_type == "Gather" and "dictionary_ids" in n.input]
    if outliers:
        report, keep_fp32 = rewrite_outliers(model)
        if keep_fp32 or report.smoothed:
            graph_path = (scratch or target.parent) / "outliers-rewritten.onnx"
            onnx.save(model, str(graph_path))
    try:
        quantize_dynamic(
            str(graph_path),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            nodes_to_exclude=keep_fp32 + dictionary_gathers,
            # lets the quantizer type the outputs of fused com.microsoft ops (shape inference cannot)
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        if graph_path != source:
            graph_path.unlink(missing_ok=True)
    return report


def quantize_int8_static(
    source: Path,
    target: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    per_channel: bool = True,
    reduce_range: bool = True,
    outliers: bool = True,
    scratch: Path | None = None,
) -> OutlierReport:
    """Write a statically int8-quantized (QDQ) copy of the fp32 graph ``source`` to ``target``.

    Quantized: the MatMuls with a weight matrix (:func:`static_matmuls`) and the embedding tables
    (:func:`embedding_gathers`); the outlier rewrites' fp32 side paths are left out.

    Args:
        feeds: Calibration batches, graph input name -> array (:func:`calibration_feeds`).
        per_channel, reduce_range: As for :func:`quantize_int8`.
        outliers: Apply the outlier rewrites (module docstring) before calibrating.
        scratch: Folder for the prepared fp32 graph (default: next to ``target``).

    Raises:
        ValueError: No calibration batch.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    if not feeds:
        raise ValueError("static int8 needs at least one calibration batch")
    model = onnx.load(str(source))
    report, keep_fp32 = rewrite_outliers(model) if outliers else (OutlierReport(), [])
    # The QDQ quantizer leaves alone every tensor whose type it cannot tell, and ONNX's shape inference does not
    # know ONNX Runtime's fused ops (BiasGelu, SkipLayerNormalization): the FFN output MatMuls would keep fp32
    # inputs (int8 weights only). Symbolic shape inference (onnxruntime.tools, with sympy, which torch brings)
    # types them.
    model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    prepared = (scratch or target.parent) / "static-prepared.onnx"
    onnx.save(model, str(prepared))
    try:
        quantize_static(
            str(prepared),
            str(target),
            CalibrationFeeds(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gather"],
            nodes_to_quantize=static_matmuls(model, exclude=keep_fp32) + embedding_gathers(model),
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # float MatMul outputs: ONNX Runtime then runs MatMulIntegerToFloat, with nothing to requantize
            extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]},
        )
    finally:
        prepared.unlink(missing_ok=True)
    return report


def static_matmuls(model, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the MatMuls static int8 quantizes: those with a weight matrix (an initializer), less ``exclude``.

    A product of two activations (attention scores and mixing) stays fp32: its ranges follow each sentence.
    """
    weights = {init.name for init in model.graph.initializer}
    skip = set(exclude)
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in weights and node.name and node.name not in skip
    ]


def embedding_gathers(model) -> list[str]:
    """Names of the Gathers that read rows of an embedding table (a 2-D float initializer), less the dictionary
    match-tag tables (a few rows, which int8 would not shrink and would only blur)."""
    from onnx import TensorProto

    tables = {
        init.name for init in model.graph.initializer if len(init.dims) == 2 and init.data_type == TensorProto.FLOAT
    }
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Gather" and node.input[0] in tables and "dictionary_ids" not in node.input and node.name
    ]


class CalibrationFeeds:
    """The calibration batches as ONNX Runtime's ``CalibrationDataReader`` hands them out (``get_next``).

    ``onnxruntime.quantization.CalibrationDataReader`` recognises any class with ``get_next`` as its own
    (``isinstance`` holds), so this one needs no onnxruntime import to be defined.
    """

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self.feeds = list(feeds)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or ``None`` after the last."""
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def __len__(self) -> int:
        return len(self.feeds)


class _RecordingSession:
    """Stands in for an ONNX Runtime session: keeps every feed and answers zero emissions of the right shape."""

    def __init__(self, classes: dict[str, int]) -> None:
        self.classes = classes
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feeds.append(feed)
        rows, width = feed["input_ids"].shape
        return [np.zeros((rows, width, self.classes[name]), dtype=np.float32) for name in outputs]


def calibration_feeds(
    config: TaggerConfig,
    tokenizer,
    words: Sequence[Sequence[str]],
    surroundings: Sequence[Surroundings] | None = None,
    dictionary=None,
    batch_size: int = INFERENCE_BATCH_SIZE,
) -> list[dict[str, np.ndarray]]:
    """The graph inputs that tagging ``words`` with an exported model feeds to ONNX Runtime, batch by batch.

    Why: calibration must see the inputs the graph sees at run time. Rather than encode the sentences again,
    this runs the runtime's own path (:func:`~mtbioner.runtime.inference.sentence_emissions` through
    :meth:`~mtbioner.runtime.onnx_backend.OnnxTagger.run`, which ``Tagger`` and ``evaluate`` use) on a session
    that records each feed: the same windows sorted into batches by length, padding, input names and dtypes,
    case classes, dictionary match tags and document context.

    Args:
        config, tokenizer, dictionary: What the exported folder's ``OnnxTagger`` loads (its config, tokenizer
            files and ``dictionary.json``).
        words: Sentences as words (a corpus's, or :meth:`~mtbioner.runtime.tagging.Tagger.split`'s of a text).
        surroundings: The words around each sentence, for models that read document context.
        batch_size: Windows per batch, as the runtime's default.
    """
    from .inference import sentence_emissions
    from .onnx_backend import OnnxTagger

    session = _RecordingSession({name: len(head.labels) for name, head in config.corpora.items()})
    outputs = {"outputs": {name: name for name in config.corpora}}
    recorder = OnnxTagger(session, config, tokenizer, outputs, dictionary)
    sentence_emissions(recorder, words, batch_size=batch_size, surroundings=surroundings)
    return session.feeds


def rewrite_outliers(model) -> tuple[OutlierReport, list[str]]:
    """Apply both rewrites to the fp32 ``onnx.ModelProto`` in place.

    Returns what moved and the side-path MatMuls that must stay fp32.
    """
    report = OutlierReport()
    blocks = _ffn_blocks(model.graph)
    if not blocks:
        return report, []
    probes = [b.gelu.output[0] for b in blocks] + [b.up.input[0] for b in blocks]
    absmax = _channel_absmax(model, probes)
    keep_fp32: list[str] = []
    for index, block in enumerate(blocks):
        name = f"ffn{index}"
        channels = _outlier_channels(absmax[block.gelu.output[0]])
        if channels.size:
            keep_fp32 += _split_down(model.graph, block, channels, name)
            report.split[name] = channels.tolist()
        x_max = absmax[block.up.input[0]]
        channels = _outlier_channels(x_max)
        if channels.size:
            _smooth_up(model.graph, block, channels, x_max, name)
            report.smoothed[name] = channels.tolist()
    return report, keep_fp32


def _ffn_blocks(graph) -> list[_FfnBlock]:
    """Every ``MatMul -> BiasGelu -> MatMul`` chain whose weights and bias are initializers."""
    weights = {init.name for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only(name: str, op_type: str):
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    blocks = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        gelu = only(node.output[0], "BiasGelu")
        down = only(gelu.output[0], "MatMul") if gelu is not None else None
        if gelu is None or down is None or gelu.input[1] not in weights or down.input[1] not in weights:
            continue
        blocks.append(_FfnBlock(node, gelu, down))
    return blocks


def _channel_absmax(model, tensors: list[str]) -> dict[str, np.ndarray]:
    """Largest magnitude per last-axis channel of ``tensors`` on random token ids."""
    import onnx
    import onnxruntime as ort

    from ..model.encoding import CASE_TYPES

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    vocab_size = _vocab_size(model)
    channels = _dictionary_channels(model)
    rng = np.random.default_rng(0)
    result: dict[str, np.ndarray] = {}
    for _ in range(CALIBRATION_BATCHES):
        ids = rng.integers(0, vocab_size, size=CALIBRATION_SHAPE, dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if any(i.name == "token_type_ids" for i in model.graph.input):  # case-feature models
            feed["token_type_ids"] = rng.integers(0, CASE_TYPES, size=CALIBRATION_SHAPE, dtype=np.int64)
        if channels:  # dictionary-feature models: channel t holds 0, 1 + 2t or 2 + 2t
            state = rng.integers(0, 3, size=(*CALIBRATION_SHAPE, channels), dtype=np.int64)
            feed["dictionary_ids"] = np.where(state == 0, 0, 2 * np.arange(channels) + state)
        for name, value in zip(tensors, session.run(tensors, feed), strict=True):
            channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            result[name] = np.maximum(result[name], channel_max) if name in result else channel_max
    return result


def _dictionary_channels(model) -> int:
    """Dictionary types of a dictionary-feature graph (the last axis of ``dictionary_ids``), else 0."""
    for value in model.graph.input:
        if value.name == "dictionary_ids":
            return int(value.type.tensor_type.shape.dim[2].dim_value)
    return 0


def _vocab_size(model) -> int:
    """Rows of the word-embedding table (the first input of the fused embedding, or the largest Gather table)."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "EmbedLayerNormalization" and node.input[2] in shapes:
            return int(shapes[node.input[2]][0])
    tables = [shapes[n.input[0]][0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in shapes]
    if tables:
        return int(max(tables))
    raise ValueError("cannot find the word-embedding table to draw calibration ids from")


def _threshold(channel_max: np.ndarray) -> float:
    """Magnitude above which a channel counts as an outlier (and to which smoothing scales it)."""
    return OUTLIER_FACTOR * float(np.median(channel_max))


def _outlier_channels(channel_max: np.ndarray) -> np.ndarray:
    return np.flatnonzero(channel_max > _threshold(channel_max))


def _initializer(graph, name: str):
    return next(init for init in graph.initializer if init.name == name)


def _replace(graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    _initializer(graph, name).CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))


def _split_down(graph, block: _FfnBlock, channels: np.ndarray, name: str) -> list[str]:
    """Move intermediate ``channels`` to an fp32 side path; returns its MatMul names."""
    from onnx import helper, numpy_helper

    w1 = numpy_helper.to_array(_initializer(graph, block.up.input[1])).copy()
    b1 = numpy_helper.to_array(_initializer(graph, block.gelu.input[1])).copy()
    w2 = numpy_helper.to_array(_initializer(graph, block.down.input[1])).copy()
    prefix = f"mtbioner_outliers_{name}"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(w1[:, channels]), f"{prefix}_w_up"),
            numpy_helper.from_array(np.ascontiguousarray(b1[channels]), f"{prefix}_b_up"),
            numpy_helper.from_array(np.ascontiguousarray(w2[channels, :]), f"{prefix}_w_down"),
        ]
    )
    # GELU(0) = 0: zeroed columns and bias make these channels exactly 0 in the int8 path.
    w1[:, channels], b1[channels], w2[channels, :] = 0, 0, 0
    _replace(graph, block.up.input[1], w1)
    _replace(graph, block.gelu.input[1], b1)
    _replace(graph, block.down.input[1], w2)
    output = block.down.output[0]
    block.down.output[0] = f"{prefix}_main"
    up, down = f"{prefix}_up", f"{prefix}_down"
    side = [
        helper.make_node("MatMul", [block.up.input[0], f"{prefix}_w_up"], [f"{prefix}_h"], name=up),
        helper.make_node("BiasGelu", [f"{prefix}_h", f"{prefix}_b_up"], [f"{prefix}_g"], domain="com.microsoft"),
        helper.make_node("MatMul", [f"{prefix}_g", f"{prefix}_w_down"], [f"{prefix}_y"], name=down),
        helper.make_node("Add", [f"{prefix}_main", f"{prefix}_y"], [output], name=f"{prefix}_add"),
    ]
    _insert(graph, list(graph.node).index(block.down) + 1, side)
    return [up, down]


def _smooth_up(graph, block: _FfnBlock, channels: np.ndarray, channel_max: np.ndarray, name: str) -> None:
    """Scale input ``channels`` down to the outlier threshold; the weight rows absorb the factor."""
    from onnx import helper, numpy_helper

    scale = np.ones_like(channel_max, dtype=np.float32)
    scale[channels] = channel_max[channels] / _threshold(channel_max)
    w1 = numpy_helper.to_array(_initializer(graph, block.up.input[1]))
    _replace(graph, block.up.input[1], w1 * scale[:, None])
    prefix = f"mtbioner_outliers_{name}_smooth"
    graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), f"{prefix}_inv_scale"))
    scaled = f"{prefix}_x"
    mul = helper.make_node("Mul", [block.up.input[0], f"{prefix}_inv_scale"], [scaled], name=f"{prefix}_mul")
    block.up.input[0] = scaled
    _insert(graph, list(graph.node).index(block.up), [mul])


def _insert(graph, position: int, nodes: list) -> None:
    """Insert ``nodes`` at ``position`` of the graph's (topologically ordered) node list."""
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
