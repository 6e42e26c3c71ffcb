"""Shipped models: ``None`` is the default, a name is a shipped folder, a folder is itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtbioner.errors import ModelFormatError
from mtbioner.runtime import shipped
from mtbioner.runtime.shipped import resolve_model, shipped_models


@pytest.fixture()
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "models"
    for name in ("default", "fast"):
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text("{}", encoding="utf-8")
    (root / "not-a-model").mkdir()
    monkeypatch.setattr(shipped, "SHIPPED_DIR", root)
    return root


def test_names_resolve_to_shipped_folders(models: Path) -> None:
    assert shipped_models() == {"default": models / "default", "fast": models / "fast"}
    assert resolve_model(None) == models / "default"
    assert resolve_model("fast") == models / "fast"


def test_a_folder_wins_over_a_name(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").mkdir()
    assert resolve_model("fast") == Path("fast")
    assert resolve_model(tmp_path / "elsewhere" / "m") == tmp_path / "elsewhere" / "m"  # load_backend names it


def test_unknown_names_and_a_missing_default_say_what_is_shipped(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFormatError, match=r"tiny: no such model folder.*shipped: default, fast"):
        resolve_model("tiny")
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(ModelFormatError, match="no model named, and no shipped 'default' model is installed"):
        resolve_model(None)


def test_a_text_too_long_to_be_a_path_is_not_a_model(models: Path) -> None:
    long = "x" * 5000  # os.stat refuses it (ENAMETOOLONG): tag takes it as text, load names it
    assert not shipped.is_model_reference(long)
    with pytest.raises(ModelFormatError, match="not a model folder or a shipped model's name"):
        resolve_model(long)
