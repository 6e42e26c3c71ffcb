"""Keep third-party libraries quiet where mtbioner prints for people (the CLI, the server's workers)."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    """Keep transformers' load-time chatter (progress bars, notices) and tokenizer fork warnings out of the output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
