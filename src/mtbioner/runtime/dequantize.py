"""A trainable torch model from an int8 export (``mtbioner export --quantize int8``), the shipped ones included.

Why: the shipped models are int8 ONNX graphs; their torch weights do not ship (the repository stays
small). Distillation (``mtbioner distill default``) and any further fine-tuning need torch weights to
copy. Every weight of the export can be read back: ONNX Runtime's dynamic quantization keeps int8
weights with one scale (and zero point) per output channel, so ``(q - zero_point) * scale`` is each
weight within half a quantization step. The result computes what the int8 graph computes with fp32
activations, which is closer to the fp32 model the export came from than the int8 graph itself is
(the int8 graph's error is mostly in the run-time quantization of activations).

What is undone, by walking the graph ``export`` writes (ONNX Runtime's fused BERT pattern with
``--fusions all``; ``--fusions light`` and ``--no-optimize`` leave the embeddings, attention and layer norms as
plain ops, read the same way by the scopes torch's exporter names them with):

* ``QEmbedLayerNormalization`` (all fusions): the uint8 embedding tables and LayerNorm of the embeddings; else
  each table's ``Gather`` of a quantized initializer;
* ``QAttention`` (all fusions): the fused query|key|value weight, split back into three ``nn.Linear``;
* each ``MatMulInteger``: its module is named by the scale product ONNX Runtime writes beside it
  (``/encoder/encoder/layer.0/attention/output/dense/MatMul_quant_scales_mul:0``);
* each ``LayerNormalization`` and ``SkipLayerNormalization``: gain and offset, named by the node's scope;
* the outlier rewrites of :mod:`mtbioner.runtime.quantization`: smoothed FFN input rows are divided by their
  factor again, and the intermediate channels moved to the fp32 side path go back into the FFN.

CRF heads' start, end and transition scores are not in the graph (decoding runs outside it); they come
back exactly from ``config.json``, where the export keeps them. Exports with case or dictionary features,
or without int8, are refused with a one-line error: distil or fine-tune from their torch folders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFormatError
from ..model.model import WEIGHTS_NAME, MultiTaskTagger
from .onnx_backend import read_onnx_config

logger = logging.getLogger(__name__)

QUANT_SUFFIX = "_quantized"
SCALES_SUFFIX = "/MatMul_quant_scales_mul:0"
OUTLIER_PREFIX = "mtbioner_outliers_"


def is_export(folder: str | Path) -> bool:
    """Whether ``folder`` holds an exported model (``model.onnx``) and no torch weights."""
    return (Path(folder) / "model.onnx").is_file() and not (Path(folder) / WEIGHTS_NAME).is_file()


def tagger_from_int8(folder: str | Path) -> MultiTaskTagger:
    """The torch :class:`MultiTaskTagger` whose weights are the int8 export's, dequantized.

    Raises:
        ModelFormatError: Not an int8 export, or one with parts this reader does not undo.
    """
    import onnx
    from transformers import AutoTokenizer

    folder = Path(folder)
    config, info = read_onnx_config(folder)
    unsupported = [
        what
        for what, present in (
            ("dynamic int8 weights (not int8-static)", info.get("quantize") == "int8-static"),
            ("int8 weights", info.get("quantize") not in ("int8", "int8-static")),
            ("no case features", config.case_features),
            ("no dictionary features", config.dictionary_features),
        )
        if present
    ]
    if unsupported:
        raise ModelFormatError(
            f"{folder}: torch weights can be read back only from int8 exports with {', '.join(unsupported)}; "
            "use the torch model folder it was exported from"
        )
    graph = onnx.load(str(folder / info.get("file", "model.onnx"))).graph
    model = MultiTaskTagger(config, tokenizer=AutoTokenizer.from_pretrained(str(folder)))
    expected = model.state_dict()
    state = _GraphWeights(graph, folder, list(expected)).state_dict()
    state.update(_crf_scores(model, info.get("crf", {})))
    missing = [k for k in expected if k not in state and ".pooler." not in k and not k.endswith("position_ids")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelFormatError(
            f"{folder}/model.onnx: weights do not match config.json "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ModelFormatError(f"{folder}/model.onnx: {key} has shape {list(value.shape)}, "
                                   f"config.json says {list(expected[key].shape)}")  # fmt: skip
    model.load_state_dict(state, strict=False)  # the pooler is unused and not exported
    model.eval()
    logger.info("%s: int8 weights read back into a torch model", folder)
    return model


def _crf_scores(model: MultiTaskTagger, crf: dict[str, dict[str, list]]) -> dict[str, torch.Tensor]:
    """State-dict entries of the CRF heads' start, end and transition scores kept in ``config.json``."""
    prefix = {module: name for name, module in model.named_modules()}
    state = {}
    for corpus in model.corpora:
        head = model.head(corpus)
        if head.kind != "crf":
            continue
        if corpus not in crf:
            raise ModelFormatError(f"config.json: the CRF head {corpus!r} has no scores under onnx.crf")
        for key in ("start", "end", "transitions"):
            state[f"{prefix[head]}.{key}"] = torch.tensor(crf[corpus][key], dtype=torch.float32)
    return state


class _GraphWeights:
    """Reads the int8 graph's initializers back into torch state-dict entries."""

    def __init__(self, graph, folder: Path, keys: list[str]) -> None:
        from onnx import numpy_helper

        self.folder, self.keys = folder, keys
        self.values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.nodes = list(graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def state_dict(self) -> dict[str, torch.Tensor]:
        # Read by position in the fused nodes, not by initializer name: the exporter merges equal
        # initializers (a fresh model's LayerNorms share one), so names are not one per parameter.
        state = dict(self.embeddings())
        state.update(dict(self.attention()))
        state.update(dict(self.biases_and_norms()))
        weights = dict(self.matmuls())  # graph layout [in, out]
        self.undo_outliers(weights, state)
        state.update({self.key(module, "weight"): w.T for module, w in weights.items()})
        return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}

    def value(self, name: str) -> np.ndarray:
        """An fp32 initializer, or the output of a ``DequantizeLinear`` of initializers (through the
        ``Identity`` nodes an unoptimized graph keeps for initializers that torch's exporter merged)."""
        if name in self.values:
            return self.values[name].astype(np.float32)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Identity":
            return self.value(node.input[0])
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in self.values:
            raise ModelFormatError(f"{self.folder}/model.onnx: {name} is not a stored weight")
        zero = self.values[node.input[2]] if len(node.input) > 2 and node.input[2] else 0
        return _dequantize(self.values[node.input[0]], zero, self.values[node.input[1]])

    def stored(self, name: str) -> bool:
        """Whether ``name`` is an initializer, directly or through ``Identity`` nodes."""
        while name not in self.values:
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity":
                return False
            name = node.input[0]
        return True

    def dequantized(self, name: str) -> np.ndarray:
        """``(q - zero_point) * scale``, the scale per last-axis channel or for the whole tensor."""
        base = name.removesuffix(QUANT_SUFFIX)
        return _dequantize(self.values[name], self.values[f"{base}_zero_point"], self.values[f"{base}_scale"])

    def embeddings(self) -> Iterator[tuple[str, np.ndarray]]:
        """The tables and LayerNorm of ``QEmbedLayerNormalization``: tensors at inputs 2-6, scales at
        8-12, zero points at 13-17 (ONNX Runtime's contrib-op signature); in an unfused graph, the tables
        its ``Gather`` nodes look up (the LayerNorm is then a ``LayerNormalization`` node)."""
        nodes = [n for n in self.nodes if n.op_type == "QEmbedLayerNormalization"]
        if not nodes:
            yield from self.gathered_tables()
            return
        if len(nodes) != 1:
            raise ModelFormatError(f"{self.folder}/model.onnx: not an int8 export of a BERT-style encoder")
        node = nodes[0]
        parts = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                 "LayerNorm.weight", "LayerNorm.bias")  # fmt: skip
        for offset, part in enumerate(parts):
            q, scale, zero = (self.values[node.input[first + offset]] for first in (2, 8, 13))
            module, parameter = part.rsplit(".", 1)
            yield self.key(f"embeddings.{module}", parameter), _dequantize(q, zero, scale)

    def gathered_tables(self) -> Iterator[tuple[str, np.ndarray]]:
        """Embedding tables of an unfused graph: ``/encoder/embeddings/word_embeddings/Gather`` of an int8
        table (dequantized after the lookup) or of an fp32 one."""
        tables = 0
        for node in self.nodes:
            if node.op_type != "Gather" or node.input[0] not in self.values:
                continue
            name = node.input[0]
            if name.endswith(QUANT_SUFFIX):
                table = self.dequantized(name)
            elif self.values[name].ndim == 2:
                table = self.values[name].astype(np.float32)
            else:
                continue  # a shape or index constant
            key = self.find(_module(node.name.rsplit("/", 1)[0]), "weight")
            if key is None or ".embeddings." not in f".{key}":
                raise ModelFormatError(f"{self.folder}/model.onnx: cannot tell which table {name} is")
            tables += 1
            yield key, table
        if not tables:
            raise ModelFormatError(f"{self.folder}/model.onnx: not an int8 export of a BERT-style encoder")

    def biases_and_norms(self) -> Iterator[tuple[str, np.ndarray]]:
        """LayerNorm gains and offsets and the biases the fused nodes carry, each named by its node's
        activations (``/encoder/encoder/layer.0/attention/output/dense/MatMul_output_0``)."""
        for node in self.nodes:
            if node.op_type == "SkipLayerNormalization":  # input, skip, gamma, beta, bias of the dense
                norm = _module(node.output[0].rsplit("/", 1)[0])
                yield self.key(norm, "weight"), self.value(node.input[2])
                yield self.key(norm, "bias"), self.value(node.input[3])
                if len(node.input) > 4 and node.input[4]:
                    yield self.key(_module(node.input[0].rsplit("/", 1)[0]), "bias"), self.value(node.input[4])
            elif node.op_type == "LayerNormalization":  # input, gamma, beta
                norm = _module(node.output[0].rsplit("/", 1)[0])  # .../LayerNorm/LayerNormalization_output_0
                yield self.key(norm, "weight"), self.value(node.input[1])
                yield self.key(norm, "bias"), self.value(node.input[2])
            elif node.op_type == "BiasGelu" and not node.input[1].startswith(OUTLIER_PREFIX):
                yield self.key(_module(node.input[0].rsplit("/", 1)[0]), "bias"), self.value(node.input[1])
            elif node.op_type == "Add" and any(self.stored(name) for name in node.input):
                bias, activation = sorted(node.input, key=lambda name: not self.stored(name))
                # unfused graphs also add constants (GELU's 1, position offsets): only a module's bias counts
                key = self.find(_module(activation.rsplit("/", 1)[0]), "bias")
                if key is not None and self.value(bias).ndim == 1:
                    yield key, self.value(bias)

    def key(self, module: str, parameter: str) -> str:
        """The state-dict key of ``module``'s parameter, the module as its ONNX scope names it."""
        key = self.find(module, parameter)
        if key is None:
            raise ModelFormatError(f"{self.folder}/model.onnx: cannot tell which weight {module}.{parameter} is")
        return key

    def find(self, module: str, parameter: str) -> str | None:
        """:meth:`key`, or ``None`` where no single state-dict key ends with ``module.parameter``."""
        exact = f"{module}.{parameter}"
        if exact in self.keys:
            return exact
        found = [k for k in self.keys if k.endswith(f".{exact}")]
        return found[0] if len(found) == 1 else None

    def attention(self) -> Iterator[tuple[str, np.ndarray]]:
        """Query, key and value weights and biases of every fused ``QAttention``."""
        for node in self.nodes:
            if node.op_type != "QAttention":
                continue
            weight, bias = self.dequantized(node.input[1]), self.values[node.input[2]]  # [in, 3 * out]
            # the output is named after the self-attention module: /encoder/encoder/layer.0/attention/self/...
            module = _module(node.output[0].rsplit("/", 1)[0])
            parts = zip(("query", "key", "value"), np.split(weight, 3, axis=1), np.split(bias, 3), strict=True)
            for part, w, b in parts:
                yield self.key(f"{module}.{part}", "weight"), w.T
                yield self.key(f"{module}.{part}", "bias"), b

    def matmuls(self) -> Iterator[tuple[str, np.ndarray]]:
        """Module name and ``[in, out]`` weight of every ``MatMulInteger``."""
        for node in self.nodes:
            if node.op_type == "MatMulInteger" and node.input[1] in self.values:
                yield self.module_of(node.input[1]), self.dequantized(node.input[1])

    def module_of(self, quantized: str) -> str:
        scale = quantized.removesuffix(QUANT_SUFFIX) + "_scale"
        for node in self.consumers.get(scale, []):
            if node.op_type == "Mul" and node.output[0].endswith(SCALES_SUFFIX):
                return _module(node.output[0].removesuffix(SCALES_SUFFIX))
        raise ModelFormatError(f"{self.folder}/model.onnx: cannot tell which module weight {quantized} belongs to")

    def undo_outliers(self, weights: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """Undo :func:`mtbioner.runtime.quantization.rewrite_outliers` (split first, then smoothing, as it did)."""
        for name in [n for n in self.values if n.startswith(OUTLIER_PREFIX) and n.endswith("_smooth_inv_scale")]:
            up = self.module_fed_by(self.only_consumer(name, "Mul").output[0])
            weights[up] = weights[up] * self.values[name][:, None]  # rows had been multiplied by 1 / inv_scale
        for name in [n for n in self.values if n.startswith(OUTLIER_PREFIX) and n.endswith("_w_up")]:
            prefix = name.removesuffix("_w_up")
            side = self.only_consumer(name, "MatMul")
            up = self.module_fed_by(side.input[0])
            add = self.only_consumer(f"{prefix}_y", "Add")
            down = _module(add.output[0].rsplit("/", 1)[0])
            channels = np.flatnonzero(~weights[down].any(axis=1))  # zeroed rows of the int8 down weight
            if channels.size != self.values[name].shape[1]:
                raise ModelFormatError(f"{self.folder}/model.onnx: cannot find the channels of {prefix}")
            weights[up][:, channels] = self.values[name]
            weights[down][channels, :] = self.values[f"{prefix}_w_down"]
            bias = state[self.key(up, "bias")].copy()
            bias[channels] = self.values[f"{prefix}_b_up"]
            state[self.key(up, "bias")] = bias

    def only_consumer(self, name: str, op_type: str):
        found = [n for n in self.consumers.get(name, []) if n.op_type == op_type]
        if len(found) != 1:
            raise ModelFormatError(f"{self.folder}/model.onnx: unexpected graph around {name}")
        return found[0]

    def module_fed_by(self, activation: str) -> str:
        """The module of the int8 MatMul that reads ``activation`` (through its run-time quantization)."""
        for node in self.consumers.get(activation, []):
            if node.op_type == "DynamicQuantizeLinear":
                for matmul in self.consumers.get(node.output[0], []):
                    if matmul.op_type == "MatMulInteger":
                        return self.module_of(matmul.input[1])
            if node.op_type == "Mul" and node.input[1].endswith("_smooth_inv_scale"):
                return self.module_fed_by(node.output[0])
        raise ModelFormatError(f"{self.folder}/model.onnx: no int8 MatMul reads {activation}")


def _dequantize(q: np.ndarray, zero, scale: np.ndarray) -> np.ndarray:
    """``(q - zero_point) * scale`` in fp32; the scale per last-axis channel or one for the whole tensor."""
    return (np.asarray(q, dtype=np.float32) - np.asarray(zero, dtype=np.float32)) * np.asarray(scale, np.float32)


def _module(scope: str) -> str:
    """``/encoder/encoder/layer.0/attention/self`` -> ``encoder.encoder.layer.0.attention.self``."""
    return scope.strip("/").replace("/", ".")
