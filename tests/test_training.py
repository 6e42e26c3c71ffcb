from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtbioner.data.corpus import read_corpus
from mtbioner.errors import MtbionerError
from mtbioner.learn import training
from mtbioner.learn.training import (
    TrainingConfig,
    check_resumable,
    read_training_info,
    record_epoch,
    schedule_batches,
    train,
    without_scored_text,
)
from mtbioner.runtime.evaluation import evaluate_corpus

LENGTHS = {"a": [5, 3, 8, 1, 9, 2, 7], "b": [4, 4, 6], "c": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}


def test_sequential_schedule_visits_corpus_after_corpus() -> None:
    batches = schedule_batches(LENGTHS, 2, "sequential", seed=1, epoch=0)
    names = [name for name, _ in batches]
    assert names == ["a"] * 4 + ["b"] * 2 + ["c"] * 6
    for name, lens in LENGTHS.items():
        assert sorted(i for n, b in batches if n == name for i in b) == list(range(len(lens)))


def test_mixed_schedule_shuffles_whole_batches_of_one_corpus() -> None:
    batches = schedule_batches(LENGTHS, 2, "mixed", seed=1, epoch=0)
    sequential = schedule_batches(LENGTHS, 2, "sequential", seed=1, epoch=0)
    assert sorted(map(str, batches)) == sorted(map(str, sequential))  # the same batches, in another order
    names = [name for name, _ in batches]
    assert names != sorted(names, key=list(LENGTHS).index)  # corpora are interleaved
    assert Counter(names) == {"a": 4, "b": 2, "c": 6}
    assert batches == schedule_batches(LENGTHS, 2, "mixed", seed=1, epoch=0)  # reproducible
    assert batches != schedule_batches(LENGTHS, 2, "mixed", seed=1, epoch=1)  # a new order each epoch


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("schedule", "random", "schedule must be"),
        ("head", "rnn", "head must be"),
        ("warmup", 1.5, "warmup"),
        ("train_splits", ["train", "dev"], "unknown train split"),
        ("batch_size", 0, "batch size"),
        ("ema", 1.0, "ema is a decay"),
        ("ema", -0.1, "ema is a decay"),
        ("mixed_precision", "fp16", "mixed precision must be"),
    ],
)
def test_config_rejects_bad_values(field: str, value, message: str) -> None:
    with pytest.raises(MtbionerError, match=message):
        TrainingConfig(**{field: value})


def _toy(toy_dir: Path):
    return [read_corpus(toy_dir / name) for name in ("toy_gene", "toy_chem")]


def _fast(tiny_encoder: Path, **overrides) -> TrainingConfig:
    settings = dict(encoder=str(tiny_encoder), lr=3e-3, warmup=0.1, batch_size=4, epochs=2, seed=7, max_length=32)
    settings.update(overrides)
    return TrainingConfig(**settings)


@pytest.mark.parametrize("head", ["linear", "crf"])
def test_tiny_model_learns_toy_two_corpus_problem(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, head: str
) -> None:
    corpora = _toy(toy_dir)
    model = train(corpora, tmp_path / "m", _fast(tiny_encoder, epochs=40, head=head), progress=False)
    trained, _ = without_scored_text(corpora, [])  # the toy train splits repeat 6 test sentences
    for corpus, seen in zip(corpora, trained, strict=True):
        learned, _ = evaluate_corpus(model, seen, "train")
        assert learned.overall.f1 == 100.0, (corpus.name, learned)  # the toy problem is learned exactly
        report, _ = evaluate_corpus(model, corpus, "test")
        # An untrained head scores near 0. On unseen sentences (the 6 test sentences the toy train splits
        # repeat are not trained on) the 2-layer, 32-wide model misses a few of 24 spans.
        assert report.overall.f1 >= 85.0, (corpus.name, report)
    log = (tmp_path / "m" / "log.jsonl").read_text().splitlines()
    assert len(log) == 40
    assert not (tmp_path / "m" / "checkpoint").exists()  # a finished run keeps no resume state


def _interrupt_after_first_epoch(corpora, output: Path, config: TrainingConfig, monkeypatch) -> None:
    """Train into ``output`` until its first save (the end of epoch 1), then stop as Ctrl-C would."""
    real_save, calls = training._save, []

    def crash_after_first_epoch(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(corpora, output, config, progress=False)
    monkeypatch.setattr(training, "_save", real_save)


def test_resume_gives_the_same_weights(tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch) -> None:
    corpora = _toy(toy_dir)
    config = _fast(tiny_encoder, epochs=3)
    train(corpora, tmp_path / "straight", config, progress=False)

    _interrupt_after_first_epoch(corpora, tmp_path / "resumed", config, monkeypatch)
    assert (tmp_path / "resumed" / "checkpoint" / "state.json").is_file()
    with pytest.raises(MtbionerError, match="--resume"):
        train(corpora, tmp_path / "resumed", config, progress=False)
    train(corpora, tmp_path / "resumed", config, resume=True, progress=False)

    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert (tmp_path / "straight" / "log.jsonl").read_text().count("\n") == 3
    assert (tmp_path / "resumed" / "log.jsonl").read_text().count("\n") == 3


def test_mid_epoch_checkpoints_count_each_second_of_training_once(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Clock:  # one tick per reading: the logged seconds can only add up to the ticks that passed
        now = 0.0

        def perf_counter(self) -> float:
            self.now += 1.0
            return self.now

    clock = Clock()
    monkeypatch.setattr(training, "time", clock)
    with caplog.at_level(logging.INFO, logger="mtbioner.learn.training"):
        train(_toy(toy_dir), tmp_path / "m", _fast(tiny_encoder, epochs=2, save_every=1), progress=False)
    log = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert 0 < sum(e["train_seconds"] for e in log) <= clock.now
    # without a progress bar, each mid-epoch checkpoint says where the run is
    per_epoch = log[0]["step"]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checkpoint:")]
    assert len(said) == 2 * (per_epoch - 1)  # every step but each epoch's last, which ends the epoch instead
    assert said[0].startswith(f"checkpoint: epoch 1 of 2, batch 1 of {per_epoch}, step 1 of {2 * per_epoch}, loss ")
    assert said[-1].startswith(
        f"checkpoint: epoch 2 of 2, batch {per_epoch - 1} of {per_epoch}, step {2 * per_epoch - 1} of"
    )
    assert said[0].endswith(" h of steps left")


def test_the_checkpoint_line_gives_the_pace_and_the_time_left() -> None:
    line = training.checkpoint_line(2, 8, 1500, 2118, 3618, 16944, 0.91234, 30000, 1500.0)
    # 13,326 steps left at this epoch's 1 s a batch: 3.70 h
    assert line == (
        "checkpoint: epoch 2 of 8, batch 1500 of 2118, step 3618 of 16944, loss 0.9123, 20.0 windows/s, "
        "about 3.7 h of steps left"
    )


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_mid_epoch_gives_the_same_weights(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch, ema: float
) -> None:
    corpora = _toy(toy_dir)
    config = _fast(tiny_encoder, epochs=2, save_every=2, ema=ema)
    train(corpora, tmp_path / "straight", config, progress=False)

    real_save = training._save
    saved = []

    def crash_after_a_mid_epoch_save(output, model, optimizer, scheduler, state, *args, **kwargs):
        real_save(output, model, optimizer, scheduler, state, *args, **kwargs)
        saved.append(dict(state))
        if len(saved) == 3:  # epoch 1 at batch 2, epoch 1 at batch 4: then the crash
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save", crash_after_a_mid_epoch_save)
    with pytest.raises(KeyboardInterrupt):
        train(corpora, tmp_path / "resumed", config, progress=False)
    monkeypatch.setattr(training, "_save", real_save)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == (saved[-1]["epoch"], saved[-1]["batch"])
    assert state["batch"] > 0  # the checkpoint is inside an epoch
    train(corpora, tmp_path / "resumed", config, resume=True, progress=False)

    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    logs = [
        [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        for run in ("straight", "resumed")
    ]
    assert [(e["train_loss"], e["train_windows"]) for e in logs[0]] == [
        (e["train_loss"], e["train_windows"]) for e in logs[1]
    ]


def test_best_devel_epoch_is_kept(tiny_encoder: Path, toy_dir: Path, tmp_path: Path) -> None:
    import json

    train(_toy(toy_dir), tmp_path / "m", _fast(tiny_encoder, epochs=3), progress=False)
    log = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    best = max(log, key=lambda e: e["mean_devel_f1"])
    assert log[-1]["best_epoch"] == best["epoch"]
    assert set(log[0]["devel"]) == {"toy_gene", "toy_chem"}
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["best_epoch"] == best["epoch"] and info["config"]["seed"] == 7


def test_two_cpu_processes_take_the_same_steps_as_one(tiny_encoder: Path, toy_dir: Path, tmp_path: Path) -> None:
    """``accelerate launch`` on 2 CPU processes (DDP, gloo) ends with the same model as one process."""
    from transformers import AutoConfig

    quiet = tmp_path / "encoder"
    quiet.mkdir()
    for item in tiny_encoder.iterdir():
        (quiet / item.name).symlink_to(item)
    (quiet / "config.json").unlink()
    config = AutoConfig.from_pretrained(str(tiny_encoder))
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0  # dropout masks differ per process
    config.save_pretrained(str(quiet))
    args = [
        "train",
        str(toy_dir / "toy_gene"),
        str(toy_dir / "toy_chem"),
        "--encoder",
        str(quiet),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--max-length",
        "32",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    one = subprocess.run(
        [sys.executable, "-m", "mtbioner", *args, "--output", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "29517",
            "-m",
            "mtbioner",
            *args,
            "--output",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def _epochs(f1s: list[dict[str, float]], devel_in_training: bool) -> tuple[list[bool], dict]:
    state: dict = {"best_f1": -1.0, "best_epoch": 0, "log": []}
    kept = []
    for epoch, scores in enumerate(f1s, 1):
        entry = {"epoch": epoch, "devel": {name: {"f1": f1} for name, f1 in scores.items()}}
        kept.append(record_epoch(entry, state, devel_in_training))
    return kept, state


def test_record_epoch_keeps_the_best_mean_devel_f1_when_devel_is_held_out() -> None:
    kept, state = _epochs([{"a": 50.0, "b": 70.0}, {"a": 80.0, "b": 60.0}, {"a": 40.0, "b": 60.0}], False)
    assert kept == [True, True, False]
    assert state["best_epoch"] == 2 and state["best_f1"] == 70.0
    assert [e["best_epoch"] for e in state["log"]] == [1, 2, 2]
    assert [e["mean_devel_f1"] for e in state["log"]] == [60.0, 70.0, 50.0]


def test_record_epoch_keeps_the_last_epoch_when_devel_is_trained_on() -> None:
    kept, state = _epochs([{"a": 80.0}, {"a": 10.0}], True)  # devel scores, if any, are no guide
    assert kept == [True, True] and state["best_epoch"] == 2
    assert all("mean_devel_f1" not in e for e in state["log"])


def test_check_resumable_refuses_a_missing_checkpoint_and_starting_over_an_unfinished_run(tmp_path: Path) -> None:
    check_resumable(tmp_path, resume=False)  # a fresh folder starts
    with pytest.raises(MtbionerError, match="nothing to resume"):
        check_resumable(tmp_path, resume=True)
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(MtbionerError, match="holds an unfinished run: add --resume"):
        check_resumable(tmp_path, resume=False)
    with pytest.raises(MtbionerError, match="nothing to resume"):  # no state.json: nothing to continue from
        check_resumable(tmp_path, resume=True)
    (tmp_path / "checkpoint" / "state.json").write_text("{}")
    check_resumable(tmp_path, resume=True)


def test_ema_model_folder_holds_the_moving_average_of_every_steps_weights(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    decay = 0.8
    steps: list[dict[str, torch.Tensor]] = []
    real = training.moving_average

    def recording(model, ema: float):
        averaged = real(model, ema)
        update = averaged.update_parameters

        def record(current):
            steps.append({k: v.detach().clone() for k, v in current.state_dict().items()})
            update(current)

        averaged.update_parameters = record
        return averaged

    monkeypatch.setattr(training, "moving_average", recording)
    config = _fast(tiny_encoder, epochs=2, ema=decay, train_splits=["train", "devel"])  # the last epoch is kept
    model = train(_toy(toy_dir), tmp_path / "m", config, progress=False)
    assert len(steps) > 3
    expected = dict(steps[0])
    for done, weights in enumerate(steps[1:], start=1):
        factor = min(decay, (1 + done) / (10 + done))  # the decay warms up (TensorFlow's num_updates)
        for key, value in weights.items():
            if value.is_floating_point():
                expected[key] = factor * expected[key] + (1 - factor) * value
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    moved = 0
    for key, value in saved.items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)
        moved += not torch.allclose(value, steps[-1][key])
    assert moved > 0  # the average is not the last step's weights
    returned = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(returned[key], value), key  # train() returns what it saved
    # ... and the model in memory (which devel scored) computes what the saved folder computes
    from mtbioner.model.model import MultiTaskTagger

    reloaded = MultiTaskTagger.from_pretrained(tmp_path / "m").eval()
    for name, buffer in reloaded.encoder.named_buffers():
        assert torch.equal(dict(model.encoder.named_buffers())[name], buffer), name
    ids = torch.tensor([[2, 5, 7, 9, 3]])
    mask = torch.ones_like(ids)
    model.eval()
    torch.testing.assert_close(
        model(input_ids=ids, attention_mask=mask, corpus="toy_gene").logits,
        reloaded(input_ids=ids, attention_mask=mask, corpus="toy_gene").logits,
    )


def test_train_cli_refuses_a_bad_ema(tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from tests.conftest import run_cli

    code, out = run_cli(
        monkeypatch, capsys, "train", "toy_chem", "--data-dir", toy_dir, "--encoder", tiny_encoder,
        "--epochs", "1", "--no-progress", "--output", tmp_path / "bad", "--ema", "1",
    )  # fmt: skip
    assert code != 0 and "ema is a decay" in out and "Traceback" not in out
    assert not (tmp_path / "bad").exists()


def test_bf16_runs_the_encoder_in_bfloat16_and_keeps_float32_weights_and_loss(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from mtbioner.model.heads import LinearHead

    seen: dict[str, set] = {"encoder": set(), "head": set(), "loss": set()}
    real_from_encoder = training.MultiTaskTagger.from_encoder

    def record(kind: str):
        def hook(module, inputs, output) -> None:
            if module.training:  # training steps; devel scoring runs the unwrapped float32 model
                seen[kind].add(output.dtype)

        return hook

    def hooked(*args, **kwargs):
        model = real_from_encoder(*args, **kwargs)
        for module in model.encoder.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(record("encoder"))
        for module in model.modules():
            if isinstance(module, LinearHead):
                module.register_forward_hook(record("head"))
        real_loss = model.forward

        def forward(*a, **k):
            out = real_loss(*a, **k)
            if out.loss is not None:
                seen["loss"].add(out.loss.dtype)
            return out

        model.forward = forward
        return model

    monkeypatch.setattr(training.MultiTaskTagger, "from_encoder", hooked)
    corpora = _toy(toy_dir)
    config = _fast(tiny_encoder, epochs=30, mixed_precision="bf16", heads={"toy_chem": "crf"})
    model = train(corpora, tmp_path / "m", config, progress=False)
    assert seen == {"encoder": {torch.bfloat16}, "head": {torch.float32}, "loss": {torch.float32}}
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert {value.dtype for value in saved.values() if value.is_floating_point()} == {torch.float32}
    assert read_training_info(tmp_path / "m")["config"]["mixed_precision"] == "bf16"
    trained, _ = without_scored_text(corpora, [])
    for corpus in trained:  # bfloat16 forward passes still learn the toy problem (an untrained head scores ~0)
        learned, _ = evaluate_corpus(model, corpus, "train")
        assert learned.overall.f1 >= 95.0, (corpus.name, learned)


def test_train_cli_bf16_flag_reaches_the_config(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch, capsys
):
    from tests.conftest import run_cli

    monkeypatch.setattr("mtbioner.cli._common.native_bf16", lambda fields: True)
    code, out = run_cli(
        monkeypatch, capsys, "train", "toy_chem", "--data-dir", toy_dir, "--encoder", tiny_encoder,
        "--epochs", "1", "--no-progress", "--output", tmp_path / "m", "--bf16", "--limit", "8",
    )  # fmt: skip
    assert code == 0, out
    assert read_training_info(tmp_path / "m")["config"]["mixed_precision"] == "bf16"
    assert "--bf16 ignored" not in out


def test_a_bf16_run_resumed_on_a_cpu_without_bfloat16_goes_on_in_float32(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch, capsys
):
    """Started with --bf16 where bfloat16 is native, resumed where it is emulated: float32, and said so."""
    from tests.conftest import run_cli

    config = _fast(tiny_encoder, epochs=2, mixed_precision="bf16")
    _interrupt_after_first_epoch(_toy(toy_dir), tmp_path / "m", config, monkeypatch)
    monkeypatch.setattr("mtbioner.cli._common.native_bf16", lambda fields: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out = run_cli(monkeypatch, capsys, "train", "--output", tmp_path / "m", "--resume", "--no-progress")
    assert code == 0, out
    assert "warning: --bf16 ignored" in out
    assert read_training_info(tmp_path / "m")["config"]["mixed_precision"] == "no"
    assert (tmp_path / "m" / "log.jsonl").read_text().count("\n") == 2  # both epochs, the second in float32


def test_train_cli_bf16_falls_back_to_float32_on_a_cpu_without_bfloat16(
    tiny_encoder: Path, toy_dir: Path, tmp_path: Path, monkeypatch, capsys
):
    """Emulated bfloat16 made a ten-corpus run ~19x slower on an AVX2 host: the flag must not stall a study there."""
    from tests.conftest import run_cli

    monkeypatch.setattr("mtbioner.cli._common.native_bf16", lambda fields: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out = run_cli(
        monkeypatch, capsys, "train", "toy_chem", "--data-dir", toy_dir, "--encoder", tiny_encoder,
        "--epochs", "1", "--no-progress", "--output", tmp_path / "m", "--bf16", "--limit", "8",
    )  # fmt: skip
    assert code == 0, out
    assert "warning: --bf16 ignored" in out and "float32" in out
    assert read_training_info(tmp_path / "m")["config"]["mixed_precision"] == "no"
