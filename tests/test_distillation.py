"""mtbioner distill: students copied from the teacher's layers, the KL + gold loss, raw text, resume, CLI."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file

from mtbioner import cli
from mtbioner.cli.distill import distill as distill_command
from mtbioner.data.corpus import read_corpus
from mtbioner.errors import MtbionerError
from mtbioner.learn import distillation
from mtbioner.learn.distillation import distill
from mtbioner.learn.distillation_config import DistillConfig
from mtbioner.learn.distillation_data import TEXT_SOURCE, Source, build_sources
from mtbioner.learn.distillation_loss import attention_loss, batch_loss, hidden_loss
from mtbioner.learn.students import choose_layers, make_student, parse_layers
from mtbioner.learn.teacher_scores import SCORES_NAME, TeacherScores
from mtbioner.learn.training import TrainingConfig, train
from mtbioner.model.dictionary import Dictionary
from mtbioner.model.encoding import collate, encode
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.evaluation import evaluate_corpus
from mtbioner.runtime.inference import predict_tags

RAW = [
    "MYC expression was increased in breast cancer cells .",
    "mutations in KRAS were found in lung cancer patients . cells were treated with cisplatin .",
    "aspirin and TP53 were studied .",
]


def _toy(toy_dir: Path, splits=("train", "devel")):
    return [read_corpus(toy_dir / name, splits=list(splits)) for name in ("toy_gene", "toy_chem")]


@pytest.fixture(scope="module")
def teacher_dir(tiny_encoder: Path, toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer tiny model trained on both toy corpora (a few seconds)."""
    out = tmp_path_factory.mktemp("teacher") / "m"
    config = TrainingConfig(
        encoder=str(tiny_encoder), lr=3e-3, warmup=0.1, batch_size=4, epochs=15, seed=7, max_length=32
    )
    train(_toy(toy_dir), out, config, progress=False)
    return out


@pytest.fixture(scope="module")
def deep_teacher(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> MultiTaskTagger:
    """An untrained 4-layer CRF teacher with case features and random CRF scores and token-type rows."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("deep-bert")
    for item in tiny_encoder.iterdir():
        if item.name not in ("config.json", "model.safetensors"):
            shutil.copy(item, folder / item.name)
    torch.manual_seed(1)
    config = BertConfig.from_pretrained(str(tiny_encoder))
    config.num_hidden_layers = 4
    BertModel(config).save_pretrained(str(folder))
    labels = {"toy_gene": ["B-GENE", "I-GENE", "O"], "toy_chem": ["B-CHEM", "I-CHEM", "O"]}
    teacher = MultiTaskTagger.from_encoder(labels, folder, head="crf", max_length=32, case_features=True)
    with torch.no_grad():
        for name, param in teacher.named_parameters():
            if name.startswith("heads.") or "token_type" in name:
                param.copy_(torch.randn_like(param))
    return teacher.eval()


def _batch(model: MultiTaskTagger, toy_dir: Path, corpus: str = "toy_gene", n: int = 6):
    sentences = read_corpus(toy_dir / corpus, splits=["train"]).sentences("train")[:n]
    labels = model.config.corpora[corpus].labels
    windows = encode(
        model.tokenizer,
        [s.tokens for s in sentences],
        model.config.max_length,
        tags=[s.tags for s in sentences],
        label2id={label: i for i, label in enumerate(labels)},
        case=model.config.case_features,
    )
    return collate(windows, model.tokenizer.pad_token_id, corpus)


# ---------------------------------------------------------------- the student


def test_layer_choice() -> None:
    assert choose_layers(6, 3) == [1, 3, 5]  # every other layer, keeping the last
    assert choose_layers(6, 2) == [2, 5]
    assert choose_layers(6, 6) == list(range(6))
    assert choose_layers(6, 1) == [5]
    assert choose_layers(12, None) == [1, 3, 5, 7, 9, 11]
    assert choose_layers(6, [0, 2, 5]) == [0, 2, 5]
    assert parse_layers("3") == 3 and parse_layers("0,2,5") == [0, 2, 5] and parse_layers(None) is None
    for bad, message in [(7, "out of range"), (0, "out of range"), ([0, 6], "out of range"), ([2, 1], "increasing")]:
        with pytest.raises(MtbionerError, match=message):
            choose_layers(6, bad)
    with pytest.raises(MtbionerError, match="give a count"):
        parse_layers("two")


def test_student_starts_with_the_chosen_teacher_layers(deep_teacher: MultiTaskTagger, tmp_path: Path) -> None:
    student = make_student(deep_teacher, [1, 3])
    assert len(student.encoder.encoder.layer) == 2
    assert student.config.encoder_config["num_hidden_layers"] == 2
    assert student.config.case_features and student.config.corpora == deep_teacher.config.corpora
    teacher_state = deep_teacher.state_dict()
    student_state = student.state_dict()
    for key, value in student_state.items():
        origin = re.sub(
            r"^encoder\.encoder\.layer\.(\d+)\.", lambda m: f"encoder.encoder.layer.{[1, 3][int(m[1])]}.", key
        )
        assert torch.equal(value, teacher_state[origin]), key
    assert torch.equal(student.head("toy_gene").transitions, deep_teacher.head("toy_gene").transitions)
    assert student.head("toy_gene").transitions.abs().sum() > 0  # really copied, not zeros
    per_layer = sum(1 for key in teacher_state if key.startswith("encoder.encoder.layer.0."))
    assert per_layer > 0 and len(teacher_state) - len(student_state) == 2 * per_layer
    student.save_pretrained(tmp_path / "s")
    loaded = MultiTaskTagger.from_pretrained(tmp_path / "s")
    assert loaded.encoder.config.num_hidden_layers == 2
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, student_state[key]), key
    assert student.num_parameters() < deep_teacher.num_parameters()


def test_student_of_every_layer_at_temperature_one_has_zero_kl(deep_teacher: MultiTaskTagger, toy_dir: Path) -> None:
    batch = _batch(deep_teacher, toy_dir)
    config = DistillConfig(temperature=1.0)
    same = make_student(deep_teacher, 4).eval()
    parts = batch_loss(same, deep_teacher, batch, None, config)
    assert abs(parts.kl) < 1e-6 and parts.gold is None
    shallow = make_student(deep_teacher, [1, 3]).eval()
    assert batch_loss(shallow, deep_teacher, batch, None, config).kl > 1e-3
    with_gold = batch_loss(shallow, deep_teacher, batch, "toy_gene", DistillConfig(alpha=0.5))
    assert with_gold.gold is not None and with_gold.gold > 0
    assert float(with_gold.loss.detach()) == pytest.approx(with_gold.kl + 0.5 * with_gold.gold, rel=1e-5)


def test_teacher_scores_computed_once_equal_the_teachers_scores_in_the_batch(
    deep_teacher: MultiTaskTagger, toy_dir: Path
) -> None:
    """The one-pass cache (other batches, other padding) gives the loss of running the teacher on the batch."""
    batch = _batch(deep_teacher, toy_dir, n=9)
    windows = batch.windows
    cache = TeacherScores.compute(deep_teacher.eval(), {"toy_gene": Source("toy_gene", windows, "toy_gene", 9)}, 4)
    order = [2, 0, 5, 1]  # a training batch takes windows in any order
    picked = collate([windows[i] for i in order], deep_teacher.tokenizer.pad_token_id, "toy_gene")
    student = make_student(deep_teacher, [1, 3]).eval()
    config = DistillConfig(temperature=2.0, alpha=0.5)
    cached = batch_loss(student, deep_teacher, picked, "toy_gene", config, cache.batch("toy_gene", order, "cpu"))
    direct = batch_loss(student, deep_teacher, picked, "toy_gene", config)
    assert cached.kl == pytest.approx(direct.kl, rel=1e-4, abs=1e-6) and cached.gold == pytest.approx(direct.gold)
    assert sum(t.shape[0] for t in cache.batch("toy_gene", order, "cpu").values()) == len(deep_teacher.corpora) * sum(
        len(windows[i].words) for i in order
    )


def test_config_and_sources_reject_mistakes(deep_teacher: MultiTaskTagger, toy_dir: Path) -> None:
    with pytest.raises(MtbionerError, match="never reads a corpus' test split"):
        DistillConfig(splits=["train", "test"])
    with pytest.raises(MtbionerError, match="temperature"):
        DistillConfig(temperature=0)
    other = read_corpus(toy_dir / "toy_gene", splits=["train"])
    other.name = "BC2GM"
    with pytest.raises(MtbionerError, match="no head 'BC2GM'"):
        build_sources(deep_teacher, [other], [], ["train"])


@pytest.fixture(scope="module")
def dictionary_teacher(tiny_encoder: Path) -> MultiTaskTagger:
    """An untrained 2-layer teacher with dictionary features and a random match-tag table."""
    terms = {"CHEM": ["sodium chloride", "hydrogen"], "GENE": ["MYC", "insulin receptor"]}
    labels = {"toy_gene": ["B-GENE", "I-GENE", "O"], "toy_chem": ["B-CHEM", "I-CHEM", "O"]}
    torch.manual_seed(2)
    teacher = MultiTaskTagger.from_encoder(labels, tiny_encoder, max_length=32, dictionary=Dictionary(terms))
    with torch.no_grad():
        for name, param in teacher.named_parameters():
            if name.startswith("heads.") or name.startswith("dictionary_embedding"):
                param.copy_(torch.randn_like(param))
    return teacher.eval()


def test_a_dictionary_teacher_teaches_with_its_match_tags(
    dictionary_teacher: MultiTaskTagger, toy_dir: Path, tmp_path: Path
) -> None:
    """Windows carry the tags tagging would compute; the student keeps the dictionary and its table."""
    teacher = dictionary_teacher
    sources = build_sources(teacher, _toy(toy_dir, ["train"]), ["Sodium chloride binds MYC."], ["train"])
    windows = sources["toy_chem"].windows
    assert all(w.dictionary_ids is not None for w in windows)
    text = sources[TEXT_SOURCE].windows[0]
    assert {ids for ids in text.dictionary_ids if any(ids)} == {(1, 0), (2, 0), (0, 3)}  # B/I CHEM, B GENE
    batch = collate(windows[:8], teacher.tokenizer.pad_token_id, "toy_chem")
    assert batch.dictionary_ids is not None and batch.dictionary_ids.any()
    same = make_student(teacher, 2).eval()
    assert same.dictionary is teacher.dictionary
    assert abs(batch_loss(same, teacher, batch, None, DistillConfig(temperature=1.0)).kl) < 1e-6
    blind = replace(batch, dictionary_ids=torch.zeros_like(batch.dictionary_ids))
    with torch.no_grad():
        seen, unseen = (
            teacher.forward_all(b.input_ids, b.attention_mask, None, None, b.dictionary_ids) for b in (batch, blind)
        )
    assert not torch.allclose(seen["toy_chem"], unseen["toy_chem"])  # the tags change what the teacher says
    cache = TeacherScores.compute(teacher, {"toy_chem": Source("toy_chem", windows, "toy_chem", len(windows))}, 4)
    order = list(range(8))
    shallow = make_student(teacher, 1).eval()
    config = DistillConfig(temperature=2.0, alpha=0.5)
    cached = batch_loss(shallow, teacher, batch, "toy_chem", config, cache.batch("toy_chem", order, "cpu"))
    assert cached.kl == pytest.approx(batch_loss(shallow, teacher, batch, "toy_chem", config).kl, rel=1e-4, abs=1e-6)
    teacher.save_pretrained(tmp_path / "t")
    distill(tmp_path / "t", _toy(toy_dir), [], tmp_path / "s", _fast(epochs=1), progress=False)
    loaded = MultiTaskTagger.from_pretrained(tmp_path / "s")
    assert loaded.config.dictionary_features and loaded.dictionary.types == ["CHEM", "GENE"]
    assert loaded.dictionary_embedding.weight.shape == teacher.dictionary_embedding.weight.shape
    assert len(predict_tags(loaded, [["Sodium", "chloride", "binds", "MYC"]], "toy_chem")[0]) == 4


# ---------------------------------------------------------------- distillation


def _fast(**overrides) -> DistillConfig:
    settings = dict(layers=1, lr=3e-3, warmup=0.1, batch_size=4, epochs=2, seed=3, temperature=2.0, alpha=0.5)
    settings.update(overrides)
    return DistillConfig(**settings)


def _agreement(model: MultiTaskTagger, teacher: MultiTaskTagger, toy_dir: Path) -> float:
    same = total = 0
    for corpus in ("toy_gene", "toy_chem"):
        words = [s.tokens for s in read_corpus(toy_dir / corpus, splits=["test"]).sentences("test")]
        for a, b in zip(predict_tags(model, words, corpus), predict_tags(teacher, words, corpus), strict=True):
            same += sum(x == y for x, y in zip(a, b, strict=True))
            total += len(a)
    return same / total


def _kl(model: MultiTaskTagger, teacher: MultiTaskTagger, toy_dir: Path) -> float:
    """Mean KL (T=1, eval mode) over the toy training sentences of both corpora."""
    parts = [
        batch_loss(model, teacher, _batch(teacher, toy_dir, c, 100), None, DistillConfig(temperature=1.0)).kl
        for c in ("toy_gene", "toy_chem")
    ]
    return sum(parts) / len(parts)


def test_distillation_lowers_the_kl_and_follows_the_teacher(teacher_dir: Path, toy_dir: Path, tmp_path: Path) -> None:
    teacher = MultiTaskTagger.from_pretrained(teacher_dir)
    untrained = make_student(teacher, 1).eval()
    student = distill(teacher_dir, _toy(toy_dir), [], tmp_path / "s", _fast(epochs=6), progress=False)
    log = [json.loads(line) for line in (tmp_path / "s" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and log[-1]["kl"] < log[0]["kl"], [e["kl"] for e in log]
    kl_before, kl_after = _kl(untrained, teacher, toy_dir), _kl(student, teacher, toy_dir)
    assert kl_after < 0.5 * kl_before, (kl_before, kl_after)
    assert set(log[-1]["devel"]) == {"toy_gene", "toy_chem"}
    assert _agreement(student, teacher, toy_dir) >= 0.95
    info = json.loads((tmp_path / "s" / "distillation.json").read_text())
    assert info["student"]["layers"] == [1] and info["teacher"]["layers"] == 2
    assert info["teacher"]["path"] == str(teacher_dir.resolve()) and info["finished"]
    assert info["student"]["parameters"] == student.num_parameters() < info["teacher"]["parameters"]
    assert set(info["teacher_devel"]) == {"toy_gene", "toy_chem"}
    assert not (tmp_path / "s" / "checkpoint").exists()
    loaded = MultiTaskTagger.from_pretrained(tmp_path / "s")
    assert loaded.encoder.config.num_hidden_layers == 1


def test_heads_learn_from_the_teacher_alone(
    teacher_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alpha 0 (no gold) and a student whose heads start random: only the KL can teach it the labels."""
    teacher = MultiTaskTagger.from_pretrained(teacher_dir)
    real = distillation.make_student

    def reset_heads(model, layers, intermediate_size=None, attention_heads=None):
        student = real(model, layers, intermediate_size, attention_heads)
        torch.manual_seed(0)
        for name in student.corpora:
            student.head(name).classifier.reset_parameters()
        return student

    monkeypatch.setattr(distillation, "make_student", reset_heads)
    blank = reset_heads(teacher, 1).eval()
    student = distill(teacher_dir, _toy(toy_dir), [], tmp_path / "s", _fast(epochs=6, alpha=0.0), progress=False)
    before, after = _agreement(blank, teacher, toy_dir), _agreement(student, teacher, toy_dir)
    assert before < 0.8 and after >= 0.95, (before, after)
    final = json.loads((tmp_path / "s" / "log.jsonl").read_text().splitlines()[-1])
    for corpus in _toy(toy_dir):
        blank_f1 = evaluate_corpus(blank, corpus, "devel")[0].overall.f1
        assert final["devel"][corpus.name]["f1"] >= max(80.0, blank_f1 + 50), (corpus.name, blank_f1, final["devel"])


def test_raw_text_batches_carry_only_the_kl(
    teacher_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtbioner.learn.pretraining import file_texts

    notes = tmp_path / "notes.txt"
    notes.write_text("\n".join(RAW * 4) + "\n", encoding="utf-8")
    texts = file_texts(notes)
    seen = []
    real = distillation.batch_loss

    def spy(student, teacher, batch, gold, config, taught=None):
        parts = real(student, teacher, batch, gold, config, taught)
        seen.append((batch.corpus, gold, batch.labels is None, parts.gold, float(parts.loss.detach()), parts.kl))
        return parts

    monkeypatch.setattr(distillation, "batch_loss", spy)
    distill(teacher_dir, _toy(toy_dir), texts, tmp_path / "s", _fast(epochs=1), progress=False)
    text_batches = [s for s in seen if s[0] == TEXT_SOURCE]
    assert text_batches and all(s[1] is None and s[2] and s[3] is None for s in text_batches)
    assert all(s[4] == pytest.approx(s[5]) for s in text_batches)  # loss == KL
    assert all(s[1] == s[0] and s[3] is not None for s in seen if s[0] != TEXT_SOURCE)
    log = json.loads((tmp_path / "s" / "log.jsonl").read_text().splitlines()[0])
    assert log["batches"] == {"gold": len(seen) - len(text_batches), "text": len(text_batches)}
    info = json.loads((tmp_path / "s" / "distillation.json").read_text())
    assert info["sources"][TEXT_SOURCE] == {"kind": "text", "sentences": 4 * 4, "windows": 4 * 4}

    # raw text alone: no gold at all, and no corpus to score
    distill(teacher_dir, [], texts, tmp_path / "t", _fast(epochs=1), progress=False)
    log = json.loads((tmp_path / "t" / "log.jsonl").read_text().splitlines()[0])
    assert log["batches"]["gold"] == 0 and log["gold_loss"] is None and log["devel"] == {}


@pytest.mark.parametrize(
    "terms",
    [
        {},
        {
            "hidden_weight": 1.0,
            "attention_weight": 2.0,
            "attention_layers": "all",
            "intermediate_size": 40,
            "attention_heads": 1,
        },
    ],
    ids=["kl-and-gold", "hidden-attention-narrow"],
)
def test_resume_mid_epoch_gives_the_same_weights(
    terms: dict, teacher_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpora, texts = _toy(toy_dir), RAW
    config = _fast(save_every=2, **terms)
    distill(teacher_dir, corpora, texts, tmp_path / "straight", config, progress=False)

    real = distillation.batch_loss
    calls = []

    def crash_on_fourth_step(*args):
        calls.append(1)
        if len(calls) == 4:  # steps 1-3 done, checkpoint after step 2
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(distillation, "batch_loss", crash_on_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher_dir, corpora, texts, tmp_path / "resumed", config, progress=False)
    monkeypatch.setattr(distillation, "batch_loss", real)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (0, 2, 2)
    with pytest.raises(MtbionerError, match="--resume"):
        distill(teacher_dir, corpora, texts, tmp_path / "resumed", config, progress=False)
    distill(teacher_dir, corpora, texts, tmp_path / "resumed", config, resume=True, progress=False)

    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    logs = [
        [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        for run in ("straight", "resumed")
    ]
    drop = ("seconds", "windows_per_s")
    assert [{k: v for k, v in e.items() if k not in drop} for e in logs[0]] == [
        {k: v for k, v in e.items() if k not in drop} for e in logs[1]
    ]
    with pytest.raises(MtbionerError, match="nothing to resume"):
        distill(teacher_dir, corpora, texts, tmp_path / "resumed", config, resume=True, progress=False)


def test_a_resume_reads_the_teachers_scores_from_the_checkpoint(
    teacher_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Saved once with the first checkpoint, linked into the next ones, read back by the resume (not computed
    again), and the resumed student is the uninterrupted one; scores that do not fit are computed again."""
    corpora, config = _toy(toy_dir), _fast(save_every=1)
    with caplog.at_level(logging.INFO, logger="mtbioner.learn.distillation"):
        distill(teacher_dir, corpora, RAW, tmp_path / "straight", config, progress=False)
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert not (tmp_path / "straight" / "checkpoint").exists()
    steps = json.loads((tmp_path / "straight" / "distillation.json").read_text())["step"]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checkpoint:")]
    assert len(said) == steps - 2  # without a progress bar, every mid-epoch checkpoint says where the run is
    assert said[0].startswith(f"checkpoint: epoch 1 of 2, batch 1 of {steps // 2}, step 1 of {steps}, loss ")

    computed, saved = [], []
    compute, save = TeacherScores.compute.__func__, TeacherScores.save
    monkeypatch.setattr(
        TeacherScores, "compute", classmethod(lambda cls, *a, **k: computed.append(1) or compute(cls, *a, **k))
    )
    monkeypatch.setattr(TeacherScores, "save", lambda self, *a: saved.append(1) or save(self, *a))

    def interrupted(out: Path) -> None:
        real, calls = distillation.batch_loss, []

        def crash_on_fourth_step(*args):
            calls.append(1)
            if len(calls) == 4:  # checkpoints after steps 1, 2 and 3
                raise KeyboardInterrupt
            return real(*args)

        with monkeypatch.context() as patch:
            patch.setattr(distillation, "batch_loss", crash_on_fourth_step)
            with pytest.raises(KeyboardInterrupt):
                distill(teacher_dir, corpora, RAW, out, config, progress=False)

    interrupted(tmp_path / "resumed")
    scores_file = tmp_path / "resumed" / "checkpoint" / SCORES_NAME
    assert scores_file.is_file() and (len(computed), len(saved)) == (1, 1)  # three checkpoints, one save
    distill(teacher_dir, corpora, RAW, tmp_path / "resumed", config, resume=True, progress=False)
    assert (len(computed), len(saved)) == (1, 1)  # read back, and linked into the checkpoints after the resume
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    assert not (tmp_path / "resumed" / "checkpoint").exists()  # gone with the checkpoint at the end

    interrupted(tmp_path / "stale")
    (tmp_path / "stale" / "checkpoint" / SCORES_NAME).write_bytes(b"not safetensors")
    distill(teacher_dir, corpora, RAW, tmp_path / "stale", config, resume=True, progress=False)
    assert (len(computed), len(saved)) == (3, 3)  # the stale run's first pass, then computed again and saved
    stale = load_file(str(tmp_path / "stale" / "model.safetensors"))
    assert all(torch.equal(straight[key], stale[key]) for key in straight)


def test_runs_of_one_teacher_share_a_teacher_scores_file(
    teacher_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpora, config = _toy(toy_dir), _fast(epochs=1)
    computed = []
    compute = TeacherScores.compute.__func__
    monkeypatch.setattr(
        TeacherScores, "compute", classmethod(lambda cls, *a, **k: computed.append(1) or compute(cls, *a, **k))
    )
    shared = tmp_path / "scores" / "teacher.safetensors"
    distill(teacher_dir, corpora, RAW, tmp_path / "a", config, progress=False, teacher_scores=shared)
    assert shared.is_file() and len(computed) == 1
    distill(teacher_dir, corpora, RAW, tmp_path / "b", _fast(epochs=1, lr=1e-3), progress=False, teacher_scores=shared)
    assert len(computed) == 1  # another setting, the same teacher and windows: read, not computed
    distill(teacher_dir, corpora[:1], RAW, tmp_path / "c", config, progress=False, teacher_scores=shared)
    assert len(computed) == 2  # other windows (one corpus fewer): computed, and the file now holds those
    distill(teacher_dir, corpora, RAW, tmp_path / "d", config, progress=False)
    a, d = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("a", "d"))
    assert all(torch.equal(a[key], d[key]) for key in a)  # the file changes nothing but the time
    in_memory = MultiTaskTagger.from_pretrained(teacher_dir)  # no folder to check saved scores against
    distill(in_memory, corpora, RAW, tmp_path / "e", config, progress=False, teacher_scores=tmp_path / "m.safetensors")
    assert len(computed) == 4 and not (tmp_path / "m.safetensors").exists()


def test_saved_teacher_scores_are_used_only_for_the_same_windows_heads_and_teacher(
    deep_teacher: MultiTaskTagger, toy_dir: Path, tmp_path: Path
) -> None:
    windows = _batch(deep_teacher, toy_dir, n=6).windows
    sources = {"toy_gene": Source("toy_gene", windows, "toy_gene", 6)}
    heads = list(deep_teacher.corpora)
    taught = TeacherScores.compute(deep_teacher.eval(), sources, 4)
    file = tmp_path / SCORES_NAME
    taught.save(file, "teachers/t1")
    assert not list(tmp_path.glob("*.partial"))
    back = TeacherScores.load(file, sources, "teachers/t1", heads)
    assert back is not None and back.starts == taught.starts and back.windows == taught.windows
    for head in heads:
        assert torch.equal(back.scores["toy_gene"][head], taught.scores["toy_gene"][head])
    fewer = {"toy_gene": Source("toy_gene", windows[:5], "toy_gene", 5)}
    assert TeacherScores.load(file, fewer, "teachers/t1", heads) is None
    first = windows[0]  # the same words and positions, one other sub-token: another window
    changed = replace(first, input_ids=(first.input_ids[0], first.input_ids[1] + 1, *first.input_ids[2:]))
    other = {"toy_gene": Source("toy_gene", [changed, *windows[1:]], "toy_gene", 6)}
    assert TeacherScores.load(file, other, "teachers/t1", heads) is None
    assert TeacherScores.load(file, sources, "teachers/t2", heads) is None
    assert TeacherScores.load(file, sources, "teachers/t1", [*heads, "another"]) is None
    assert TeacherScores.load(tmp_path / "missing.safetensors", sources, "teachers/t1", heads) is None


# ---------------------------------------------------------------- command line


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("distill")(distill_command)
    app.command("noop", hidden=True)(lambda: None)  # two commands: typer keeps the "distill" sub-command name
    monkeypatch.setattr(cli, "app", app)
    monkeypatch.setattr(sys, "argv", ["mtbioner", "distill", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        cli.main()
    out, err = capsys.readouterr()
    return done.value.code, out + err


def test_cli_distils_and_resumes_with_recorded_inputs(
    teacher_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("\n".join(RAW) + "\n", encoding="utf-8")
    out = tmp_path / "s"
    args = [teacher_dir, "toy_gene", notes, "--data-dir", toy_dir, "--output", out, "--layers", "1", "--epochs", "1"]
    code, text = _cli(monkeypatch, capsys, *args, "--batch-size", "8", "--no-progress")
    assert code == 0, text
    assert f"saved student to {out}" in text
    info = json.loads((out / "distillation.json").read_text())
    assert info["inputs"]["sources"] == ["toy_gene", str(notes.resolve())]
    assert info["inputs"]["text_counts"] == {str(notes.resolve()): 3}
    assert set(info["sources"]) == {"toy_gene", TEXT_SOURCE} and info["config"]["batch_size"] == 8
    code, text = _cli(monkeypatch, capsys, "--output", out, "--resume")
    assert code == 2 and "nothing to resume" in text


def test_a_student_never_learns_from_a_held_out_corpus(
    teacher_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # A student of a leave-out model is scored on the corpora its teacher left out: like its teacher, it must not
    # learn from their devel and test sentences. Here toy_gene's train split holds one of toy_chem's devel sentences.
    data = tmp_path / "data"
    shutil.copytree(toy_dir, data)
    blocks = (data / "toy_chem" / "devel.tsv").read_text(encoding="utf-8").split("\n\n")
    shared = next(block for block in blocks if not block.startswith("-DOCSTART-"))
    with (data / "toy_gene" / "train.tsv").open("a", encoding="utf-8") as train_split:
        train_split.write("\n" + shared.replace("CHEM", "GENE") + "\n")
    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_dir, teacher)
    record = json.loads((teacher / "training.json").read_text(encoding="utf-8"))
    record["config"]["held_out"] = [str((data / "toy_chem").resolve())]  # as `train --held-out toy_chem` records
    (teacher / "training.json").write_text(json.dumps(record), encoding="utf-8")
    common = ["toy_gene", "--data-dir", data, "--layers", "1", "--epochs", "1", "--no-progress"]
    for name, extra in (("explicit", ["--held-out", "toy_chem"]), ("inherited", [])):
        out = tmp_path / name
        code, text = _cli(monkeypatch, capsys, teacher, *common, *extra, "--output", out)
        assert code == 0, text
        inputs = json.loads((out / "distillation.json").read_text())["inputs"]
        assert inputs["held_out"] == [str((data / "toy_chem").resolve())], name
        assert inputs["leakage"]["toy_gene"]["train"]["found_in"] == {"toy_gene/test": 2, "toy_chem/devel": 1}, name
    code, text = _cli(monkeypatch, capsys, teacher_dir, *common, "--output", tmp_path / "plain")
    assert code == 0, text  # a teacher that held nothing out: only the corpus' own test split is kept out
    inputs = json.loads((tmp_path / "plain" / "distillation.json").read_text())["inputs"]
    assert inputs["held_out"] == [] and inputs["leakage"]["toy_gene"]["train"]["found_in"] == {"toy_gene/test": 2}


def test_corpora_recorded_relative_to_elsewhere_are_found_by_name(
    teacher_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # `train` records its corpora as given ("../shared/data/BC5CDR" from the project root); run elsewhere, a
    # student of that teacher finds them by head name under --data-dir.
    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_dir, teacher)
    record = json.loads((teacher / "training.json").read_text(encoding="utf-8"))
    record["corpora"] = {name: f"../elsewhere/{name}" for name in ("toy_gene", "toy_chem")}
    (teacher / "training.json").write_text(json.dumps(record), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "s"
    args = [teacher, "--data-dir", toy_dir, "--layers", "1", "--epochs", "1", "--limit", "5", "--output", out]
    code, text = _cli(monkeypatch, capsys, *args, "--no-progress")
    assert code == 0, text
    assert json.loads((out / "distillation.json").read_text())["inputs"]["sources"] == ["toy_gene", "toy_chem"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "toy_gene"], "no such model folder"),
        (["{teacher}", "toy_gene", "--layers", "3"], "--layers 3 is out of range"),
        (["{teacher}", "toy_gene", "--layers", "0,2"], "out of range"),
        (["{teacher}", "toy_gene", "--splits", "train,test"], "never reads a corpus' test split"),
        (["{teacher}", "no_such_corpus"], "corpus 'no_such_corpus' not found"),
        (["{teacher}", "toy_gene", "--held-out", "toy_gene"], "is also trained on"),
        (["{teacher}", "toy_gene", "--held-out", "no_such_corpus"], "corpus 'no_such_corpus' not found"),
        (["--resume"], "nothing to resume"),
        ([], "name the teacher model folder"),
        (["{teacher}", "toy_gene", "--teacher-scores", "{folder}"], "a folder; name a file"),
    ],
)
def test_cli_mistakes_are_one_line(
    args: list[str],
    message: str,
    teacher_dir: Path,
    toy_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    args = [a.format(teacher=teacher_dir, missing=tmp_path / "nope", folder=tmp_path) for a in args]
    code, text = _cli(monkeypatch, capsys, *args, "--data-dir", toy_dir, "--output", tmp_path / "s")
    assert code == 2, text
    assert message in text and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "s").exists()


def test_a_context_teacher_teaches_with_the_context_tagging_reads(tiny_encoder: Path, toy_dir: Path) -> None:
    """Windows hold the document context the teacher was trained and tags with; the student keeps the setting."""
    from mtbioner.data.text import text_surroundings
    from mtbioner.model.encoding import document_surroundings
    from mtbioner.runtime.tagging import Tagger

    torch.manual_seed(0)
    labels = {c.name: c.labels for c in _toy(toy_dir, ["train"])}
    teacher = MultiTaskTagger.from_encoder(labels, tiny_encoder, max_length=32, context=6).eval()
    corpora = _toy(toy_dir, ["train"])
    text = "Sodium chloride binds MYC. Cells were treated with cisplatin."
    sources = build_sources(teacher, corpora, [text], ["train"])
    chem = corpora[1].sentences("train")
    words = [s.tokens for s in chem]
    label2id = {label: i for i, label in enumerate(teacher.config.corpora["toy_chem"].labels)}
    around = document_surroundings(words, [s.document for s in chem], 6)
    expected = encode(
        teacher.tokenizer, words, 32, tags=[s.tags for s in chem], label2id=label2id, context=6, surroundings=around
    )
    assert sources["toy_chem"].windows == expected
    assert sum(map(len, expected)) > sum(map(len, encode(teacher.tokenizer, words, 32)))  # context was added
    sentences = Tagger.split(text)
    text_windows = encode(
        teacher.tokenizer,
        [[t.text for t in s.tokens] for s in sentences],
        32,
        context=6,
        surroundings=[text_surroundings(text, s, 6) for s in sentences],
    )
    assert sources[TEXT_SOURCE].windows == text_windows
    assert make_student(teacher, 1).config.context == 6


# ---------------------------------------------------------------- hidden states, attentions, bf16


def _inner(**overrides) -> DistillConfig:
    settings = dict(temperature=1.0, hidden_weight=1.0, attention_weight=1.0, attention_layers="all")
    settings.update(overrides)
    return DistillConfig(**settings)


def test_hidden_and_attention_terms_vanish_for_a_copy_and_grow_after_a_change(
    deep_teacher: MultiTaskTagger, toy_dir: Path
) -> None:
    teacher = make_student(deep_teacher, 4).eval()  # a copy: the module's teacher keeps its SDPA attention
    batch = _batch(teacher, toy_dir)
    same = make_student(teacher, 4).eval()
    for which in ("all", "last"):
        parts = batch_loss(same, teacher, batch, None, _inner(attention_layers=which))
        assert parts.hidden is not None and parts.attention is not None
        assert abs(parts.kl) < 1e-6 and parts.hidden < 1e-10 and abs(parts.attention) < 1e-6, parts
    assert teacher.encoder.config._attn_implementation == "eager" == same.encoder.config._attn_implementation
    torch.manual_seed(0)
    with torch.no_grad():  # layer 1's attention and feed-forward output: every later state moves
        same.encoder.encoder.layer[1].attention.self.query.weight.add_(torch.randn(32, 32))
        same.encoder.encoder.layer[1].output.dense.weight.add_(torch.randn(32, 64))
    parts = batch_loss(same, teacher, batch, "toy_gene", _inner(hidden_weight=0.5, attention_weight=2.0, alpha=0.3))
    assert parts.hidden > 1e-4 and parts.attention > 1e-4 and parts.gold is not None
    expected = parts.kl + 0.5 * parts.hidden + 2.0 * parts.attention + 0.3 * parts.gold
    assert float(parts.loss.detach()) == pytest.approx(expected, rel=1e-5)
    parts.loss.backward()
    assert same.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    last = batch_loss(same, teacher, batch, None, _inner(attention_layers="last"))
    assert last.attention != pytest.approx(parts.attention)  # one layer pair instead of the mean of four
    shallow = make_student(teacher, [1, 3]).eval()  # layer k against teacher layer [1, 3][k]
    assert batch_loss(shallow, teacher, batch, None, _inner()).hidden > 1e-4


def test_a_student_without_attention_terms_keeps_its_attention_and_dropout(
    deep_teacher: MultiTaskTagger, toy_dir: Path
) -> None:
    teacher = make_student(deep_teacher, 4).eval()
    student = make_student(teacher, [1, 3])
    batch_loss(student, teacher, _batch(teacher, toy_dir), None, _inner(attention_weight=0.0))
    assert student.encoder.config._attn_implementation != "eager"
    assert student.encoder.encoder.layer[0].attention.self.dropout.p > 0
    batch_loss(student, teacher, _batch(teacher, toy_dir), None, _inner())
    assert student.encoder.encoder.layer[0].attention.self.dropout.p == 0  # compared rows are the ones it uses


def test_the_teacher_runs_on_the_batch_only_for_inner_terms(
    deep_teacher: MultiTaskTagger, toy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher = make_student(deep_teacher, 4).eval()
    batch = _batch(teacher, toy_dir, n=5)
    cache = TeacherScores.compute(teacher, {"toy_gene": Source("toy_gene", batch.windows, "toy_gene", 5)}, 8)
    taught = cache.batch("toy_gene", range(5), "cpu")
    calls = []
    real = teacher.encoder_output
    monkeypatch.setattr(teacher, "encoder_output", lambda *a, **k: calls.append(k) or real(*a, **k))
    student = make_student(teacher, 2).eval()
    plain = batch_loss(student, teacher, batch, "toy_gene", DistillConfig(), taught)
    assert calls == [] and plain.hidden is None and plain.attention is None
    batch_loss(student, teacher, batch, "toy_gene", DistillConfig(hidden_weight=1.0), taught)
    batch_loss(student, teacher, batch, "toy_gene", DistillConfig(attention_weight=1.0), taught)
    assert calls == [
        {"hidden_states": True, "attentions": False},
        {"hidden_states": False, "attentions": True},
    ]


def test_hidden_and_attention_losses_by_hand() -> None:
    mask = torch.tensor([[1, 1, 0]])
    student = [torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]]), torch.zeros(1, 3, 2)]
    teacher = [torch.tensor([[[1.0, 0.0], [3.0, 5.0], [0.0, 0.0]]]), torch.ones(1, 3, 2)]
    # pair 1: squared errors 0, 4, 0, 1 -> 1.25; pair 2: 1 everywhere -> 1; padding (9 vs 0) ignored
    assert float(hidden_loss(student, teacher, mask)) == pytest.approx((1.25 + 1.0) / 2)
    t = torch.tensor([[[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]]])  # [B=1, heads=1, T=3, T=3]
    s = torch.tensor([[[[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.9, 0.05, 0.05]]]])
    row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    row1 = math.log(1.0 / 0.5)
    assert float(attention_loss([s], [t], mask)) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert float(attention_loss([s, t], [t, t], torch.tensor([[1, 0, 0]]))) == pytest.approx(row0 / 2)
    assert float(attention_loss([t], [t], torch.tensor([[1, 1, 1]]))) == pytest.approx(0.0, abs=1e-7)


def test_bf16_runs_the_forward_passes_in_bfloat16_and_the_losses_in_float32(
    deep_teacher: MultiTaskTagger, toy_dir: Path
) -> None:
    teacher = make_student(deep_teacher, 4).eval()
    student = make_student(teacher, [1, 3]).eval()
    batch = _batch(teacher, toy_dir)
    seen = []
    for model in (student, teacher):
        model.encoder.encoder.layer[0].intermediate.dense.register_forward_hook(
            lambda module, args, out: seen.append(out.dtype)
        )
    exact = batch_loss(student, teacher, batch, "toy_gene", _inner(alpha=0.5))
    assert seen == [torch.float32, torch.float32]  # teacher, then student
    seen.clear()
    half = batch_loss(student, teacher, batch, "toy_gene", _inner(alpha=0.5, mixed_precision="bf16"))
    assert seen == [torch.bfloat16, torch.bfloat16] and half.loss.dtype == torch.float32
    for term in ("kl", "hidden", "attention", "gold"):
        assert getattr(half, term) == pytest.approx(getattr(exact, term), rel=0.1, abs=0.02), term
    half.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in student.parameters())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hidden_weight": -1.0}, "hidden weight must be 0 (off) or more"),
        ({"attention_weight": -0.5}, "attention weight must be 0 (off) or more"),
        ({"attention_layers": "first"}, "attention layers must be 'last' or 'all'"),
        ({"mixed_precision": "fp16"}, "mixed precision must be 'no' or 'bf16'"),
        ({"intermediate_size": 0}, "intermediate size must be at least 1 neuron"),
        ({"attention_heads": 0}, "attention heads must be at least 1"),
    ],
)
def test_bad_inner_term_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(MtbionerError) as refused:
        DistillConfig(**settings)
    assert message in str(refused.value)


def test_cli_distils_with_inner_terms_narrow_layers_and_bf16(
    teacher_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr("mtbioner.cli._common.native_bf16", lambda fields: True)  # a CPU with bfloat16
    notes = tmp_path / "notes.txt"
    notes.write_text("\n".join(RAW) + "\n", encoding="utf-8")
    out = tmp_path / "s"
    args = [teacher_dir, "toy_gene", "toy_chem", notes, "--data-dir", toy_dir, "--layers", "1", "--no-progress"]
    options = ["--hidden-weight", "0.5", "--attention-weight", "2", "--attention-layers", "all"]
    code, text = _cli(
        monkeypatch, capsys, *args, *options, "--intermediate-size", "40", "--attention-heads", "1", "--bf16",
        "--epochs", "2", "--output", out,
    )  # fmt: skip
    assert code == 0, text
    info = json.loads((out / "distillation.json").read_text())
    assert info["config"]["hidden_weight"] == 0.5 and info["config"]["attention_weight"] == 2.0
    assert info["config"]["attention_layers"] == "all" and info["config"]["intermediate_size"] == 40
    assert info["config"]["mixed_precision"] == "bf16" and info["student"]["intermediate_size"] == 40
    assert info["config"]["attention_heads"] == 1 and info["student"]["attention_heads"] == 1
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(e["hidden_loss"] > 0 and e["attention_loss"] > 0 for e in log), log
    loaded = MultiTaskTagger.from_pretrained(out)
    assert loaded.encoder.config.intermediate_size == 40 and loaded.encoder.config.num_hidden_layers == 1
    assert loaded.config.extra["distillation"]["intermediate_size"] == 40
    assert loaded.encoder.encoder.layer[0].attention.self.query.weight.shape == (16, 32)  # one head of 16 of 2
    assert len(predict_tags(loaded, [["aspirin", "binds", "MYC"]], "toy_chem")[0]) == 3
    # off by default: the log says so
    code, text = _cli(monkeypatch, capsys, *args, "--output", tmp_path / "plain", "--epochs", "1")
    assert code == 0, text
    plain = json.loads((tmp_path / "plain" / "log.jsonl").read_text().splitlines()[0])
    assert plain["hidden_loss"] is None and plain["attention_loss"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--intermediate-size", "0"], "--intermediate-size must be at least 1"),
        (["--intermediate-size", "65"], "larger than the teacher's feed-forward layers (64)"),
        (["--attention-heads", "0"], "--attention-heads must be at least 1"),
        (["--attention-heads", "3"], "more than the teacher's layers have (2)"),
        (["--hidden-weight", "-1"], "hidden weight must be 0 (off) or more"),
        (["--attention-weight", "-1"], "attention weight must be 0 (off) or more"),
        (["--attention-layers", "middle"], "attention layers must be 'last' or 'all'"),
    ],
)
def test_cli_inner_term_mistakes_are_one_line(
    args: list[str],
    message: str,
    teacher_dir: Path,
    toy_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    code, text = _cli(
        monkeypatch, capsys, teacher_dir, "toy_gene", *args, "--data-dir", toy_dir, "--output", tmp_path / "s"
    )
    assert code == 2, text
    assert message in text and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "s").exists()
