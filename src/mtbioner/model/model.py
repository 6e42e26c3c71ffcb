"""MultiTaskTagger: one shared Hugging Face encoder and one tagging head per corpus.

A model folder (``save_pretrained`` / ``from_pretrained``) holds ``config.json`` (this
module's :class:`TaggerConfig`, with the encoder's own config inside), ``model.safetensors``,
the tokenizer files and, for dictionary-feature models, ``dictionary.json``
(:mod:`mtbioner.model.dictionary`). It is written to a temporary folder and renamed into place, so
it appears whole or not at all. Nothing is ever un-pickled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from ..errors import ModelFormatError, MtbionerError
from ..fileio import atomic_dir, write_json
from .attention_heads import kept_heads, narrow_attention
from .decoding import Decoder, HeadKind
from .dictionary import Dictionary
from .heads import LinearHead, build_head
from .model_config import (  # re-exported: the config is part of this module's public face
    CONFIG_NAME,
    WEIGHTS_NAME,
    HeadConfig,
    TaggerConfig,
    default_encoder,
    read_config,
)

logger = logging.getLogger(__name__)


@dataclass
class TaggerOutput:
    """Emission scores ``[B, T, C]`` of the requested head, and the weighted loss when labels were given."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class MultiTaskTagger(nn.Module):
    """A shared encoder with one head per corpus (MT-BioNER).

    Args:
        config: Architecture and label sets.
        encoder: An already-built encoder; built from ``config.encoder_config`` when omitted.
        tokenizer: The encoder's tokenizer, kept so that the model can be saved and used alone.
    """

    def __init__(
        self,
        config: TaggerConfig,
        encoder: nn.Module | None = None,
        tokenizer=None,
        dictionary: Dictionary | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.config = config
        if encoder is None:
            encoder_config = dict(config.encoder_config)
            model_type = encoder_config.pop("model_type")
            encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **encoder_config))
            heads = kept_heads(encoder_config)
            if heads is not None:  # a student that kept fewer attention heads: rebuild its narrower layers
                narrow_attention(encoder, heads)
        self.encoder = encoder
        self.tokenizer = tokenizer
        hidden = self.encoder.config.hidden_size
        self.heads = nn.ModuleDict(
            {
                _key(name): build_head(spec.head, hidden, spec.labels, config.dropout)
                for name, spec in config.corpora.items()
            }
        )
        self.dictionary = dictionary
        self.dictionary_embedding: nn.Embedding | None = None
        if config.dictionary_features:
            if not config.dictionary_types:
                raise MtbionerError("dictionary features need a dictionary with at least one entity type")
            if dictionary is not None and dictionary.types != config.dictionary_types:
                raise ModelFormatError(
                    f"dictionary types {dictionary.types} differ from the model's {config.dictionary_types}"
                )
            # Row 0 (no match) stays zero; every row starts at zero, so a new model computes what the
            # plain one does until training moves the rows of the tags it sees.
            rows = 1 + 2 * len(config.dictionary_types)
            self.dictionary_embedding = nn.Embedding(rows, hidden, padding_idx=0)
            nn.init.zeros_(self.dictionary_embedding.weight)

    @classmethod
    def from_encoder(
        cls,
        labels: dict[str, list[str]],
        encoder: str | Path | None = None,
        head: HeadKind = "linear",
        loss_weights: dict[str, float] | None = None,
        max_length: int = 128,
        stride: int | None = None,
        dropout: float = 0.1,
        case_features: bool = False,
        dictionary: Dictionary | None = None,
        heads: dict[str, HeadKind] | None = None,
        context: int = 0,
    ) -> MultiTaskTagger:
        """A new model: a pre-trained encoder from a local folder and fresh heads.

        Args:
            labels: Label list of each corpus, keyed by corpus name.
            encoder: Local Hugging Face checkpoint folder; the packaged MiniLM by default.
            head: ``"linear"`` (the paper's softmax) or ``"crf"``, for every corpus not in ``heads``.
            loss_weights: lambda of each corpus (default 1).
            heads: Head kind of some corpora, overriding ``head`` (a CRF where one pays, e.g. JNLPBA).
            case_features: Feed each word's letter case (``encoding.case_type``) to the encoder as its
                token type, for uncased encoders; the type table starts as copies of type 0, so the
                new model computes exactly what the plain one does until training moves it.
            dictionary: Give the model dictionary features: each word's match tags
                (:meth:`Dictionary.match`) index an embedding (zero at first) added to every head's
                input; the dictionary is kept with the model.
            context: Sub-tokens of document context read each side of a sentence (:mod:`mtbioner.model.encoding`);
                a window then holds up to ``max_length + 2 * context`` sub-tokens, which the encoder's
                position table must cover.
        """
        from transformers import AutoModel, AutoTokenizer

        path = str(encoder) if encoder is not None else default_encoder()
        if not Path(path, "config.json").is_file():
            raise MtbionerError(f"{path}: not a Hugging Face checkpoint folder (no config.json)")
        loss_weights, heads = loss_weights or {}, heads or {}
        for flag, named in (("--loss-weight", loss_weights), ("--head", heads)):
            unknown = set(named) - set(labels)
            if unknown:
                raise MtbionerError(f"{flag} names unknown corpora {sorted(unknown)}; corpora are {sorted(labels)}")
        for name in labels:
            _key(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise MtbionerError(f"{path}: cannot load the encoder: {exc}") from exc
        if not getattr(tokenizer, "is_fast", False):
            raise MtbionerError(f"{path}: a fast (Rust) tokenizer is needed for word alignment; add tokenizer.json")
        positions = getattr(model.config, "max_position_embeddings", None)
        if context < 0:
            raise MtbionerError(f"context must be 0 or more sub-tokens, not {context}")
        if context and positions is not None and max_length + 2 * context > positions:
            raise MtbionerError(
                f"--context {context} with --max-length {max_length} makes windows of up to "
                f"{max_length + 2 * context} sub-tokens; this encoder reads at most {positions}"
            )
        if case_features:
            _case_token_types(model, path)
        if dictionary is not None and not dictionary.types:
            raise MtbionerError("dictionary features need a dictionary with at least one entity type")
        config = TaggerConfig(
            encoder=path,
            encoder_config=model.config.to_dict(),
            corpora={
                name: HeadConfig(sorted(corpus_labels), heads.get(name, head), float(loss_weights.get(name, 1.0)))
                for name, corpus_labels in labels.items()
            },
            max_length=max_length,
            stride=stride,
            dropout=dropout,
            case_features=case_features,
            dictionary_features=dictionary is not None,
            dictionary_types=list(dictionary.types) if dictionary is not None else [],
            context=context,
        )
        return cls(config, model, tokenizer, dictionary)

    @property
    def corpora(self) -> list[str]:
        return list(self.config.corpora)

    def head(self, corpus: str) -> LinearHead:
        if corpus not in self.config.corpora:
            raise MtbionerError(f"this model has no head {corpus!r}; its heads are {self.corpora}")
        return self.heads[_key(corpus)]  # type: ignore[return-value]

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Shared encoder pass: ``[B, T]`` ids (and case classes) to ``[B, T, H]`` hidden states."""
        return self.encoder_output(input_ids, attention_mask, token_type_ids).last_hidden_state

    def encoder_output(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        hidden_states: bool = False,
        attentions: bool = False,
    ):
        """The Hugging Face encoder's whole output; with ``hidden_states``, also its ``hidden_states`` (the
        embeddings, then the output of every layer, each ``[B, T, H]``), with ``attentions`` its ``attentions``
        (every layer's attention distributions, ``[B, heads, T, T]``).

        SDPA attention never materialises the distributions, so ``attentions`` needs the encoder switched to
        eager attention first (``model.encoder.set_attn_implementation("eager")``); asking without is refused
        rather than answered with nothing.
        """
        if self.config.case_features and token_type_ids is None:
            raise ValueError("this model reads letter case: pass token_type_ids (encoding.encode(..., case=True))")
        if attentions and self.encoder.config._attn_implementation != "eager":
            raise ValueError("attention distributions need eager attention: encoder.set_attn_implementation('eager')")
        flags = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        if hidden_states:
            flags["output_hidden_states"] = True  # only when asked: the plain call stays what export traces
        if attentions:
            flags["output_attentions"] = True
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, **flags)

    def head_input(self, hidden: torch.Tensor, dictionary_ids: torch.Tensor | None = None) -> torch.Tensor:
        """What the heads read: the hidden states, plus the summed embeddings of the match tags
        (``[B, T, K]``, one per dictionary type) for dictionary-feature models."""
        if self.dictionary_embedding is None:
            return hidden
        if dictionary_ids is None:
            raise ValueError(
                "this model reads dictionary evidence: pass dictionary_ids (encoding.encode(..., matches=...))"
            )
        return hidden + self.dictionary_embedding(dictionary_ids).sum(dim=2)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        corpus: str,
        labels: torch.Tensor | None = None,
        normalizer: float | None = None,
        token_type_ids: torch.Tensor | None = None,
        dictionary_ids: torch.Tensor | None = None,
    ) -> TaggerOutput:
        """Emission scores of one corpus' head, and its loss when ``labels`` are given.

        The loss is ``lambda_corpus * sum(loss) / normalizer``; ``normalizer`` defaults to
        the number of labelled words (linear) or sequences (CRF) in this batch. Data-parallel
        training passes the count of the whole global batch instead, so that averaging
        gradients over processes gives exactly the one-process loss.

        ``dictionary_ids`` (``[B, T, K]``, dictionary-feature models) are the match tags of every sub-token.
        """
        head = self.head(corpus)
        logits = head(self.head_input(self.encode(input_ids, attention_mask, token_type_ids), dictionary_ids))
        if labels is None:
            return TaggerOutput(logits)
        total, count = head.loss_sum(logits, labels)
        weight = self.config.corpora[corpus].loss_weight
        return TaggerOutput(logits, weight * total / max(normalizer or count, 1))

    def forward_all(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        corpora: list[str] | None = None,
        token_type_ids: torch.Tensor | None = None,
        dictionary_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One encoder pass feeding every head (or those named): corpus name to ``[B, T, C]``."""
        return self.head_scores(self.encode(input_ids, attention_mask, token_type_ids), dictionary_ids, corpora)

    def head_scores(
        self, hidden: torch.Tensor, dictionary_ids: torch.Tensor | None = None, corpora: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Every head's (or the named heads') emission scores from the encoder's last hidden states, for a
        caller that ran the encoder itself (:meth:`encoder_output`, to read its hidden states too)."""
        hidden = self.head_input(hidden, dictionary_ids)
        return {name: self.head(name)(hidden) for name in (corpora or self.corpora)}

    def decoders(self) -> dict[str, Decoder]:
        """Numpy decoders of every head (softmax, or Viterbi with the CRF's scores)."""
        return {name: self.head(name).decoder() for name in self.corpora}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path: str | Path, extra: Callable[[Path], None] | None = None) -> None:
        """Write the model folder atomically.

        Args:
            path: Destination folder; an existing one is replaced only once the new one is
                complete.
            extra: Called with the temporary folder before the swap, to add files that must
                appear together with the model (training log, resume checkpoint).
        """
        if self.config.dictionary_features and self.dictionary is None:
            raise MtbionerError("a dictionary-feature model needs its dictionary to be saved (model.dictionary)")
        with atomic_dir(path) as tmp:
            write_json(tmp / CONFIG_NAME, self.config.to_dict())
            save_model(self, str(tmp / WEIGHTS_NAME))
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
            if self.dictionary is not None:
                self.dictionary.save(tmp)
            if extra is not None:
                extra(tmp)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MultiTaskTagger:
        """Load a folder written by :meth:`save_pretrained` (safetensors only, no pickle)."""
        from transformers import AutoTokenizer

        config = read_config(path)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        dictionary = Dictionary.load(path) if config.dictionary_features else None
        model = cls(config, tokenizer=tokenizer, dictionary=dictionary)
        missing, unexpected = load_model(model, str(Path(path) / WEIGHTS_NAME), strict=False)
        if missing or unexpected:
            raise ModelFormatError(
                f"{path}/{WEIGHTS_NAME}: weights do not match config.json "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
            )
        model.eval()
        return model


def _case_token_types(encoder: nn.Module, path: str) -> None:
    """Give the encoder one token type per case class (``encoding.CASE_TYPES``), each a copy of type 0."""
    from .encoding import CASE_TYPES

    old = getattr(getattr(encoder, "embeddings", None), "token_type_embeddings", None)
    if not isinstance(old, nn.Embedding):
        raise MtbionerError(f"{path}: case features need an encoder with token-type embeddings (BERT-style)")
    rows = old.weight.detach()[:1].expand(CASE_TYPES, -1).clone()
    encoder.embeddings.token_type_embeddings = nn.Embedding.from_pretrained(rows, freeze=False)  # no random draw
    encoder.config.type_vocab_size = CASE_TYPES
    buffer = getattr(encoder.embeddings, "token_type_ids", None)
    if isinstance(buffer, torch.Tensor):
        buffer.zero_()


def _key(name: str) -> str:
    """Module key of a corpus' head (torch forbids '.' in module names)."""
    if not name or name.startswith("_"):
        raise MtbionerError(f"corpus name {name!r} cannot name a head: use a folder name without a leading '_'")
    return name.replace(".", "__dot__")
