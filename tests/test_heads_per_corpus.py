"""A head kind per corpus (``--head JNLPBA=crf``): a CRF only where it pays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtbioner.cli._common import parse_heads
from mtbioner.errors import MtbionerError
from mtbioner.learn.training import TrainingConfig
from mtbioner.model.model import MultiTaskTagger
from mtbioner.study.experiment import FLAGS, TRAIN_OPTIONS, load_study, train_command
from mtbioner.study.experiment_existing import command_options

from .conftest import run_cli

LABELS = {"gene": ["B-GENE", "I-GENE", "O"], "chem": ["B-CHEM", "I-CHEM", "O"]}


def test_heads_override_the_default_kind_and_survive_a_round_trip(tiny_encoder: Path, tmp_path: Path) -> None:
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, head="linear", heads={"gene": "crf"})
    assert {name: d.kind for name, d in model.decoders().items()} == {"gene": "crf", "chem": "linear"}
    model.save_pretrained(tmp_path / "m")
    loaded = MultiTaskTagger.from_pretrained(tmp_path / "m")
    assert {name: d.kind for name, d in loaded.decoders().items()} == {"gene": "crf", "chem": "linear"}


def test_a_head_for_an_unknown_corpus_is_refused(tiny_encoder: Path) -> None:
    with pytest.raises(MtbionerError, match=r"--head names unknown corpora \['genes'\]"):
        MultiTaskTagger.from_encoder(LABELS, tiny_encoder, heads={"genes": "crf"})


def test_config_rejects_an_unknown_kind() -> None:
    with pytest.raises(MtbionerError, match="head of gene must be 'linear' or 'crf', not 'rnn'"):
        TrainingConfig(heads={"gene": "rnn"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], ("linear", {})),
        (["crf"], ("crf", {})),
        (["JNLPBA=crf"], ("linear", {"JNLPBA": "crf"})),
        (["crf", "NCBI-disease=linear", "a=b=crf"], ("crf", {"NCBI-disease": "linear", "a=b": "crf"})),
    ],
)
def test_parse_heads(items: list[str], expected: tuple) -> None:
    assert parse_heads(items) == expected


@pytest.mark.parametrize("item", ["rnn", "JNLPBA=", "=crf", "JNLPBA=rnn"])
def test_parse_heads_names_the_bad_value(item: str) -> None:
    with pytest.raises(MtbionerError, match=f"--head '{item}': expected linear, crf or NAME=KIND"):
        parse_heads([item])


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, "train", *args)


def test_cli_trains_mixed_heads_and_names_a_bad_one(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    common = ["toy_gene", "toy_chem", "--data-dir", toy_dir, "--encoder", tiny_encoder, "--epochs", 1, "--no-progress"]
    code, text = _cli(monkeypatch, capsys, *common, "--output", tmp_path / "m", "--head", "toy_chem=crf")
    assert code == 0, text
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    kinds = {name: head["head"] for name, head in config["corpora"].items()}
    assert kinds == {"toy_gene": "linear", "toy_chem": "crf"}
    training = json.loads((tmp_path / "m" / "training.json").read_text())
    assert training["config"]["heads"] == {"toy_chem": "crf"}

    code, text = _cli(monkeypatch, capsys, *common, "--output", tmp_path / "bad", "--head", "toy_chems=crf")
    assert code != 0 and "unknown corpora ['toy_chems']" in text and "Traceback" not in text
    assert not (tmp_path / "bad").exists()


def test_a_study_sets_heads_per_corpus_and_reads_them_back(tmp_path: Path) -> None:
    file = tmp_path / "study.yaml"
    file.write_text("runs:\n  a: {corpora: [X, Y], head: linear, heads: {Y: crf}}\n", encoding="utf-8")
    args = train_command(load_study(file), load_study(file).runs[0])
    assert args[args.index("--head") :][:4] == ["--head", "linear", "--head", "Y=crf"]
    used = command_options("mtbioner " + " ".join(args), TRAIN_OPTIONS, FLAGS)
    assert used["head"] == "linear" and used["heads"] == {"Y": "crf"}


def test_a_study_sets_loss_weights_per_corpus_and_bf16(tmp_path: Path) -> None:
    file = tmp_path / "study.yaml"
    file.write_text("runs:\n  a: {corpora: [X, Y], loss_weights: {X: 2.0, Y: 0.5}, bf16: true}\n", encoding="utf-8")
    args = train_command(load_study(file), load_study(file).runs[0])
    assert args[args.index("--loss-weight") :][:4] == ["--loss-weight", "X=2.0", "--loss-weight", "Y=0.5"]
    assert "--bf16" in args
    used = command_options("mtbioner " + " ".join(args), TRAIN_OPTIONS, FLAGS)
    assert used["loss_weights"] == {"X": 2.0, "Y": 0.5}
