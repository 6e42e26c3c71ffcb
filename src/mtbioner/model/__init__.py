"""The network: windows of sub-tokens in, emission scores per head out.

``model`` (shared encoder + one head per corpus, ``heads``), ``model_config``, ``encoding`` (sentences ->
windows with labels on first sub-tokens), ``decoding`` (emissions -> labels), ``fast_tokenizer``,
``dictionary`` (dictionary features), ``attention_heads`` (layers that keep fewer heads: distilled students).
Imports only :mod:`mtbioner.data`.
"""
