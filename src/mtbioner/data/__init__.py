"""Corpora and text, the bottom part: files -> sentences with IOB2 tags, raw text -> sentences of words.

``corpus`` reads annotated splits (``schemes``, ``formats``, ``bioc_format``), ``text`` splits raw text,
``entity`` is the record every answer is made of, ``leakage`` keeps scored text out of training and
``abbreviations`` finds definitions in a text. Imports nothing from the other parts.
"""
