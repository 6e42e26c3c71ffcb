"""Document context: a sentence read with the words around it in its document (FLERT).

The decisive test trains on a corpus where only the sentence *before* tells whether a word is an
entity: a model that reads sentences alone cannot learn it, one that reads document context must.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from mtbioner.data.corpus import read_corpus
from mtbioner.data.text import split_sentences, text_surroundings
from mtbioner.errors import MtbionerError
from mtbioner.learn.training import TrainingConfig, train
from mtbioner.model.encoding import case_type, document_surroundings, encode, word_pieces
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.evaluation import evaluate_corpus
from mtbioner.runtime.export import export_onnx
from mtbioner.runtime.inference import predict_tags, sentence_emissions
from mtbioner.runtime.loading import describe_model, load_backend
from mtbioner.runtime.tagging import Tagger
from tests.conftest import run_cli

LABELS = {"genes": ["B-GENE", "I-GENE", "O"]}


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return AutoTokenizer.from_pretrained(str(tiny_encoder))


def test_document_surroundings_stay_inside_the_document_and_take_the_nearest_words() -> None:
    sentences = [["a", "b"], ["c"], ["d", "e", "f"], ["g"], ["h"]]
    around = document_surroundings(sentences, [0, 0, 0, 0, 1], 2)
    assert around[0] == ([], ["c", "d"])
    assert around[1] == (["a", "b"], ["d", "e"])
    assert around[2] == (["b", "c"], ["g"])  # the nearest two words, across a sentence boundary
    assert around[3] == (["e", "f"], [])  # "h" is another document
    assert around[4] == ([], [])
    assert document_surroundings(sentences, [0] * 5, 0) == [([], [])] * 5


def test_text_surroundings_are_the_words_around_the_sentence() -> None:
    text = "Aspirin was given. The patient had naproxen-induced colitis. It resolved quickly."
    first, second, third = split_sentences(text)
    assert text_surroundings(text, second, 3) == (["was", "given", "."], ["It", "resolved", "quickly"])
    assert text_surroundings(text, first, 3) == ([], ["The", "patient", "had"])
    left, right = text_surroundings(text, third, 50)
    assert right == [] and left == [t.text for s in (first, second) for t in s.tokens]
    assert text_surroundings(text, second, 0) == ([], [])
    long = "x" * 500 + " tail. Now this."  # a word cut by the reach is dropped, never read as a fragment
    *_, last = split_sentences(long)
    left, _ = text_surroundings(long, last, 3)
    assert left == ["tail", "."]  # 96 characters back end inside the long word
    assert text_surroundings(long, last, 40)[0] == ["x" * 500, "tail", "."]  # within reach: whole
    odd = "Aspirin \ud800 was given. The patient slept."
    assert text_surroundings(odd, Tagger.split(odd)[1], 5)[0] == ["Aspirin", "\ufffd", "was", "given", "."]


@pytest.mark.parametrize("case", [False, True])
def test_context_goes_around_the_sentence_and_carries_no_label(tokenizer, case: bool) -> None:
    words = [["aspirin", "causes", "zzqx"]]
    surroundings = [(["the", "patient", "qzx"], ["it", "resolved"])]
    label2id = {"B-CHEM": 0, "O": 1}
    tags = [["B-CHEM", "O", "O"]]
    plain = encode(tokenizer, words, 32, tags=tags, label2id=label2id, case=case)[0]
    (window,) = encode(
        tokenizer, words, 32, tags=tags, label2id=label2id, case=case, context=4, surroundings=surroundings
    )
    left = [i for p in word_pieces(tokenizer, [surroundings[0][0]])[0] for i in p][-4:]
    right = [i for p in word_pieces(tokenizer, [surroundings[0][1]])[0] for i in p][:4]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert window.input_ids == (cls, *left, *plain.input_ids[1:-1], *right, sep)
    assert window.words == plain.words and window.labels == plain.labels
    assert window.positions == tuple(p + len(left) for p in plain.positions)
    if case:
        assert len(window.token_types) == len(window.input_ids)
        assert window.token_types[1 + len(left) : -1 - len(right)] == plain.token_types[1:-1]
        assert window.token_types[-1 - len(right) : -1] == (case_type("it"),) * len(right)
    assert encode(tokenizer, words, 32, tags=tags, label2id=label2id, case=case, surroundings=surroundings) == [plain]


def test_a_long_sentence_gets_context_on_its_own_edges_only(tokenizer) -> None:
    words = [["a", "b", "c", "d", "e", "f", "g", "h"] * 3]
    matches = [[(1,)] * len(words[0])]
    surroundings = [(["x", "y"], ["z"])]
    windows = encode(tokenizer, words, 12, matches=matches, context=2, surroundings=surroundings)
    assert len(windows) > 2
    x, y, z = (tokenizer.convert_tokens_to_ids(t) for t in "xyz")
    assert windows[0].input_ids[1:3] == (x, y) and z not in windows[0].input_ids
    assert windows[-1].input_ids[-2] == z and x not in windows[-1].input_ids
    for middle in windows[1:-1]:
        assert not {x, y, z} & set(middle.input_ids)
    for window in windows:  # context words are never dictionary matches
        assert len(window.dictionary_ids) == len(window.input_ids)
        assert [i for i, d in zip(window.input_ids, window.dictionary_ids, strict=True) if d == (1,)] == [
            window.input_ids[p] for p in range(len(window)) if window.dictionary_ids[p] == (1,)
        ]
    assert windows[0].dictionary_ids[1:3] == ((0,), (0,))
    with pytest.raises(ValueError, match="surroundings has 2 sentences"):
        encode(tokenizer, words, 12, context=2, surroundings=surroundings * 2)


def test_a_context_model_reads_the_neighbours_and_tags_a_text_as_its_sentences(tiny_encoder: Path) -> None:
    torch.manual_seed(0)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=32, context=8).eval()
    sentence = [["aspirin", "causes", "colitis"]]
    alone = sentence_emissions(model, sentence)[0]["genes"]
    near = sentence_emissions(model, sentence, surroundings=[(["the", "patient"], [])])[0]["genes"]
    assert not np.allclose(alone, near, atol=1e-4)  # the neighbours reach the sentence's words
    model.config.context = 0
    assert np.allclose(sentence_emissions(model, sentence, surroundings=[(["the", "patient"], [])])[0]["genes"], alone)
    model.config.context = 8

    tagger = Tagger(model)
    text = "The patient took aspirin. Aspirin causes colitis. It resolved."
    sentences = [(text, s) for s in Tagger.split(text)]
    # One sentence at a time (as the server interleaves clients) or the whole text: the same entities.
    whole = tagger.sentence_entities(sentences, ["genes"])
    one_by_one = [tagger.sentence_entities([pair], ["genes"])[0] for pair in sentences]
    spans = [[(e.start, e.end, e.type) for e in found] for found in whole]
    assert spans == [[(e.start, e.end, e.type) for e in found] for found in one_by_one]
    assert spans != [[(e.start, e.end, e.type) for e in found] for found in _alone(tagger, sentences)]
    for found, alone_found in zip(whole, one_by_one, strict=True):
        assert [e.score for e in found] == pytest.approx([e.score for e in alone_found], abs=1e-5)


def _alone(tagger: Tagger, sentences) -> list:
    """The entities of each sentence given as a text of its own: no neighbours to read."""
    from dataclasses import replace

    out = []
    for text, sentence in sentences:
        piece = text[sentence.start : sentence.end]
        (found,) = tagger.sentence_entities([(piece, Tagger.split(piece)[0])], ["genes"])
        out.append([replace(e, start=e.start + sentence.start, end=e.end + sentence.start) for e in found])
    return out


def test_context_is_checked_against_the_encoder(tiny_encoder: Path) -> None:
    with pytest.raises(MtbionerError, match="reads at most 128"):
        MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=64, context=40)
    with pytest.raises(MtbionerError, match="context must be 0 or more"):
        MultiTaskTagger.from_encoder(LABELS, tiny_encoder, context=-1)
    with pytest.raises(MtbionerError, match="context must be 0 or more"):
        TrainingConfig(context=-2)


def _context_only_corpus(folder: Path) -> Path:
    """Two-sentence documents: "myc" in the second sentence is a gene when the first says "kinase", else not."""
    corpus = folder / "genes"
    corpus.mkdir()
    for split in ("train", "devel", "test"):
        # test sentences end differently, so that training never sees a test sentence's text (leakage.py)
        ends = (";", ".") if split == "test" else (".", "")
        documents = []
        for index in range(48):
            gene = index % 2 == 0
            first = [("kinase" if gene else "weather", "O"), ("report", "O"), (ends[0], "O")]
            second = [("the", "O"), ("myc", "B-GENE" if gene else "O"), ("was", "O"), ("increased", "O")]
            second += [(ends[1], "O")] if ends[1] else []
            sentences = ("\n".join(f"{w}\t{t}" for w, t in s) for s in (first, second))
            documents.append("-DOCSTART-\tO\n\n" + "\n\n".join(sentences))
        (corpus / f"{split}.tsv").write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return corpus


def test_only_a_context_model_learns_what_only_the_document_tells(tiny_encoder: Path, tmp_path: Path) -> None:
    corpus = read_corpus(_context_only_corpus(tmp_path))
    settings = {"encoder": str(tiny_encoder), "epochs": 12, "lr": 3e-3, "warmup": 0.1, "batch_size": 8}
    results = {}
    for context in (0, 8):
        config = TrainingConfig(**settings, max_length=32, context=context, train_splits=["train", "devel"])
        model = train([corpus], tmp_path / f"m-{context}", config, progress=False)
        report, _ = evaluate_corpus(model, corpus, "test")
        results[context] = report.overall.f1
        second = [["the", "myc", "was", "increased"]] * 2
        tags = predict_tags(model, second, "genes", surroundings=[(["kinase", "report", "."], []), (["weather"], [])])
        if context:
            assert [t[1] for t in tags] == ["B-GENE", "O"]
            texts = ["Kinase report. The myc was increased.", "Weather report. The myc was increased."]
            tagged = Tagger(model).tag_batch(texts)  # each text is a document
            assert [[(e["text"], e["start"]) for e in found] for found in tagged] == [[("myc", 19)], []]
    assert results[8] == 100.0
    assert results[0] < 80.0  # alone, "myc" is a gene half the time: no sentence-level model gets it right
    config = json.loads((tmp_path / "m-8" / "config.json").read_text(encoding="utf-8"))
    assert config["context"] == 8
    assert "8 sub-tokens of the document each side" in describe_model(tmp_path / "m-8")
    assert "context      none" in describe_model(tmp_path / "m-0")


def test_onnx_export_of_a_context_model_reads_the_same_context(tiny_encoder: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=32, context=8).eval()
    with torch.no_grad():
        for param in model.heads.parameters():
            param.normal_(0, 2.0)
    model.save_pretrained(tmp_path / "m")
    export_onnx(tmp_path / "m", tmp_path / "onnx", "none")
    backend = load_backend(tmp_path / "onnx")
    assert backend.config.context == 8
    sentences = [["aspirin", "causes", "colitis"]] * 2
    around = [(["the", "patient"], ["it"]), ([], [])]
    expected = sentence_emissions(model, sentences, surroundings=around)
    got = sentence_emissions(backend, sentences, surroundings=around)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(b["genes"], a["genes"], atol=1e-4)
    assert not np.allclose(got[0]["genes"], got[1]["genes"], atol=1e-4)


def test_train_cli_takes_context_and_refuses_a_bad_one(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    common = ["train", "toy_chem", "--data-dir", toy_dir, "--encoder", tiny_encoder, "--epochs", "1", "--no-progress"]
    code, out = run_cli(monkeypatch, capsys, *common, "--output", tmp_path / "bad", "--context", "-1")
    assert code != 0 and "context must be 0 or more" in out and "Traceback" not in out
    code, out = run_cli(monkeypatch, capsys, *common, "--output", tmp_path / "big", "--context", "100")
    assert code != 0 and "reads at most 128" in out and "Traceback" not in out
    assert not (tmp_path / "big" / "config.json").exists()
    code, out = run_cli(
        monkeypatch, capsys, *common, "--output", tmp_path / "ok", "--context", "8", "--max-length", "32"
    )
    assert code == 0, out
    assert json.loads((tmp_path / "ok" / "config.json").read_text(encoding="utf-8"))["context"] == 8
