"""Errors that mean "the user gave us something wrong".

The CLI prints these as one line and exits with status 2, without a traceback. Anything
else that escapes is a bug in mtbioner and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class MtbionerError(Exception):
    """Base class for every error caused by user input (files, options, requests)."""


class CorpusFormatError(MtbionerError):
    """A corpus file that cannot be read; the message names the file and line.

    Args:
        path: The offending file (or folder).
        line: 1-based line number, or ``None`` when the problem is the whole file.
        message: What is wrong, quoting the bad value.
    """

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class ModelFormatError(MtbionerError):
    """A folder that is not an mtbioner model, or one written by an incompatible version."""


class RequestError(MtbionerError):
    """A tagging request (API, CLI or HTTP) with invalid fields or input records."""
