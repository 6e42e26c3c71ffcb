"""Case features: an uncased encoder told each word's letter case through its token types.

The decisive test trains on a corpus where only case separates an entity from a non-entity
("MYC" is a gene, "myc" is not): the uncased tokenizer gives both one id, so a plain model
cannot learn it and a case-feature model must.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtbioner.data.corpus import read_corpus
from mtbioner.learn.training import TrainingConfig, train
from mtbioner.model.encoding import CASE_TYPES, case_type, collate, encode
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.export import export_onnx
from mtbioner.runtime.inference import predict_tags, sentence_emissions
from mtbioner.runtime.loading import describe_model, load_backend

LABELS = {"genes": ["B-GENE", "I-GENE", "O"]}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("p53", 0),
        ("kinase", 0),
        ("1.5", 0),
        ("(", 0),
        ("Tamoxifen", 1),
        ("A", 1),
        ("Na", 1),
        ("BRCA1", 2),
        ("TNF-ALPHA", 2),
        ("mRNA", 3),
        ("IgG", 3),
        ("McCune", 3),
        ("Éclair", 1),
    ],
)
def test_case_type(word: str, expected: int) -> None:
    assert case_type(word) == expected
    assert 0 <= case_type(word) < CASE_TYPES


def test_windows_carry_the_case_of_every_sub_token(tiny_encoder: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    words = ["MYC", "binds", "Xqzv", "mRNA"]
    [window] = encode(tokenizer, [words], 64, case=True)
    pieces = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    expected = [case_type(words[w]) for w in pieces.word_ids()]
    assert window.token_types == (0, *expected, 0)  # [CLS] and [SEP] are type 0
    assert len(window.token_types) == len(window.input_ids)
    assert encode(tokenizer, [words], 64)[0].token_types is None  # plain models get none

    short = encode(tokenizer, [["a"]], 64, case=True)[0]
    batch = collate([window, short], tokenizer.pad_token_id)
    assert batch.token_type_ids is not None
    assert batch.token_type_ids[0].tolist() == list(window.token_types)
    assert batch.token_type_ids[1, len(short) :].eq(0).all()  # padding is type 0
    assert collate(encode(tokenizer, [words], 64), 0).token_type_ids is None


def test_a_new_case_model_computes_what_the_plain_one_does(tiny_encoder: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = MultiTaskTagger.from_encoder(LABELS, tiny_encoder).eval()
    torch.manual_seed(0)
    cased = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, case_features=True).eval()
    assert cased.encoder.config.type_vocab_size == CASE_TYPES
    sentences = [["MYC", "binds", "BRCA1"], ["the", "Protein"]]
    a = sentence_emissions(plain, sentences)
    b = sentence_emissions(cased, sentences)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x["genes"], y["genes"], atol=1e-5)

    with torch.no_grad():  # once the type rows differ, case reaches the output
        cased.encoder.embeddings.token_type_embeddings.weight[2].normal_(
            0, 1.0
        )  # (a constant would vanish in LayerNorm)
    moved = sentence_emissions(cased, sentences)
    assert not np.allclose(moved[0]["genes"], a[0]["genes"], atol=1e-3)
    np.testing.assert_allclose(moved[1]["genes"][0], a[1]["genes"][0], atol=1e-5)  # "the" is type 0: unchanged

    cased.save_pretrained(tmp_path / "m")
    again = MultiTaskTagger.from_pretrained(tmp_path / "m")
    assert again.config.case_features and again.encoder.config.type_vocab_size == CASE_TYPES
    for x, y in zip(moved, sentence_emissions(again, sentences), strict=True):
        np.testing.assert_allclose(x["genes"], y["genes"], atol=1e-6)
    assert "letter case of each word" in describe_model(tmp_path / "m")
    with pytest.raises(ValueError, match="token_type_ids"):
        cased.forward_all(torch.tensor([[2, 3]]), torch.tensor([[1, 1]]))


def _case_only_corpus(folder: Path) -> Path:
    """Sentences where "MYC"/"BRCA1" are genes and "myc"/"brca1" are not: only case tells them apart."""
    rows = []
    for index in range(40):
        name = ["myc", "brca1"][index % 2]
        upper = index % 4 < 2
        word = name.upper() if upper else name
        rows.append([("the", "O"), (word, "B-GENE" if upper else "O"), ("was", "O"), ("increased", "O")])
    text = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in sentence) for sentence in rows) + "\n"
    corpus = folder / "genes"
    corpus.mkdir()
    for split in ("train", "devel", "test"):
        # the test split's sentences differ, so that training keeps its own (leakage.py removes test text)
        (corpus / f"{split}.tsv").write_text(text.replace("increased", "decreased") if split == "test" else text)
    return corpus


def test_only_a_case_model_learns_what_only_case_tells(tiny_encoder: Path, tmp_path: Path) -> None:
    corpus = read_corpus(_case_only_corpus(tmp_path))
    settings = {"encoder": str(tiny_encoder), "epochs": 12, "lr": 3e-3, "warmup": 0.1, "batch_size": 8}
    results = {}
    for case in (False, True):
        config = TrainingConfig(**settings, case_features=case, train_splits=["train", "devel"])
        model = train([corpus], tmp_path / f"m-{case}", config, progress=False)
        tags = predict_tags(model, [["the", "MYC", "was", "increased"], ["the", "myc", "was", "increased"]], "genes")
        results[case] = [t[1] for t in tags]
    assert results[True] == ["B-GENE", "O"]
    assert results[False][0] == results[False][1]  # the plain model sees one word


def test_onnx_export_takes_the_case_input(tiny_encoder: Path, tmp_path: Path) -> None:
    import onnx

    torch.manual_seed(1)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, case_features=True).eval()
    with torch.no_grad():
        model.encoder.embeddings.token_type_embeddings.weight.normal_(0, 1.0)
        for param in model.heads.parameters():
            param.normal_(0, 2.0)
    model.save_pretrained(tmp_path / "m")
    for quantize in ("none", "int8"):
        out = tmp_path / quantize
        export_onnx(tmp_path / "m", out, quantize)  # type: ignore[arg-type]
        assert [i.name for i in onnx.load(str(out / "model.onnx")).graph.input] == [
            "input_ids",
            "attention_mask",
            "token_type_ids",
        ]
        sentences = [["MYC", "binds", "BRCA1"], ["myc", "binds", "brca1"]]
        expected = sentence_emissions(model, sentences)
        got = sentence_emissions(load_backend(out), sentences)
        tolerance = 1e-4 if quantize == "none" else 0.5
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_allclose(b["genes"], a["genes"], atol=tolerance)
        assert not np.allclose(got[0]["genes"], got[1]["genes"], atol=1e-3)  # the graph sees case
