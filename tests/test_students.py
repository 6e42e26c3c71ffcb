"""The distillation student (mtbioner.learn.students): narrower feed-forward layers keep the most important neurons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtbioner.errors import MtbionerError
from mtbioner.learn.students import make_student, neuron_importance, top_neurons
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
