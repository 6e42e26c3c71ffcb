"""Batched prediction over word lists: windows in, per-sentence emissions and labels out.

Works with any *backend* that has ``config`` (a :class:`~mtbioner.model.model_config.TaggerConfig`),
``tokenizer``, ``decoders()`` and ``run(input_ids, attention_mask, corpora)`` returning
numpy emissions per corpus (case-feature models also get ``token_type_ids=``, dictionary-feature
models ``dictionary_ids=`` computed here with the backend's ``dictionary``): the torch
:class:`~mtbioner.model.model.MultiTaskTagger` (through :func:`torch_run`) and the exported ONNX model alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import ModelFormatError
from ..model.encoding import Surroundings, collate, encode, length_grouped_batches

if TYPE_CHECKING:
    import torch


def torch_run(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    corpora: list[str],
    token_type_ids: torch.Tensor | None = None,
    dictionary_ids: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """One encoder pass feeding the named heads, without gradients, as numpy."""
    import torch  # here, not at the top: an ONNX backend tags without torch

    device = next(model.parameters()).device
    types = None if token_type_ids is None else token_type_ids.to(device)
    matches = None if dictionary_ids is None else dictionary_ids.to(device)
    with torch.inference_mode():
        logits = model.forward_all(input_ids.to(device), attention_mask.to(device), corpora, types, matches)
    return {name: value.float().cpu().numpy() for name, value in logits.items()}


def sentence_emissions(
    model,
    sentences: Sequence[Sequence[str]],
    corpora: list[str] | None = None,
    batch_size: int = INFERENCE_BATCH_SIZE,
    progress: bool = False,
    surroundings: Sequence[Surroundings] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Emission scores ``[n_words, C]`` of every sentence for every requested head.

    Windows of all sentences are sorted by length and batched together (padding to the
    longest of a batch), and each word's scores come from the window that owns it, so a
    sentence of any length is scored whole. A model trained with document context reads the
    ``surroundings`` of each sentence (the words around it in its document) as it was trained to;
    without them it reads each sentence alone.
    """
    corpora = corpora or list(model.config.corpora)
    sizes = {name: len(model.config.corpora[name].labels) for name in corpora}
    # One array per head holds every word of every sentence; each sentence gets a view of its rows,
    # so a batch's scores are copied out with one gather per head instead of one per window.
    starts = np.cumsum([0] + [len(words) for words in sentences])
    scores = {name: np.zeros((int(starts[-1]), size), dtype=np.float32) for name, size in sizes.items()}
    out = [{name: array[starts[i] : starts[i + 1]] for name, array in scores.items()} for i in range(len(sentences))]
    windows = encode(
        model.tokenizer,
        sentences,
        model.config.max_length,
        model.config.stride,
        case=model.config.case_features,
        matches=dictionary_matches(model, sentences),
        context=model.config.context,
        surroundings=surroundings,
    )
    if not windows:
        return out
    run = getattr(model, "run", None)
    pad_id = model.tokenizer.pad_token_id or 0
    batches = length_grouped_batches([len(w) for w in windows], batch_size)
    # No bar at all unless asked: even a disabled tqdm makes a multiprocessing lock (a semaphore that a killed server
    # worker leaks) and a monitor thread.
    bar = tqdm(total=len(windows), desc="tagging", unit="win", leave=False) if progress else None
    numpy_backend = callable(run)  # ONNX Runtime takes numpy; a torch model takes tensors (torch_run)
    for indices in batches:
        batch = collate([windows[i] for i in indices], pad_id, tensors=not numpy_backend)
        if numpy_backend:
            extra = {} if batch.token_type_ids is None else {"token_type_ids": batch.token_type_ids}
            if batch.dictionary_ids is not None:
                extra["dictionary_ids"] = batch.dictionary_ids
            logits = run(batch.input_ids, batch.attention_mask, corpora, **extra)
        else:
            logits = torch_run(
                model, batch.input_ids, batch.attention_mask, corpora, batch.token_type_ids, batch.dictionary_ids
            )
        owned = [len(w.words) for w in batch.windows]
        rows = np.repeat(np.arange(len(owned)), owned)
        positions = np.fromiter(chain.from_iterable(w.positions for w in batch.windows), np.int64, len(rows))
        targets = np.fromiter(chain.from_iterable(w.words for w in batch.windows), np.int64, len(rows))
        targets += np.repeat(starts[[w.sentence for w in batch.windows]], owned)
        for name in corpora:
            scores[name][targets] = logits[name][rows, positions]
        if bar is not None:
            bar.update(len(indices))
    if bar is not None:
        bar.close()
    return out


def dictionary_matches(model, sentences: Sequence[Sequence[str]]) -> list[list[tuple[int, ...]]] | None:
    """Match tags of every word with the backend's dictionary, or ``None`` for a model without dictionary features."""
    if not getattr(model.config, "dictionary_features", False):
        return None
    dictionary = getattr(model, "dictionary", None)
    if dictionary is None:
        raise ModelFormatError("this model reads dictionary evidence but was loaded without its dictionary.json")
    return [dictionary.match(words) for words in sentences]


def predict_tags(
    model,
    sentences: Sequence[Sequence[str]],
    corpus: str,
    batch_size: int = INFERENCE_BATCH_SIZE,
    progress: bool = False,
    surroundings: Sequence[Surroundings] | None = None,
) -> list[list[str]]:
    """IOB2 labels of each sentence from one corpus' head (``surroundings``: see :func:`sentence_emissions`)."""
    decoder = model.decoders()[corpus]
    emissions = sentence_emissions(model, sentences, [corpus], batch_size, progress, surroundings)
    return [tags for tags, _ in decoder.decode_all([e[corpus] for e in emissions])]
