"""Reading an int8 export back into torch: every weight within half a quantization step, the outlier
rewrites undone exactly, the same emissions; exports it cannot read are refused in one line; and
``mtbioner distill`` takes an export (a shipped model's name included) as its teacher."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer

from mtbioner import cli
from mtbioner.cli.distill import distill as distill_command
from mtbioner.errors import ModelFormatError, MtbionerError
from mtbioner.learn.distillation import load_teacher
from mtbioner.learn.training import TrainingConfig, train
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.dequantize import tagger_from_int8
from mtbioner.runtime.export import export_onnx

from .conftest import INTERMEDIATE_CHANNEL, plant_outliers

LABELS = {"toy_gene": ["B-GENE", "I-GENE", "O"], "toy_chem": ["B-CHEM", "I-CHEM", "O"]}


GRAPHS = {"all": {"fusions": "all"}, "light": {"fusions": "light"}, "unoptimized": {"optimize": False}}


@pytest.fixture(scope="module", params=list(GRAPHS))
def exported(
    request: pytest.FixtureRequest, tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[MultiTaskTagger, Path]:
    """A tiny model with both kinds of outlier channel planted (as in test_quantization), and its int8 export
    with every fusion (QEmbedLayerNormalization, QAttention), light fusions and none (plain Gather, MatMulInteger
    and LayerNormalization ops)."""
    torch.manual_seed(4)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=32).eval()
    plant_outliers(model)
    folder = tmp_path_factory.mktemp("dequantize")
    model.save_pretrained(folder / "model")
    report = export_onnx(folder / "model", folder / "int8", "int8", **GRAPHS[request.param])
    assert report is not None
    return model, folder / "int8"


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (6, 20), generator=generator)
    mask = torch.ones_like(ids)
    mask[::2, 10:] = 0
    return ids, mask


def _emissions(model: MultiTaskTagger, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {k: v[mask.bool()] for k, v in model.forward_all(ids, mask, None, None, None).items()}


def test_every_weight_comes_back_within_half_a_quantization_step(exported) -> None:
    model, folder = exported
    onnx_config = json.loads((folder / "config.json").read_text())["onnx"]
    config = onnx_config["outliers"]
    rewritten = config["ffn_output_channels_fp32"] >= 1 and config["ffn_input_channels_smoothed"] >= 1
    assert rewritten or onnx_config["optimized"] is False  # the rewrite reads the optimized graph's pattern
    back = tagger_from_int8(folder)
    original = model.state_dict()
    for key, value in back.state_dict().items():
        if ".pooler." in key or key.endswith("position_ids"):
            continue
        expected = original[key]
        # int8 with reduce_range: 127 levels per output channel (uint8 per tensor for the embeddings)
        step = expected.abs().max() / 63 if expected.dim() == 2 else expected.abs().max() / 127
        assert torch.allclose(value, expected, atol=float(step) / 2 + 1e-6), key
    if not rewritten:
        return
    back_ffn, ffn = back.encoder.encoder.layer[0], model.encoder.encoder.layer[0]
    # the channel moved to the fp32 side path comes back exactly, not as the zeros of the int8 path
    channel = INTERMEDIATE_CHANNEL
    assert torch.equal(back_ffn.intermediate.dense.bias[channel], ffn.intermediate.dense.bias[channel])
    assert torch.allclose(back_ffn.intermediate.dense.weight[channel], ffn.intermediate.dense.weight[channel])
    assert torch.allclose(back_ffn.output.dense.weight[:, channel], ffn.output.dense.weight[:, channel])


def test_the_read_back_model_is_closer_to_the_original_than_the_int8_graph(exported) -> None:
    """Weights within half a step and fp32 activations: the int8 graph's run-time quantization of
    activations is the larger error, so torch on the read-back weights tracks the original better."""
    import onnxruntime as ort

    model, folder = exported
    ids, mask = _batch()
    back, before = _emissions(tagger_from_int8(folder), ids, mask), _emissions(model, ids, mask)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    graph = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    for index, name in enumerate(LABELS):
        int8 = torch.from_numpy(graph[index])[mask.bool()]
        assert (back[name] - before[name]).abs().mean() < (int8 - before[name]).abs().mean(), name
        assert (back[name].argmax(-1) == before[name].argmax(-1)).float().mean() >= 0.9


def test_exports_it_cannot_read_are_refused(exported, tmp_path: Path) -> None:
    model, folder = exported
    export_onnx(folder.parent / "model", tmp_path / "fp32")
    with pytest.raises(ModelFormatError, match="int8 weights.*torch model folder"):
        tagger_from_int8(tmp_path / "fp32")
    with pytest.raises(MtbionerError, match="teacher .*nope: no such model folder"):
        load_teacher(tmp_path / "nope")


@pytest.fixture(scope="module")
def trained_int8(tiny_encoder: Path, toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained on the toy corpora, exported to int8 (no torch weights beside it)."""
    from mtbioner.data.corpus import read_corpus

    folder = tmp_path_factory.mktemp("trained")
    config = TrainingConfig(encoder=str(tiny_encoder), lr=3e-3, batch_size=4, epochs=8, seed=7, max_length=32)
    corpora = [read_corpus(toy_dir / name, splits=["train", "devel"]) for name in LABELS]
    train(corpora, folder / "m", config, progress=False)
    export_onnx(folder / "m", folder / "int8", "int8")
    return folder / "int8"


def test_cli_distils_an_int8_export_on_the_corpora_its_heads_name(
    trained_int8: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("distill")(distill_command)
    app.command("noop", hidden=True)(lambda: None)
    monkeypatch.setattr(cli, "app", app)
    out = tmp_path / "student"
    args = [trained_int8, "--data-dir", toy_dir, "--output", out, "--layers", "1", "--epochs", "1", "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["mtbioner", "distill", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        cli.main()
    text = "".join(capsys.readouterr())
    assert done.value.code == 0, text
    info = json.loads((out / "distillation.json").read_text())
    assert info["teacher"]["path"] == str(trained_int8.resolve())
    assert set(info["inputs"]["sources"]) == set(LABELS)  # the heads' names, found under --data-dir
    student = MultiTaskTagger.from_pretrained(out)
    assert student.encoder.config.num_hidden_layers == 1 and list(student.config.corpora) == list(LABELS)
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert info["finished"] and np.isfinite(last["loss"])


def test_crf_scores_come_back_exactly_from_the_config(tiny_encoder: Path, tmp_path: Path) -> None:
    """A CRF head's start/end/transition scores live in config.json, not the graph: read back as they were."""
    torch.manual_seed(5)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=32, heads={"toy_chem": "crf"}).eval()
    with torch.no_grad():
        for param in (model.head("toy_chem").start, model.head("toy_chem").transitions):
            param.copy_(torch.randn_like(param))
    model.save_pretrained(tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "int8", "int8")
    back = tagger_from_int8(tmp_path / "int8")
    assert {name: d.kind for name, d in back.decoders().items()} == {"toy_gene": "linear", "toy_chem": "crf"}
    for key in ("start", "end", "transitions"):
        assert torch.equal(getattr(back.head("toy_chem"), key), getattr(model.head("toy_chem"), key)), key
    assert not torch.equal(back.head("toy_chem").transitions, torch.zeros(3, 3))
