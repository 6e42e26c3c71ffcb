"""Serving a model: the HTTP service (``serving`` with its request ``batching``), Ray for large collections
(``scaling``) and the spaCy pipeline component (``spacy_component``). Imports the runtime and below."""
