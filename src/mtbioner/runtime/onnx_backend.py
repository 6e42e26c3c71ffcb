"""Run an exported model (``model.onnx`` + ``config.json`` + tokenizer) with ONNX Runtime.

The runtime half of the ONNX support, kept apart from the exporter (:mod:`mtbioner.runtime.export`) so that
loading a model never imports the export machinery (torch tracing, fusions, quantization) and the
exporter can use the runtime to check what it wrote. The graph takes ``input_ids`` and
``attention_mask`` (plus ``token_type_ids``, each word's case class, for case-feature models, and
``dictionary_ids``, ``[B, T, K]`` dictionary match tags, for dictionary-feature models, whose folder
also holds ``dictionary.json``) and returns one ``[B, T, C]`` emission output per head; decoding
stays in :mod:`mtbioner.model.decoding`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError, MtbionerError
from ..model.decoding import Decoder
from ..model.dictionary import Dictionary
from ..model.fast_tokenizer import load_tokenizer
from ..model.model_config import CONFIG_NAME, FORMAT_VERSION, TaggerConfig, read_config_json
from .heap import HeapReleaser

ONNX_NAME = "model.onnx"
INPUTS = ("input_ids", "attention_mask")
CASE_INPUT = "token_type_ids"
DICTIONARY_INPUT = "dictionary_ids"


def graph_inputs(config) -> tuple[str, ...]:
    """The graph's input names: case-feature models also take the case class of each sub-token,
    dictionary-feature models the dictionary match tags of each sub-token."""
    names = (*INPUTS, CASE_INPUT) if config.case_features else INPUTS
    return (*names, DICTIONARY_INPUT) if getattr(config, "dictionary_features", False) else names


_NUM_THREADS: int | None = None  # set_num_threads: the process-wide default, like torch.set_num_threads
_RELEASE_MEMORY = False  # set_release_memory: the server turns it on for its process
_ARENA = True  # set_release_memory's arena: sessions keep ONNX Runtime's CPU memory arena
RELEASE_AFTER_TOKENS = 256  # a graph run of at least this many padded sub-tokens (batch x length) gives memory back


def set_num_threads(threads: int | None) -> None:
    """Intra-op threads of the sessions this process opens from now on (``None``: every usable core).

    The server calls it (``--threads``) as it calls ``torch.set_num_threads`` for torch models, so one setting
    governs whichever backend the model folder needs.
    """
    global _NUM_THREADS
    _NUM_THREADS = threads


def _threads() -> int:
    """``set_num_threads``'s count, else the cores this process may use (cgroup/affinity aware)."""
    if _NUM_THREADS:
        return _NUM_THREADS
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_release_memory(release: bool, arena: bool | None = None) -> None:
    """Whether the sessions this process opens from now on give their memory back after large runs.

    Two switches: ``release`` hands glibc's free heap back to the system after large runs (a
    :class:`~mtbioner.runtime.heap.HeapReleaser`); ``arena`` keeps ONNX Runtime's CPU memory arena (default: only
    when not releasing, as the arena would hold what a release could give back). Kept with a small batch, the
    arena holds the tensors of the largest batch only, and releasing still returns what the requests themselves
    left in glibc's heap.

    The server turns it on (:func:`mtbioner.apps.serving.prepare_process`): its workers live for days and see a
    few large requests among many small ones. With ONNX Runtime's CPU memory arena (the default) a worker keeps
    the most a large run ever needed, and glibc keeps what is freed in its heaps, so resident memory stepped up
    after each large request or burst and stayed there (soak: 152 -> 345 MB in 30 minutes, issue 43). Without
    the arena, every tensor is ``malloc``'d and freed, and :mod:`mtbioner.runtime.heap` after large runs hands the
    freed pages back to the system.

    Measured in one process driving the shipped int8 model as a ``--workers 2`` worker does (a tagger thread, a
    splitter thread, 1 intra-op thread; utterances, abstracts 4 sentences a call, 64-sentence calls of abstracts'
    sentences, bursts of questions, the corpus' longest sentences; 8 cycles, ~3 minutes), RSS after load /
    after the first cycle / at the end: arena on (default) 159 / 337 / 347 MB; arena off 159 / 239 / 255 MB
    (swinging 191-319); arena on + ``malloc_trim`` 160 / 328 / 338 MB (the arena keeps it); ``arena_extend_strategy``
    kSameAsRequested (a shared ``OrtArenaCfg`` allocator) 159 / 610 / 617 MB; ``enable_mem_pattern=False`` 160 /
    338 / 348 MB; arena shrinkage after every run 160 / 227 / 242 MB; ``MALLOC_ARENA_MAX=2`` 158 / 331 / 341 MB;
    arena off + ``malloc_trim`` after large calls 160 / 162 / 159 MB (the remedy taken). Its cost is page faults,
    which :func:`~mtbioner.runtime.heap.configure_heap` removes (measured there): with it, 64 abstract sentences
    tagged back to back, two processes, 20 paired rounds, idle host: 102.7 against 104.4 sentences/s (x1.01). Host:
    Intel Xeon (Sapphire Rapids, 2 cores); scripts and raw results were kept outside the repository (one-off study).
    """
    global _RELEASE_MEMORY, _ARENA
    _RELEASE_MEMORY = release
    _ARENA = not release if arena is None else arena


def open_session(path: Path, threads: int | None = None, arena: bool | None = None):
    """An ONNX Runtime CPU session: one intra-op thread per usable core, sequential, all graph optimizations.

    ``arena`` (default: :func:`set_release_memory`'s choice) keeps ONNX Runtime's CPU memory arena; without it,
    what a large run allocated can go back to the system (see :func:`set_release_memory`).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = _ARENA if arena is None else arena
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxTagger:
    """An exported model run by ONNX Runtime, usable wherever a torch model is.

    It offers what :mod:`mtbioner.runtime.inference` needs (``config``, ``tokenizer``,
    ``decoders()``, ``run``), so ``Tagger``, ``evaluate`` and the server use it unchanged.
    With ``release_memory`` (:func:`set_release_memory`'s ``release``), every run of at least
    ``RELEASE_AFTER_TOKENS`` padded sub-tokens hands the heap back through a
    :class:`~mtbioner.runtime.heap.HeapReleaser`; small runs, the many short requests of a server, skip it.
    """

    def __init__(
        self,
        session,
        config: TaggerConfig,
        tokenizer,
        onnx_info: dict,
        dictionary: Dictionary | None = None,
        release_memory: bool = False,
    ) -> None:
        self.session = session
        self.config = config
        self.tokenizer = tokenizer
        self.onnx_info = onnx_info
        self.dictionary = dictionary
        self._releaser = HeapReleaser() if release_memory else None
        self._outputs: dict[str, str] = dict(onnx_info["outputs"])

    @classmethod
    def from_pretrained(cls, path: str | Path, threads: int | None = None) -> OnnxTagger:
        """Open an exported folder.

        Args:
            path: Folder written by :func:`mtbioner.runtime.export.export_onnx`.
            threads: Intra-op threads (default: ``set_num_threads``'s, else the cores this process may use).
        """
        folder = Path(path)
        config, info = read_onnx_config(folder)
        release_memory = _RELEASE_MEMORY
        try:
            session = open_session(folder / ONNX_NAME, threads)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelFormatError(f"{folder / ONNX_NAME}: ONNX Runtime cannot load it: {exc}") from exc
        names = {o.name for o in session.get_outputs()}
        missing = sorted(set(info["outputs"].values()) - names)
        if missing:
            raise ModelFormatError(f"{folder / ONNX_NAME}: graph lacks outputs {missing} named in {CONFIG_NAME}")
        tokenizer = load_tokenizer(folder)
        dictionary = Dictionary.load(folder) if config.dictionary_features else None
        return cls(session, config, tokenizer, info, dictionary, release_memory)

    @property
    def release_memory(self) -> bool:
        """Whether large runs give glibc's free heap back to the system (:func:`set_release_memory`)."""
        return self._releaser is not None

    @property
    def corpora(self) -> list[str]:
        return list(self.config.corpora)

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        corpora: Sequence[str],
        token_type_ids: np.ndarray | None = None,
        dictionary_ids: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Emission scores ``[B, T, C]`` of the named heads from one graph run."""
        unknown = [name for name in corpora if name not in self._outputs]
        if unknown:
            raise MtbionerError(f"this model has no head {unknown[0]!r}; its heads are {self.corpora}")
        feed = {
            "input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64),
        }
        if self.config.case_features:
            if token_type_ids is None:
                raise ValueError("this model reads letter case: pass token_type_ids")
            feed[CASE_INPUT] = np.ascontiguousarray(token_type_ids, dtype=np.int64)
        if self.config.dictionary_features:
            if dictionary_ids is None:
                raise ValueError("this model reads dictionary evidence: pass dictionary_ids")
            feed[DICTIONARY_INPUT] = np.ascontiguousarray(dictionary_ids, dtype=np.int64)
        values = self.session.run([self._outputs[name] for name in corpora], feed)
        if self._releaser is not None and input_ids.size >= RELEASE_AFTER_TOKENS:
            self._releaser()
        return dict(zip(corpora, values, strict=True))

    def decoders(self) -> dict[str, Decoder]:
        """Numpy decoders of every head; CRF scores come from ``config.json``."""
        result = {}
        for name, head in self.config.corpora.items():
            crf = self.onnx_info.get("crf", {}).get(name)
            if head.head == "crf" and crf:
                arrays = {key: np.asarray(crf[key], dtype=np.float32) for key in ("start", "end", "transitions")}
                result[name] = Decoder(tuple(head.labels), "crf", **arrays)
            else:
                result[name] = Decoder(tuple(head.labels), "linear")
        return result


def read_onnx_config(folder: Path) -> tuple[TaggerConfig, dict]:
    """Read and check an exported folder's ``config.json``: the model config and its ``onnx`` section."""
    config_file, data = read_config_json(
        folder, ONNX_NAME, f"{folder}: not an exported mtbioner model (needs {ONNX_NAME} and {CONFIG_NAME})"
    )
    info = data.get("onnx") if isinstance(data, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("outputs"), dict) or "corpora" not in data:
        raise ModelFormatError(f"{config_file}: not an exported mtbioner config (no onnx/outputs or corpora)")
    if data.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{config_file}: model format {data.get('format_version')}, this mtbioner reads format {FORMAT_VERSION}; "
            f"re-export with the mtbioner version in use"
        )
    try:
        config = TaggerConfig.from_dict({k: v for k, v in data.items() if k != "onnx"})
    except (TypeError, AttributeError, ValueError) as exc:  # a field added, renamed or of the wrong kind
        raise ModelFormatError(f"{config_file}: unexpected fields: {exc}") from exc
    missing = sorted(set(config.corpora) - set(info["outputs"]))
    if missing:
        raise ModelFormatError(f"{config_file}: onnx.outputs lacks heads {missing}")
    return config, info
