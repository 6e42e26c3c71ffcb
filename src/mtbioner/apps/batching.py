"""Fair micro-batching for the server: many clients' sentences in one model call, no client starved.

The model runs on one worker thread, one call at a time. Every request is cut into its sentences
(the tagger tags sentences independently, so any grouping gives the same entities), and each model
call takes at most ``slice_sentences`` sentences from each waiting request, round-robin, up to
``max_batch_sentences`` in all. Jobs with one slice or less left (a chatbot's utterances) get calls
of their own, every other call at least, so a one-line utterance that arrives while a 40,000-sentence
request is being tagged waits for the call in flight and its own small call, not for the whole request.

Backpressure: a request with more sentences than ``max_request_sentences`` is refused (413), and
when the queued sentences would pass ``max_queue_sentences`` the new request gets 503 with a
``Retry-After`` estimated from the measured rate, instead of waiting without bound.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MtbionerError

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from ..data.text import TextSentence
    from ..runtime.tagging import Entity, Tagger

logger = logging.getLogger("mtbioner.serve")


class Overloaded(MtbionerError):
    """The queue is full: try again after ``retry_after`` seconds (HTTP 503)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooMuchWork(MtbionerError):
    """One request holds more sentences than a request may (HTTP 413)."""


@dataclass(eq=False)
class _Job:
    texts: list[str]
    options: tuple  # (types, corpora, min_score, flat, merge_types): requests share a call only when these agree
    future: asyncio.Future
    pending: deque[tuple[int, TextSentence]]
    found: list[list[Entity]] = field(default_factory=list)


@dataclass
class BatchStats:
    """Counters that show whether batching and sharing happen (``GET /health`` reports them)."""

    requests: int = 0
    calls: int = 0
    texts: int = 0
    sentences: int = 0
    largest_call: int = 0
    refused: int = 0
    sentences_per_s: float = 0.0  # moving average of the model's rate, for Retry-After


class MicroBatcher:
    """Gathers the sentences of concurrent requests into shared ``Tagger`` calls on one worker thread.

    Args:
        tagger: The model.
        window_s: How long the first waiting request holds a call open for others to join (when idle).
        max_batch_sentences: Most sentences in one model call.
        slice_sentences: Most sentences one request contributes to one call (the fairness quantum).
        max_request_sentences: Most sentences one request may hold (more: :class:`TooMuchWork`).
        max_queue_sentences: Most sentences waiting in all (a request past it: :class:`Overloaded`).
    """

    def __init__(
        self,
        tagger: Tagger,
        window_s: float = 0.002,
        max_batch_sentences: int = 64,
        slice_sentences: int = 4,
        max_request_sentences: int = 50_000,
        max_queue_sentences: int = 100_000,
    ) -> None:
        self.tagger = tagger
        self.window_s = window_s
        self.max_batch_sentences = max_batch_sentences
        self.slice_sentences = slice_sentences
        self.max_request_sentences = max_request_sentences
        self.max_queue_sentences = max_queue_sentences
        self.stats = BatchStats()
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._short_turn = False  # the last call served short jobs only
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._splitter: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Requests with sentences still to tag."""
        return len(self._jobs)

    @property
    def queued_sentences(self) -> int:
        return self._queued

    async def start(self) -> None:
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        self._wakeup = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtbioner-tagger")
        self._splitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtbioner-splitter")
        self._task = asyncio.create_task(self._run(), name="mtbioner-batcher")

    async def close(self) -> None:
        import asyncio

        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(RuntimeError("server shutting down"))
        self._jobs.clear()
        for pool in (self._pool, self._splitter):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    async def tag(
        self,
        texts: Sequence[str],
        types: Sequence[str] | None = None,
        corpora: Sequence[str] | None = None,
        min_score: float = 0.0,
        flat: bool = False,
        merge_types: bool = True,
    ) -> list[list[Entity]]:
        """Entities of each text, tagged in calls shared with whatever other requests are waiting.

        Raises:
            RequestError: Bad options (unknown type or head, min_score out of range).
            TooMuchWork: More sentences than one request may hold.
            Overloaded: The queue is full; retry after ``retry_after`` seconds.
        """
        import asyncio

        if self._task is None or self._wakeup is None or self._task.done():
            raise RuntimeError("the batcher is not running (is the app's lifespan running?)")
        self.tagger.check_options(list(texts), types, corpora, min_score)
        loop = asyncio.get_running_loop()
        # splitting a megabyte takes a while: off the event loop, and off the model's thread
        sentences = await loop.run_in_executor(self._splitter, _split_all, self.tagger, list(texts))
        self._admit(len(sentences))
        options = (_freeze(types), _freeze(corpora), float(min_score), bool(flat), bool(merge_types))
        job = _Job(list(texts), options, loop.create_future(), deque(sentences), [[] for _ in texts])
        if not sentences:
            return [[] for _ in texts]
        self._jobs.append(job)
        self._queued += len(sentences)
        self._wakeup.set()
        try:
            return await job.future
        finally:
            if job in self._jobs:  # the client gave up: drop its remaining work
                self._jobs.remove(job)
                self._queued -= len(job.pending)

    def _admit(self, count: int) -> None:
        if count > self.max_request_sentences:
            self.stats.refused += 1
            raise TooMuchWork(
                f"{count} sentences in one request; one request may hold {self.max_request_sentences} "
                "(--max-request-sentences): split it into several requests"
            )
        if self._queued + count > self.max_queue_sentences:
            self.stats.refused += 1
            rate = self.stats.sentences_per_s or 50.0
            retry = max(1, math.ceil((self._queued + count - self.max_queue_sentences) / rate))
            raise Overloaded(f"{self._queued} sentences are queued; try again in {retry} s", retry)

    async def _run(self) -> None:
        import asyncio

        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
                if self.window_s > 0 and self._queued < self.max_batch_sentences:
                    await asyncio.sleep(self.window_s)  # let concurrent arrivals join the first call
                continue
            call = self._take()
            started = loop.time()
            try:
                await self._execute(call)
            except Exception as exc:  # a bug here must fail these requests, not stall every later one
                logger.exception("batch failed")
                for job, _ in call:
                    if not job.future.done():
                        job.future.set_exception(exc)
                    with contextlib.suppress(ValueError):
                        self._jobs.remove(job)
            self._measure(sum(len(part) for _, part in call), loop.time() - started)

    def _take(self) -> list[tuple[_Job, list[tuple[int, TextSentence]]]]:
        """Up to ``slice_sentences`` from each waiting job whose options match the first's, round-robin.

        Short jobs (one slice or less left: a chatbot's utterances) get calls of their own, so one waits for
        the call in flight and its own small call, not for a large request's slice too. Such calls alternate
        with calls for everyone, so a stream of short requests cannot starve a large one either.
        """
        jobs = [job for job in self._jobs if job.pending]
        short = [job for job in jobs if len(job.pending) <= self.slice_sentences]
        short_turn = bool(short) and len(short) < len(jobs) and not self._short_turn
        self._short_turn = short_turn
        pool = short if short_turn else jobs
        first = pool[0]
        call, room = [], self.max_batch_sentences
        for job in pool:
            if room <= 0:
                break
            if job.options != first.options:
                continue
            part = [job.pending.popleft() for _ in range(min(self.slice_sentences, room, len(job.pending)))]
            call.append((job, part))
            room -= len(part)
            self._queued -= len(part)
        self._jobs.rotate(-1)  # the next call starts with the next job
        return call

    async def _execute(self, call: list[tuple[_Job, list[tuple[int, TextSentence]]]]) -> None:
        import asyncio

        live = [(job, part) for job, part in call if not job.future.done()]
        if not live:
            return
        units = [(job.texts[index], sentence) for job, part in live for index, sentence in part]
        heads = _heads(self.tagger, live[0][0].options[1])
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self._pool, self.tagger.sentence_entities, units, heads)
        except Exception as exc:  # handed to each request, which maps it to a status code
            for job, _ in live:
                if not job.future.done():
                    job.future.set_exception(exc)
                with contextlib.suppress(ValueError):
                    self._jobs.remove(job)
            return
        self.stats.calls += 1
        self.stats.sentences += len(units)
        self.stats.largest_call = max(self.stats.largest_call, len(units))
        results = iter(found)
        for job, part in live:
            for index, _ in part:
                job.found[index].extend(next(results))
            if not job.pending and not job.future.done():
                self._jobs.remove(job)
                types, _, min_score, flat, merge = job.options
                finished = [
                    self.tagger.finish(text, f, types, min_score, flat, merge)
                    for text, f in zip(job.texts, job.found, strict=True)
                ]
                job.future.set_result(finished)
                self.stats.requests += 1
                self.stats.texts += len(job.texts)

    def _measure(self, sentences: int, seconds: float) -> None:
        if sentences and seconds > 0:
            rate = sentences / seconds
            old = self.stats.sentences_per_s
            self.stats.sentences_per_s = round(rate if not old else 0.8 * old + 0.2 * rate, 1)


def _split_all(tagger: Tagger, texts: list[str]) -> list[tuple[int, Any]]:
    return [(index, sentence) for index, text in enumerate(texts) for sentence in tagger.split(text)]


def _heads(tagger: Tagger, corpora: tuple[str, ...] | None) -> list[str]:
    return list(corpora) if corpora else tagger.corpora


def _freeze(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values else None
