"""Joint training of one encoder and one head per corpus (MT-BioNER), driven by Accelerate.

Algorithm I (``schedule="mixed"``, the paper's default): every epoch each corpus is cut
into mini-batches (one batch holds one corpus), all batches are merged and shuffled, and
the model is updated on each. Algorithm II (``"sequential"``) visits corpus after corpus.

Under ``accelerate launch`` every process sees the same batch order and takes its share of
each batch, with the loss normalised by the whole batch's size, so N processes take the
same steps as one process with the same ``batch_size``.
"""

from __future__ import annotations

import json
import logging
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from tqdm.auto import tqdm

from ..constants import __version__
from ..data.corpus import Corpus
from ..data.leakage import remove_leaks, scored_texts
from ..errors import MtbionerError
from ..fileio import check_output_folder, read_json_record, write_json
from ..model.decoding import HeadKind
from ..model.dictionary import DICTIONARY_NAME, Dictionary, training_matches
from ..model.encoding import Window, collate, document_surroundings, encode, length_grouped_batches
from ..model.model import WEIGHTS_NAME, MultiTaskTagger
from ..model.model_config import CONFIG_NAME
from ..runtime.evaluation import evaluate_corpus

logger = logging.getLogger(__name__)

Schedule = Literal["mixed", "sequential"]
Precision = Literal["no", "bf16"]
CHECKPOINT_DIR = "checkpoint"
AVERAGE_NAME = "average.safetensors"  # the checkpoint's moving average of the weights (--ema)
TRAINING_FILE = "training.json"
LOG_FILE = "log.jsonl"


@dataclass
class TrainingConfig:
    """Training settings; the defaults are the paper's (AdamW 5e-5, warm-up 0.4, batch 32, 8 epochs).

    Dictionary evidence (``dictionary_features``, off by default; see :mod:`mtbioner.model.dictionary`):
    terms come from the entities of the ``train_splits`` of the corpora being trained plus
    ``dictionary_files`` (``term<TAB>type`` lines); terms whose matches in those splits are gold
    entities of their type less than ``dictionary_min_precision`` of the time are dropped; training
    sentences are matched with terms from outside their own one of ``dictionary_folds`` blocks.
    The match-tag table starts at zero and learns at ``dictionary_lr`` (the encoder's ``lr`` would move
    it too little in a few thousand steps), without weight decay.

    ``ema`` (off at 0): after every step an exponential moving average of the weights is updated
    (``torch.optim.swa_utils``, decay ``ema`` per step after a warm-up, :func:`moving_average`); the
    average is what devel scores and what the model folder holds. Averaging damps the last epochs'
    drift (JNLPBA's devel F1 peaks at epoch 5 of 8 and slips after) without choosing an epoch.

    ``mixed_precision="bf16"`` runs the forward pass under bfloat16 autocast (accelerate's
    ``mixed_precision``); weights, optimizer state and the loss stay float32. On CPUs with AMX or
    AVX-512 BF16 a step takes ~0.6x the time (measured: MiniLM, 32 x 128 windows, 2 cores); elsewhere
    bfloat16 is emulated and ~19x slower (:func:`mtbioner.host.native_bf16`), so it is off by default and the
    command line's ``--bf16`` falls back to float32 on such CPUs.
    """

    schedule: Schedule = "mixed"
    lr: float = 5e-5
    warmup: float = 0.4
    weight_decay: float = 0.01
    batch_size: int = 32
    epochs: int = 8
    max_length: int = 128
    stride: int | None = None
    seed: int = 42
    freeze_encoder: bool = False
    loss_weights: dict[str, float] = field(default_factory=dict)
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    head: HeadKind = "linear"
    heads: dict[str, HeadKind] = field(default_factory=dict)  # per-corpus kinds overriding ``head``
    limit: int | None = None
    encoder: str | None = None
    dropout: float = 0.1
    max_grad_norm: float = 1.0
    eval_batch_size: int = 64
    sampling_temperature: float = 1.0
    case_features: bool = False
    dictionary_features: bool = False
    dictionary_files: list[str] = field(default_factory=list)
    dictionary_folds: int = 5
    dictionary_min_precision: float = 0.5
    dictionary_case_sensitive: bool = False
    dictionary_lr: float = 1e-3
    context: int = 0  # sub-tokens of document context each side of a sentence (0: none; encoding.py)
    ema: float = 0.0  # decay of the weights' moving average per step (0: none)
    save_every: int = 500  # steps between mid-epoch checkpoints (a four-corpus epoch is ~40 min on 2 cores)
    held_out: list[str] = field(default_factory=list)  # corpora scored but not trained on (leakage.py)
    mixed_precision: Precision = "no"  # "bf16": autocast (accelerate); fp32 weights, optimizer and loss

    def __post_init__(self) -> None:
        checks = [
            (self.schedule in ("mixed", "sequential"), f"schedule must be mixed or sequential, not {self.schedule!r}"),
            (self.head in ("linear", "crf"), f"head must be 'linear' or 'crf', not {self.head!r}"),
            *(
                (kind in ("linear", "crf"), f"head of {name} must be 'linear' or 'crf', not {kind!r}")
                for name, kind in self.heads.items()
            ),
            (self.lr > 0, f"lr must be positive, not {self.lr}"),
            (0 <= self.warmup <= 1, f"warmup is a proportion of the steps (0..1), not {self.warmup}"),
            (self.batch_size >= 1, f"batch size must be at least 1, not {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be at least 1, not {self.epochs}"),
            (self.max_length >= 8, f"max length must be at least 8 sub-tokens, not {self.max_length}"),
            (self.limit is None or self.limit >= 1, f"limit must be at least 1, not {self.limit}"),
            (bool(self.train_splits), "train splits must name at least one split"),
            (self.sampling_temperature > 0, f"sampling temperature must be positive, not {self.sampling_temperature}"),
            (self.context >= 0, f"context must be 0 or more sub-tokens, not {self.context}"),
            (0 <= self.ema < 1, f"ema is a decay per step (0 <= ema < 1; 0: off), not {self.ema}"),
            (
                self.dictionary_features or not self.dictionary_files,
                "dictionary files are used by dictionary features: add --dictionary-features",
            ),
            (self.dictionary_folds >= 1, f"dictionary folds must be at least 1, not {self.dictionary_folds}"),
            (self.dictionary_lr > 0, f"dictionary lr must be positive, not {self.dictionary_lr}"),
            (
                self.mixed_precision in ("no", "bf16"),
                f"mixed precision must be 'no' or 'bf16', not {self.mixed_precision!r}",
            ),
            (self.save_every >= 1, f"save-every must be at least 1 step, not {self.save_every}"),
            (
                0 <= self.dictionary_min_precision <= 1,
                f"dictionary min precision is a share (0..1), not {self.dictionary_min_precision}",
            ),
            (
                not (self.dictionary_features and "test" in self.train_splits),
                "dictionary features never take terms from the test split: train on train (and devel) only",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise MtbionerError(message)
        bad = [s for s in self.train_splits if s not in ("train", "devel", "test")]
        if bad:
            raise MtbionerError(f"unknown train split(s) {bad}: use train, devel or test")


def schedule_batches(
    lengths: dict[str, list[int]],
    batch_size: int,
    schedule: Schedule,
    seed: int,
    epoch: int,
    temperature: float = 1.0,
) -> list[tuple[str, list[int]]]:
    """The epoch's batches as ``(corpus, window indices)``, reproducible from ``seed`` and ``epoch``.

    Each corpus is cut into length-grouped batches; ``mixed`` shuffles all of them together,
    ``sequential`` keeps corpus after corpus in the given order.

    With ``temperature`` T != 1 (mixed only), the epoch keeps its total number of batches but
    corpus i gets a share proportional to ``n_i ** (1 / T)``: T > 1 draws small corpora more
    often (their batches repeat) and large ones less (a random subset of their batches),
    T = 1 is the paper's proportional mix.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    per_corpus = {name: length_grouped_batches(lens, batch_size, rng) for name, lens in lengths.items()}
    if schedule == "mixed" and temperature != 1.0:
        per_corpus = _resample(per_corpus, temperature, rng)
    batches = [(name, b) for name, bs in per_corpus.items() for b in bs]
    if schedule == "mixed":
        rng.shuffle(batches)
    return batches


def _resample(
    per_corpus: dict[str, list[list[int]]], temperature: float, rng: random.Random
) -> dict[str, list[list[int]]]:
    """Give each corpus ``total * n_i^(1/T) / sum_j n_j^(1/T)`` batches (at least one)."""
    sizes = {name: len(bs) for name, bs in per_corpus.items() if bs}
    total = sum(sizes.values())
    weights = {name: n ** (1.0 / temperature) for name, n in sizes.items()}
    norm = sum(weights.values())
    out: dict[str, list[list[int]]] = {}
    for name, batches in per_corpus.items():
        if not batches:
            out[name] = []
            continue
        quota = max(1, round(total * weights[name] / norm))
        drawn: list[list[int]] = []
        while len(drawn) < quota:
            drawn.extend(rng.sample(batches, len(batches)))
        out[name] = drawn[:quota]
    return out


def train(
    corpora: list[Corpus],
    output_dir: str | Path,
    config: TrainingConfig,
    resume: bool = False,
    progress: bool = True,
) -> MultiTaskTagger:
    """Train a multi-task tagger and save it to ``output_dir``.

    After each epoch the devel F1 of every corpus is appended to ``log.jsonl`` and a resume
    checkpoint is written with the model. When devel is not trained on, the epoch with the
    best mean devel F1 is the model kept; otherwise the last epoch is.

    Args:
        corpora: Corpora with the ``train_splits`` (and ``devel``) loaded.
        output_dir: The model folder to write.
        config: Training settings.
        resume: Continue from the checkpoint in ``output_dir``.
        progress: Show a progress bar.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    output = Path(output_dir)
    check_resumable(output, resume, sources=tuple(c.path for c in corpora))
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise MtbionerError(f"two corpora share a name: {names}; corpus names (folder names) must be unique")
    corpora, leakage = without_scored_text(corpora, config.held_out)
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision", config.mixed_precision) != config.mixed_precision:
        # accelerate keeps one precision per process and refuses another; a process that trains again (a study,
        # the tests) with another precision starts its state afresh (the distributed part, PartialState, stays)
        AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(config.seed)
    dictionary, user_terms = build_dictionary(corpora, config, output if resume else None)
    model = MultiTaskTagger.from_encoder(
        {c.name: c.labels for c in corpora},
        config.encoder,
        config.head,
        config.loss_weights,
        config.max_length,
        config.stride,
        config.dropout,
        config.case_features,
        dictionary,
        config.heads,
        config.context,
    )
    tokenizer = model.tokenizer
    matches: dict[str, list] = {}
    if dictionary is not None:
        matches = training_matches(dictionary, corpora, config.train_splits, config.dictionary_folds, user_terms)
        logger.info("dictionary: %s terms per type", json.dumps(dictionary.counts()))
    windows = {c.name: _training_windows(c, config, model, matches.get(c.name)) for c in corpora}
    devel = {c.name: c for c in corpora if "devel" not in config.train_splits and "devel" in c.splits}
    lengths = {name: [len(w) for w in ws] for name, ws in windows.items()}
    steps_per_epoch = len(
        schedule_batches(lengths, config.batch_size, config.schedule, config.seed, 0, config.sampling_temperature)
    )
    total_steps = steps_per_epoch * config.epochs
    if steps_per_epoch == 0:
        raise MtbionerError("no training sentences: check --train-splits and --limit")
    if config.freeze_encoder:
        model.encoder.requires_grad_(False)
    # The fused AdamW kernel (CPU and CUDA) is a third of the foreach step's time on 2 CPU cores.
    fused = accelerator.device.type in ("cpu", "cuda")
    groups = parameter_groups(model, config.weight_decay, config.dictionary_lr)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=fused)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped: MultiTaskTagger = accelerator.unwrap_model(model)
    averaged = moving_average(unwrapped, config.ema)
    kept = unwrapped if averaged is None else averaged.module  # what devel scores and the folder holds

    info = _run_info(config, corpora, windows, steps_per_epoch, accelerator)
    info["leakage"] = leakage
    if dictionary is not None:
        info["dictionary"] = {
            "terms": dictionary.counts(),
            "matched_training_words": _matched_words(matches, dictionary.types),
        }
    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "best_epoch": 0, "log": [], **_fresh_epoch()}
    if resume:
        state = {**_fresh_epoch(), **_load_checkpoint(output, unwrapped, optimizer, scheduler, averaged)}
        logger.info("resuming %s at epoch %d, batch %d", output, state["epoch"] + 1, state["batch"])
    elif _has_checkpoint(output):
        raise MtbionerError(
            f"{output} holds an unfinished run: add --resume to continue it, or choose another --output"
        )

    rank, world = accelerator.process_index, accelerator.num_processes
    pad_id = tokenizer.pad_token_id or 0
    for epoch in range(state["epoch"], config.epochs):
        model.train()
        started = time.perf_counter()
        batches = schedule_batches(
            lengths, config.batch_size, config.schedule, config.seed, epoch, config.sampling_temperature
        )
        show = progress and accelerator.is_main_process
        bar = tqdm(
            total=len(batches), initial=state["batch"], desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show
        )
        loss_sum, seen, done = state["epoch_loss"], state["epoch_seen"], state["batch"]
        for corpus, indices in batches[state["batch"] :]:
            batch_windows = [windows[corpus][i] for i in indices]
            shard = batch_windows[rank::world]
            weight = 1.0 if shard else 0.0  # a process with nothing to do still joins the gradient sync
            batch = collate(shard or batch_windows[:1], pad_id, corpus)
            normalizer = _normalizer(batch_windows, unwrapped.config.corpora[corpus].head) / world
            out = model(
                input_ids=batch.input_ids.to(accelerator.device),
                attention_mask=batch.attention_mask.to(accelerator.device),
                corpus=corpus,
                labels=batch.labels.to(accelerator.device),
                normalizer=normalizer,
                token_type_ids=None if batch.token_type_ids is None else batch.token_type_ids.to(accelerator.device),
                dictionary_ids=None if batch.dictionary_ids is None else batch.dictionary_ids.to(accelerator.device),
            )
            loss = out.loss * weight
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if averaged is not None:
                averaged.update_parameters(unwrapped)
            state["step"] += 1
            loss_sum += float(loss.detach()) * world
            seen, done = seen + len(batch_windows), done + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / done:.4f}")
            if done % config.save_every == 0 and done < len(batches):
                seconds = state["epoch_seconds"] + time.perf_counter() - started
                state.update(batch=done, epoch_loss=loss_sum, epoch_seen=seen, epoch_seconds=seconds)
                if accelerator.is_main_process:  # the best weights stay; the checkpoint holds the current ones
                    _save(output, unwrapped, optimizer, scheduler, state, info, False, False, averaged)
                    if not show:  # a run in the background says where it is at each checkpoint
                        where = (epoch + 1, config.epochs, done, len(batches), state["step"], total_steps)
                        logger.info(checkpoint_line(*where, loss_sum / done, seen, seconds))
                accelerator.wait_for_everyone()
                started = time.perf_counter()  # epoch_seconds holds the time so far (saving not counted)
        bar.close()
        train_seconds = state["epoch_seconds"] + time.perf_counter() - started
        entry = {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": round(float(accelerator.reduce(torch.tensor(loss_sum / max(len(batches), 1)), "mean")), 6),
            "train_windows": seen,
            "train_seconds": round(train_seconds, 2),
            "train_windows_per_s": round(seen / train_seconds, 2),
            "devel_in_training": "devel" in config.train_splits,
        }
        if accelerator.is_main_process:
            entry["devel"] = devel_scores(kept, devel, config.eval_batch_size)
            model.train()
            improved = record_epoch(entry, state, "devel" in config.train_splits)
            state.update(epoch=epoch + 1, **_fresh_epoch())
            logger.info("epoch %d: %s", epoch + 1, json.dumps({k: entry[k] for k in entry if k != "step"}))
            _save(output, unwrapped, optimizer, scheduler, state, info, improved, False, averaged)
        state.update(**_fresh_epoch())  # every process starts the next epoch at its first batch
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        best = output / WEIGHTS_NAME
        if state["best_epoch"] != state["epoch"] and best.is_file():
            load_model(kept, str(best))
        _save(output, kept, optimizer, scheduler, state, info, improved=True, final=True)
    accelerator.wait_for_everyone()
    kept.eval()
    return kept


def without_scored_text(corpora: list[Corpus], held_out: list[str]) -> tuple[list[Corpus], dict]:
    """The corpora without any sentence of a split the run is scored on (:mod:`mtbioner.data.leakage`).

    Raises:
        MtbionerError: A corpus is both trained on and held out, or a held-out corpus has no scored split.
    """
    trained = {c.name: c.path for c in corpora}
    both = sorted({Path(p).resolve() for p in held_out} & {Path(p).resolve() for p in trained.values()})
    if both:
        raise MtbionerError(f"held-out corpus {both[0]} is also trained on: a corpus is one or the other")
    return remove_leaks(corpora, scored_texts(trained, held_out))


def _run_info(
    config: TrainingConfig, corpora: list[Corpus], windows: dict[str, list[Window]], steps_per_epoch: int, accelerator
) -> dict:
    """What ``training.json`` records of a run: settings, data, schedule and the machine it ran on."""
    return {
        "config": asdict(config),
        "corpora": {c.name: str(c.path) for c in corpora},
        "training_sentences": {name: len(ws) for name, ws in windows.items()},
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * config.epochs,
        "processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "hardware": {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
        },
        "torch": torch.__version__,
        "mtbioner_version": __version__,
    }


def record_epoch(entry: dict, state: dict, devel_in_training: bool) -> bool:
    """Add an epoch's log entry to ``state`` and say whether its weights are the best so far.

    With devel held out, the best epoch is the one with the highest mean devel F1; with devel
    trained on (the paper's final models) there is nothing to choose on, so every epoch improves
    and the last one is kept.
    """
    improved = True
    if entry["devel"] and not devel_in_training:
        mean_f1 = sum(s["f1"] for s in entry["devel"].values()) / len(entry["devel"])
        entry["mean_devel_f1"] = round(mean_f1, 4)
        improved = mean_f1 > state["best_f1"]
    if improved:
        state["best_f1"], state["best_epoch"] = entry.get("mean_devel_f1", -1.0), entry["epoch"]
    entry["best_epoch"] = state["best_epoch"]
    state["log"].append(entry)
    return improved


def build_dictionary(
    corpora: list[Corpus], config: TrainingConfig, resume_from: Path | None = None
) -> tuple[Dictionary | None, Dictionary | None]:
    """The model's dictionary (training-split terms and files, pruned) and the files' terms alone.

    ``(None, None)`` without dictionary features. A resumed run keeps the dictionary it saved.
    """
    if not config.dictionary_features:
        return None, None
    case = config.dictionary_case_sensitive
    user: Dictionary | None = None
    for path in config.dictionary_files:
        terms = Dictionary.from_file(path, case)
        user = terms if user is None else user.merge(terms)
    if resume_from is not None and (resume_from / DICTIONARY_NAME).is_file():
        return Dictionary.load(resume_from), user
    dictionary = Dictionary.from_corpora(corpora, config.train_splits, case)
    if user is not None:
        dictionary = dictionary.merge(user)
    dictionary = dictionary.prune(corpora, config.train_splits, config.dictionary_min_precision)
    if not len(dictionary):
        raise MtbionerError("the dictionary is empty: no entity in the training splits and no dictionary file term")
    return dictionary, user


def _matched_words(matches: dict[str, list], types: list[str]) -> dict[str, dict[str, int]]:
    """Training words inside a dictionary match, per corpus and type (how often the heads see each channel)."""
    result = {}
    for name, sentences in matches.items():
        counts = [0] * len(types)
        for rows in sentences:
            for ids in rows:
                if not any(ids):
                    continue
                for channel, value in enumerate(ids):
                    if value:
                        counts[channel] += 1
        result[name] = dict(zip(types, counts, strict=True))
    return result


def _training_windows(
    corpus: Corpus, config: TrainingConfig, model: MultiTaskTagger, matches: list | None = None
) -> list[Window]:
    sentences = [s for split in config.train_splits for s in corpus.sentences(split)]
    label2id = {label: i for i, label in enumerate(model.config.corpora[corpus.name].labels)}
    words = [s.tokens for s in sentences]
    surroundings = None
    if config.context:  # documents are numbered per split: (split, document) keeps train's and devel's apart
        documents = [(split, s.document) for split in config.train_splits for s in corpus.sentences(split)]
        surroundings = document_surroundings(words, documents, config.context)
    return encode(
        model.tokenizer,
        words,
        config.max_length,
        config.stride,
        tags=[s.tags for s in sentences],
        label2id=label2id,
        case=model.config.case_features,
        matches=matches,
        context=config.context,
        surroundings=surroundings,
    )


def _normalizer(windows: list[Window], head: HeadKind) -> int:
    """Words (linear head) or sequences (CRF head) that carry a loss in the whole batch."""
    if head == "crf":
        return sum(1 for w in windows if w.words)
    return sum(len(w.words) for w in windows)


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """A seed per (run, epoch, batch): re-seeding before each batch makes a resumed run take the same steps."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + index


def parameter_groups(model: torch.nn.Module, weight_decay: float, dictionary_lr: float | None = None) -> list[dict]:
    """No weight decay on biases and LayerNorm weights, as in BERT's own fine-tuning.

    The dictionary match-tag table, when there is one, is a third group without decay, at
    ``dictionary_lr`` (``None``: the optimizer's rate, as distillation uses for a table it copied).
    """
    decay, no_decay, dictionary = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("dictionary_embedding."):
            dictionary.append(param)
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if dictionary:
        rate = {} if dictionary_lr is None else {"lr": dictionary_lr}
        groups.append({"params": dictionary, "weight_decay": 0.0, **rate})
    return groups


def devel_scores(model: MultiTaskTagger, devel: dict[str, Corpus], batch_size: int) -> dict[str, dict]:
    """P/R/F1 of each corpus' devel split with its own head (the model is left in eval mode)."""
    model.eval()
    scores = {}
    for name, corpus in devel.items():
        report, _ = evaluate_corpus(model, corpus, "devel", name, batch_size)
        o = report.overall
        scores[name] = {"precision": o.precision, "recall": o.recall, "f1": o.f1}
    return scores


def moving_average(model: MultiTaskTagger, decay: float):
    """An exponential moving average of ``model``'s parameters, or None when ``decay`` is 0.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so the average does not drag the first
    steps' near-random heads along for thousands of steps (without it, a 0.999 average of a JNLPBA run
    scored 26 devel F1 after its first epoch, against 71 for the weights themselves). Buffers are not
    averaged: this model's are constants (BERT's position ids).
    """
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        done = float(updates)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + done) / (10 + done)))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=False)


def _fresh_epoch() -> dict:
    """Position and running totals inside the current epoch (what a mid-epoch checkpoint adds)."""
    return {"batch": 0, "epoch_loss": 0.0, "epoch_seen": 0, "epoch_seconds": 0.0}


def _has_checkpoint(output: Path) -> bool:
    return (output / CHECKPOINT_DIR / "state.json").is_file()


def checkpoint_line(
    epoch: int, epochs: int, batch: int, batches: int, step: int, steps: int, loss: float, windows: int, seconds: float
) -> str:
    """What a run without a progress bar logs at a checkpoint: where it is, its pace and the time its steps
    still need at this epoch's pace (devel scoring not counted)."""
    left = (steps - step) * seconds / max(batch, 1) / 3600
    return (
        f"checkpoint: epoch {epoch} of {epochs}, batch {batch} of {batches}, step {step} of {steps}, "
        f"loss {loss:.4f}, {windows / max(seconds, 1e-9):.1f} windows/s, about {left:.1f} h of steps left"
    )


def check_resumable(output: Path, resume: bool, sources: tuple[Path, ...] = ()) -> None:
    """Refuse to resume a run that has no checkpoint, to start afresh over an unfinished one, or to write over
    anything that is not an earlier model (a corpus, the teacher, a file): before hours of work, not at the end.

    Raises:
        MtbionerError: Naming the folder and what to do instead.
    """
    if resume and not _has_checkpoint(output):
        raise MtbionerError(f"{output}: nothing to resume (no {CHECKPOINT_DIR}/state.json); a finished run has none")
    if not resume and (output / CHECKPOINT_DIR).exists():
        raise MtbionerError(
            f"{output} holds an unfinished run: add --resume to continue it, or choose another --output"
        )
    if not resume:
        check_output_folder(output, CONFIG_NAME, sources)


def _save(output, model, optimizer, scheduler, state, info, improved: bool, final: bool, averaged=None) -> None:
    """Write the model folder: best weights, training.json, log.jsonl and (until the end) a checkpoint.

    With a moving average (``averaged``), the folder holds the average and the checkpoint both the
    current weights and the average.
    """
    previous_best = output / WEIGHTS_NAME

    def extra(tmp: Path) -> None:
        if not improved and previous_best.is_file():
            (tmp / WEIGHTS_NAME).unlink()
            (tmp / WEIGHTS_NAME).hardlink_to(previous_best)
        write_json(tmp / TRAINING_FILE, {**info, "epochs_done": state["epoch"], "best_epoch": state["best_epoch"]})
        (tmp / LOG_FILE).write_text("".join(json.dumps(e) + "\n" for e in state["log"]), encoding="utf-8")
        if final:
            return
        ckpt = write_resume_state(tmp, optimizer, scheduler, state)
        save_model(model, str(ckpt / WEIGHTS_NAME))
        save_file({"torch": torch.get_rng_state()}, str(ckpt / "rng.safetensors"))
        if averaged is not None:
            save_model(averaged, str(ckpt / AVERAGE_NAME))

    (model if averaged is None else averaged.module).save_pretrained(output, extra)


def write_resume_state(folder: Path, optimizer, scheduler, state: dict) -> Path:
    """``folder/checkpoint``: the optimizer, the scheduler (less its lambdas) and the run's position.

    Shared by training, pre-training and distillation; each adds what else its resume needs.
    """
    ckpt = folder / CHECKPOINT_DIR
    ckpt.mkdir()
    save_optimizer(optimizer, ckpt / "optimizer.safetensors")
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    write_json(ckpt / "state.json", {**{k: v for k, v in state.items() if k != "log"}, "scheduler": sched})
    return ckpt


def read_resume_state(folder: Path, optimizer, scheduler) -> dict:
    """What :func:`write_resume_state` wrote, loaded into the optimizer and scheduler, plus ``log.jsonl``."""
    ckpt = folder / CHECKPOINT_DIR
    saved = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    load_optimizer(optimizer, ckpt / "optimizer.safetensors")
    sched = saved.pop("scheduler")
    scheduler.load_state_dict({**sched, "lr_lambdas": [None] * len(sched["base_lrs"])})
    log = [json.loads(line) for line in (folder / LOG_FILE).read_text(encoding="utf-8").splitlines() if line]
    return {**saved, "log": log}


def save_optimizer(optimizer, path: Path) -> None:
    """AdamW state as safetensors (tensors) plus the param groups in the metadata (JSON)."""
    state_dict = optimizer.state_dict()
    tensors = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{index}.{key}"] = tensor.detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items()} for g in state_dict["param_groups"]]
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(groups)})


def load_optimizer(optimizer, path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        groups = json.loads(handle.metadata()["param_groups"])
    tensors = load_file(str(path))
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _load_checkpoint(output: Path, model, optimizer, scheduler, averaged=None) -> dict:
    ckpt = output / CHECKPOINT_DIR
    if not _has_checkpoint(output):
        raise MtbionerError(f"{output}: nothing to resume (no {CHECKPOINT_DIR}/state.json); a finished run has none")
    load_model(model, str(ckpt / WEIGHTS_NAME))
    if averaged is not None:
        load_model(averaged, str(ckpt / AVERAGE_NAME))
    state = read_resume_state(output, optimizer, scheduler)
    torch.set_rng_state(load_file(str(ckpt / "rng.safetensors"))["torch"])
    return state


def read_training_info(model_dir: str | Path) -> dict:
    """The ``training.json`` of a model folder (empty when absent)."""
    return read_json_record(Path(model_dir) / TRAINING_FILE)
