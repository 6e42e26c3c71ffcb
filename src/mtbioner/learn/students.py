"""The student of a distillation (:mod:`mtbioner.learn.distillation`): the teacher with fewer transformer layers,
and optionally narrower feed-forward layers, its weights copied from the teacher's.

Copying rather than initialising at random is why the student starts close to the teacher: a student of
every layer computes exactly what the teacher computes. The same reason rules out a smaller hidden size,
which would leave no weight to copy as it is.

Narrower feed-forward layers (``intermediate_size``) keep, in every kept layer, the feed-forward neurons
of largest importance: for neuron ``j`` of a layer computing ``W_out @ act(W_in @ x + b_in)``, the product
``||(W_in[j, :], b_in[j])||_2 * ||W_out[:, j]||_2``. Its pre-activation is at most the first norm times
``||(x, 1)||`` (Cauchy-Schwarz), and what it adds to the layer's output is its activation times the
second, so the product bounds how far dropping the neuron can move the output on inputs of a given size.
The rule reads the weights alone: no pass over text, the same choice on every machine and after a
resume, and a neuron with a large input row but a near-zero output column (or the reverse), which moves
nothing, ranks low. A data-driven importance (activations or gradients on text) could rank better, at
the price of a pass over the text before the student exists.

Fewer attention heads (``attention_heads``) keep, in every kept layer, the heads of largest importance by the
same kind of bound: head ``h`` adds ``O_h @ sum_j a_j (V_h @ (x_j, 1))`` to the layer's output (``V_h``: its
rows of the value projection with their bias, ``O_h``: its columns of the output projection, ``a``: a
row of attention weights, which sum to 1), so ``||O_h @ V_h||_F`` times the largest ``||(x_j, 1)||`` bounds
what dropping it can move. Where a head attends (its query and key rows) does not change that bound.
Heads keep their size; the projections narrow (:mod:`mtbioner.model.attention_heads`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from ..errors import MtbionerError
from ..model.attention_heads import KEPT_HEADS, attention_blocks, head_count
from ..model.model import HeadConfig, MultiTaskTagger, TaggerConfig

FFN_IN = "intermediate.dense"
"""The feed-forward input projection of a BERT layer (hidden size to intermediate size)."""
FFN_OUT = "output.dense"
"""The feed-forward output projection of a BERT layer (intermediate size to hidden size)."""


def choose_layers(teacher_layers: int, layers: int | Sequence[int] | None) -> list[int]:
    """Teacher layer indices the student keeps.

    >>> choose_layers(6, 3), choose_layers(6, 2), choose_layers(12, 4), choose_layers(6, None)
    ([1, 3, 5], [2, 5], [2, 5, 8, 11], [1, 3, 5])
    """
    n = teacher_layers
    if layers is None:
        layers = (n + 1) // 2
    if isinstance(layers, int):
        if not 1 <= layers <= n:
            raise MtbionerError(f"--layers {layers} is out of range: the teacher has {n} layers (1 to {n})")
        return [(i + 1) * n // layers - 1 for i in range(layers)]
    chosen = [int(i) for i in layers]
    if not chosen:
        raise MtbionerError("--layers lists no layer")
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise MtbionerError(f"--layers {bad} out of range: the teacher's layers are 0 to {n - 1}")
    if any(b <= a for a, b in zip(chosen, chosen[1:], strict=False)):
        raise MtbionerError(f"--layers {chosen}: list teacher layers in increasing order, each once")
    return chosen


def parse_layers(value: str | None) -> int | list[int] | None:
    """``"3"`` (a count) or ``"0,2,5"`` (teacher layer indices) from the command line."""
    if value is None or not value.strip():
        return None
    try:
        if "," in value:
            return [int(part) for part in value.split(",") if part.strip()]
        return int(value)
    except ValueError:
        raise MtbionerError(f"--layers {value!r}: give a count (3) or teacher layer indices (1,3,5)") from None


def check_intermediate_size(size: int | None, teacher_size: object) -> None:
    """Refuse a feed-forward width the teacher's layers cannot be cut to (checked before any text is read)."""
    if size is None:
        return
    if size < 1:
        raise MtbionerError(f"--intermediate-size must be at least 1, not {size}")
    if not isinstance(teacher_size, int):
        raise MtbionerError("the teacher's encoder config has no intermediate_size: --intermediate-size needs BERT")
    if size > teacher_size:
        raise MtbionerError(
            f"--intermediate-size {size} is larger than the teacher's feed-forward layers ({teacher_size}): "
            f"a student keeps 1 to {teacher_size} of their neurons"
        )


def check_attention_heads(heads: int | None, teacher_heads: object) -> None:
    """Refuse a head count the teacher's layers cannot be cut to (checked before any text is read)."""
    if heads is None:
        return
    if heads < 1:
        raise MtbionerError(f"--attention-heads must be at least 1, not {heads}")
    if not isinstance(teacher_heads, int):
        raise MtbionerError("the teacher's encoder config has no num_attention_heads: --attention-heads needs BERT")
    if heads > teacher_heads:
        raise MtbionerError(
            f"--attention-heads {heads} is more than the teacher's layers have ({teacher_heads}): "
            f"a student keeps 1 to {teacher_heads} of their heads"
        )


def teacher_depth(model: MultiTaskTagger) -> int:
    return int(model.encoder.config.num_hidden_layers)


def make_student(
    teacher: MultiTaskTagger,
    layers: int | Sequence[int] | None = None,
    intermediate_size: int | None = None,
    attention_heads: int | None = None,
) -> MultiTaskTagger:
    """A copy of ``teacher`` keeping only the chosen transformer layers (and, with ``intermediate_size``,
    only that many feed-forward neurons in each: :func:`top_neurons`; with ``attention_heads``, only that
    many attention heads in each: :func:`top_heads`).

    Embeddings (token-type rows of case-feature models too), the kept layers in order and every
    head (with CRF start/end/transition scores) are copied exactly; the config's layer count (and
    feed-forward width) is updated so that ``MultiTaskTagger.from_pretrained`` rebuilds the student from its folder.
    """
    depth = teacher_depth(teacher)
    chosen = choose_layers(depth, layers)
    container = _layer_container(teacher.encoder, depth)
    layer_list = teacher.get_submodule(f"encoder.{container}")
    kept = {i: top_neurons(layer_list[i], intermediate_size) for i in chosen} if intermediate_size else {}
    heads = {i: top_heads(layer_list[i], attention_heads) for i in chosen} if attention_heads else {}
    student = MultiTaskTagger(
        _student_config(teacher, depth, chosen, intermediate_size, attention_heads, heads),
        tokenizer=teacher.tokenizer,
        dictionary=teacher.dictionary,
    )
    source = teacher.state_dict()
    prefix = f"encoder.{container}."
    weights = {}
    for name in student.state_dict():
        origin, value = name, None
        if name.startswith(prefix):
            index, rest = name[len(prefix) :].split(".", 1)
            layer = chosen[int(index)]
            origin = f"{prefix}{layer}.{rest}"
            if kept:
                value = _narrowed(rest, source[origin], kept[layer])
            if heads and value is None:
                value = _headed(rest, source[origin], head_rows(layer_list[layer], heads[layer]))
        weights[name] = (source[origin] if value is None else value).detach().clone()
    student.load_state_dict(weights, strict=True)
    return student.to(next(teacher.parameters()).device)


def _student_config(
    teacher: MultiTaskTagger,
    depth: int,
    chosen: list[int],
    intermediate_size: int | None,
    attention_heads: int | None = None,
    heads: dict[int, torch.Tensor] | None = None,
) -> TaggerConfig:
    """The teacher's config with the student's layer count (feed-forward width, attention heads), and where it
    came from (for heads: which of the teacher's each student layer kept, which the attention loss pairs)."""
    encoder_config = dict(teacher.config.encoder_config)
    key = "num_hidden_layers" if "num_hidden_layers" in encoder_config else "n_layers"
    if key not in encoder_config:
        raise MtbionerError("the teacher's encoder config has no num_hidden_layers: cannot make a student")
    encoder_config[key] = len(chosen)
    origin: dict[str, object] = {"teacher_layers": depth, "layers": chosen}
    if intermediate_size is not None:
        check_intermediate_size(intermediate_size, encoder_config.get("intermediate_size"))
        origin["teacher_intermediate_size"] = encoder_config["intermediate_size"]
        origin["intermediate_size"] = intermediate_size
        encoder_config["intermediate_size"] = intermediate_size
    if attention_heads is not None:
        check_attention_heads(attention_heads, head_count(encoder_config))
        origin["teacher_attention_heads"] = head_count(encoder_config)
        origin["attention_heads"] = attention_heads
        origin["heads"] = [heads[layer].tolist() for layer in chosen] if heads else []
        encoder_config[KEPT_HEADS] = attention_heads
    return replace(
        teacher.config,
        encoder_config=encoder_config,
        corpora={
            name: HeadConfig(list(h.labels), h.head, h.loss_weight) for name, h in teacher.config.corpora.items()
        },
        extra={**teacher.config.extra, "distillation": origin},
    )


def _ffn(layer: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """The feed-forward input and output projections of a BERT layer."""
    try:
        inner, outer = layer.get_submodule(FFN_IN), layer.get_submodule(FFN_OUT)
    except AttributeError:
        inner = outer = None
    if not (isinstance(inner, nn.Linear) and isinstance(outer, nn.Linear) and inner.bias is not None):
        raise MtbionerError(
            f"{type(layer).__name__}: no {FFN_IN} / {FFN_OUT} feed-forward layers; "
            "--intermediate-size needs a BERT-style encoder"
        )
    return inner, outer


def neuron_importance(layer: nn.Module) -> torch.Tensor:
    """``[intermediate]``: the importance of every feed-forward neuron of a layer (module docstring)."""
    inner, outer = _ffn(layer)
    with torch.no_grad():
        rows = torch.cat([inner.weight, inner.bias[:, None]], dim=1).float().norm(dim=1)
        return rows * outer.weight.float().norm(dim=0)


def top_neurons(layer: nn.Module, size: int) -> torch.Tensor:
    """Indices (increasing) of the ``size`` most important feed-forward neurons; ties go to the lower index."""
    order = torch.argsort(neuron_importance(layer), descending=True, stable=True)
    return order[:size].sort().values


def _attention(layer: nn.Module) -> nn.Module:
    """A layer's attention block (``.self``: query, key, value; ``.output.dense``), BERT's layout."""
    [block] = attention_blocks(layer)
    return block


def head_importance(layer: nn.Module) -> torch.Tensor:
    """``[heads]``: the importance of every attention head of a layer (module docstring)."""
    block = _attention(layer)
    inner, output = block.self, block.output.dense
    size = int(inner.attention_head_size)
    with torch.no_grad():
        value = torch.cat([inner.value.weight, inner.value.bias[:, None]], dim=1).float()
        out = output.weight.float()
        count = value.shape[0] // size
        return torch.stack(
            [
                torch.linalg.matrix_norm(out[:, h * size : (h + 1) * size] @ value[h * size : (h + 1) * size])
                for h in range(count)
            ]
        )


def top_heads(layer: nn.Module, heads: int) -> torch.Tensor:
    """Indices (increasing) of the ``heads`` most important attention heads; ties go to the lower index."""
    order = torch.argsort(head_importance(layer), descending=True, stable=True)
    return order[:heads].sort().values


def head_rows(layer: nn.Module, kept: torch.Tensor) -> torch.Tensor:
    """The query/key/value rows (and output-projection columns) of the kept heads, in order."""
    size = int(_attention(layer).self.attention_head_size)
    return torch.cat([torch.arange(h * size, (h + 1) * size) for h in kept.tolist()])


ATTENTION_IN = tuple(f"attention.self.{name}" for name in ("query", "key", "value"))
ATTENTION_OUT = "attention.output.dense"


def _headed(rest: str, value: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
    """A kept layer's attention weight cut to its kept heads' rows/columns; None if not an attention projection."""
    if rest.rsplit(".", 1)[0] in ATTENTION_IN:
        return value[rows.to(value.device)]
    if rest == f"{ATTENTION_OUT}.weight":
        return value[:, rows.to(value.device)]
    return None


def _narrowed(rest: str, value: torch.Tensor, kept: torch.Tensor) -> torch.Tensor | None:
    """A kept layer's weight cut to its kept neurons (``rest``: the name inside the layer); None if not an FFN one."""
    if rest in (f"{FFN_IN}.weight", f"{FFN_IN}.bias"):
        return value[kept.to(value.device)]
    if rest == f"{FFN_OUT}.weight":
        return value[:, kept.to(value.device)]
    return None


def _layer_container(encoder: nn.Module, depth: int) -> str:
    """Dotted name of the encoder's list of transformer layers (``encoder.layer`` in BERT)."""
    found = [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == depth
        and name.rsplit(".", 1)[-1] in ("layer", "layers")
    ]
    if len(found) != 1:
        raise MtbionerError(
            f"{type(encoder).__name__}: cannot find its {depth} transformer layers; "
            "distillation needs a BERT-style encoder"
        )
    return found[0]
