"""End to end with the real packaged encoder on small slices of the shared corpora, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import shared_data_dir
from .conlleval import conlleval

pytestmark = pytest.mark.integration

CORPORA = ("BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA")
TYPES = {"GENE", "Chemical", "Disease", "DNA", "RNA", "cell_line", "cell_type", "protein"}
MERGED = {"Gene", "Chemical", "Disease", "CellLine", "CellType"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbioner", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-encoder model trained briefly on 50 sentences of each of the four shared corpora."""
    out = tmp_path_factory.mktemp("real") / "model"
    data = str(shared_data_dir())
    result = _cli(
        "train",
        *CORPORA,
        "--data-dir",
        data,
        "--output",
        str(out),
        "--limit",
        "50",
        "--epochs",
        "1",
        "--lr",
        "1e-4",
        "--warmup",
        "0.1",
        "--batch-size",
        "16",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_model_folder_and_info(trained: Path) -> None:
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors", "training.json", "log.jsonl", "tokenizer.json"} <= names
    assert "checkpoint" not in names  # a finished run keeps no resume state
    config = json.loads((trained / "config.json").read_text())
    assert set(config["corpora"]) == set(CORPORA)
    info = _cli("info", str(trained))
    assert info.returncode == 0, info.stderr
    assert "Chemical, Disease" in info.stdout and "DNA, RNA, cell_line, cell_type, protein" in info.stdout
    assert "22,7" in info.stdout  # ~22.7M parameters


def test_evaluate_json_and_predictions_rescore_identically(trained: Path, tmp_path: Path) -> None:
    scores, predictions = tmp_path / "scores.json", tmp_path / "pred"
    result = _cli(
        "evaluate",
        str(trained),
        "--data-dir",
        str(shared_data_dir()),
        "--limit",
        "60",
        "--json",
        str(scores),
        "--predictions",
        str(predictions),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(scores.read_text())["corpora"]
    assert set(report) == set(CORPORA)
    for name, row in report.items():
        assert row["sentences"] == 60
        lines = (predictions / f"{name}.txt").read_text(encoding="utf-8").splitlines()
        assert all(len(line.split(" ")) == 3 for line in lines if line)  # token gold predicted
        ours = conlleval(lines)  # the conlleval.pl port, fed the file a user would re-score
        assert row["f1"] == pytest.approx(ours["overall"]["f1"], abs=0.01)
        assert row["precision"] == pytest.approx(ours["overall"]["precision"], abs=0.01)
        for kind, scores_of_type in row["types"].items():
            assert scores_of_type["f1"] == pytest.approx(ours["types"][kind]["f1"], abs=0.01)


def test_tag_raw_text_offsets(trained: Path) -> None:
    text = "Mutations in  BRCA1 cause breast cancer\tafter tamoxifen treatment."
    result = _cli("tag", str(trained), text)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout)
    assert record["text"] == text
    for entity in record["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert entity["type"] in MERGED and 0 <= entity["score"] <= 1  # the merged answer, by default
        assert {s["type"] for s in entity["sources"]} <= TYPES
    per_corpus = json.loads(_cli("tag", str(trained), text, "--per-corpus").stdout)["entities"]
    assert per_corpus and all(e["type"] in TYPES for e in per_corpus)


def test_user_mistakes_exit_2_without_traceback(trained: Path, tmp_path: Path) -> None:
    other = tmp_path / "OtherCorpus"  # a valid corpus the model has no head for
    other.mkdir()
    for split in ("train", "devel", "test"):
        (other / f"{split}.tsv").write_text("IL-2\tB-protein\n\n", encoding="utf-8")
    for args in (
        ("evaluate", str(tmp_path / "no-model")),
        ("train", "NoSuchCorpus", "--data-dir", str(shared_data_dir()), "--output", str(tmp_path / "m")),
        ("evaluate", str(trained), str(other)),
    ):
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_int8_outlier_rewrites_on_the_real_encoder(trained: Path, tmp_path: Path) -> None:
    """The packaged encoder has outlier channels; the rewrites find them and bring int8 closer to fp32."""
    import numpy as np
    import onnxruntime as ort

    from mtbioner.data.corpus import read_corpus
    from mtbioner.model.encoding import collate, encode
    from mtbioner.runtime.export import export_onnx
    from mtbioner.runtime.onnx_backend import ONNX_NAME, OnnxTagger
    from mtbioner.runtime.quantization import quantize_int8

    export_onnx(trained, tmp_path / "fp32")
    fp32 = OnnxTagger.from_pretrained(tmp_path / "fp32")
    corpus = read_corpus(shared_data_dir() / "JNLPBA", ["test"], 64)
    windows = encode(fp32.tokenizer, [s.tokens for s in corpus.sentences("test")], fp32.config.max_length)
    batch = collate(windows, fp32.tokenizer.pad_token_id or 0)
    feed = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}
    real = feed["attention_mask"].astype(bool)

    def emissions(path: Path) -> list[np.ndarray]:
        return [out[real] for out in ort.InferenceSession(str(path)).run(None, feed)]

    reference = emissions(tmp_path / "fp32" / ONNX_NAME)
    errors, reports = {}, {}
    for outliers in (False, True):
        target = tmp_path / f"int8-{outliers}.onnx"
        reports[outliers] = quantize_int8(tmp_path / "fp32" / ONNX_NAME, target, outliers=outliers)
        errors[outliers] = np.mean([np.abs(a - b).mean() for a, b in zip(emissions(target), reference, strict=True)])
    summary = reports[True].summary()
    assert summary["ffn_output_channels_fp32"] >= 4 and summary["ffn_input_channels_smoothed"] >= 6, reports[True]
    assert errors[True] < 0.8 * errors[False], errors  # measured: 0.66
