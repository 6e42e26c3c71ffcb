"""The distillation student (mtbioner.learn.students): narrower feed-forward layers keep the most important neurons,
fewer attention heads the most important heads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbioner.errors import MtbionerError
from mtbioner.learn.students import head_importance, make_student, neuron_importance, top_heads, top_neurons
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.inference import sentence_emissions

LABELS = {"toy_gene": ["B-GENE", "I-GENE", "O"], "toy_chem": ["B-CHEM", "I-CHEM", "O"]}
WORDS = [["aspirin", "binds", "brca1"], ["myc", "binding", "was", "reduced", "in", "cells"]]
WIDTH = 64  # the tiny encoder's feed-forward neurons per layer


def _emissions(model: MultiTaskTagger, corpus: str) -> list[np.ndarray]:
    return [scores[corpus] for scores in sentence_emissions(model, WORDS, [corpus])]


@pytest.fixture(scope="module")
def target() -> dict[int, torch.Tensor]:
    """The importance each neuron of each layer is given: a random order of 1..64 per layer."""
    generator = torch.Generator().manual_seed(5)
    return {layer: torch.randperm(WIDTH, generator=generator).double() + 1 for layer in range(2)}


@pytest.fixture(scope="module")
def teacher(tiny_encoder: Path, target: dict[int, torch.Tensor]) -> MultiTaskTagger:
    """A 2-layer teacher whose neuron ``j`` of layer ``l`` has importance ``target[l][j]``.

    Its input row (with bias) has norm ``target * u`` and its output column norm ``1 / u``, ``u`` random
    over two orders of magnitude: either norm alone ranks the neurons otherwise than their product.
    """
    torch.manual_seed(4)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=32).eval()
    with torch.no_grad():
        for param in model.heads.parameters():
            param.normal_(0, 2.0)
        for index, layer in enumerate(model.encoder.encoder.layer):
            scale = 10 ** (2 * torch.rand(WIDTH, dtype=torch.float64))
            inner, outer = layer.intermediate.dense, layer.output.dense
            rows = torch.cat([inner.weight, inner.bias[:, None]], dim=1).double()
            rows = rows / rows.norm(dim=1, keepdim=True) * (target[index] * scale)[:, None]
            inner.weight.copy_(rows[:, :-1])
            inner.bias.copy_(rows[:, -1])
            columns = outer.weight.double()
            outer.weight.copy_(columns / columns.norm(dim=0) / scale)
    return model


def test_importance_is_the_product_of_the_input_row_and_output_column_norms(
    teacher: MultiTaskTagger, target: dict[int, torch.Tensor]
) -> None:
    for index, layer in enumerate(teacher.encoder.encoder.layer):
        importance = neuron_importance(layer)
        assert torch.allclose(importance.double(), target[index], rtol=1e-4)
        rows = torch.cat([layer.intermediate.dense.weight, layer.intermediate.dense.bias[:, None]], dim=1).norm(dim=1)
        columns = layer.output.dense.weight.norm(dim=0)
        expected = set(torch.argsort(target[index], descending=True)[:20].tolist())
        assert set(top_neurons(layer, 20).tolist()) == expected
        assert set(torch.argsort(rows, descending=True)[:20].tolist()) != expected  # neither norm alone would do
        assert set(torch.argsort(columns, descending=True)[:20].tolist()) != expected


def test_a_narrower_student_keeps_exactly_the_top_neurons(
    teacher: MultiTaskTagger, target: dict[int, torch.Tensor], tmp_path: Path
) -> None:
    student = make_student(teacher, [0, 1], intermediate_size=20)
    assert student.config.encoder_config["intermediate_size"] == 20
    assert student.config.extra["distillation"] == {
        "teacher_layers": 2,
        "layers": [0, 1],
        "teacher_intermediate_size": WIDTH,
        "intermediate_size": 20,
    }
    for index, (mine, theirs) in enumerate(
        zip(student.encoder.encoder.layer, teacher.encoder.encoder.layer, strict=True)
    ):
        kept = sorted(torch.argsort(target[index], descending=True)[:20].tolist())  # the 20 largest given
        assert sorted(target[index][kept].tolist()) == list(map(float, range(WIDTH - 19, WIDTH + 1)))
        assert torch.equal(mine.intermediate.dense.weight, theirs.intermediate.dense.weight[kept])
        assert torch.equal(mine.intermediate.dense.bias, theirs.intermediate.dense.bias[kept])
        assert torch.equal(mine.output.dense.weight, theirs.output.dense.weight[:, kept])
        assert torch.equal(mine.output.dense.bias, theirs.output.dense.bias)  # the output's width is the hidden size
        assert torch.equal(mine.attention.self.query.weight, theirs.attention.self.query.weight)
    assert student.num_parameters() < teacher.num_parameters()
    student.save_pretrained(tmp_path / "s")
    loaded = MultiTaskTagger.from_pretrained(tmp_path / "s")
    assert loaded.encoder.config.intermediate_size == 20
    for key, value in student.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    narrow = _emissions(loaded, "toy_gene")
    assert [a.shape for a in narrow] == [b.shape for b in _emissions(teacher, "toy_gene")] == [(3, 3), (6, 3)]


def test_a_student_of_full_width_computes_the_teachers_emissions(teacher: MultiTaskTagger) -> None:
    student = make_student(teacher, 2, intermediate_size=WIDTH).eval()
    assert student.config.encoder_config["intermediate_size"] == WIDTH
    teacher_state = teacher.state_dict()
    assert all(torch.equal(value, teacher_state[key]) for key, value in student.state_dict().items())
    for corpus in LABELS:
        for a, b in zip(_emissions(student, corpus), _emissions(teacher, corpus), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    narrow = make_student(teacher, 2, intermediate_size=8).eval()
    assert not np.allclose(_emissions(narrow, "toy_gene")[1], _emissions(teacher, "toy_gene")[1], atol=1e-3)


def test_a_narrower_student_exports_and_reads_back(teacher: MultiTaskTagger, tmp_path: Path) -> None:
    """``mtbioner export`` builds the graph from the student's config; its int8 weights read back at that width."""
    from mtbioner.runtime.dequantize import tagger_from_int8
    from mtbioner.runtime.export import export_onnx

    make_student(teacher, 1, intermediate_size=24).save_pretrained(tmp_path / "s")
    report = export_onnx(tmp_path / "s", tmp_path / "int8", "int8")  # compares the fp32 graph with torch
    assert report.quantize == "int8"
    back = tagger_from_int8(tmp_path / "int8")
    assert back.encoder.config.intermediate_size == 24 and back.encoder.config.num_hidden_layers == 1
    assert back.encoder.encoder.layer[0].intermediate.dense.weight.shape == (24, 32)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (0, "must be at least 1"),
        (-3, "must be at least 1"),
        (WIDTH + 1, f"larger than the teacher's feed-forward layers ({WIDTH})"),
    ],
)
def test_impossible_widths_are_refused(teacher: MultiTaskTagger, size: int, message: str) -> None:
    with pytest.raises(MtbionerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_student(teacher, 1, intermediate_size=size)


# ---------------------------------------------------------------- fewer attention heads

HEADS, HEAD_SIZE = 4, 8  # the four-head teacher: hidden 32 split into 4 heads of 8
SILENT = ([1, 2], [0, 3])  # per layer, the heads whose output columns are zero: they add nothing


@pytest.fixture(scope="module")
def four_heads(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> MultiTaskTagger:
    """A 2-layer teacher with 4 heads of 8 per layer, two of them silent in each layer (``SILENT``)."""
    folder = tmp_path_factory.mktemp("four-heads")
    shutil.copytree(tiny_encoder, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "num_attention_heads": HEADS}), encoding="utf-8")
    torch.manual_seed(6)
    model = MultiTaskTagger.from_encoder(LABELS, folder, max_length=32).eval()
    with torch.no_grad():
        for param in model.heads.parameters():
            param.normal_(0, 2.0)
        for layer, silent in zip(model.encoder.encoder.layer, SILENT, strict=True):
            for h in silent:
                layer.attention.output.dense.weight[:, h * HEAD_SIZE : (h + 1) * HEAD_SIZE] = 0.0
    return model


def test_head_importance_is_the_norm_of_output_columns_times_value_rows(four_heads: MultiTaskTagger) -> None:
    for layer, silent in zip(four_heads.encoder.encoder.layer, SILENT, strict=True):
        value = torch.cat([layer.attention.self.value.weight, layer.attention.self.value.bias[:, None]], dim=1)
        out = layer.attention.output.dense.weight
        expected = [
            torch.linalg.matrix_norm(out[:, h * 8 : (h + 1) * 8] @ value[h * 8 : (h + 1) * 8]).item()
            for h in range(HEADS)
        ]
        importance = head_importance(layer)
        np.testing.assert_allclose(importance.numpy(), expected, rtol=1e-5)
        assert [importance[h].item() for h in silent] == [0.0, 0.0]
        assert top_heads(layer, 2).tolist() == sorted(set(range(HEADS)) - set(silent))


def test_a_student_without_the_silent_heads_computes_the_teachers_emissions(
    four_heads: MultiTaskTagger, tmp_path: Path
) -> None:
    student = make_student(four_heads, 2, attention_heads=2).eval()
    origin = student.config.extra["distillation"]
    assert (origin["teacher_attention_heads"], origin["attention_heads"]) == (HEADS, 2)
    assert origin["heads"] == [[0, 3], [1, 2]]  # the heads that are not silent, per layer
    assert student.config.encoder_config["kept_attention_heads"] == 2
    for mine, theirs, kept in zip(
        student.encoder.encoder.layer, four_heads.encoder.encoder.layer, origin["heads"], strict=True
    ):
        rows = torch.cat([torch.arange(h * HEAD_SIZE, (h + 1) * HEAD_SIZE) for h in kept])
        for name in ("query", "key", "value"):
            assert torch.equal(
                getattr(mine.attention.self, name).weight, getattr(theirs.attention.self, name).weight[rows]
            )
            assert torch.equal(
                getattr(mine.attention.self, name).bias, getattr(theirs.attention.self, name).bias[rows]
            )
        assert torch.equal(mine.attention.output.dense.weight, theirs.attention.output.dense.weight[:, rows])
        assert torch.equal(mine.intermediate.dense.weight, theirs.intermediate.dense.weight)
    assert student.num_parameters() < four_heads.num_parameters()
    for corpus in LABELS:
        for a, b in zip(_emissions(student, corpus), _emissions(four_heads, corpus), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    student.save_pretrained(tmp_path / "s")
    loaded = MultiTaskTagger.from_pretrained(tmp_path / "s")
    assert loaded.encoder.encoder.layer[1].attention.self.key.weight.shape == (2 * HEAD_SIZE, 32)
    for key, value in student.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    one = make_student(four_heads, 2, attention_heads=1).eval()  # drops a head that adds something
    assert not np.allclose(_emissions(one, "toy_gene")[1], _emissions(four_heads, "toy_gene")[1], atol=1e-3)


def test_fewer_heads_and_narrower_feed_forward_layers_together(four_heads: MultiTaskTagger) -> None:
    student = make_student(four_heads, [1], intermediate_size=20, attention_heads=3)
    [layer] = student.encoder.encoder.layer
    assert layer.attention.self.query.weight.shape == (3 * HEAD_SIZE, 32)
    assert layer.attention.output.dense.weight.shape == (32, 3 * HEAD_SIZE)
    assert layer.intermediate.dense.weight.shape == (20, 32) and layer.output.dense.weight.shape == (32, 20)
    kept = top_neurons(four_heads.encoder.encoder.layer[1], 20)
    assert torch.equal(
        layer.intermediate.dense.weight, four_heads.encoder.encoder.layer[1].intermediate.dense.weight[kept]
    )


def test_a_student_with_fewer_heads_exports_unfused_and_reads_back(
    four_heads: MultiTaskTagger, tmp_path: Path
) -> None:
    """The fused attention op assumes the config's head count: a student with fewer heads exports unfused (the
    export compares its fp32 graph with torch and stops on a mismatch); int8 works, and its weights read back at
    the narrow width (the reader walks unfused graphs by their scopes)."""
    from mtbioner.runtime.dequantize import tagger_from_int8
    from mtbioner.runtime.export import export_onnx
    from mtbioner.runtime.loading import describe_model
    from mtbioner.runtime.onnx_backend import OnnxTagger

    student = make_student(four_heads, 2, attention_heads=2).eval()
    student.save_pretrained(tmp_path / "s")
    export_onnx(tmp_path / "s", tmp_path / "fp32")
    onnx = OnnxTagger.from_pretrained(tmp_path / "fp32")
    assert (
        json.loads((tmp_path / "fp32" / "config.json").read_text(encoding="utf-8"))["onnx"]["fused_attention"] is False
    )
    for a, b in zip(_emissions(onnx, "toy_gene"), _emissions(student, "toy_gene"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    export_onnx(tmp_path / "s", tmp_path / "int8", "int8")
    int8 = OnnxTagger.from_pretrained(tmp_path / "int8")
    for a, b in zip(_emissions(int8, "toy_gene"), _emissions(student, "toy_gene"), strict=True):
        assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.8
    back = tagger_from_int8(tmp_path / "int8").state_dict()
    for key, value in student.state_dict().items():
        if ".pooler." not in key and not key.endswith("position_ids"):
            step = float(value.abs().max()) / (63 if value.dim() == 2 else 127)
            assert back[key].shape == value.shape and torch.allclose(back[key], value, atol=step / 2 + 1e-6), key
    for folder in ("s", "int8"):  # `mtbioner info` names what the student cut
        assert "2 layers, hidden 32, 2 of 4 attention heads, feed-forward 64)" in describe_model(tmp_path / folder)


@pytest.mark.parametrize(("heads", "message"), [(0, "must be at least 1"), (HEADS + 1, "more than the teacher's")])
def test_impossible_head_counts_are_refused(four_heads: MultiTaskTagger, heads: int, message: str) -> None:
    with pytest.raises(MtbionerError, match=message):
        make_student(four_heads, 1, attention_heads=heads)
