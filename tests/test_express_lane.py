"""The express lane of the server's batcher: short requests tagged beside the main lane's calls, not after them.

Most tests use ``Recorder`` (tests/test_serving.py), a stand-in tagger that records each call's sentences with
the thread (lane) that made it; the last runs the real runtime, ONNX and torch, from two threads at once.
Timing assertions leave wide margins: the suite runs on busy two-core machines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import torch

from mtbioner.apps.batching import MicroBatcher
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.export import export_onnx
from mtbioner.runtime.onnx_backend import OnnxTagger
from mtbioner.runtime.tagging import Tagger
from tests.test_serving import Recorder, _batcher_run

MAIN, EXPRESS = "mtbioner-tagger", "mtbioner-express"


class SlowMain(Recorder):
    """The first main-lane call takes ``delay`` seconds, the others none; ``main_done`` is set when it ends."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.main_delay = delay
        self.main_started = threading.Event()
        self.main_done = threading.Event()

    def sentence_entities(self, units, heads) -> list[list[str]]:
        if not threading.current_thread().name.startswith(MAIN) or self.main_started.is_set():
            return super().sentence_entities(units, heads)
        self.main_started.set()
        time.sleep(self.main_delay)
        found = super().sentence_entities(units, heads)
        self.main_done.set()
        return found


class Gated(Recorder):
    """Calls holding a sentence that starts with ``block`` wait for ``gate``: a lane kept busy for as long as a
    test needs. The heads of each call are recorded too (they come from the requests' ``corpora``)."""

    corpora = ["toy", "other"]

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.blocked = threading.Semaphore(0)  # released once per call that starts waiting
        self.heads: list[tuple[list[str], list[str]]] = []

    def sentence_entities(self, units, heads) -> list[list[str]]:
        words = [sentence for _, sentence in units]
        if any(word.startswith("block") for word in words):
            self.blocked.release()
            assert self.gate.wait(30), "the test never opened the gate"
        self.heads.append((words, list(heads)))
        return super().sentence_entities(units, heads)


async def _until(condition, timeout: float = 10.0) -> None:
    """Wait (on the event loop) until ``condition()`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def _blocked(recorder: Gated, calls: int) -> None:
    """Wait until ``calls`` calls are held at the gate (without blocking the event loop)."""
    for _ in range(calls):
        assert await asyncio.to_thread(recorder.blocked.acquire, True, 10), "no call reached the gate"


# --------------------------------------------------------------------------- latency


def test_a_short_request_is_answered_while_a_slow_main_call_is_in_flight() -> None:
    recorder = SlowMain(delay=1.5)
    large = " ".join(f"w{i}" for i in range(8))
    seen: dict[str, float | bool] = {}

    async def scenario(batcher: MicroBatcher) -> None:
        loop = asyncio.get_running_loop()
        await batcher.tag(["warm"])  # calls overlap once one has succeeded (lazily built state, see batching.py)
        large_request = asyncio.create_task(batcher.tag([large]))
        assert await asyncio.to_thread(recorder.main_started.wait, 10)
        await asyncio.sleep(0.1)  # well inside the main call's 1.5 s
        sent = loop.time()
        assert await batcher.tag(["hello"]) == [["hello"]]
        seen["latency"] = loop.time() - sent
        seen["main call still running"] = not recorder.main_done.is_set()
        assert len((await large_request)[0]) == 8

    _batcher_run(recorder, scenario, max_batch_sentences=64, slice_sentences=4)
    assert seen["main call still running"] is True  # answered before the call in flight ended
    assert seen["latency"] < 0.8  # its own call takes nothing; waiting for the main call would take over 1.3 s
    assert recorder.lane(EXPRESS) == [["warm"], ["hello"]]
    assert recorder.lane(MAIN) == [[f"w{i}" for i in range(4)], [f"w{i}" for i in range(4, 8)]]


# --------------------------------------------------------------------------- batching on the express lane


def test_waiting_short_requests_share_express_calls_but_only_with_the_same_options() -> None:
    """While the express lane is busy, six short requests wait; then each call takes the oldest one and every
    other waiting with its options that fits whole, up to ``max_batch_sentences``: options are never mixed."""
    recorder = Gated()
    requests = {  # words -> options; the oldest (a1) sets the first call's options
        "a1 a1b": {},
        "b1": {"corpora": ["other"]},
        "a2": {},
        "c1": {"types": ["GENE"]},
        "a3 a3b": {},
        "b2": {"corpora": ["other"]},
    }

    async def scenario(batcher: MicroBatcher) -> list:
        blocker = asyncio.create_task(batcher.tag(["block"]))
        await _blocked(recorder, 1)
        waiting = [asyncio.create_task(batcher.tag([text], **options)) for text, options in requests.items()]
        await _until(lambda: batcher.waiting == 1 + len(requests))
        recorder.gate.set()
        return [await blocker] + [await task for task in waiting]

    results = _batcher_run(recorder, scenario, window_s=0.0, max_batch_sentences=4, slice_sentences=2)[0]
    assert results == [[["block"]]] + [[text.split()] for text in requests]
    assert recorder.lane(EXPRESS) == [
        ["block"],
        ["a1", "a1b", "a2"],  # the oldest's options; four sentences at most, and a3's two would not fit
        ["b1", "b2"],  # then the oldest left, with its own options
        ["c1"],
        ["a3", "a3b"],  # whole, in one call
    ]
    both, other = ["toy", "other"], ["other"]
    assert [heads for _, heads in recorder.heads] == [both, both, other, both, both]
    assert recorder.lane(MAIN) == []  # nothing here was larger than a slice


# --------------------------------------------------------------------------- fairness between the lanes


def test_large_requests_progress_while_a_stream_of_short_requests_arrives() -> None:
    """A short request arrives every few milliseconds for as long as the large ones take: the large ones finish
    (no starvation of the main lane) and every short one is answered promptly (nor of the express lane)."""
    recorder = Recorder(delay=0.005)
    large = [" ".join(f"w{k}-{i}" for i in range(60)) for k in range(2)]
    seen: dict[str, object] = {}

    async def scenario(batcher: MicroBatcher) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        large_requests = asyncio.gather(*(batcher.tag([text]) for text in large))

        async def short(k: int) -> float:
            sent = loop.time()
            assert await batcher.tag([f"s{k}"]) == [[f"s{k}"]]
            return loop.time() - sent

        shorts: list[asyncio.Task] = []
        while not large_requests.done() and loop.time() - started < 30:
            shorts.append(asyncio.create_task(short(len(shorts))))
            await asyncio.sleep(0.003)
        seen["large done"] = large_requests.done()
        seen["large"] = await large_requests
        seen["latencies"] = await asyncio.gather(*shorts)

    _batcher_run(recorder, scenario, window_s=0.0, max_batch_sentences=64, slice_sentences=4)
    assert seen["large done"] is True  # within 30 s (15 calls of 5 ms), while short requests kept coming
    assert seen["large"] == [[text.split()] for text in large]
    latencies = seen["latencies"]
    assert isinstance(latencies, list) and len(latencies) >= 5
    assert max(latencies) < 2.0  # a few express calls of 5 ms each
    assert all(w.startswith("w") for call in recorder.lane(MAIN) for w in call)


# --------------------------------------------------------------------------- bookkeeping


def test_every_sentence_is_tagged_once_in_order_across_both_lanes_and_the_counters_agree() -> None:
    recorder = Recorder(delay=0.002)
    texts = [
        ["one"],
        ["two words", "and three more"],  # five sentences: main lane
        [" ".join(f"long{i}" for i in range(23)), "tail"],
        ["x y"],
        ["", "lonely"],
        [" ".join(f"mid{i}" for i in range(5))],
    ] + [[f"u{k}"] for k in range(20)]

    async def scenario(batcher: MicroBatcher) -> dict:
        results = await asyncio.gather(*(batcher.tag(request) for request in texts))
        assert list(results) == [[text.split() for text in request] for request in texts]
        return {"queued": batcher.queued_sentences, "waiting": batcher.waiting, "stats": batcher.stats}

    state = _batcher_run(recorder, scenario, window_s=0.01, max_batch_sentences=8, slice_sentences=4)[0]
    words = [w for request in texts for text in request for w in text.split()]
    assert sorted(w for call in recorder.calls for w in call) == sorted(words)  # each once
    assert state["queued"] == 0 and state["waiting"] == 0
    stats = state["stats"]
    express, main = recorder.lane(EXPRESS), recorder.lane(MAIN)
    assert stats.calls == len(express) + len(main) and stats.express_calls == len(express) > 0 and main
    assert stats.sentences == len(words) and stats.largest_call == max(len(call) for call in recorder.calls) <= 8
    assert stats.requests == len(texts) and stats.texts == sum(len(request) for request in texts)
    assert all(len([w for w in call if w.startswith("long")]) <= 4 for call in main)  # a slice per call
    assert stats.sentences_per_s > 0


def test_the_rate_behind_retry_after_is_the_main_lanes() -> None:
    """Utterances' calls are mostly per-call overhead: counted in their sentences per second they would make a
    full queue (which the main lane drains) look many times slower to drain than it is."""

    async def scenario(batcher: MicroBatcher) -> tuple[float, float]:
        await asyncio.gather(*(batcher.tag([f"u{k}"]) for k in range(5)))
        after_short = batcher.stats.sentences_per_s
        await batcher.tag([" ".join(f"w{i}" for i in range(12))])
        return after_short, batcher.stats.sentences_per_s

    [(after_short, after_large)] = _batcher_run(Recorder(delay=0.002), scenario, slice_sentences=4)
    assert after_short == 0.0 and after_large > 0


def test_a_client_that_gives_up_leaves_no_work_in_either_lane() -> None:
    recorder = Gated()

    async def scenario(batcher: MicroBatcher) -> dict:
        await batcher.tag(["warm"])  # calls overlap once one has succeeded (see batching.py)
        busy_main = asyncio.create_task(batcher.tag([" ".join(["block-main"] + [f"m{i}" for i in range(5)])]))
        busy_express = asyncio.create_task(batcher.tag(["block-express"]))
        await _blocked(recorder, 2)  # both lanes are in a call; what comes now waits
        gone_main = asyncio.create_task(batcher.tag([" ".join(f"g{i}" for i in range(9))]))
        gone_express = asyncio.create_task(batcher.tag(["gone-short"]))
        await _until(lambda: batcher.waiting == 4)
        queued = batcher.queued_sentences
        for task in (gone_main, gone_express):
            task.cancel()
        await asyncio.gather(gone_main, gone_express, return_exceptions=True)
        after = (batcher.queued_sentences, batcher.waiting)
        recorder.gate.set()
        await asyncio.gather(busy_main, busy_express)
        return {"queued": queued, "after": after, "end": (batcher.queued_sentences, batcher.waiting)}

    state = _batcher_run(recorder, scenario, window_s=0.0, slice_sentences=4)[0]
    assert state["queued"] == 2 + 9 + 1  # busy_main's second slice and the two waiting requests
    assert state["after"] == (2, 2)  # only the busy requests are left
    assert state["end"] == (0, 0)
    tagged = {w for call in recorder.calls for w in call}
    assert not tagged & ({f"g{i}" for i in range(9)} | {"gone-short"})


def test_close_fails_the_requests_of_both_lanes_and_leaves_no_thread_running() -> None:
    recorder = Gated()
    before = set(threading.enumerate())

    async def scenario() -> tuple[list, list[str], int, int]:
        batcher = MicroBatcher(recorder, window_s=0.0, slice_sentences=4)  # type: ignore[arg-type]
        await batcher.start()
        await batcher.tag(["warm"])  # calls overlap once one has succeeded (see batching.py)
        in_flight = [" ".join(["block-main"] + [f"m{i}" for i in range(5)]), "block-express"]
        requests = [asyncio.create_task(batcher.tag([text])) for text in in_flight]
        await _blocked(recorder, 2)  # both lanes in a call; then one request waiting in each
        waiting = ["a request for the main lane", "short"]
        requests += [asyncio.create_task(batcher.tag([text])) for text in waiting]
        await _until(lambda: batcher.waiting == 4)
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0.1)  # the lanes have stopped; the calls in flight are still held at the gate
        assert not closing.done()  # close() waits for them: no thread outlives the batcher
        recorder.gate.set()
        await closing
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
        with pytest.raises(RuntimeError, match="not running"):
            await batcher.tag(["late"])
        threads = [t.name for t in threading.enumerate() if t not in before and t.name.startswith("mtbioner-")]
        return outcomes, threads, batcher.queued_sentences, batcher.waiting

    outcomes, threads, queued, waiting = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) and str(o) == "server shutting down" for o in outcomes), outcomes
    assert threads == [] and queued == 0 and waiting == 0


# --------------------------------------------------------------------------- the real runtime from two threads


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved two-head tiny model whose heads find many entities (large random head weights, one a CRF)."""
    from mtbioner.model.heads import build_head

    labels = {"toy_gene": ["B-GENE", "I-GENE", "O"], "toy_chem": ["B-CHEM", "I-CHEM", "O"]}
    torch.manual_seed(5)
    model = MultiTaskTagger.from_encoder(labels, tiny_encoder, max_length=16).eval()
    model.config.corpora["toy_chem"].head = "crf"
    model.heads["toy_chem"] = build_head("crf", 32, labels["toy_chem"])
    with torch.no_grad():
        for param in model.heads.parameters():
            param.normal_(0, 2.0)
    folder = tmp_path_factory.mktemp("express") / "model"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def int8_dir(model_dir: Path) -> Path:
    out = model_dir.parent / "int8"
    export_onnx(model_dir, out, "int8")
    return out


@pytest.mark.parametrize("backend", ["onnx-int8", "torch"])
def test_two_threads_tagging_at_once_give_the_single_threaded_results(
    backend: str, model_dir: Path, int8_dir: Path
) -> None:
    """What the two lanes do: one thread tags large batches while the other tags one sentence at a time, on the
    same ``Tagger`` (one ONNX Runtime session with one intra-op thread as served, or one torch model in inference
    mode; one tokenizer). Every call gives exactly what the same call gave alone."""
    if backend == "torch":
        tagger = Tagger(MultiTaskTagger.from_pretrained(model_dir))
    else:
        tagger = Tagger(OnnxTagger.from_pretrained(int8_dir, threads=1))
    words = "MYC aspirin binds BRCA1 protein expression the of in cancer cells cisplatin KRAS mice reduced".split()
    texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(3 + i % 17)) + "." for i in range(48)]
    units = [(text, sentence) for text in texts for sentence in tagger.split(text)]
    heads = tagger.corpora
    whole = tagger.sentence_entities(units, heads)  # alone: the reference (and the lazily built state, built)
    single = [tagger.sentence_entities([unit], heads) for unit in units]
    assert sum(len(found) for found in whole) > 20  # the heads do find things: the comparison means something
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def main_lane() -> None:
        barrier.wait(10)
        for _ in range(15):
            assert tagger.sentence_entities(units, heads) == whole

    def express_lane() -> None:
        barrier.wait(10)
        for _ in range(6):
            for unit, expected in zip(units, single, strict=True):
                assert tagger.sentence_entities([unit], heads) == expected

    def run(target) -> None:
        try:
            target()
        except BaseException as exc:  # re-raised below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(target,)) for target in (main_lane, express_lane)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
