"""Transformer layers with fewer attention heads than their config names: a distilled student's pruned layers.

A BERT config gives every layer ``num_attention_heads`` heads of ``hidden_size / num_attention_heads``
dimensions. A student that keeps only some heads of each layer (:mod:`mtbioner.learn.students`) keeps that
head size and narrows the query, key and value projections to ``heads * head_size`` outputs and the
attention output projection to as many inputs. The encoder config records the count under
:data:`KEPT_HEADS` (a key BERT's config stores and otherwise ignores), so that a saved folder rebuilds its
layers at that width before its weights load. Transformers 5 dropped ``prune_heads``; its attention
reshapes with ``-1`` heads, so narrowed projections are all a layer needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import MtbionerError

if TYPE_CHECKING:  # torch is imported where layers are built: the config helpers serve torch-free commands too
    from torch import nn

KEPT_HEADS = "kept_attention_heads"
"""Encoder-config key: attention heads every layer keeps (absent: all ``num_attention_heads``)."""


def kept_heads(encoder_config: Mapping[str, Any]) -> int | None:
    """The heads each layer of an encoder config keeps, or ``None`` when it keeps them all."""
    value = encoder_config.get(KEPT_HEADS)
    return None if value is None else int(value)


def head_count(encoder_config: Mapping[str, Any]) -> int | None:
    """Heads per layer as built: the kept count, else ``num_attention_heads`` (``None``: not a BERT config)."""
    value = kept_heads(encoder_config) or encoder_config.get("num_attention_heads")
    return None if value is None else int(value)


def attention_blocks(encoder: nn.Module) -> list[nn.Module]:
    """Every layer's attention block: ``.self`` holds ``query``, ``key`` and ``value``, ``.output.dense`` the
    projection back to the hidden size (BERT's layout)."""
    from torch import nn

    blocks = []
    for module in encoder.modules():
        inner, output = getattr(module, "self", None), getattr(getattr(module, "output", None), "dense", None)
        projections = [getattr(inner, name, None) for name in ("query", "key", "value")]
        if all(isinstance(p, nn.Linear) for p in projections) and isinstance(output, nn.Linear):
            blocks.append(module)
    if not blocks or not all(hasattr(block.self, "attention_head_size") for block in blocks):
        raise MtbionerError(
            f"{type(encoder).__name__}: no BERT-style self-attention (query, key, value and an output projection); "
            "keeping fewer attention heads needs a BERT-style encoder"
        )
    return blocks


def narrow_attention(encoder: nn.Module, heads: int) -> None:
    """Rebuild every layer's attention projections for ``heads`` heads of the same size (new, untrained weights:
    the caller loads or copies them)."""
    from torch import nn

    for block in attention_blocks(encoder):
        inner, output = block.self, block.output.dense
        width = heads * int(inner.attention_head_size)
        for name in ("query", "key", "value"):
            old = getattr(inner, name)
            setattr(inner, name, nn.Linear(old.in_features, width, bias=old.bias is not None))
        inner.num_attention_heads, inner.all_head_size = heads, width
        block.output.dense = nn.Linear(width, output.out_features, bias=output.bias is not None)
