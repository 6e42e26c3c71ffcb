"""Crash-safe writes: a file or folder appears whole or not at all.

Every write goes to a temporary sibling first and is then renamed into place, so an
interrupted save (crash, Ctrl-C, full disk) never leaves a half-written model or output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ModelFormatError, MtbionerError


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_created(path: str | Path, folder: bool = False) -> None:
    """Give a temp file or folder the permissions ``open()``/``mkdir()`` would have (mkstemp makes 0600)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextlib.contextmanager
def _cannot_write(path: Path) -> Iterator[None]:
    """An OS refusal (no such folder, a file where a folder should be, no permission) as a user error."""
    try:
        yield
    except OSError as exc:
        blocker = next((p for p in path.parents if p.is_file()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror or exc
        raise MtbionerError(f"{path}: cannot write: {reason}") from exc


def check_output_folder(path: str | Path, model_file: str = "config.json", sources: tuple[Path, ...] = ()) -> None:
    """Refuse, before any work, an output folder that :func:`atomic_dir` would destroy or could not make.

    A folder that exists must be empty or hold ``model_file`` (an earlier output of the same kind): replacing a
    corpus, an input or any other folder by mistake would lose it. ``sources`` (the model or corpora read) can
    never be the output.

    Raises:
        MtbionerError: Naming the folder and what is wrong.
    """
    path = Path(path)
    for source in sources:
        if path.exists() and Path(source).exists() and path.resolve() == Path(source).resolve():
            raise MtbionerError(f"{path}: the output folder must differ from the input {source}")
    if path.exists() and not path.is_dir():
        raise MtbionerError(f"{path}: is a file; give a folder to write to")
    if path.is_dir() and any(path.iterdir()) and not (path / model_file).is_file():
        raise MtbionerError(f"{path}: exists and is not a model folder; refusing to replace it (choose another)")
    _check_parent(path)


def check_output_file(path: str | Path, sources: tuple[Path, ...] = ()) -> None:
    """Refuse, before any work, an output file that cannot be written or would replace an input.

    Raises:
        MtbionerError: Naming the file and what is wrong.
    """
    path = Path(path)
    if path.is_dir():
        raise MtbionerError(f"{path}: is a folder; give a file name to write to")
    for source in sources:
        if path.exists() and Path(source).exists() and path.resolve() == Path(source).resolve():
            raise MtbionerError(f"{path}: the output would replace the input {source}; choose another name")
    _check_parent(path)


def _check_parent(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MtbionerError(
            f"{path}: cannot create the output folder's parent {parent}: {exc.strerror or exc}"
        ) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MtbionerError(f"{path}: cannot write in {parent} (permission denied)")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; rename it onto ``path`` only on success.

    Args:
        path: Final destination.
        mode: ``"w"`` for text or ``"wb"`` for bytes.
        encoding: Text encoding (ignored for binary mode).
    """
    path = Path(path)
    if path.is_dir():
        raise MtbionerError(f"{path}: is a folder; give a file name to write to")
    with _cannot_write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _as_created(tmp)
        with _cannot_write(path):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json_record(path: str | Path) -> dict:
    """A run's JSON record (``training.json``, ``distillation.json``, ...): ``{}`` when absent.

    Raises:
        ModelFormatError: The file is there but damaged (cut short by a full disk, edited by hand), naming it.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: damaged, not readable as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: damaged, expected a JSON object, found {type(data).__name__}")
    return data


@contextlib.contextmanager
def recorded_fields(path: str | Path) -> Iterator[None]:
    """Reading fields of a run's record: one missing or of the wrong kind is a damaged file, named."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: damaged or from another version, cannot resume from it ({exc!r})") from None


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``path`` when the block succeeds.

    An existing ``path`` is moved aside, the new folder renamed into place, and the old one
    deleted. If the block raises, the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():  # moving a file aside to put a folder in its place would hide it
        raise MtbionerError(f"{path}: is a file; give a folder to write to")
    with _cannot_write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _as_created(tmp, folder=True)
    old: Path | None = None
    with _cannot_write(path):
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
