"""``mtbioner export``: ONNX round trip, int8, --check and the user mistakes it must name.

A tiny random BERT (``tiny_encoder``) with a linear and a CRF head is exported once per
module (fp32 and int8) and compared with the torch model it came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbioner.cli import main
from mtbioner.errors import ModelFormatError, MtbionerError
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.export import CheckSettings, ExportCheckError, export_onnx
from mtbioner.runtime.inference import sentence_emissions
from mtbioner.runtime.loading import describe_model, load_backend
from mtbioner.runtime.onnx_backend import OnnxTagger
from mtbioner.runtime.tagging import Tagger

LABELS = {"toy_gene": ["B-GENE", "I-GENE", "O"], "chem.v2": ["B-CHEM", "I-CHEM", "O"]}
SENTENCES = [["aspirin", "binds", "brca1"], ["the", "protein"] * 40, ["x"], ["myc", "binding", "was", "reduced"]]
TEXTS = ["MYC binding was reduced after aspirin.", "The protein binds BRCA1 and cisplatin. " * 5]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a busy machine, two threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved two-head model whose heads give varied labels (large random head weights)."""
    torch.manual_seed(3)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=16).eval()
    model.config.corpora["chem.v2"].head = "crf"
    from mtbioner.model.heads import build_head

    model.heads["chem__dot__v2"] = build_head("crf", 32, LABELS["chem.v2"])
    with torch.no_grad():
        for param in model.heads.parameters():
            param.normal_(0, 2.0)
    folder = tmp_path_factory.mktemp("export") / "model"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fp32_dir(model_dir: Path) -> Path:
    out = model_dir.parent / "fp32"
    export_onnx(model_dir, out)
    return out


@pytest.fixture(scope="module")
def int8_dir(model_dir: Path) -> Path:
    out = model_dir.parent / "int8"
    export_onnx(model_dir, out, "int8")
    return out


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """Run ``mtbioner ARGS`` in-process: exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["mtbioner", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return done.value.code, out, err


def test_fp32_round_trip_gives_the_same_emissions_labels_and_entities(model_dir: Path, fp32_dir: Path) -> None:
    assert sorted(p.name for p in fp32_dir.iterdir() if not p.name.startswith(".")) >= ["config.json", "model.onnx"]
    torch_model = MultiTaskTagger.from_pretrained(model_dir)
    onnx_model = load_backend(fp32_dir)
    assert isinstance(onnx_model, OnnxTagger)
    assert onnx_model.config.corpora == torch_model.config.corpora
    expected = sentence_emissions(torch_model, SENTENCES, batch_size=3)
    got = sentence_emissions(onnx_model, SENTENCES, batch_size=3)
    decoders, onnx_decoders = torch_model.decoders(), onnx_model.decoders()
    assert onnx_decoders["chem.v2"].kind == "crf"
    np.testing.assert_allclose(onnx_decoders["chem.v2"].transitions, decoders["chem.v2"].transitions, rtol=1e-6)
    for a, b in zip(expected, got, strict=True):
        for name in LABELS:
            np.testing.assert_allclose(b[name], a[name], atol=1e-4)
            assert decoders[name].decode(a[name])[0] == onnx_decoders[name].decode(b[name])[0]
    torch_entities = Tagger.load(model_dir).tag_batch(TEXTS)
    assert Tagger.load(fp32_dir).tag_batch(TEXTS) == torch_entities
    assert any(torch_entities), "random heads should find something, or the comparison proves little"


def test_exported_config_and_info(fp32_dir: Path) -> None:
    config = json.loads((fp32_dir / "config.json").read_text())
    assert config["onnx"]["outputs"] == {"toy_gene": "emissions_0", "chem.v2": "emissions_1"}
    assert config["onnx"]["quantize"] == "none"
    assert set(config["onnx"]["crf"]) == {"chem.v2"}
    text = describe_model(fp32_dir)
    assert "onnx (fp32, ONNX Runtime)" in text and "chem.v2" in text


def test_only_requested_heads_are_returned(fp32_dir: Path) -> None:
    model = OnnxTagger.from_pretrained(fp32_dir, threads=1)
    ids = np.array([[2, 10, 11, 3, 0]], dtype=np.int64)
    out = model.run(ids, (ids != 0).astype(np.int64), ["chem.v2"])
    assert list(out) == ["chem.v2"] and out["chem.v2"].shape == (1, 5, 3)
    with pytest.raises(MtbionerError, match="no head 'nope'"):
        model.run(ids, ids, ["nope"])


def test_int8_export_runs_and_loads(model_dir: Path, int8_dir: Path) -> None:
    import onnx

    config = json.loads((int8_dir / "config.json").read_text())
    assert config["onnx"]["quantize"] == "int8"
    assert config["onnx"]["per_channel"] is True and config["onnx"]["reduce_range"] is True
    ops = {node.op_type for node in onnx.load(str(int8_dir / "model.onnx")).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "QAttention", "DynamicQuantizeMatMul"}, ops
    tagger = Tagger.load(int8_dir)
    found = tagger.tag_batch(TEXTS)
    assert len(found) == len(TEXTS)
    emissions = sentence_emissions(tagger.backend, SENTENCES)
    assert [e["toy_gene"].shape for e in emissions] == [(len(s), 3) for s in SENTENCES]


def test_check_prints_both_f1s_and_a_failed_check_writes_nothing(
    model_dir: Path, toy_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = model_dir.parent / "checked"
    code, stdout, err = run_cli(
        monkeypatch, capsys, "export", model_dir, out, "--check", f"toy_gene,chem.v2={toy_dir / 'toy_chem'}",
        "--data-dir", toy_dir,
    )  # fmt: skip
    assert code == 0, err
    assert "torch F1" in stdout and "onnx F1" in stdout and "toy_gene" in stdout and "head chem.v2" in stdout
    assert "+0.00" in stdout and "exported" in stdout
    assert (out / "model.onnx").is_file()
    # the check's figures travel with the export, and `info` shows them
    kept = json.loads((out / "config.json").read_text(encoding="utf-8"))["onnx"]["check"]
    assert kept["split"] == "test" and kept["max_drop"] == 0.5
    assert [(r["corpus"], r["head"], r["drop"]) for r in kept["rows"]] == [
        ("toy_gene", "toy_gene", 0),
        ("toy_chem", "chem.v2", 0),
    ]
    code, stdout, err = run_cli(monkeypatch, capsys, "info", out)
    assert code == 0 and "export check (test split; refused beyond -0.5 F1):" in stdout, err
    assert "toy_gene" in stdout and "change +0.00" in stdout

    settings = CheckSettings(["toy_gene"], toy_dir, max_drop=-1.0)  # any export "loses" more than -1 points
    failed = model_dir.parent / "failed"
    with pytest.raises(ExportCheckError, match="nothing was written") as info:
        export_onnx(model_dir, failed, check=settings)
    assert info.value.rows[0].corpus == "toy_gene" and info.value.rows[0].drop == 0
    assert not failed.exists()
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".failed")]


def test_cli_passes_plain_int8_and_the_check_batch_size(
    model_dir: Path, toy_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import onnx

    import mtbioner.cli.export as export_command  # the command's own reference to export_onnx

    seen: dict = {}
    real = export_command.export_onnx

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(export_command, "export_onnx", spy)
    out = model_dir.parent / "plain-int8"
    code, stdout, err = run_cli(
        monkeypatch, capsys, "export", model_dir, out, "--quantize", "int8", "--plain", "--check", "toy_gene",
        "--data-dir", toy_dir, "--batch-size", "2", "--max-drop", "100",
    )  # fmt: skip
    assert code == 0, err
    assert seen["outliers"] is False and seen["check"].batch_size == 2
    assert json.loads((out / "config.json").read_text())["onnx"]["outliers"] is None
    assert not any(n.name.startswith("mtbioner_outliers") for n in onnx.load(str(out / "model.onnx")).graph.node)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "not an mtbioner model folder"),
        ("missing", "no such model folder"),
        ("onnx", "already an exported ONNX model"),
        ("same", "must differ from the input"),
        ("file", "is a file"),
        ("under-file", "cannot create the output folder's parent"),
        ("not-model", "exists and is not a model folder"),
        ("quantize", "--quantize 'int4'"),
        ("check", "corpus 'NOPE' not found"),
        ("batch", "--batch-size must be at least 1, not 0"),
        ("limit", "--limit must be at least 1, not 0"),
        ("nan", "--max-drop must be a number of F1 points, not nan"),
        ("no-check", "--split and --limit choose what --check scores"),
    ],
)
def test_user_mistakes_give_one_line_and_status_2(
    case: str,
    message: str,
    model_dir: Path,
    fp32_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    source, out, extra = model_dir, tmp_path / "out", []
    if case == "empty":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "missing":
        source = tmp_path / "nope"
    elif case == "onnx":
        source = fp32_dir
    elif case == "same":
        out = model_dir
    elif case == "file":
        out.write_text("x")
    elif case == "under-file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "sub" / "out"
    elif case == "not-model":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    elif case == "quantize":
        extra = ["--quantize", "int4"]
    elif case == "check":
        extra = ["--check", "NOPE", "--data-dir", tmp_path]
    elif case == "no-check":
        extra = ["--limit", "5"]
    elif case == "nan":
        extra = ["--check", "toy_gene", "--max-drop", "nan"]
    elif case in ("batch", "limit"):
        extra = ["--check", "toy_gene", f"--{'batch-size' if case == 'batch' else 'limit'}", "0"]
    code, stdout, err = run_cli(monkeypatch, capsys, "export", source, out, *extra)
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    if case == "not-model":
        assert (out / "notes.txt").read_text() == "keep me"


def test_loading_a_broken_export_names_the_file(fp32_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(fp32_dir, broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelFormatError, match="model.onnx: ONNX Runtime cannot load it"):
        Tagger.load(broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "corpora": list(config["corpora"])}))  # hand-edited
    with pytest.raises(ModelFormatError, match="config.json: unexpected fields"):
        OnnxTagger.from_pretrained(broken)
    del config["onnx"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="not an exported mtbioner config"):
        OnnxTagger.from_pretrained(broken)


def test_export_replaces_an_earlier_export(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    export_onnx(model_dir, out, optimize=False)
    first = json.loads((out / "config.json").read_text())
    assert first["onnx"]["optimized"] is False
    export_onnx(model_dir, out, "int8")
    assert json.loads((out / "config.json").read_text())["onnx"]["quantize"] == "int8"


def test_cli_and_server_run_an_exported_model(
    int8_dir: Path, toy_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from mtbioner.apps.serving import ServeSettings, create_app

    code, stdout, err = run_cli(monkeypatch, capsys, "tag", int8_dir, TEXTS[0])
    assert code == 0, err
    assert json.loads(stdout)["entities"] == Tagger.load(int8_dir)(TEXTS[0])
    code, stdout, err = run_cli(monkeypatch, capsys, "evaluate", int8_dir, "toy_gene", "--data-dir", toy_dir)
    assert code == 0 and "toy_gene" in stdout, err
    code, stdout, err = run_cli(monkeypatch, capsys, "info", int8_dir)
    assert code == 0 and "onnx (int8, ONNX Runtime)" in stdout, err
    with TestClient(create_app(int8_dir, ServeSettings(batch_window_ms=1))) as client:
        assert client.get("/v1/model").json()["backend"] == "onnx"
        response = client.post("/v1/tag", json={"texts": TEXTS})
        assert response.status_code == 200
        expected = Tagger.load(int8_dir).tag_batch(TEXTS)
        got = [r["entities"] for r in response.json()["results"]]
        assert [[(e["start"], e["end"], e["type"]) for e in ents] for ents in got] == [
            [(e["start"], e["end"], e["type"]) for e in ents] for ents in expected
        ]


def test_light_fusions_are_the_default_and_all_fusions_one_option_away(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import onnx

    def op_types(folder: Path) -> set[str]:
        return {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}

    export_onnx(model_dir, tmp_path / "all", "int8", fusions="all")
    export_onnx(model_dir, tmp_path / "light", "int8")
    full, light = op_types(tmp_path / "all"), op_types(tmp_path / "light")
    assert {"QAttention", "SkipLayerNormalization"} <= full
    assert not {"Attention", "QAttention", "SkipLayerNormalization"} & light
    assert "BiasGelu" in light and "BiasGelu" in full  # the light set keeps the other fusions
    config = json.loads((tmp_path / "light" / "config.json").read_text())
    assert config["onnx"]["fusions"] == "light" and config["onnx"]["fused_attention"] is False
    assert "ONNX Runtime)" in describe_model(tmp_path / "light")
    assert "ONNX Runtime, all fusions)" in describe_model(tmp_path / "all")
    # fp32: the export itself refuses a graph that deviates from torch (1e-3), so the light graph computes the same
    export_onnx(model_dir, tmp_path / "light-fp32")
    assert not {"Attention", "SkipLayerNormalization"} & op_types(tmp_path / "light-fp32")
    code, _, err = run_cli(monkeypatch, capsys, "export", model_dir, tmp_path / "all-cli", "--quantize", "int8",
                           "--fusions", "all")  # fmt: skip
    assert code == 0 and {"QAttention", "SkipLayerNormalization"} <= op_types(tmp_path / "all-cli"), err
    assert len(Tagger.load(tmp_path / "light").tag_batch([TEXTS[0], TEXTS[0].upper()])) == 2
    code, _, err = run_cli(monkeypatch, capsys, "export", model_dir, tmp_path / "bad", "--fusions", "some")
    assert code == 2 and "--fusions 'some'" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
