"""``mtbioner export --quantize int8-static``: a QDQ graph calibrated on real sentences, never on a test split.

The tiny random encoder of ``conftest.py`` with a linear and a CRF head (large random head weights, as in
``test_export.py``) is exported once in fp32 and once static int8 per module; every export takes seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mtbioner.data.corpus import read_corpus
from mtbioner.errors import MtbionerError
from mtbioner.model.dictionary import Dictionary
from mtbioner.model.heads import build_head
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.export import CalibrationSettings, export_onnx, read_calibration
from mtbioner.runtime.inference import sentence_emissions
from mtbioner.runtime.loading import describe_model, load_backend
from mtbioner.runtime.onnx_backend import OnnxTagger
from mtbioner.runtime.quantization import CalibrationFeeds, calibration_feeds
from mtbioner.runtime.tagging import Tagger

from .conftest import run_cli

LABELS = {"toy_gene": ["B-GENE", "I-GENE", "O"], "chem.v2": ["B-CHEM", "I-CHEM", "O"]}
TEXTS = ["MYC binding was reduced after aspirin.", "The protein binds BRCA1 and cisplatin. " * 5]
DYNAMIC_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved two-head model whose heads give varied labels (large random head weights)."""
    torch.manual_seed(3)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=16).eval()
    model.config.corpora["chem.v2"].head = "crf"
    model.heads["chem__dot__v2"] = build_head("crf", 32, LABELS["chem.v2"])
    with torch.no_grad():
        for param in model.heads.parameters():
            param.normal_(0, 2.0)
    folder = tmp_path_factory.mktemp("static") / "model"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fp32_dir(model_dir: Path) -> Path:
    out = model_dir.parent / "fp32"
    export_onnx(model_dir, out)
    return out


@pytest.fixture(scope="module")
def static_dir(model_dir: Path, toy_dir: Path) -> Path:
    out = model_dir.parent / "static"
    export_onnx(model_dir, out, "int8-static", calibration=CalibrationSettings("toy_gene", toy_dir, size=16))
    return out


def op_types(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_static_export_is_a_qdq_graph_that_onnx_runtime_runs_in_int8(static_dir: Path, tmp_path: Path) -> None:
    ops = op_types(static_dir / "model.onnx")
    assert ops["QuantizeLinear"] and ops["DequantizeLinear"], ops
    assert not DYNAMIC_OPS & set(ops), ops  # no activation scale is computed at run time
    assert "Attention" not in ops  # unfused, so the query/key/value projections are int8 MatMuls too
    assert "BiasGelu" in ops  # the default's other (light) fusions stay
    # What ONNX Runtime makes of it: u8 x s8 products with float outputs, not a weight-only float MatMul.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "session.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(static_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    session_ops = op_types(tmp_path / "session.onnx")
    assert session_ops["MatMulIntegerToFloat"] >= 2 * 6 + 2, session_ops  # 2 layers x 6 linear layers + 2 heads
    assert "MatMulNBits" not in session_ops
    config = json.loads((static_dir / "config.json").read_text())["onnx"]
    assert config["quantize"] == "int8-static" and config["fused_attention"] is False
    assert config["per_channel"] is True and config["reduce_range"] is True
    calibration = config["calibration"]
    assert Path(calibration["source"]).name == "toy_gene" and calibration["split"] == "train"
    assert calibration["sentences"] == calibration["requested"] == 16 and calibration["batches"] >= 1
    assert (calibration["method"], calibration["format"], calibration["activations"]) == ("MinMax", "QDQ", "QUInt8")
    described = describe_model(static_dir)
    assert "onnx (int8-static, ONNX Runtime, attention unfused, calibrated on 16 sentences of toy_gene (train))" in (
        described
    ), described


def test_the_embedding_tables_are_int8_as_in_the_dynamic_export(static_dir: Path) -> None:
    tables = {
        init.name: init.data_type
        for init in onnx.load(str(static_dir / "model.onnx")).graph.initializer
        if len(init.dims) == 2 and "_embeddings.weight" in init.name
    }
    assert set(tables) == {
        f"model.encoder.embeddings.{t}_embeddings.weight_quantized" for t in ("word", "position", "token_type")
    }
    assert set(tables.values()) == {onnx.TensorProto.UINT8}


def test_static_emissions_agree_with_fp32(static_dir: Path, fp32_dir: Path, toy_dir: Path) -> None:
    """Tolerance: an int8 step is 1/255 of an activation's calibrated range and 1/63 of a weight channel's
    largest magnitude (7-bit weights). Through two layers and heads with N(0, 2) weights that moves the
    emissions (mean magnitude about 9) by 2-3% of their mean on this model, against 1-1.6% for dynamic int8,
    whose per-batch ranges are narrower than ranges that cover every calibration batch. 5% and 95% of labels
    unchanged leave room for other CPUs' kernels; a broken scale (a clipped or mis-typed tensor) is far off.
    Scored on the test splits, which calibration never reads."""
    sentences = [
        s.tokens for c in ("toy_gene", "toy_chem") for s in read_corpus(toy_dir / c, ["test"]).sentences("test")
    ]
    expected = sentence_emissions(load_backend(fp32_dir), sentences)
    got = sentence_emissions(load_backend(static_dir), sentences)
    for name in LABELS:
        a = np.concatenate([e[name] for e in expected])
        b = np.concatenate([e[name] for e in got])
        error = float(np.abs(b - a).mean() / np.abs(a).mean())
        assert 1e-4 < error < 0.05, (name, error)  # quantized (not fp32 in disguise) and close
        assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.95
    found = Tagger.load(static_dir).tag_batch(TEXTS)
    assert len(found) == len(TEXTS) and any(found)


@pytest.mark.parametrize("graph", ["all", "unoptimized"])
def test_static_export_of_other_graphs(graph: str, model_dir: Path, toy_dir: Path, tmp_path: Path) -> None:
    settings = {"fusions": "all"} if graph == "all" else {"optimize": False}
    calibration = CalibrationSettings(str(toy_dir / "toy_chem"), size=8)
    export_onnx(model_dir, tmp_path / graph, "int8-static", calibration=calibration, **settings)
    ops = op_types(tmp_path / graph / "model.onnx")
    assert ops["QuantizeLinear"] and not DYNAMIC_OPS & set(ops), ops
    assert ("SkipLayerNormalization" in ops) == (graph == "all") and "Attention" not in ops
    assert len(Tagger.load(tmp_path / graph).tag_batch(TEXTS)) == 2


def test_calibration_feeds_are_what_tagging_feeds_the_graph(tiny_encoder: Path, tmp_path: Path) -> None:
    """A case-, dictionary- and context-reading model calibrated on a text file: the calibration batches equal,
    array for array, what ``Tagger.tag_batch`` gives ONNX Runtime for the same texts, with the graph's input
    names and dtypes."""
    torch.manual_seed(1)
    dictionary = Dictionary({"GENE": ["MYC", "BRCA1"], "CHEM": ["aspirin", "cisplatin"]})
    model = MultiTaskTagger.from_encoder(
        {"genes": LABELS["toy_gene"]},
        tiny_encoder,
        max_length=16,
        case_features=True,
        dictionary=dictionary,
        context=4,
    ).eval()
    model.save_pretrained(tmp_path / "m")
    texts = tmp_path / "calibration.txt"
    texts.write_text("\n".join(TEXTS + ["", "Aspirin and MYC. Then BRCA1 rose."]) + "\n", encoding="utf-8")
    export_onnx(tmp_path / "m", tmp_path / "static", "int8-static", calibration=CalibrationSettings(str(texts)))
    backend = OnnxTagger.from_pretrained(tmp_path / "static")
    graph_inputs = {i.name: i.type for i in backend.session.get_inputs()}
    assert list(graph_inputs) == ["input_ids", "attention_mask", "token_type_ids", "dictionary_ids"]
    text = read_calibration(CalibrationSettings(str(texts)), backend.config.context)
    assert text.split is None and text.surroundings is not None and len(text.words) == 1 + 5 + 2
    feeds = calibration_feeds(backend.config, backend.tokenizer, text.words, text.surroundings, backend.dictionary)

    seen: list[dict[str, np.ndarray]] = []

    class Spy:
        def run(self, names, feed):
            seen.append(feed)
            return real.run(names, feed)

    real, backend.session = backend.session, Spy()
    Tagger(backend).tag_batch([line for line in texts.read_text().splitlines() if line])
    assert len(feeds) == len(seen) >= 1
    for ours, runtime in zip(feeds, seen, strict=True):
        assert list(ours) == list(graph_inputs)
        for name, array in ours.items():
            assert array.dtype == np.int64 and graph_inputs[name] == "tensor(int64)"
            np.testing.assert_array_equal(array, runtime[name])
    assert any(feed["dictionary_ids"].any() for feed in feeds)  # the terms matched: real match tags
    reader = CalibrationFeeds(feeds)
    from onnxruntime.quantization import CalibrationDataReader

    assert isinstance(reader, CalibrationDataReader) and len(reader) == len(feeds)
    assert [reader.get_next() for _ in feeds] == feeds and reader.get_next() is None
    config = json.loads((tmp_path / "static" / "config.json").read_text())["onnx"]["calibration"]
    assert config["source"] == str(texts) and config["split"] is None and config["sentences"] == 8
    # the dictionary's match-tag table stays fp32, as in the dynamic export
    graph = onnx.load(str(tmp_path / "static" / "model.onnx")).graph
    table = next(n for n in graph.node if n.op_type == "Gather" and "dictionary_ids" in n.input).input[0]
    assert next(i for i in graph.initializer if i.name == table).data_type == onnx.TensorProto.FLOAT


def test_calibration_reads_a_corpus_train_split_and_nothing_else(
    toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mtbioner.data.corpus as corpus_module

    read: list[tuple[str, str | None]] = []
    real = corpus_module.read_split

    def spy(path, name=None, *args, **kwargs):
        read.append((Path(path).name, name))
        return real(path, name, *args, **kwargs)

    monkeypatch.setattr(corpus_module, "read_split", spy)
    text = read_calibration(CalibrationSettings("toy_chem", toy_dir, size=5))
    assert read == [("train.tsv", "train")]
    assert text.split == "train" and len(text.words) == 5 and text.surroundings is None
    train = [list(s.tokens) for s in real(toy_dir / "toy_chem" / "train.tsv", "train").sentences]
    assert all(words in train for words in text.words)
    # seeded: the same sample every time, spread over the split rather than its first sentences
    assert read_calibration(CalibrationSettings("toy_chem", toy_dir, size=5)).words == text.words
    assert len(read_calibration(CalibrationSettings("toy_chem", toy_dir, size=10_000)).words) == len(train)
    with_context = read_calibration(CalibrationSettings("toy_chem", toy_dir, size=5), context=3)
    assert with_context.words == text.words and with_context.surroundings is not None

    no_train = tmp_path / "no_train"
    no_train.mkdir()
    for split in ("devel", "test"):
        (no_train / f"{split}.tsv").write_text((toy_dir / "toy_chem" / f"{split}.tsv").read_text())
    read.clear()
    with pytest.raises(MtbionerError, match="train split only, never its test split.*missing split 'train'"):
        read_calibration(CalibrationSettings(str(no_train)))
    assert read == []


def test_a_static_export_passes_check_from_the_command_line(
    model_dir: Path, toy_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = model_dir.parent / "checked-static"
    code, output = run_cli(
        monkeypatch, capsys, "export", model_dir, out, "--quantize", "int8-static", "--calibration", "toy_gene",
        "--calibration-size", "12", "--data-dir", toy_dir, "--check", f"toy_gene,chem.v2={toy_dir / 'toy_chem'}",
        "--max-drop", "100",
    )  # fmt: skip
    assert code == 0, output
    assert "torch F1" in output and "onnx F1" in output and "head chem.v2" in output
    assert "(int8-static," in output
    assert json.loads((out / "config.json").read_text())["onnx"]["calibration"]["sentences"] == 12


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-file", "--calibration {tmp}/nope.txt: no such file"),
        ("unknown-corpus", "--calibration NOPE: corpus 'NOPE' not found"),
        ("no-train", "train split only, never its test split"),
        ("test-file", "looks like a test split"),
        ("empty-file", "holds no text to calibrate on"),
        ("without-static", "--calibration toy_gene: only --quantize int8-static reads calibration text"),
        ("static-without", "--quantize int8-static needs --calibration"),
        ("size-zero", "--calibration-size must be at least 1, not 0"),
        ("size-alone", "--calibration-size needs --calibration"),
    ],
)
def test_calibration_mistakes_give_one_line_and_write_nothing(
    case: str,
    message: str,
    model_dir: Path,
    toy_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    static = ["--quantize", "int8-static", "--data-dir", toy_dir]
    args = {
        "missing-file": [*static, "--calibration", tmp_path / "nope.txt"],
        "unknown-corpus": ["--quantize", "int8-static", "--calibration", "NOPE", "--data-dir", tmp_path],
        "no-train": [*static, "--calibration", tmp_path / "no_train"],
        "test-file": [*static, "--calibration", tmp_path / "test.pubtator"],
        "empty-file": [*static, "--calibration", tmp_path / "empty.txt"],
        "without-static": ["--quantize", "int8", "--calibration", "toy_gene", "--data-dir", toy_dir],
        "static-without": ["--quantize", "int8-static"],
        "size-zero": [*static, "--calibration", "toy_gene", "--calibration-size", "0"],
        "size-alone": ["--quantize", "int8-static", "--calibration-size", "8"],
    }[case]
    (tmp_path / "no_train").mkdir()
    (tmp_path / "no_train" / "test.tsv").write_text((toy_dir / "toy_gene" / "test.tsv").read_text())
    (tmp_path / "test.pubtator").write_text("1|t|MYC binds.\n")
    (tmp_path / "empty.txt").write_text("\n  \n")
    out = tmp_path / "out"
    code, output = run_cli(monkeypatch, capsys, "export", model_dir, out, *args)
    assert code == 2, output
    assert output.startswith("error: ") and len(output.strip().splitlines()) == 1, output
    assert message.format(tmp=tmp_path) in output and "Traceback" not in output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_torch_weights_are_not_read_back_from_a_static_export(static_dir: Path) -> None:
    from mtbioner.errors import ModelFormatError
    from mtbioner.runtime.dequantize import tagger_from_int8

    with pytest.raises(ModelFormatError, match="not int8-static"):
        tagger_from_int8(static_dir)
