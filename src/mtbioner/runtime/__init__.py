"""Using a model: emissions -> labels -> entities -> one answer.

``inference`` (emissions of every head), ``evaluation`` (per-head scores), ``tagging`` (raw text to
entities), ``type_merging`` and ``answer`` (the merged answer), ``export``, ``quantization``,
``dequantize`` and ``onnx_backend`` (ONNX), ``loading`` and ``shipped`` (model folders), ``linking`` and
``knowledge_bases`` (concept ids). Imports :mod:`mtbioner.model` and :mod:`mtbioner.data`.
"""
