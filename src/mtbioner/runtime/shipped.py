"""Models that ship inside the package, and turning what a user names into a model folder.

A shipped model is an exported (ONNX, int8) folder under ``mtbioner/models/NAME/``, installed with
the package, so that ``mtbioner tag "text"``, ``mtbioner serve`` and ``Tagger.load()`` work without
training anything. ``default`` is the most accurate one; each folder's ``MODEL_CARD.md`` says how
it was trained and what it scores.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelFormatError

SHIPPED_DIR = Path(__file__).parent.parent / "models"  # src/mtbioner/models: package data at the root
DEFAULT_MODEL = "default"


def shipped_models() -> dict[str, Path]:
    """Name to folder of every model installed with the package (folders holding a ``config.json``)."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED_DIR.iterdir()) if (p / "config.json").is_file()}


def is_model_reference(value: str | Path) -> bool:
    """Whether ``value`` names a model: an existing folder, or a shipped model's name.

    The command line uses this to tell ``tag MODEL TEXT`` from ``tag TEXT``; a folder that is not a
    model then fails to load with a message naming it, rather than being tagged as text.
    """
    try:
        is_folder = Path(value).expanduser().is_dir()
    except (OSError, ValueError):  # a text too long to be a path, or holding a NUL: not a model
        is_folder = False
    return is_folder or str(value) in shipped_models()


def resolve_model(model: str | Path | None = None) -> Path:
    """The folder of ``model``: an existing folder as given, else a shipped model's name; ``None`` is the default.

    Raises:
        ModelFormatError: Neither a folder nor a shipped name; the message lists the shipped models.
    """
    shipped = shipped_models()
    names = ", ".join(shipped) or "none in this installation"
    if model is None:
        if DEFAULT_MODEL not in shipped:
            raise ModelFormatError(
                f"no model named, and no shipped {DEFAULT_MODEL!r} model is installed (shipped: {names}); "
                "name a model folder"
            )
        return shipped[DEFAULT_MODEL]
    path = Path(model).expanduser()
    try:
        if path.exists():
            return path
    except (OSError, ValueError) as exc:  # too long for a path, or a NUL in it
        raise ModelFormatError(f"{str(model)[:80]!r}...: not a model folder or a shipped model's name") from exc
    if str(model) in shipped:
        return shipped[str(model)]
    if any(sep in str(model) for sep in ("/", "\\")):
        return path  # a path: load_backend says it does not exist
    raise ModelFormatError(f"{model}: no such model folder, and no shipped model of that name (shipped: {names})")
