"""mtbioner: multi-task biomedical named-entity recognition (MT-BioNER).

The main entry points are imported lazily, so that ``import mtbioner`` (and the CLI's start)
does not pay for torch and transformers until they are used::

    from mtbioner import Tagger, MultiTaskTagger
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .constants import INFERENCE_BATCH_SIZE, __version__

_EXPORTS = {
    "MultiTaskTagger": "mtbioner.model",
    "TaggerConfig": "mtbioner.model_config",
    "Tagger": "mtbioner.tagging",
    "Entity": "mtbioner.entity",
    "TrainingConfig": "mtbioner.training",
    "train": "mtbioner.training",
    "read_corpus": "mtbioner.corpus",
    "evaluate_corpus": "mtbioner.evaluation",
    "MtbionerError": "mtbioner.errors",
}
__all__ = [
    "__version__",
    "INFERENCE_BATCH_SIZE",
    "MultiTaskTagger",
    "TaggerConfig",
    "Tagger",
    "Entity",
    "TrainingConfig",
    "train",
    "read_corpus",
    "evaluate_corpus",
    "MtbionerError",
]

if TYPE_CHECKING:
    from .corpus import read_corpus
    from .entity import Entity
    from .errors import MtbionerError
    from .evaluation import evaluate_corpus
    from .model import MultiTaskTagger
    from .model_config import TaggerConfig
    from .tagging import Tagger
    from .training import TrainingConfig, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtbioner' has no attribute {name!r}")
