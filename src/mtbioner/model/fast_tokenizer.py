"""The few calls of a Hugging Face fast tokenizer that tagging makes, served by ``tokenizers`` alone.

Exported (ONNX) models tag with this instead of ``transformers.AutoTokenizer``: importing transformers
imports torch, which costs seconds at start-up and a few hundred MB, while ONNX Runtime needs neither. The
Rust tokenizer is the same one transformers wraps (``tokenizer.json``), called the same way
(pre-tokenized words, ``encode_batch``), so the sub-tokens are the same (tested against ``AutoTokenizer``
on every corpus).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from ..errors import ModelFormatError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


class Encoded:
    """What ``tokenizer(...)`` returns, as far as :mod:`mtbioner.model.encoding` reads it."""

    def __init__(self, encodings: list[Encoding], single: bool) -> None:
        self._encodings = encodings
        self._single = single

    def __getitem__(self, key: str) -> list:
        if key != "input_ids":
            raise KeyError(key)
        ids = [encoding.ids for encoding in self._encodings]
        return ids[0] if self._single else ids

    def word_ids(self, index: int = 0) -> list[int | None]:
        return self._encodings[index].word_ids


class FastTokenizer:
    """``tokenizer.json`` through ``tokenizers``, with the ids of the padding and unknown tokens."""

    def __init__(self, tokenizer: Tokenizer, pad_token_id: int | None, unk_token_id: int | None) -> None:
        self._tokenizer = tokenizer
        self.pad_token_id = pad_token_id
        self.unk_token_id = unk_token_id

    @classmethod
    def from_folder(cls, folder: str | Path) -> FastTokenizer:
        """Read ``tokenizer.json`` and the special tokens of ``tokenizer_config.json`` in ``folder``."""
        folder = Path(folder)
        try:
            tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
            config_file = folder / TOKENIZER_CONFIG
            config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        except Exception as exc:  # tokenizers raises bare Exceptions for unreadable files
            raise ModelFormatError(f"{folder}: cannot load the tokenizer files: {exc}") from exc
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(tokenizer, _token_id(tokenizer, config, "pad_token"), _token_id(tokenizer, config, "unk_token"))

    def __call__(
        self, words: Sequence[str] | Sequence[Sequence[str]], is_split_into_words: bool, add_special_tokens: bool
    ) -> Encoded:
        """Tokenize one word list, or a batch of them (pre-tokenized input only, as encoding uses it)."""
        if not is_split_into_words:
            raise ValueError("FastTokenizer takes pre-tokenized words only (is_split_into_words=True)")
        single = bool(words) and isinstance(words[0], str)
        batch = [list(words)] if single else [list(w) for w in words]
        encodings = self._tokenizer.encode_batch(batch, is_pretokenized=True, add_special_tokens=add_special_tokens)
        return Encoded(encodings, single)


def _token_id(tokenizer: Tokenizer, config: dict, name: str) -> int | None:
    token = config.get(name)
    if isinstance(token, dict):  # older tokenizer_config.json files hold AddedToken dicts
        token = token.get("content")
    return None if token is None else tokenizer.token_to_id(token)


def load_tokenizer(folder: str | Path):
    """The folder's ``tokenizer.json`` without transformers (and so without torch); transformers otherwise."""
    folder = Path(folder)
    if (folder / TOKENIZER_FILE).is_file():
        return FastTokenizer.from_folder(folder)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{folder}: cannot load the tokenizer files: {exc}") from exc
