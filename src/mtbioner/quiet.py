"""Keep third-party libraries quiet where mtbioner prints for people (the CLI, the server's workers)."""

from __future__ import annotations

import os
import sys


def quiet_libraries() -> None:
    """Keep transformers' load-time chatter (progress bars, notices) and tokenizer fork warnings out of the output.

    Through the environment variables transformers and huggingface_hub read when they are imported, so that
    commands which never need them (tagging with an exported model) do not import them, and torch with them,
    just to silence them; a transformers already imported is told directly.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if sys.modules.get("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
