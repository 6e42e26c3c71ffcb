"""Shared fixtures: a tiny random BERT encoder saved like a real checkpoint, and toy corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
TOY = TESTS / "data" / "toy"
REPO = TESTS.parent


def shared_data_dir() -> Path:
    """The shared corpora (``$MTBIONER_DATA`` or ``../shared/data`` beside the repository)."""
    env = os.environ.get("MTBIONER_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not (path / "BC5CDR" / "test.tsv").is_file():
        pytest.fail(f"shared corpora not found at {path}: set MTBIONER_DATA to the folder holding BC5CDR etc.")
    return path


def _toy_words() -> list[str]:
    words: set[str] = set()
    for tsv in TOY.glob("*/*.tsv"):
        for line in tsv.read_text(encoding="utf-8").splitlines():
            if line.strip():
                words.add(line.split("\t")[0].lower())
    return sorted(words)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests run tiny models, fastest on one thread; on a busy machine two threads wait on each other.

    Only this process is affected: CLI subprocesses and benchmarks keep torch's default.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with a word-level vocabulary of the toy corpora.

    It is saved with ``save_pretrained`` and loaded back through the same path users take
    with a real checkpoint, so no test needs the network.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    chars = "abcdefghijklmnopqrstuvwxyz0123456789-.,()"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_toy_words(), *chars, *(f"##{c}" for c in chars)]
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(str(folder), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def toy_dir() -> Path:
    return TOY


#: The outlier channels :func:`plant_outliers` creates (test_quantization, test_dequantize).
INPUT_CHANNEL, INTERMEDIATE_CHANNEL = 5, 7


def plant_outliers(model) -> None:
    """Give a tiny random model the two kinds of outlier channel the default encoder has, which the int8
    export rewrites: one large feed-forward input channel (a LayerNorm gain) and one large intermediate
    channel (a scaled, shifted row of the first feed-forward layer); heads get large random weights."""
    import torch

    with torch.no_grad():
        for param in model.heads.parameters():
            param.normal_(0, 2.0)
        layer = model.encoder.encoder.layer[0]
        layer.attention.output.LayerNorm.weight[INPUT_CHANNEL] = 40.0
        layer.intermediate.dense.weight[INTERMEDIATE_CHANNEL] *= 10.0
        layer.intermediate.dense.bias[INTERMEDIATE_CHANNEL] = 40.0


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    """``mtbioner ARGS`` in this process: its exit code and everything it printed."""
    import sys

    from mtbioner.cli import main

    monkeypatch.setattr(sys, "argv", ["mtbioner", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return done.value.code, out + err


def one_error_line(err: str) -> str:
    """The one ``error: ...`` line a user mistake prints, with no traceback (asserted), returned."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]
