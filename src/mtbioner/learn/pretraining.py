"""Continued masked-language-model pre-training of an encoder on biomedical text (``mtbioner pretrain``).

MT-BioNER's future work: "first fine-tune the BERT language model using all datasets and save a new
language model and then use this new model in our approach". This module does that for any local
BERT-style checkpoint: it reads the text of annotated corpora (their train/devel splits only, never
test) and of raw files (``.txt`` one document per line, ``.jsonl`` with ``text``, PubTator), masks it
with transformers' ``DataCollatorForLanguageModeling`` (whole-word masking by default) and writes an
encoder folder that ``mtbioner train --encoder`` takes.

The MLM head: a checkpoint saved without one (all-MiniLM-L6-v2 ships as a bare ``BertModel``) gets a
freshly initialised transform layer and bias, with the output projection tied to the input word
embeddings, as ``AutoModelForMaskedLM`` builds it. The vocabulary projection is applied to the masked
positions only (~15% of them), which on 2 CPU cores saves about 40% of each step.

The output folder is rewritten whole at every checkpoint (``fileio.atomic_dir``); until the last epoch
it holds ``checkpoint/`` (optimizer, scheduler, position in the epoch), so ``--resume`` continues
mid-epoch with the same batches and masks it would have had.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..constants import __version__
from ..data.formats import PUBTATOR_HEADER
from ..errors import MtbionerError
from ..fileio import atomic_dir, write_json
from ..model.encoding import length_grouped_batches
from .training import (
    batch_seed,
    check_resumable,
    parameter_groups,
    read_resume_state,
    write_resume_state,
)

logger = logging.getLogger(__name__)

INFO_FILE = "pretraining.json"
LOG_FILE = "log.jsonl"
TEXT_SUFFIXES = (".txt", ".jsonl", ".pubtator")


@dataclass
class PretrainConfig:
    """MLM settings. The defaults follow task-adaptive pre-training (Gururangan et al., 2020): lr 1e-4,
    6% warm-up, 15% whole-word masking, on the task's own unlabelled text."""

    encoder: str | None = None
    epochs: int = 3
    lr: float = 1e-4
    warmup: float = 0.06
    weight_decay: float = 0.01
    batch_size: int = 32
    max_length: int = 128
    mlm_probability: float = 0.15
    whole_word_mask: bool = True
    seed: int = 42
    heldout: int = 500
    save_every: int = 500
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "bf16": forward pass under bfloat16 autocast; fp32 weights, optimizer and loss

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, not {self.epochs}"),
            (self.lr > 0, f"lr must be positive, not {self.lr}"),
            (0 <= self.warmup <= 1, f"warmup is a proportion of the steps (0..1), not {self.warmup}"),
            (self.batch_size >= 1, f"batch size must be at least 1, not {self.batch_size}"),
            (self.max_length >= 8, f"max length must be at least 8 sub-tokens, not {self.max_length}"),
            (0 < self.mlm_probability < 1, f"mlm probability must be in (0, 1), not {self.mlm_probability}"),
            (self.heldout >= 0, f"held-out texts must be 0 or more, not {self.heldout}"),
            (self.save_every >= 1, f"save-every must be at least 1 step, not {self.save_every}"),
            (
                self.mixed_precision in ("no", "bf16"),
                f"mixed precision must be 'no' or 'bf16', not {self.mixed_precision!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise MtbionerError(message)


# ---------------------------------------------------------------- text


def corpus_texts(path: str | Path, splits: Sequence[str] = ("train", "devel"), limit: int | None = None) -> list[str]:
    """The sentences of a corpus' splits as text (words joined by spaces). Test is refused.

    Raises:
        MtbionerError: ``test`` is among the splits, or the corpus cannot be read.
    """
    from ..data.corpus import read_corpus

    if "test" in splits:
        raise MtbionerError("pre-training never reads a corpus' test split: use train and/or devel")
    corpus = read_corpus(path, splits=list(splits), limit=limit)
    return [" ".join(s.tokens) for split in splits if split in corpus.splits for s in corpus.sentences(split)]


def file_texts(path: str | Path, limit: int | None = None) -> list[str]:
    """Documents of a raw-text file: ``.txt`` (one per line), ``.jsonl`` (``text``) or PubTator.

    A ``.txt`` whose first non-blank line looks like ``ID|t|title`` is read as PubTator.

    Raises:
        MtbionerError: Unknown suffix, or a bad line (the message names file and line).
    """
    from ..data.formats import read_documents, read_pubtator

    file = Path(path)
    if limit is not None and limit < 1:  # as corpora refuse it; texts[:-1] would silently drop the last text
        raise MtbionerError(f"limit must be a positive number of texts, got {limit}")
    suffix = file.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise MtbionerError(f"{file}: unknown text format {suffix!r}; use .txt, .jsonl or .pubtator")
    if suffix == ".pubtator" or (suffix == ".txt" and _looks_like_pubtator(file)):
        texts = [record["text"] for record in read_pubtator(file)]
    else:
        texts = [record["text"] for _, record in read_documents(file)]
    texts = [t for t in texts if t.strip()]
    return texts[:limit] if limit is not None else texts


def _looks_like_pubtator(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    return bool(PUBTATOR_HEADER.match(line.rstrip("\r\n")))
    except OSError as exc:
        raise MtbionerError(f"{path}: cannot read: {exc.strerror}") from exc
    return False


def gather_texts(
    sources: Sequence[str],
    data_dir: str | Path | None = None,
    splits: Sequence[str] = ("train", "devel"),
    limit: int | None = None,
) -> tuple[list[str], dict[str, int]]:
    """Texts of every source (a raw-text file, or a corpus folder/name), exact duplicates dropped.

    Returns:
        The texts in source order, and how many each source contributed.
    """
    from ..data.corpus import resolve_corpus

    if not sources:
        raise MtbionerError("name at least one corpus or text file, e.g. mtbioner pretrain BC5CDR --output enc")
    seen: set[str] = set()
    texts: list[str] = []
    counts: dict[str, int] = {}
    for source in sources:
        file = Path(source).expanduser()
        if file.is_file() and file.suffix.lower() in TEXT_SUFFIXES:
            found = file_texts(file, limit)
        else:
            found = corpus_texts(resolve_corpus(source, data_dir), splits, limit)
        before = len(texts)
        for text in found:
            if text not in seen:
                seen.add(text)
                texts.append(text)
        counts[source] = len(texts) - before
    if not texts:
        raise MtbionerError(f"no text to pre-train on in {', '.join(sources)}")
    return texts, counts


# ---------------------------------------------------------------- examples


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[dict[str, list]]:
    """Token ids, special-token mask and offsets per example; texts longer than a window are cut
    into consecutive windows of ``max_length`` sub-tokens (nothing is dropped)."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None or tokenizer.mask_token_id is None:
        raise MtbionerError("the encoder's tokenizer needs [CLS], [SEP] and [MASK] tokens for BERT-style MLM")
    body = max_length - 2
    examples = []
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        for start in range(0, len(ids), body):
            piece, spans = ids[start : start + body], offsets[start : start + body]
            examples.append(
                {
                    "input_ids": [cls_id, *piece, sep_id],
                    "special_tokens_mask": [1, *([0] * len(piece)), 1],
                    "offset_mapping": [(0, 0), *map(tuple, spans), (0, 0)],
                }
            )
    return examples


def pad_examples(examples: Sequence[dict[str, list]], pad_id: int) -> list[dict[str, list]]:
    """Pad to the batch's longest example, so the collator (which pads ids but not offsets) can stack them.

    Padding counts as special tokens (never masked) with empty offsets.
    """
    width = max(len(e["input_ids"]) for e in examples)
    out = []
    for e in examples:
        extra = width - len(e["input_ids"])
        out.append(
            {
                "input_ids": e["input_ids"] + [pad_id] * extra,
                "attention_mask": [1] * len(e["input_ids"]) + [0] * extra,
                "special_tokens_mask": e["special_tokens_mask"] + [1] * extra,
                "offset_mapping": e["offset_mapping"] + [(0, 0)] * extra,
            }
        )
    return out


def masked_lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the masked positions, projecting only those onto the vocabulary."""
    base = getattr(model, model.base_model_prefix)
    hidden = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    selected = batch["labels"] != -100
    count = int(selected.sum())
    if count == 0:
        return hidden.sum() * 0.0, 0
    logits = mlm_head(model)(hidden[selected])
    return torch.nn.functional.cross_entropy(logits, batch["labels"][selected]), count


def mlm_head(model) -> torch.nn.Module:
    """The prediction head of a BERT-style (``cls``) or RoBERTa-style (``lm_head``) masked LM."""
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise MtbionerError(f"{type(model).__name__}: no BERT-style (cls) or RoBERTa-style (lm_head) MLM head")


# ---------------------------------------------------------------- training


def pretrain(
    texts: Sequence[str],
    output_dir: str | Path,
    config: PretrainConfig,
    resume: bool = False,
    progress: bool = True,
    sources: dict[str, int] | None = None,
    inputs: dict[str, Any] | None = None,
):
    """Continue MLM pre-training of ``config.encoder`` on ``texts``; write the encoder folder.

    ``config.heldout`` texts (a fixed random sample) are kept out of training; their masked-LM
    loss and perplexity, with fixed masks, are logged after every epoch in ``log.jsonl``.

    Args:
        texts: Documents or sentences.
        output_dir: The encoder folder to write (``train --encoder`` takes it).
        config: Settings.
        resume: Continue from ``output_dir/checkpoint``.
        progress: Show a progress bar.
        sources: How many texts came from each source (recorded in ``pretraining.json``).
        inputs: How the texts were chosen (sources, splits, limit), recorded so ``--resume`` can re-read them.

    Returns:
        The pre-trained masked-LM model.
    """
    from transformers import get_linear_schedule_with_warmup

    from ..model.model import default_encoder

    output = Path(output_dir)
    check_resumable(output, resume)
    source = str(config.encoder) if config.encoder else default_encoder()
    torch.manual_seed(config.seed)
    # a resumed run continues from its last save
    tokenizer, model = _load_masked_lm(source, output if resume else Path(source))
    train_texts, heldout_texts = split_heldout(texts, config.heldout, config.seed)
    examples = tokenize_texts(tokenizer, train_texts, config.max_length)
    heldout = tokenize_texts(tokenizer, heldout_texts, config.max_length)
    lengths = [len(e["input_ids"]) for e in examples]
    collator = masking_collator(tokenizer, config.mlm_probability, config.whole_word_mask)

    def batches_of(epoch: int) -> list[list[int]]:
        return length_grouped_batches(lengths, config.batch_size, random.Random(batch_seed(config.seed, epoch, -1)))

    steps_per_epoch = len(batches_of(0))
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup * total), total)
    info = {
        "config": {**asdict(config), "encoder": source},
        "inputs": inputs or {},
        "sources": sources or {},
        "texts": len(train_texts),
        "heldout_texts": len(heldout_texts),
        "examples": len(examples),
        "sub_tokens": sum(lengths),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "mlm_head": _head_note(source),
        "torch": torch.__version__,
        "mtbioner_version": __version__,
    }
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "log": []}
    if resume:
        state = read_resume_state(output, optimizer, scheduler)
        logger.info("resuming %s at epoch %d, batch %d", output, state["epoch"] + 1, state["batch"])
    else:
        state["log"].append({"epoch": 0, "step": 0, **_heldout_loss(model, collator, heldout, config, tokenizer)})
        logger.info("before pre-training: %s", json.dumps(state["log"][-1]))

    model.train()
    for epoch in range(state["epoch"], config.epochs):
        batches = batches_of(epoch)
        started, loss_sum, done, seen = time.perf_counter(), 0.0, 0, 0
        bar = tqdm(
            total=len(batches), initial=state["batch"], desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress
        )
        for index in range(state["batch"], len(batches)):
            torch.manual_seed(batch_seed(config.seed, epoch, index))  # same masks and dropout after a resume
            batch = collator(pad_examples([examples[i] for i in batches[index]], tokenizer.pad_token_id or 0))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"):
                loss, _ = masked_lm_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            state["step"] += 1
            state["batch"] = index + 1
            loss_sum, done, seen = loss_sum + float(loss.detach()), done + 1, seen + len(batches[index])
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / done:.3f}")
            if state["batch"] % config.save_every == 0 and state["batch"] < len(batches):
                _save(output, model, tokenizer, optimizer, scheduler, state, info, final=False)
        bar.close()
        seconds = time.perf_counter() - started
        entry = {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": round(loss_sum / max(done, 1), 4),
            "seconds": round(seconds, 1),
            "examples_per_s": round(seen / seconds, 2),
            **_heldout_loss(model, collator, heldout, config, tokenizer),
        }
        model.train()
        state["log"].append(entry)
        state["epoch"], state["batch"] = epoch + 1, 0
        logger.info("epoch %d: %s", epoch + 1, json.dumps(entry))
        _save(output, model, tokenizer, optimizer, scheduler, state, info, final=epoch + 1 == config.epochs)
    model.eval()
    return model


def _load_masked_lm(source: str, weights: Path) -> tuple[Any, Any]:
    """The fast tokenizer and masked-LM model at ``weights``; errors name ``source``, the encoder asked for."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    if not Path(source, "config.json").is_file():
        raise MtbionerError(f"{source}: not a Hugging Face checkpoint folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(weights))
        model = AutoModelForMaskedLM.from_pretrained(str(weights))
    except (OSError, ValueError) as exc:
        raise MtbionerError(f"{source}: cannot load the encoder as a masked LM: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise MtbionerError(f"{source}: whole-word masking needs a fast (Rust) tokenizer; add tokenizer.json")
    return tokenizer, model


def split_heldout(texts: Sequence[str], heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """(training texts in their order, held-out texts): a fixed random sample of at most a tenth kept out."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_heldout = min(heldout, len(texts) // 10)
    return [texts[i] for i in sorted(order[n_heldout:])], [texts[i] for i in order[:n_heldout]]


def masking_collator(tokenizer, mlm_probability: float, whole_word_mask: bool):
    """The collator that picks the masked positions: BERT's 80/10/10, or whole words always as [MASK]."""
    from transformers import DataCollatorForLanguageModeling

    # whole-word masking always uses [MASK] (transformers warns and sets this itself otherwise)
    replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word_mask else {}
    return DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=mlm_probability, whole_word_mask=whole_word_mask, **replace
    )


def _head_note(source: str) -> str:
    from safetensors import safe_open

    weights = Path(source, "model.safetensors")
    if weights.is_file():
        with safe_open(str(weights), "pt") as handle:
            if any(key.startswith("cls.predictions") for key in handle.keys()):
                return "continued from the checkpoint's own MLM head"
    return "initialised: the checkpoint had no MLM head (transform + bias new, output tied to the word embeddings)"


@torch.no_grad()
def _heldout_loss(model, collator, heldout: list[dict], config: PretrainConfig, tokenizer) -> dict[str, float]:
    """Masked-LM loss on the held-out texts with masks fixed by the seed (comparable across epochs)."""
    if not heldout:
        return {}
    model.eval()
    total, count = 0.0, 0
    for index, start in enumerate(range(0, len(heldout), config.batch_size)):
        torch.manual_seed(batch_seed(config.seed, -1, index))
        batch = collator(pad_examples(heldout[start : start + config.batch_size], tokenizer.pad_token_id or 0))
        loss, n = masked_lm_loss(model, batch)
        total, count = total + float(loss) * n, count + n
    mean = total / max(count, 1)
    return {"heldout_loss": round(mean, 4), "heldout_perplexity": round(math.exp(min(mean, 50.0)), 2)}


def _save(output: Path, model, tokenizer, optimizer, scheduler, state, info, final: bool) -> None:
    """Rewrite the encoder folder whole: weights, tokenizer, info, log and (until the end) a checkpoint."""
    with atomic_dir(output) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / INFO_FILE, {**info, "epochs_done": state["epoch"], "finished": final})
        (tmp / LOG_FILE).write_text("".join(json.dumps(e) + "\n" for e in state["log"]), encoding="utf-8")
        if final:
            return
        write_resume_state(tmp, optimizer, scheduler, state)
