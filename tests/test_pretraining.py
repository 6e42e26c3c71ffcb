"""``mtbioner pretrain``: text sources, whole-word masks, the masked-only loss, resume and the output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtbioner.errors import MtbionerError
from mtbioner.learn import pretraining
from mtbioner.learn.pretraining import (
    PretrainConfig,
    corpus_texts,
    file_texts,
    gather_texts,
    masked_lm_loss,
    masking_collator,
    pad_examples,
    pretrain,
    split_heldout,
    tokenize_texts,
)

from .conftest import run_cli

PUBTATOR = "123|t|BRCA1 in cancer\n123|a|Tamoxifen helps.\n123\t0\t5\tBRCA1\tGene\t672\n\n"


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _config(tiny_encoder: Path, **overrides) -> PretrainConfig:
    settings = {"encoder": str(tiny_encoder), "epochs": 2, "lr": 1e-3, "batch_size": 8, "heldout": 10}
    return PretrainConfig(**{**settings, **overrides})


def test_corpus_text_is_train_and_devel_and_never_test(toy_dir: Path) -> None:
    texts = corpus_texts(toy_dir / "toy_gene")
    assert texts[0].startswith("MYC expression was increased in")
    train_only = corpus_texts(toy_dir / "toy_gene", ["train"])
    assert 0 < len(train_only) < len(texts)
    with pytest.raises(MtbionerError, match="never reads a corpus' test split"):
        corpus_texts(toy_dir / "toy_gene", ["train", "test"])


def test_raw_text_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first document\n\n  \nsecond document\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"id": 1, "text": "from json"}\n', encoding="utf-8")
    (tmp_path / "c.pubtator").write_text(PUBTATOR, encoding="utf-8")
    (tmp_path / "d.txt").write_text(PUBTATOR, encoding="utf-8")  # a PubTator download named .txt
    assert file_texts(tmp_path / "a.txt") == ["first document", "second document"]
    assert file_texts(tmp_path / "a.txt", limit=1) == ["first document"]
    with pytest.raises(MtbionerError, match="limit must be a positive number of texts, got -1"):
        file_texts(tmp_path / "a.txt", limit=-1)  # texts[:-1] would drop the last one silently
    assert file_texts(tmp_path / "b.jsonl") == ["from json"]
    assert file_texts(tmp_path / "c.pubtator") == ["BRCA1 in cancer\nTamoxifen helps."]
    assert file_texts(tmp_path / "d.txt") == ["BRCA1 in cancer\nTamoxifen helps."]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.csv", "a,b\n", r"x\.csv: unknown text format '\.csv'"),
        ("x.jsonl", '{"text": "ok"}\n{"text": 3}\n', r"x\.jsonl:2: \"text\" must be a string"),
        ("x.jsonl", '{"text": "ok"}\nnot json\n', r"x\.jsonl:2: invalid JSON"),
    ],
)
def test_bad_text_files_name_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(MtbionerError, match=message):
        file_texts(tmp_path / name)


def test_gather_drops_duplicates_and_counts_per_source(tmp_path: Path, toy_dir: Path) -> None:
    first = corpus_texts(toy_dir / "toy_gene", ["train"])[0]
    (tmp_path / "extra.txt").write_text(f"{first}\nsomething new\n", encoding="utf-8")
    texts, counts = gather_texts(["toy_gene", str(tmp_path / "extra.txt")], toy_dir, ["train"])
    assert texts.count(first) == 1
    assert texts[-1] == "something new"
    assert counts[str(tmp_path / "extra.txt")] == 1
    with pytest.raises(MtbionerError, match="name at least one corpus or text file"):
        gather_texts([], toy_dir)
    with pytest.raises(MtbionerError, match="corpus 'nope' not found"):
        gather_texts(["nope"], toy_dir)


def test_long_texts_become_consecutive_windows(tiny_encoder: Path) -> None:
    tokenizer = _tokenizer(tiny_encoder)
    text = " ".join(["kinase"] * 30)
    examples = tokenize_texts(tokenizer, [text, "p53"], max_length=12)
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = examples[:-1]
    assert all(len(e["input_ids"]) <= 12 for e in examples)
    assert [i for e in windows for i in e["input_ids"][1:-1]] == body  # nothing dropped, nothing repeated
    assert all(
        e["input_ids"][0] == tokenizer.cls_token_id and e["input_ids"][-1] == tokenizer.sep_token_id for e in examples
    )
    assert all(len(e["offset_mapping"]) == len(e["input_ids"]) == len(e["special_tokens_mask"]) for e in examples)


def test_whole_word_masking_masks_every_piece_of_a_word(tiny_encoder: Path) -> None:
    tokenizer = _tokenizer(tiny_encoder)
    texts = ["xqzv wkjy kinase pqrs", "zzqx mycn", "vvkw"] * 8  # unknown words split into character pieces
    examples = tokenize_texts(tokenizer, texts, 64)
    pieces = tokenizer(texts, add_special_tokens=False)
    collator = masking_collator(tokenizer, 0.4, whole_word_mask=True)
    torch.manual_seed(0)
    batch = collator(pad_examples(examples, tokenizer.pad_token_id))
    masked = batch["labels"] != -100
    assert masked.any()
    assert not masked[batch["attention_mask"] == 0].any()  # padding is never a target
    for row in range(len(texts)):
        words = pieces.word_ids(row)
        for word in set(words):
            flags = {bool(masked[row, 1 + i]) for i, w in enumerate(words) if w == word}
            assert len(flags) == 1, (texts[row], word)


def test_masked_only_loss_equals_the_full_vocabulary_loss(tiny_encoder: Path) -> None:
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    tokenizer = _tokenizer(tiny_encoder)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(str(tiny_encoder)).eval()
    examples = tokenize_texts(tokenizer, ["MYC expression was increased", "in cells treated with"], 32)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5)
    torch.manual_seed(1)
    batch = collator(pad_examples(examples, tokenizer.pad_token_id))
    ours, count = masked_lm_loss(model, batch)
    reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert count == int((batch["labels"] != -100).sum()) > 0
    assert torch.allclose(ours, reference.loss, atol=1e-6)


def test_pretraining_lowers_heldout_loss_and_writes_an_encoder_train_takes(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path
) -> None:
    from mtbioner.model.model import MultiTaskTagger

    texts, counts = gather_texts(["toy_gene", "toy_chem"], toy_dir)
    out = tmp_path / "enc"
    pretrain(texts, out, _config(tiny_encoder, epochs=4, lr=3e-3), progress=False, sources=counts)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1, 2, 3, 4]
    assert log[-1]["heldout_loss"] < log[0]["heldout_loss"] - 0.5
    info = json.loads((out / "pretraining.json").read_text())
    assert info["finished"] and info["sources"] == counts
    assert info["mlm_head"].startswith("initialised")
    assert not (out / "checkpoint").exists()

    before = load_file(str(tiny_encoder / "model.safetensors"))
    tagger = MultiTaskTagger.from_encoder({"toy": ["O", "B-GENE", "I-GENE"]}, out)
    after = tagger.encoder.state_dict()
    key = "embeddings.word_embeddings.weight"
    assert after[key].shape == before[key].shape
    assert not torch.equal(after[key], before[key])  # the encoder moved
    layer = "encoder.layer.1.output.dense.weight"
    assert torch.equal(after[layer], load_file(str(out / "model.safetensors"))[f"bert.{layer}"])


def test_resume_mid_epoch_gives_the_same_weights(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts, _ = gather_texts(["toy_gene", "toy_chem"], toy_dir)
    config = _config(tiny_encoder, save_every=2)
    pretrain(texts, tmp_path / "straight", config, progress=False)

    real_loss = pretraining.masked_lm_loss
    calls = []

    def crash_on_fifth_step(model, batch):
        calls.append(1)
        if len(calls) == 5:  # two held-out batches, two steps (checkpoint at batch 2), then the third step
            raise KeyboardInterrupt
        return real_loss(model, batch)

    monkeypatch.setattr(pretraining, "masked_lm_loss", crash_on_fifth_step)
    with pytest.raises(KeyboardInterrupt):
        pretrain(texts, tmp_path / "resumed", config, progress=False)
    monkeypatch.setattr(pretraining, "masked_lm_loss", real_loss)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == (0, 2)
    with pytest.raises(MtbionerError, match="--resume"):
        pretrain(texts, tmp_path / "resumed", config, progress=False)
    pretrain(texts, tmp_path / "resumed", config, resume=True, progress=False)

    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-6), key
    with pytest.raises(MtbionerError, match="nothing to resume"):
        pretrain(texts, tmp_path / "resumed", config, resume=True, progress=False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs"),
        ("mlm_probability", 1.0, "mlm probability"),
        ("warmup", 2.0, "warmup"),
        ("mixed_precision", "fp16", "mixed precision must be 'no' or 'bf16'"),
    ],
)
def test_config_rejects_bad_values(field: str, value, message: str) -> None:
    with pytest.raises(MtbionerError, match=message):
        PretrainConfig(**{field: value})


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, "pretrain", *args)


def test_cli_pretrains_and_resumes_with_recorded_inputs(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    (tmp_path / "notes.txt").write_text("kinase activity in cells\n", encoding="utf-8")
    out = tmp_path / "enc"
    args = ["toy_gene", tmp_path / "notes.txt", "--data-dir", toy_dir, "--encoder", tiny_encoder, "--output", out]
    code, text = _cli(monkeypatch, capsys, *args, "--epochs", 1, "--heldout", 5, "--no-progress")
    assert code == 0, text
    assert f"--encoder {out}" in text
    info = json.loads((out / "pretraining.json").read_text())
    assert info["inputs"]["sources"] == ["toy_gene", str((tmp_path / "notes.txt").resolve())]
    assert info["sources"][str((tmp_path / "notes.txt").resolve())] == 1

    code, text = _cli(monkeypatch, capsys, "--output", out, "--resume")
    assert code == 2 and "nothing to resume" in text


def test_cli_bf16_pretrains_under_bfloat16_autocast(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """``--bf16`` reaches the config and the MLM forward pass runs in bfloat16 (the loss stays float32)."""
    monkeypatch.setattr("mtbioner.cli._common.native_bf16", lambda fields: True)  # a CPU with bfloat16
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    original = pretraining.masked_lm_loss

    def spy(model, batch):
        loss, count = original(model, batch)
        seen.append((torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None, loss.dtype))
        return loss, count

    monkeypatch.setattr(pretraining, "masked_lm_loss", spy)
    out = tmp_path / "enc"
    args = ["toy_gene", "--data-dir", toy_dir, "--encoder", tiny_encoder, "--output", out, "--epochs", 1]
    code, text = _cli(monkeypatch, capsys, *args, "--heldout", 5, "--no-progress", "--bf16")
    assert code == 0, text
    assert json.loads((out / "pretraining.json").read_text())["config"]["mixed_precision"] == "bf16"
    assert (torch.bfloat16, torch.float32) in seen  # training steps; the held-out loss runs in float32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name at least one corpus or text file"),
        (["toy_gene", "--splits", "train,test"], "never reads a corpus' test split"),
        (["toy_gene", "--epochs", "0"], "epochs must be at least 1"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_cli_mistakes_are_one_line(
    args: list[str], message: str, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code, text = _cli(monkeypatch, capsys, *args, "--data-dir", toy_dir, "--output", tmp_path / "enc")
    assert code == 2
    assert message in text and "Traceback" not in text
    assert not (tmp_path / "enc").exists()


def test_split_heldout_keeps_a_fixed_tenth_out_and_the_rest_in_order() -> None:
    texts = [f"text {i}" for i in range(50)]
    train, heldout = split_heldout(texts, 20, seed=3)
    assert len(heldout) == 5  # at most a tenth, whatever was asked
    assert sorted(train + heldout) == sorted(texts) and not set(train) & set(heldout)
    assert train == [t for t in texts if t not in heldout]  # training texts keep the corpus order
    assert split_heldout(texts, 20, seed=3) == (train, heldout)
    assert split_heldout(texts, 20, seed=4)[1] != heldout
    assert split_heldout(texts, 2, seed=3)[1] == heldout[:2]  # a smaller sample is a prefix of the same draw
