"""int8 with outlier rewrites: the rewrites find planted outlier channels, keep the fp32 function,
and bring the int8 emissions closer to fp32 than plain dynamic (and static) quantization.

The tiny random encoder has no outlier channels of its own, so the fixture plants the two kinds
the default encoder has: one large feed-forward input channel (a LayerNorm gain) and one large
intermediate channel (a scaled, shifted row of the first feed-forward layer).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.export import export_onnx
from mtbioner.runtime.loading import describe_model
from mtbioner.runtime.onnx_backend import ONNX_NAME
from mtbioner.runtime.quantization import quantize_int8, quantize_int8_static, rewrite_outliers

from .conftest import INPUT_CHANNEL, INTERMEDIATE_CHANNEL, plant_outliers

LABELS = {"toy_gene": ["B-GENE", "I-GENE", "O"], "chem": ["B-CHEM", "I-CHEM", "O"]}


@pytest.fixture(scope="module")
def fp32_dir(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(4)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=32).eval()
    plant_outliers(model)
    folder = tmp_path_factory.mktemp("quantization")
    model.save_pretrained(folder / "model")
    export_onnx(folder / "model", folder / "fp32")
    return folder / "fp32"


def batch(rows: int = 6, length: int = 20, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 100, size=(rows, length), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[::2, length // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def run(model_or_path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"]).run(None, feed)


def test_rewrites_find_the_planted_channels_and_keep_the_fp32_function(fp32_dir: Path) -> None:
    original = onnx.load(str(fp32_dir / ONNX_NAME))
    assert any(node.op_type == "BiasGelu" for node in original.graph.node), "expected ONNX Runtime's fused FFN"
    rewritten = onnx.load(str(fp32_dir / ONNX_NAME))
    report, keep_fp32 = rewrite_outliers(rewritten)
    assert INTERMEDIATE_CHANNEL in report.split["ffn0"]
    assert INPUT_CHANNEL in report.smoothed["ffn0"]
    assert len(keep_fp32) == 2 * len(report.split)
    assert report.summary()["ffn_output_channels_fp32"] >= 1
    feed = batch()
    for before, after in zip(run(original, feed), run(rewritten, feed), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


def first_ffn_output(model: onnx.ModelProto) -> str:
    """Output of the first feed-forward block (the MatMul after the first BiasGelu)."""
    gelu = next(node for node in model.graph.node if node.op_type == "BiasGelu")
    return next(n for n in model.graph.node if n.op_type == "MatMul" and gelu.output[0] in n.input).output[0]


def with_output(path: Path, name: str) -> onnx.ModelProto:
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model


def test_rewrites_bring_int8_closer_to_fp32(fp32_dir: Path, tmp_path: Path) -> None:
    """Measured where the planted outliers act (the first FFN's output): elsewhere the tiny random
    model's int8 error, amplified by its large random heads, hides the difference."""
    name = first_ffn_output(onnx.load(str(fp32_dir / ONNX_NAME)))
    feed = batch(rows=16, length=24, seed=2)
    reference = run(with_output(fp32_dir / ONNX_NAME, name), feed)[-1]
    errors = {}
    for outliers in (False, True):
        target = tmp_path / f"int8-{outliers}.onnx"
        quantize_int8(fp32_dir / ONNX_NAME, target, outliers=outliers, scratch=tmp_path)
        got = run(with_output(target, name), feed)[-1]
        errors[outliers] = float(np.abs(got - reference).mean() / np.abs(reference).mean())
    assert errors[True] < 0.25 * errors[False], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8-False.onnx", "int8-True.onnx"]  # scratch cleaned


def test_rewrites_bring_static_int8_closer_to_fp32_too(fp32_dir: Path, tmp_path: Path) -> None:
    """Why static int8 applies the rewrites as well: its activation scale is fixed, but still one per tensor, so a
    planted outlier channel costs it the same levels. Calibrated on other batches than the one measured (when
    written: 1.8% -> 0.19% mean error at the first FFN output, against dynamic int8's 1.7% -> 0.20%)."""
    name = first_ffn_output(onnx.load(str(fp32_dir / ONNX_NAME)))
    feed = batch(rows=16, length=24, seed=2)
    reference = run(with_output(fp32_dir / ONNX_NAME, name), feed)[-1]
    calibration = [batch(rows=8, length=length, seed=10 + length) for length in (12, 20, 28)]
    errors = {}
    for outliers in (False, True):
        target = tmp_path / f"static-{outliers}.onnx"
        quantize_int8_static(fp32_dir / ONNX_NAME, target, calibration, outliers=outliers, scratch=tmp_path)
        assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(target)).graph.node)
        got = run(with_output(target, name), feed)[-1]
        errors[outliers] = float(np.abs(got - reference).mean() / np.abs(reference).mean())
    assert errors[True] < 0.25 * errors[False], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["static-False.onnx", "static-True.onnx"]  # scratch cleaned


def test_a_graph_without_the_fused_pattern_is_quantized_as_it_is(fp32_dir: Path, tmp_path: Path) -> None:
    model_dir = fp32_dir.parent / "model"
    out = tmp_path / "plain"
    export_onnx(model_dir, out, "int8", optimize=False)
    config = json.loads((out / "config.json").read_text())
    assert config["onnx"]["outliers"] == {"ffn_output_channels_fp32": 0, "ffn_input_channels_smoothed": 0}
    assert not any(n.name.startswith("mtbioner_outliers") for n in onnx.load(str(out / ONNX_NAME)).graph.node)


def test_int8_export_records_the_rewrites(fp32_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    export_onnx(fp32_dir.parent / "model", out, "int8")
    summary = json.loads((out / "config.json").read_text())["onnx"]["outliers"]
    assert summary["ffn_output_channels_fp32"] >= 1 and summary["ffn_input_channels_smoothed"] >= 1
    names = {node.name for node in onnx.load(str(out / ONNX_NAME)).graph.node}
    assert {"mtbioner_outliers_ffn0_up", "mtbioner_outliers_ffn0_down"} <= names  # side path left in fp32
    text = describe_model(out)
    assert "onnx (int8, ONNX Runtime); outlier rewrites: " in text and "FFN channels in fp32" in text
