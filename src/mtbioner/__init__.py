"""mtbioner: multi-task biomedical named-entity recognition (MT-BioNER).

The main entry points are imported lazily, so that ``import mtbioner`` (and the CLI's start)
does not pay for torch and transformers until they are used::

    from mtbioner import Tagger, MultiTaskTagger
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .constants import INFERENCE_BATCH_SIZE, __version__

_EXPORTS = {
    "MultiTaskTagger": "mtbioner.model.model",
    "TaggerConfig": "mtbioner.model.model_config",
    "Tagger": "mtbioner.runtime.tagging",
    "Entity": "mtbioner.data.entity",
    "TrainingConfig": "mtbioner.learn.training",
    "train": "mtbioner.learn.training",
    "read_corpus": "mtbioner.data.corpus",
    "evaluate_corpus": "mtbioner.runtime.evaluation",
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
    from .data.corpus import read_corpus
    from .data.entity import Entity
    from .errors import MtbionerError
    from .learn.training import TrainingConfig, train
    from .model.model import MultiTaskTagger
    from .model.model_config import TaggerConfig
    from .runtime.evaluation import evaluate_corpus
    from .runtime.tagging import Tagger


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtbioner' has no attribute {name!r}")
