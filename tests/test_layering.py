"""The architecture as import-linter checks it (contracts in pyproject.toml): parts one way down, no circle.

Each test runs ``lint-imports`` on the package as it is, or on a copy with one import that breaks a contract,
so the check is shown to fail where it should.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root/src`` with ``root/pyproject.toml``'s contracts."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    """The package's source (no shipped weights) and pyproject.toml in a scratch folder."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    ignore = shutil.ignore_patterns("models", "static", "__pycache__")
    shutil.copytree(REPO / "src" / "mtbioner", tmp_path / "src" / "mtbioner", ignore=ignore)
    return tmp_path


def test_the_package_keeps_every_contract() -> None:
    done = lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_data_importing_the_runtime_breaks_the_layers(copy: Path) -> None:
    _append(copy / "src/mtbioner/data/corpus.py", "from ..runtime import tagging  # noqa")
    done = lint(copy)
    assert done.returncode != 0
    assert "Parts import only the parts below them BROKEN" in done.stdout
    assert "mtbioner.data.corpus -> mtbioner.runtime.tagging" in done.stdout


def test_a_type_only_circle_breaks_the_acyclic_contract(copy: Path) -> None:
    # corpus imports schemes; schemes naming corpus, even for annotations only, closes a circle
    _append(copy / "src/mtbioner/data/schemes.py", "if TYPE_CHECKING:\n    from .corpus import Corpus  # noqa")
    _append(copy / "src/mtbioner/data/schemes.py", "from typing import TYPE_CHECKING  # noqa")
    done = lint(copy)
    assert done.returncode != 0 and "No circle of imports anywhere BROKEN" in done.stdout, done.stdout


def test_a_module_outside_every_part_breaks_the_layers(copy: Path) -> None:
    (copy / "src/mtbioner/stray.py").write_text('"""Belongs to no part."""\n', encoding="utf-8")
    done = lint(copy)
    assert done.returncode != 0 and "mtbioner.stray" in done.stdout, done.stdout


def test_nothing_imports_the_command_line(copy: Path) -> None:
    _append(copy / "src/mtbioner/apps/serving.py", "from ..cli import _common  # noqa")
    done = lint(copy)
    assert done.returncode != 0 and "mtbioner.apps.serving -> mtbioner.cli._common" in done.stdout, done.stdout
