"""Dictionary evidence: term lists per type, the matcher, and the dictionary-feature model.

The decisive test trains on a corpus where only the dictionary separates an entity from a
non-entity: every entity and non-entity word is unknown to the tokenizer (one ``[UNK]`` id), so
a plain model sees one word and cannot learn it, while a dictionary-feature model must, and
then tags an unseen word that only the user's dictionary file lists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbioner.cli import main
from mtbioner.data.corpus import read_corpus
from mtbioner.errors import CorpusFormatError, ModelFormatError, MtbionerError
from mtbioner.learn.training import TrainingConfig, parameter_groups, train
from mtbioner.model.dictionary import DICTIONARY_NAME, Dictionary, training_matches
from mtbioner.model.encoding import collate, encode
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.export import export_onnx
from mtbioner.runtime.inference import predict_tags, sentence_emissions
from mtbioner.runtime.loading import describe_model, load_backend
from mtbioner.runtime.tagging import Tagger

LABELS = {"genes": ["B-GENE", "I-GENE", "O"], "chems": ["B-CHEM", "I-CHEM", "O"]}


def _dictionary() -> Dictionary:
    return Dictionary({"GENE": ["MYC", "BRCA1"], "CHEM": ["aspirin", "sodium chloride"]})


# ---------------------------------------------------------------- files


def test_a_term_file_is_read_with_comments_blank_lines_and_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "terms.tsv"
    path.write_text("\ufeff# MeSH export\n\naspirin\tCHEM\n  sodium chloride \tCHEM\nMYC\tGENE\n", encoding="utf-8")
    d = Dictionary.from_file(path)
    assert d.types == ["CHEM", "GENE"]
    assert d.terms == {"CHEM": {"aspirin", "sodium chloride"}, "GENE": {"MYC"}}
    assert len(d) == 3 and d.n_tags == 5
    assert d.tag_names == ["O", "B-CHEM", "I-CHEM", "B-GENE", "I-GENE"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("aspirin\tCHEM\nibuprofen CHEM\n", 2, "expected term<TAB>type, found 1"),
        ("# c\naspirin\tCHEM\tx\n", 2, "found 3"),
        ("aspirin\tCHEM\n\n\t CHEM\n", 3, "empty term"),
        ("aspirin\t\n", 1, "empty type"),
        ("--\tCHEM\nx\t\n", 2, "empty type"),
    ],
)
def test_a_malformed_term_file_names_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=message) as caught:
        Dictionary.from_file(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_unreadable_or_empty_term_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(MtbionerError, match="no such dictionary file"):
        Dictionary.from_file(tmp_path / "missing.tsv")
    (tmp_path / "empty.tsv").write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(MtbionerError, match="no term"):
        Dictionary.from_file(tmp_path / "empty.tsv")
    (tmp_path / "latin1.tsv").write_bytes("caf\xe9\tCHEM\n".encode("latin-1"))
    with pytest.raises(MtbionerError, match="not UTF-8"):
        Dictionary.from_file(tmp_path / "latin1.tsv")


def test_terms_come_from_training_splits_never_test(toy_dir: Path) -> None:
    corpus = read_corpus(toy_dir / "toy_chem")
    d = Dictionary.from_corpora([corpus])
    assert d.types == ["CHEM"]
    assert {"sodium chloride", "hydrogen peroxide", "cisplatin"} <= d.terms["CHEM"]
    test_only = {" ".join(s.tokens[a:b]) for s in corpus.sentences("test") for _, a, b in _spans(s.tags)}
    train_terms = {" ".join(s.tokens[a:b]) for s in corpus.sentences("train") for _, a, b in _spans(s.tags)}
    assert d.terms["CHEM"] == train_terms and (test_only - train_terms).isdisjoint(d.terms["CHEM"])
    with pytest.raises(MtbionerError, match="never come from the test split"):
        Dictionary.from_corpora([corpus], splits=("train", "test"))
    with pytest.raises(MtbionerError, match="never take terms from the test split"):
        TrainingConfig(dictionary_features=True, train_splits=["train", "test"])
    with pytest.raises(MtbionerError, match="add --dictionary-features"):
        TrainingConfig(dictionary_files=["x.tsv"])
    with_devel = Dictionary.from_corpora([corpus], splits=("train", "devel"))
    assert with_devel.terms["CHEM"] >= d.terms["CHEM"]


def _spans(tags):
    from mtbioner.data.schemes import tags_to_spans

    return tags_to_spans(tags)


def test_merge_save_and_load(tmp_path: Path) -> None:
    a = Dictionary({"GENE": ["MYC"]})
    b = Dictionary({"CHEM": ["aspirin"], "GENE": ["BRCA1"]})
    merged = a.merge(b)
    assert merged.types == ["GENE", "CHEM"]  # this one's order, then new types
    assert merged.terms == {"GENE": {"MYC", "BRCA1"}, "CHEM": {"aspirin"}}
    with pytest.raises(MtbionerError, match="case"):
        a.merge(Dictionary({"GENE": ["x"]}, case_sensitive=True))
    path = merged.save(tmp_path)
    assert path == tmp_path / DICTIONARY_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["types"] == ["GENE", "CHEM"] and data["terms"]["GENE"] == ["BRCA1", "MYC"]
    assert Dictionary.load(tmp_path) == merged
    path.write_text(json.dumps({"format": 1, "types": ["A"], "terms": {"A": "x"}}), encoding="utf-8")
    with pytest.raises(ModelFormatError, match="lists of strings"):
        Dictionary.load(tmp_path)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        Dictionary.load(tmp_path)
    with pytest.raises(ModelFormatError, match="no dictionary.json"):
        Dictionary.load(tmp_path / "nowhere")


# ---------------------------------------------------------------- matching


def test_longest_match_wins_and_multi_word_terms_match() -> None:
    d = Dictionary({"Disease": ["breast cancer", "cancer", "breast cancer type 2 susceptibility"]})
    words = ["breast", "cancer", "and", "cancer", "breast", "cancer", "type", "2"]
    assert d.spans(words) == [("Disease", 0, 2), ("Disease", 3, 4), ("Disease", 4, 6)]
    assert d.match(words) == [(1,), (2,), (0,), (1,), (1,), (2,), (0,), (0,)]
    assert d.tags(["breast", "cancer", "type", "2", "susceptibility"]) == [["B-Disease"]] + [["I-Disease"]] * 4
    # leftmost first: "a b" is taken, so "b c" (overlapping it) is not
    assert Dictionary({"T": ["a b", "b c"]}).spans(["a", "b", "c"]) == [("T", 0, 2)]


def test_matches_start_and_end_on_word_boundaries_whatever_the_tokenization() -> None:
    d = Dictionary({"GENE": ["IL-2", "p53"], "CHEM": ["Ca2+"]})
    assert d.spans(["IL-2"]) == [("GENE", 0, 1)]
    assert d.spans(["IL", "-", "2", "levels"]) == [("GENE", 0, 3)]
    assert d.spans(["IL-2R", "IL-22", "pIL-2", "p53-dependent", "cancers"]) == []  # never inside a word
    assert d.spans(["Ca2", "+", "and", "Ca2+"]) == [("CHEM", 0, 2), ("CHEM", 3, 4)]
    assert d.spans(["IL", "2"]) == []  # the dash is an atom of its own
    assert d.spans([]) == []


def test_case_insensitive_by_default_and_sensitive_on_request() -> None:
    words = ["MYC", "myc", "Myc", "ＭＹＣ"]  # the last is full-width: NFKC makes it MYC
    assert [s[1] for s in Dictionary({"GENE": ["myc"]}).spans(words)] == [0, 1, 2, 3]
    assert [s[1] for s in Dictionary({"GENE": ["MYC"]}, case_sensitive=True).spans(words)] == [0, 3]


def test_a_word_in_several_types_carries_every_type() -> None:
    d = Dictionary({"GENE": ["p53", "p53 protein"], "protein": ["p53"]})
    assert d.types == ["GENE", "protein"]
    assert d.match(["p53", "protein", "levels"]) == [(1, 3), (2, 0), (0, 0)]
    assert d.tags(["p53"]) == [["B-GENE", "B-protein"]]


def test_a_5000_sentence_match_is_fast() -> None:
    import time

    d = Dictionary({"CHEM": [f"chem{i}" for i in range(5000)] + ["sodium chloride"], "GENE": ["MYC"]})
    sentence = "treatment with sodium chloride and chem17 reduced MYC in 25 rats ( p < 0.05 ) .".split()
    sentences = [[*sentence, str(i)] for i in range(5000)]
    started = time.process_time()
    found = [d.match(s) for s in sentences]
    assert time.process_time() - started < 2.0  # about 0.1 s of CPU on one core
    assert found[0][2:4] == [(1, 0), (2, 0)]


def test_training_sentences_are_matched_with_terms_from_outside_their_block() -> None:
    from mtbioner.data.corpus import Corpus, Sentence, Split

    sentences = [
        Sentence(("aspirin", "helps"), ("B-CHEM", "O")),
        Sentence(("aspirin", "and", "zinc"), ("B-CHEM", "O", "B-CHEM")),
        Sentence(("heparin", "and", "zinc"), ("B-CHEM", "O", "O")),
        Sentence(("heparin", "helps"), ("B-CHEM", "O")),
    ]
    corpus = Corpus("c", Path("c"), {"train": Split("train", Path("c/train.tsv"), sentences, 1, 0, "IOB2")})
    user = Dictionary({"CHEM": ["heparin"]})
    d = Dictionary.from_corpora([corpus]).merge(user)
    assert training_matches(d, [corpus], ["train"], 1) == {"c": [d.match(s.tokens) for s in sentences]}
    by_block = training_matches(d, [corpus], ["train"], 2, user)["c"]
    # blocks: sentences 0-1 and 2-3. aspirin (block 0 only) is unknown to block 0; zinc (block 0) too;
    # heparin is a user term: always matched.
    assert by_block == [[(0,), (0,)], [(0,), (0,), (0,)], [(1,), (0,), (1,)], [(1,), (0,)]]
    with pytest.raises(MtbionerError, match="test split"):
        training_matches(d, [corpus], ["test"], 2)


def test_pruning_drops_terms_that_are_mostly_not_entities() -> None:
    from mtbioner.data.corpus import Corpus, Sentence, Split

    sentences = [
        Sentence(("all", "patients", "had", "ALL"), ("O", "O", "O", "B-Disease")),
        Sentence(("all", "had", "cancer"), ("O", "O", "B-Disease")),
        Sentence(("all", "cells"), ("O", "O")),
        Sentence(("lead", "poisoning"), ("O", "O")),  # lead is a CHEM term, but no corpus annotates CHEM
    ]
    corpus = Corpus("c", Path("c"), {"train": Split("train", Path("c/train.tsv"), sentences, 1, 0, "IOB2")})
    d = Dictionary.from_corpora([corpus]).merge(Dictionary({"Disease": ["fever"], "CHEM": ["lead"]}))
    pruned = d.prune([corpus], ["train"], 0.5)
    assert pruned.terms == {"Disease": {"cancer", "fever"}, "CHEM": {"lead"}}  # ALL: right 1 in 4
    assert d.prune([corpus], ["train"], 0.2).terms["Disease"] == {"ALL", "cancer", "fever"}
    assert d.prune([corpus], ["train"], 0.0) is d


# ---------------------------------------------------------------- encoding and the model


def test_windows_carry_the_match_tags_of_every_sub_token(tiny_encoder: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    d = Dictionary({"GENE": ["xqzv binds"]})
    words = ["MYC", "xqzv", "binds", "it"]
    [window] = encode(tokenizer, [words], 64, matches=[d.match(words)])
    pieces = tokenizer(words, is_split_into_words=True, add_special_tokens=False).word_ids()
    assert pieces.count(1) > 1  # xqzv is several sub-tokens
    expected = [d.match(words)[w] for w in pieces]
    assert window.dictionary_ids == ((0,), *expected, (0,))
    assert encode(tokenizer, [words], 64)[0].dictionary_ids is None
    short = encode(tokenizer, [["a"]], 64, matches=[[(1,)]])[0]
    batch = collate([window, short], tokenizer.pad_token_id)
    assert batch.dictionary_ids is not None and batch.dictionary_ids.shape == (2, len(window), 1)
    assert batch.dictionary_ids[0, :, 0].tolist() == [ids[0] for ids in window.dictionary_ids]
    assert batch.dictionary_ids[1, len(short) :].eq(0).all()  # padding: no match
    with pytest.raises(ValueError, match="match rows"):
        encode(tokenizer, [words], 64, matches=[[(0,)]])


def test_a_new_dictionary_model_computes_what_the_plain_one_does(tiny_encoder: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = MultiTaskTagger.from_encoder(LABELS, tiny_encoder).eval()
    torch.manual_seed(0)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, dictionary=_dictionary()).eval()
    assert model.config.dictionary_features and model.config.dictionary_types == ["CHEM", "GENE"]
    assert model.dictionary_embedding is not None and model.dictionary_embedding.weight.eq(0).all()
    sentences = [["MYC", "binds", "BRCA1", "after", "aspirin"], ["the", "protein"], ["sodium", "chloride", "x"]]
    a = sentence_emissions(plain, sentences)
    b = sentence_emissions(model, sentences)
    for x, y in zip(a, b, strict=True):
        for name in LABELS:
            np.testing.assert_array_equal(x[name], y[name])

    with torch.no_grad():  # once the tag rows differ, matches reach the output, and only at matched words
        model.dictionary_embedding.weight[1:].normal_(0, 1.0)
    moved = sentence_emissions(model, sentences)
    for words, x, y in zip(sentences, a, moved, strict=True):
        matched = np.array([any(ids) for ids in model.dictionary.match(words)])
        for name in LABELS:
            np.testing.assert_array_equal(y[name][~matched], x[name][~matched])
            assert not np.isclose(y[name][matched], x[name][matched], atol=1e-3).all(axis=1).any()
    with pytest.raises(ValueError, match="dictionary_ids"):
        model.forward_all(torch.tensor([[2, 3]]), torch.tensor([[1, 1]]))
    groups = parameter_groups(model, 0.01, 1e-3)  # the table learns at its own rate, without decay
    assert len(groups) == 3 and groups[2] == {
        "params": [model.dictionary_embedding.weight],
        "weight_decay": 0.0,
        "lr": 1e-3,
    }
    assert len(parameter_groups(plain, 0.01, 1e-3)) == 2

    model.save_pretrained(tmp_path / "m")
    assert Dictionary.load(tmp_path / "m") == model.dictionary
    again = MultiTaskTagger.from_pretrained(tmp_path / "m")
    assert again.dictionary == model.dictionary and again.config.dictionary_types == ["CHEM", "GENE"]
    torch.testing.assert_close(again.dictionary_embedding.weight, model.dictionary_embedding.weight)
    for x, y in zip(moved, sentence_emissions(again, sentences), strict=True):
        for name in LABELS:
            np.testing.assert_allclose(x[name], y[name], atol=1e-6)
    info = describe_model(tmp_path / "m")
    assert "match tags added to the heads' input; 4 terms (CHEM 2, GENE 2), case-insensitive" in info
    assert "dictionary   not used" in describe_model(_saved(plain, tmp_path / "plain"))
    (tmp_path / "m" / DICTIONARY_NAME).unlink()
    with pytest.raises(ModelFormatError, match="no dictionary.json"):
        MultiTaskTagger.from_pretrained(tmp_path / "m")


def _saved(model: MultiTaskTagger, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- training


UNKNOWN_ENTITIES = ["дом", "лес", "мир", "сад"]  # Cyrillic: the tiny tokenizer reads each as [UNK]
UNKNOWN_OTHERS = ["кот", "рот", "нос", "жук"]


def _dictionary_only_corpus(folder: Path) -> Path:
    """Entities and non-entities in the same context, all one [UNK] to the tokenizer: only a dictionary tells."""
    rows = []
    for index in range(48):
        entity = index % 2 == 0
        word = (UNKNOWN_ENTITIES if entity else UNKNOWN_OTHERS)[(index // 2) % 4]
        rows.append([("the", "O"), (word, "B-CHEM" if entity else "O"), ("was", "O"), ("increased", "O")])
    text = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in sentence) for sentence in rows) + "\n"
    corpus = folder / "chems"
    corpus.mkdir()
    for split in ("train", "devel", "test"):
        # the test split's sentences differ, so that training keeps its own (leakage.py removes test text)
        (corpus / f"{split}.tsv").write_text(text.replace("increased", "decreased") if split == "test" else text)
    return corpus


def test_only_a_dictionary_model_learns_what_only_the_dictionary_tells(tiny_encoder: Path, tmp_path: Path) -> None:
    corpus = read_corpus(_dictionary_only_corpus(tmp_path))
    terms = tmp_path / "terms.tsv"
    terms.write_text("# user terms\nлуг\tCHEM\n", encoding="utf-8")  # луг is never in the corpus
    settings = {"encoder": str(tiny_encoder), "epochs": 12, "lr": 3e-3, "warmup": 0.1, "batch_size": 8}
    unseen = [["the", "луг", "was", "increased"], ["the", "пол", "was", "increased"]]
    results = {}
    for features in (False, True):
        extra = (
            {"dictionary_features": True, "dictionary_files": [str(terms)], "dictionary_lr": 0.1} if features else {}
        )
        config = TrainingConfig(**settings, **extra)
        model = train([corpus], tmp_path / f"m-{features}", config, progress=False)
        results[features] = [t[1] for t in predict_tags(model, unseen, "chems")]
    assert results[True] == ["B-CHEM", "O"]
    assert results[False][0] == results[False][1]  # the plain model sees one word
    saved = MultiTaskTagger.from_pretrained(tmp_path / "m-True")
    assert saved.dictionary is not None and saved.dictionary.terms["CHEM"] == {*UNKNOWN_ENTITIES, "луг"}
    assert [t[1] for t in predict_tags(saved, unseen, "chems")] == ["B-CHEM", "O"]
    found = Tagger.load(tmp_path / "m-True")("The луг was increased; the пол was increased.")
    assert [(e["text"], e["type"]) for e in found] == [("луг", "CHEM")]
    info = json.loads((tmp_path / "m-True" / "training.json").read_text(encoding="utf-8"))
    assert info["dictionary"]["terms"] == {"CHEM": 5}
    assert info["dictionary"]["matched_training_words"] == {"chems": {"CHEM": 24}}
    assert not (tmp_path / "m-False" / DICTIONARY_NAME).exists()


def test_train_command_takes_dictionary_options(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    terms = tmp_path / "terms.tsv"
    terms.write_text("ibuprofen\tCHEM\nTNF\tGENE\n", encoding="utf-8")
    out = tmp_path / "m"
    args = ["train", toy_dir / "toy_chem", "--encoder", tiny_encoder, "--epochs", "1", "--max-length", "32"]
    args += ["--dictionary-features", "--dictionary", terms, "--dictionary-folds", "2", "--no-progress"]
    code, _, err = _run_cli(monkeypatch, capsys, *args, "--output", out)
    assert code == 0, err
    d = Dictionary.load(out)
    assert d.types == ["CHEM", "GENE"] and {"ibuprofen", "cisplatin"} <= d.terms["CHEM"]
    code, info, _ = _run_cli(monkeypatch, capsys, "info", out)
    assert code == 0 and "match tags added to the heads' input" in info
    code, _, err = _run_cli(monkeypatch, capsys, "train", toy_dir / "toy_chem", "--dictionary", terms, "-o", out)
    assert code == 2 and "add --dictionary-features" in err


def _run_cli(monkeypatch: pytest.MonkeyPatch, capsys, *args: object) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["mtbioner", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return done.value.code, out, err


# ---------------------------------------------------------------- export


def test_onnx_export_takes_the_dictionary_input(tiny_encoder: Path, tmp_path: Path) -> None:
    import onnx

    torch.manual_seed(1)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, case_features=True, dictionary=_dictionary()).eval()
    with torch.no_grad():
        model.dictionary_embedding.weight[1:].normal_(0, 0.3)
        for param in model.heads.parameters():
            param.normal_(0, 2.0)
    model.save_pretrained(tmp_path / "m")
    plain = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, dictionary=_dictionary()).eval()
    plain.save_pretrained(tmp_path / "p")
    sentences = [["MYC", "binds", "sodium", "chloride"], ["myc", "binds", "sodium", "water"]]
    for source, inputs in (("m", ["token_type_ids", "dictionary_ids"]), ("p", ["dictionary_ids"])):
        for quantize in ("none", "int8") if source == "m" else ("none",):
            out = tmp_path / f"{source}-{quantize}"
            export_onnx(tmp_path / source, out, quantize)  # type: ignore[arg-type]
            graph = onnx.load(str(out / "model.onnx")).graph
            assert [i.name for i in graph.input] == ["input_ids", "attention_mask", *inputs]
            assert Dictionary.load(out) == model.dictionary
            backend = load_backend(out)
            torch_model = MultiTaskTagger.from_pretrained(tmp_path / source)
            expected = sentence_emissions(torch_model, sentences)
            got = sentence_emissions(backend, sentences)
            tolerance = 1e-4 if quantize == "none" else 0.5
            for a, b in zip(expected, got, strict=True):
                for name in LABELS:
                    np.testing.assert_allclose(b[name], a[name], atol=tolerance)
            ids, mask, types = np.array([[2, 5, 6, 3]]), np.ones((1, 4), dtype=np.int64), np.zeros((1, 4))
            none = np.zeros((1, 4, 2), dtype=np.int64)
            some = none.copy()
            some[0, 1:3] = [[1, 0], [2, 0]]  # words 1-2 matched as a CHEM term
            a = backend.run(ids, mask, ["chems"], token_type_ids=types, dictionary_ids=none)["chems"]
            b = backend.run(ids, mask, ["chems"], token_type_ids=types, dictionary_ids=some)["chems"]
            # unmatched positions keep their scores (int8: up to the whole tensor's dynamic activation scale)
            np.testing.assert_allclose(a[0, [0, 3]], b[0, [0, 3]], atol=1e-5 if quantize == "none" else 0.5)
            if source == "m":  # the graph sees the matches (the new model "p" still has a zero table)
                assert not np.allclose(a[0, 1:3], b[0, 1:3], atol=1e-3)
            with pytest.raises(ValueError, match="dictionary_ids"):
                backend.run(np.array([[2, 3]]), np.array([[1, 1]]), ["genes"], token_type_ids=np.zeros((1, 2)))
