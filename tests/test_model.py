from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtbioner.errors import ModelFormatError, MtbionerError
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.inference import sentence_emissions

LABELS = {"gene": ["B-GENE", "I-GENE", "O"], "chem.v2": ["B-CHEM", "I-CHEM", "O"]}
SENTENCES = [["aspirin", "binds", "brca1"], ["the", "protein"] * 40, ["x"]]


@pytest.fixture()
def model(tiny_encoder: Path) -> MultiTaskTagger:
    torch.manual_seed(1)
    return MultiTaskTagger.from_encoder(LABELS, tiny_encoder, head="crf", max_length=16).eval()


def test_forward_one_head_and_all_heads(model: MultiTaskTagger) -> None:
    ids = torch.tensor([[2, 10, 11, 3]])
    mask = torch.ones_like(ids)
    out = model(ids, mask, corpus="gene")
    assert out.logits.shape == (1, 4, 3) and out.loss is None
    both = model.forward_all(ids, mask)
    assert set(both) == {"gene", "chem.v2"}
    torch.testing.assert_close(both["gene"], out.logits)
    with pytest.raises(MtbionerError, match="no head 'nope'"):
        model(ids, mask, corpus="nope")


def test_loss_weight_scales_the_loss(tiny_encoder: Path) -> None:
    ids, mask = torch.tensor([[2, 10, 11, 3]]), torch.ones(1, 4, dtype=torch.long)
    labels = torch.tensor([[-100, 0, 2, -100]])
    losses = []
    for weight in (1.0, 0.25):
        torch.manual_seed(1)
        m = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, loss_weights={"gene": weight}).eval()
        losses.append(float(m(ids, mask, "gene", labels).loss.detach()))
    assert losses[1] == pytest.approx(0.25 * losses[0], rel=1e-5)


def test_save_then_load_gives_identical_predictions(model: MultiTaskTagger, tmp_path: Path) -> None:
    before = sentence_emissions(model, SENTENCES)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) >= ["config.json", "model.safetensors"]
    loaded = MultiTaskTagger.from_pretrained(tmp_path / "m")
    after = sentence_emissions(loaded, SENTENCES)
    for a, b in zip(before, after, strict=True):
        for name in LABELS:
            assert (a[name] == b[name]).all()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format_version"] == 1
    assert config["corpora"]["chem.v2"]["labels"] == ["B-CHEM", "I-CHEM", "O"]
    assert config["corpora"]["gene"]["head"] == "crf"
    assert loaded.decoders()["gene"].kind == "crf"


def test_crash_during_save_leaves_old_folder_intact(model: MultiTaskTagger, tmp_path: Path) -> None:
    target = tmp_path / "m"
    model.save_pretrained(target)
    old = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    with torch.no_grad():
        model.head("gene").classifier.bias.add_(1.0)

    def crash(folder: Path) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(target, extra=crash)
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == old
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind
    MultiTaskTagger.from_pretrained(target)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no such model folder"),
        (lambda d: d.mkdir(), "not an mtbioner model folder"),
        (
            lambda d: (d.mkdir(), (d / "config.json").write_text("{"), (d / "model.safetensors").write_bytes(b"")),
            "not valid JSON",
        ),
        (
            lambda d: (
                d.mkdir(),
                (d / "config.json").write_text('{"a": 1}'),
                (d / "model.safetensors").write_bytes(b""),
            ),
            "not an mtbioner model config",
        ),
    ],
)
def test_load_errors_name_the_folder(tmp_path: Path, setup, message: str) -> None:
    folder = tmp_path / "bad"
    setup(folder)
    with pytest.raises(ModelFormatError, match=message) as info:
        MultiTaskTagger.from_pretrained(folder)
    assert "bad" in str(info.value)


def test_load_rejects_other_format_version(model: MultiTaskTagger, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="model format 99"):
        MultiTaskTagger.from_pretrained(tmp_path / "m")


def test_encoder_must_be_a_checkpoint_folder(tmp_path: Path) -> None:
    with pytest.raises(MtbionerError, match="not a Hugging Face checkpoint folder"):
        MultiTaskTagger.from_encoder(LABELS, tmp_path)


def test_unknown_loss_weight_corpus(tiny_encoder: Path) -> None:
    with pytest.raises(MtbionerError, match="unknown corpora"):
        MultiTaskTagger.from_encoder(LABELS, tiny_encoder, loss_weights={"other": 2.0})
