"""Fair micro-batching for the server: many clients' sentences in one model call, no client starved.

Every request is cut into its sentences (the tagger tags sentences independently, so any grouping gives
the same entities; the queue keeps each as its offsets, and its words are read again when its turn comes) and
joins one of two lanes, each a queue served by its own loop and its own model thread:

* the *express lane* takes requests whose sentences fit in one slice (at most ``slice_sentences``: a
  chatbot's utterance). Each call tags whatever such requests are waiting with the first one's options,
  whole, oldest first, up to ``max_batch_sentences``.
* the *main lane* takes every larger request. Each call takes at most ``slice_sentences`` sentences from each
  waiting request, round-robin, up to ``max_batch_sentences`` in all, so a large request cannot hold the
  lane for the whole of its work and a medium one finishes within a few calls.

Why two lanes: with one model thread an utterance had to wait for the call in flight, which in a burst
holds ``max_batch_sentences`` sentences (100-230 ms on one core for a quantized BERT), and the p99 of
utterances was several times the few milliseconds of their own work. With its own thread an utterance's
call runs *while* the main lane's call is in flight: the OS shares the cores between the two threads for
the few milliseconds the utterance takes (ONNX Runtime and the tokenizer release the GIL while they work),
so a short request waits for the express call in flight, if any, and its own, never for a large request.
The main lane loses those milliseconds of CPU (and of the GIL, for tagging's Python parts); neither lane can
starve the other, since each has a thread of its own and the OS shares the cores between them. Within a
lane, round-robin (main) and oldest-first (express) leave no request behind.

Both threads call the same ``Tagger``. Steady-state tagging only reads shared state (ONNX Runtime's
``InferenceSession.run`` is thread-safe, the tokenizer's settings are fixed, torch runs in inference mode,
the tokenizer's word cache has its lock), but the first call builds some lazily (a dictionary model's
trie, a transformers tokenizer's one-time reset of its padding and truncation), which two threads must
not do at once: so calls run one at a time until the first has succeeded.

Backpressure: a request with more sentences than ``max_request_sentences`` is refused (413), and
when the queued sentences of both lanes would pass ``max_queue_sentences`` the new request gets 503 with a
``Retry-After`` estimated from the main lane's measured rate, instead of waiting without bound.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MtbionerError

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from ..runtime.tagging import Entity, Tagger

logger = logging.getLogger("mtbioner.serve")

SHUTTING_DOWN = "server shutting down"
SENTENCE_CHARS = 1_000  # a long sentence's weight in the limits: ~2 windows of the model, a long PubMed sentence


class Overloaded(MtbionerError):
    """The queue is full: try again after ``retry_after`` seconds (HTTP 503)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooMuchWork(MtbionerError):
    """One request holds more sentences than a request may (HTTP 413)."""


@dataclass(eq=False)
class _Lane:
    """A queue of jobs, the loop that serves it and the one thread its model calls run on."""

    name: str  # "main" or "express": in thread names and logs
    jobs: deque[_Job] = field(default_factory=deque)
    wakeup: asyncio.Event | None = None
    pool: ThreadPoolExecutor | None = None
    task: asyncio.Task | None = None


@dataclass(eq=False)
class _Job:
    texts: list[str]
    options: tuple  # (types, corpora, min_score, flat, merge_types): requests share a call only when these agree
    future: asyncio.Future
    pending: deque[tuple[int, int, int]]  # (text, start, end): offsets, not words (Tagger.sentence reads them)
    found: list[Any] = field(default_factory=list)  # every head's spans; a finished text's (rendered) answer
    lane: _Lane | None = None
    render: Callable[[list[Entity]], Any] | None = None  # what a finished text's answer becomes (MicroBatcher.tag)
    finished: int = 0  # texts before this one have their answer in ``found``


_Call = list[tuple[_Job, list[tuple[int, int, int]]]]


@dataclass
class BatchStats:
    """Counters that show whether batching and sharing happen (``GET /health`` reports them).

    ``calls``, ``sentences`` and ``largest_call`` count the model calls of both lanes, ``express_calls``
    those of the express lane alone.
    """

    requests: int = 0
    calls: int = 0
    express_calls: int = 0
    texts: int = 0
    sentences: int = 0
    largest_call: int = 0
    refused: int = 0
    # moving average of the main lane's rate, for Retry-After: the main lane drains what fills the queue, and
    # the express lane's one-utterance calls, mostly per-call overhead, would make the estimate far too long
    sentences_per_s: float = 0.0


class MicroBatcher:
    """Gathers the sentences of concurrent requests into shared ``Tagger`` calls: short requests on an express
    lane, larger ones on a main lane, each lane on its own worker thread (see the module's description).

    Args:
        tagger: The model.
        window_s: How long the first waiting request holds a call open for others to join (when its lane is idle).
        max_batch_sentences: Most sentences in one model call.
        slice_sentences: Most sentences one request contributes to one main-lane call (the fairness
            quantum); a request with no more than this many goes to the express lane.
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
        self._main = _Lane("main")
        self._express = _Lane("express")
        self._queued = 0  # sentences of both lanes not yet handed to the model
        self._warm = False  # a model call has succeeded: lazily built state exists, calls may overlap
        self._first_call: asyncio.Lock | None = None
        self._closed = False
        self._splitter: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Requests with sentences still to tag, in both lanes."""
        return len(self._main.jobs) + len(self._express.jobs)

    @property
    def queued_sentences(self) -> int:
        return self._queued

    async def start(self) -> None:
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        self._first_call = asyncio.Lock()
        self._splitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtbioner-splitter")
        for lane, take in ((self._main, self._take_slices), (self._express, self._take_short)):
            lane.wakeup = asyncio.Event()
            prefix = "mtbioner-tagger" if lane is self._main else "mtbioner-express"  # the main lane's old name
            lane.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=prefix)
            lane.task = asyncio.create_task(self._run(lane, take), name=f"mtbioner-batcher-{lane.name}")

    async def close(self) -> None:
        """Stop both lanes, fail every waiting request with ``RuntimeError("server shutting down")``, and return
        once the model threads have finished the calls in flight, so that no thread outlives the batcher."""
        import asyncio

        self._closed = True
        lanes = (self._main, self._express)
        tasks = [lane.task for lane in lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for lane in lanes:
            self._fail(list(lane.jobs), RuntimeError(SHUTTING_DOWN))
        pools = [pool for pool in (self._main.pool, self._express.pool, self._splitter) if pool is not None]
        for pool in pools:
            # texts being split finish, and their requests get the shutdown error rather than a cancellation
            pool.shutdown(wait=False, cancel_futures=pool is not self._splitter)
        if pools:  # a call in flight cannot be interrupted: wait for it off the event loop
            await asyncio.to_thread(_join, pools)

    async def tag(
        self,
        texts: Sequence[str],
        types: Sequence[str] | None = None,
        corpora: Sequence[str] | None = None,
        min_score: float = 0.0,
        flat: bool = False,
        merge_types: bool = True,
        render: Callable[[list[Entity]], Any] | None = None,
    ) -> list[Any]:
        """Entities of each text, tagged in calls shared with whatever other requests are waiting.

        ``render``, when given, is applied to each text's entities as soon as they are known, and its results are
        returned instead: the server writes each text's part of its answer then, so that a large request's
        entities are never all in memory at once.

        Raises:
            RequestError: Bad options (unknown type or head, min_score out of range).
            TooMuchWork: More sentences than one request may hold.
            Overloaded: The queue is full; retry after ``retry_after`` seconds.
            RuntimeError: The batcher is not running, or closed while the texts were split.
        """
        import asyncio

        if not self._running():
            raise RuntimeError("the batcher is not running (is the app's lifespan running?)")
        self.tagger.check_options(list(texts), types, corpora, min_score, merge_types)
        loop = asyncio.get_running_loop()
        # splitting a megabyte takes a while: off the event loop, and off the model's threads
        bounds = await loop.run_in_executor(self._splitter, _split_all, self.tagger, list(texts))
        if self._closed:  # no lane would ever serve it
            raise RuntimeError(SHUTTING_DOWN)
        count = sum(len(starts) for starts, _ in bounds)
        cost = _cost(bounds)  # a megabyte with no full stop is one sentence, but not one sentence's work
        self._admit(count, cost)  # counted, not listed: one refused is no tuple per sentence
        if not count:
            return [render([]) if render is not None else [] for _ in texts]
        lane = self._express if cost <= self.slice_sentences else self._main
        options = (_freeze(types), _freeze(corpora), float(min_score), bool(flat), bool(merge_types))
        pending = deque(_units(bounds))
        job = _Job(list(texts), options, loop.create_future(), pending, [[] for _ in texts], lane, render)
        lane.jobs.append(job)
        self._queued += count
        assert lane.wakeup is not None
        lane.wakeup.set()
        try:
            return await job.future
        finally:
            self._drop(job)  # done, failed or abandoned by its client: its remaining work goes too

    def _running(self) -> bool:
        lanes = (self._main, self._express)
        return not self._closed and all(lane.task is not None and not lane.task.done() for lane in lanes)

    def _admit(self, count: int, cost: int) -> None:
        if cost > self.max_request_sentences:
            self.stats.refused += 1
            raise TooMuchWork(
                f"{cost} sentences in one request (one longer than {SENTENCE_CHARS:,} characters counts once per "
                f"{SENTENCE_CHARS:,}); one request may hold {self.max_request_sentences} (--max-request-sentences): "
                "split it into several requests"
            )
        if self._queued + count > self.max_queue_sentences:
            self.stats.refused += 1
            rate = self.stats.sentences_per_s or 50.0
            retry = max(1, math.ceil((self._queued + count - self.max_queue_sentences) / rate))
            raise Overloaded(f"{self._queued} sentences are queued; try again in {retry} s", retry)

    def _drop(self, job: _Job) -> None:
        """Take a job off its lane with the sentences it has not handed to the model (a no-op the second time)."""
        if job.lane is not None and job in job.lane.jobs:
            job.lane.jobs.remove(job)
            self._queued -= len(job.pending)
            job.pending.clear()

    def _fail(self, jobs: Sequence[_Job], exc: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)
            self._drop(job)

    async def _run(self, lane: _Lane, take: Callable[[deque[_Job]], _Call]) -> None:
        import asyncio

        assert lane.wakeup is not None
        while True:
            if not any(job.pending for job in lane.jobs):  # (a job without is one whose client just gave up)
                lane.wakeup.clear()
                await lane.wakeup.wait()
                waiting = sum(len(job.pending) for job in lane.jobs)
                if self.window_s > 0 and waiting < self.max_batch_sentences:
                    await asyncio.sleep(self.window_s)  # let concurrent arrivals join the first call
                continue
            await self._call(lane, take(lane.jobs))

    async def _call(self, lane: _Lane, call: _Call) -> None:
        """One model call of ``lane`` (the main lane's are timed for the measured rate).

        A method of its own so that nothing of the call outlives it: the lane then waits for work holding no
        reference to its last request. It used to keep that request (texts, entities, answer) alive until the next
        one, tens of MB after a large request, in every server worker (issue 43).
        """
        import asyncio

        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._execute(lane, call)
        except Exception as exc:  # a bug here must fail these requests, not stall every later one
            logger.exception("batch failed (%s lane)", lane.name)
            self._fail([job for job, _ in call], exc)
        if lane is self._main:
            self._measure(sum(len(part) for _, part in call), loop.time() - started)

    def _take_slices(self, jobs: deque[_Job]) -> _Call:
        """Main lane: up to ``slice_sentences`` from each waiting job whose options match the first's, round-robin.

        A job's last slice waits for its turn like the others: the jobs here are large, and each gets a slice in
        every call that has room for it, so no job waits for more than a round of calls, however large the
        others are. (One short job used to get calls of its own every other call; those jobs now have a lane.)
        """
        call = self._take(jobs, self.slice_sentences, whole=False)
        jobs.rotate(-1)  # the next call starts with the next job
        return call

    def _take_short(self, jobs: deque[_Job]) -> _Call:
        """Express lane: the waiting jobs whose options match the oldest one's, whole, oldest first.

        The oldest job is in every call, so a job waits only for the calls of those before it; one that does not
        fit in a call's room waits for the next call rather than being tagged in two.
        """
        return self._take(jobs, self.max_batch_sentences, whole=True)

    def _take(self, jobs: deque[_Job], quantum: int, whole: bool) -> _Call:
        """At most ``quantum`` sentences from each job with the first waiting job's options, ``max_batch_sentences``
        in all, in queue order; with ``whole``, only jobs whose sentences all fit (but the first job always)."""
        first = next(job for job in jobs if job.pending)
        call: _Call = []
        room = self.max_batch_sentences
        for job in jobs:
            if room <= 0:
                break
            if job.options != first.options or not job.pending:
                continue
            count = min(quantum, len(job.pending))
            if count > room and whole and call:
                continue
            part = [job.pending.popleft() for _ in range(min(count, room))]
            call.append((job, part))
            room -= len(part)
            self._queued -= len(part)
        return call

    async def _execute(self, lane: _Lane, call: _Call) -> None:
        live = [(job, part) for job, part in call if not job.future.done()]
        if not live:
            return
        units = [(job.texts[index], start, end) for job, part in live for index, start, end in part]
        heads = _heads(self.tagger, live[0][0].options[1])
        try:
            found = await self._model(lane, units, heads)
        except Exception as exc:  # handed to each request, which maps it to a status code
            self._fail([job for job, _ in live], exc)
            return
        self.stats.calls += 1
        if lane is self._express:
            self.stats.express_calls += 1
        self.stats.sentences += len(units)
        self.stats.largest_call = max(self.stats.largest_call, len(units))
        results = iter(found)
        for job, part in live:
            for index, _, _ in part:
                job.found[index].extend(next(results))
            self._finish_texts(job)
            if not job.pending and not job.future.done():
                self._drop(job)
                job.future.set_result(job.found)
                self.stats.requests += 1
                self.stats.texts += len(job.texts)

    def _finish_texts(self, job: _Job) -> None:
        """Turn every text whose sentences are all tagged into its answer now, not when the whole request is done.

        Every head's spans of a text are many times its answer. Held, with the answers, until the last sentence of
        a large request (5,215 sentences, 0.9 MB) was tagged, they took ~25 MB of small objects, and the Python
        allocator kept the memory after the request: a server worker's resident memory stepped up by ~28 MB at its
        first large request and stayed there (issue 43; with this and ``render``, ~7 MB, the new words' place in
        the tokenizer's cache). A job's sentences are queued in text order, so the texts before its next
        sentence's are done.
        """
        done = job.pending[0][0] if job.pending else len(job.texts)
        types, _, min_score, flat, merge = job.options
        for index in range(job.finished, done):
            entities = self.tagger.finish(job.texts[index], job.found[index], types, min_score, flat, merge)
            job.found[index] = job.render(entities) if job.render is not None else entities
        job.finished = max(job.finished, done)

    async def _model(self, lane: _Lane, units: list, heads: list[str]) -> list[list[Entity]]:
        """:meth:`_tag` on the lane's thread; alone until one call has succeeded (see the module)."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self._warm:
            return await loop.run_in_executor(lane.pool, self._tag, units, heads)
        assert self._first_call is not None
        async with self._first_call:
            found = await loop.run_in_executor(lane.pool, self._tag, units, heads)
            self._warm = True
            return found

    def _tag(self, units: list[tuple[str, int, int]], heads: list[str]) -> list[list[Entity]]:
        """``tagger.sentence_entities`` of ``(text, start, end)`` sentences, their words read again here."""
        sentences = [(text, self.tagger.sentence(text, start, end)) for text, start, end in units]
        return self.tagger.sentence_entities(sentences, heads)

    def _measure(self, sentences: int, seconds: float) -> None:
        if sentences and seconds > 0:
            rate = sentences / seconds
            old = self.stats.sentences_per_s
            self.stats.sentences_per_s = round(rate if not old else 0.8 * old + 0.2 * rate, 1)


def _join(pools: list[ThreadPoolExecutor]) -> None:
    for pool in pools:
        pool.shutdown(wait=True)


def _split_all(tagger: Tagger, texts: list[str]) -> list[tuple[Sequence[int], Sequence[int]]]:
    """Each text's sentences as the arrays of their starts and ends (``Tagger.sentence_bounds``)."""
    return [tagger.sentence_bounds(text) for text in texts]


def _cost(bounds: list[tuple[Sequence[int], Sequence[int]]]) -> int:
    """The sentences of the texts, each longer than ``SENTENCE_CHARS`` counted once per ``SENTENCE_CHARS``: what
    the request limit and the choice of lane weigh, so a text without sentence ends is not one short sentence."""
    pairs = (pair for starts, ends in bounds for pair in zip(starts, ends, strict=True))
    return sum(max(1, -(-(end - start) // SENTENCE_CHARS)) for start, end in pairs)


def _units(bounds: list[tuple[Sequence[int], Sequence[int]]]) -> Iterator[tuple[int, int, int]]:
    """Each sentence of the texts as (text, start, end): a queued sentence costs three integers, not its words
    (~15x less memory: a full queue of 8,000 questions held 14 MB of words, issue 43)."""
    for index, (starts, ends) in enumerate(bounds):
        for start, end in zip(starts, ends, strict=True):
            yield index, start, end


def _heads(tagger: Tagger, corpora: tuple[str, ...] | None) -> list[str]:
    return list(corpora) if corpora else tagger.corpora


def _freeze(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values else None
