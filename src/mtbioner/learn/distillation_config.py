"""The settings of a distillation (``mtbioner distill``), checked when made: a bad value is one error line."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MtbionerError


@dataclass
class DistillConfig:
    """Distillation settings.

    ``layers``: a count N (N teacher layers evenly spaced, the last always kept: every other layer
    for half the depth), an explicit list of teacher layer indices (0-based, increasing), or
    ``None`` for half the teacher's layers (rounded up). ``temperature`` softens both
    distributions in the KL term; ``alpha`` weighs the gold loss against it. ``splits`` are the
    corpus splits whose text is distilled on (train and/or devel, never test).

    ``hidden_weight`` and ``attention_weight`` (0: off) weigh the hidden-state and attention terms of the
    loss (:mod:`mtbioner.learn.distillation_loss`); ``attention_layers`` is ``"last"`` (MiniLM's choice: the
    last student layer against its teacher layer) or ``"all"`` (every student layer). ``intermediate_size``
    narrows every student layer's feed-forward block to that many of the teacher's neurons
    (:mod:`mtbioner.learn.students`) and ``attention_heads`` its attention to that many of the teacher's heads;
    ``None`` keeps them all (the attention term then compares each student head with the teacher head it was
    copied from).
    ``mixed_precision`` is ``"no"`` or ``"bf16"`` (autocast, float32 losses).
    """

    layers: int | list[int] | None = None
    temperature: float = 2.0
    alpha: float = 0.5
    lr: float = 1e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    batch_size: int = 32
    epochs: int = 3
    seed: int = 42
    save_every: int = 500
    max_grad_norm: float = 1.0
    splits: list[str] = field(default_factory=lambda: ["train"])
    limit: int | None = None
    eval_batch_size: int = 64
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    attention_layers: str = "last"
    intermediate_size: int | None = None
    attention_heads: int | None = None
    mixed_precision: str = "no"

    def __post_init__(self) -> None:
        checks = [
            (self.hidden_weight >= 0, f"hidden weight must be 0 (off) or more, not {self.hidden_weight}"),
            (self.attention_weight >= 0, f"attention weight must be 0 (off) or more, not {self.attention_weight}"),
            (
                self.attention_layers in ("last", "all"),
                f"attention layers must be 'last' or 'all', not {self.attention_layers!r}",
            ),
            (
                self.mixed_precision in ("no", "bf16"),
                f"mixed precision must be 'no' or 'bf16', not {self.mixed_precision!r}",
            ),
            (self.temperature > 0, f"temperature must be positive, not {self.temperature}"),
            (self.alpha >= 0, f"alpha must be 0 or more, not {self.alpha}"),
            (self.lr > 0, f"lr must be positive, not {self.lr}"),
            (0 <= self.warmup <= 1, f"warmup is a proportion of the steps (0..1), not {self.warmup}"),
            (self.batch_size >= 1, f"batch size must be at least 1, not {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be at least 1, not {self.epochs}"),
            (self.save_every >= 1, f"save-every must be at least 1 step, not {self.save_every}"),
            (self.limit is None or self.limit >= 1, f"limit must be at least 1, not {self.limit}"),
            (
                self.intermediate_size is None or self.intermediate_size >= 1,
                f"intermediate size must be at least 1 neuron, not {self.intermediate_size}",
            ),
            (
                self.attention_heads is None or self.attention_heads >= 1,
                f"attention heads must be at least 1, not {self.attention_heads}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise MtbionerError(message)
        if "test" in self.splits:
            raise MtbionerError("distillation never reads a corpus' test split: use train and/or devel")
        bad = [s for s in self.splits if s not in ("train", "devel")]
        if bad or not self.splits:
            raise MtbionerError(f"splits to distill on must be train and/or devel, not {self.splits}")
