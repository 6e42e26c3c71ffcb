"""Server memory (issue 43): the server's ONNX sessions run without the arena and give large runs' memory back.

Whether memory then stays flat is measured by ``benchmarks/soak.py`` (resident memory is too noisy for a unit
test); these tests pin down the mechanism: which sessions lose the arena, when the heap is trimmed, and that
trimming is a no-op where the C library is not glibc.
"""

from __future__ import annotations

import importlib
import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mtbioner.apps import serving
from mtbioner.runtime import heap, onnx_backend
from mtbioner.runtime.heap import HeapReleaser, release_heap
from mtbioner.runtime.onnx_backend import RELEASE_AFTER_TOKENS, OnnxTagger, open_session
from mtbioner.runtime.shipped import resolve_model

CONFIGURE_HEAP = heap.configure_heap


@pytest.fixture(autouse=True)
def restore_process_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``prepare_process`` sets process-wide defaults: put them back so that other tests open ordinary sessions.

    glibc's heap settings cannot be put back, so the test process never makes them (see the subprocess test).
    """
    monkeypatch.setattr(heap, "configure_heap", lambda arenas: True)
    yield
    onnx_backend.set_release_memory(False)
    onnx_backend.set_num_threads(None)


@pytest.fixture(scope="module")
def model_file() -> Path:
    return resolve_model(None) / onnx_backend.ONNX_NAME


def test_only_a_server_process_releases_memory(model_file: Path) -> None:
    """``mtbioner tag`` and evaluation keep ONNX Runtime's arena and never trim; a server process releases its heap
    after large runs and keeps the arena as ``SERVER_ARENA`` says."""
    folder = model_file.parent
    library = OnnxTagger.from_pretrained(folder, threads=1)
    assert not library.release_memory
    assert library.session.get_session_options().enable_cpu_mem_arena
    serving.prepare_process(1, 1, folder)
    served = OnnxTagger.from_pretrained(folder)
    assert served.release_memory
    options = served.session.get_session_options()
    assert options.enable_cpu_mem_arena is serving.SERVER_ARENA
    assert options.intra_op_num_threads == 1  # prepare_process still sets the threads
    assert not open_session(model_file, 1, arena=False).get_session_options().enable_cpu_mem_arena


def test_the_arena_can_be_kept_while_the_heap_is_released(model_file: Path) -> None:
    """The two switches apart: ONNX Runtime's arena kept for the tensors, glibc's free heap still given back."""
    onnx_backend.set_release_memory(True, arena=True)
    kept = OnnxTagger.from_pretrained(model_file.parent, threads=1)
    assert kept.release_memory
    assert kept.session.get_session_options().enable_cpu_mem_arena
    onnx_backend.set_release_memory(False, arena=False)
    plain = OnnxTagger.from_pretrained(model_file.parent, threads=1)
    assert not plain.release_memory
    assert not plain.session.get_session_options().enable_cpu_mem_arena


def test_each_worker_process_sets_up_its_memory(monkeypatch: pytest.MonkeyPatch, model_file: Path) -> None:
    """``--workers N``: the app factory, run in each spawned worker, prepares the process before loading the model."""
    seen = {}

    def fake_create_app(model, settings):
        seen["release"] = onnx_backend._RELEASE_MEMORY
        return "app"

    monkeypatch.setattr(serving, "create_app", fake_create_app)
    spec = {"model": str(model_file.parent), "workers": 2, "threads": 1, "settings": {}}
    monkeypatch.setenv(serving.SETTINGS_ENV, json.dumps(spec))
    assert serving.app_from_environment() == "app"
    assert seen == {"release": True}


def test_the_single_process_server_sets_up_its_memory(monkeypatch: pytest.MonkeyPatch, model_file: Path) -> None:
    """``mtbioner serve`` without ``--workers`` prepares its own process before it loads the model."""
    import uvicorn

    serve_cli = importlib.import_module("mtbioner.cli.serve")  # the module: the package exports its command
    seen = {}

    def fake_create_app(model, settings):
        seen["release"] = onnx_backend._RELEASE_MEMORY
        return "app"

    monkeypatch.setattr(serve_cli, "create_app", fake_create_app)
    monkeypatch.setattr(serve_cli, "check_port", lambda host, port: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.setdefault("served", app))
    serve_cli.serve(str(model_file.parent), port=0, threads=1)
    assert seen == {"release": True, "served": "app"}


class _Session:
    """Stands in for an ONNX Runtime session: emissions of the right shape, nothing computed."""

    def run(self, names: list[str], feed: dict) -> list[np.ndarray]:
        batch, length = feed["input_ids"].shape
        return [np.zeros((batch, length, 3), dtype=np.float32) for _ in names]


def _tagger(release_memory: bool) -> OnnxTagger:
    config = type("Config", (), {"case_features": False, "dictionary_features": False})()
    return OnnxTagger(_Session(), config, None, {"outputs": {"toy": "emissions"}}, release_memory=release_memory)


def _run(tagger: OnnxTagger, batch: int, length: int) -> None:
    ids = np.ones((batch, length), dtype=np.int64)
    tagger.run(ids, ids, ["toy"])


def test_the_heap_is_trimmed_after_a_large_run_not_a_small_one(monkeypatch: pytest.MonkeyPatch) -> None:
    trims = []
    monkeypatch.setattr(heap, "release_heap", lambda: trims.append(1) or True)
    monkeypatch.setattr(heap, "RELEASE_INTERVAL_S", 0.0)
    served = _tagger(release_memory=True)
    served._releaser.timer = _Timer  # the trailing releases: not run here
    _run(served, 1, 12)  # a chatbot's utterance
    _run(served, 4, RELEASE_AFTER_TOKENS // 4 - 1)  # just under the threshold
    assert trims == []
    _run(served, 32, 128)  # a forward batch of a large request
    assert trims == [1]
    _run(served, 4, RELEASE_AFTER_TOKENS // 4)
    assert trims == [1, 1]
    _run(_tagger(release_memory=False), 32, 128)  # with the arena, trimming would free nothing
    assert trims == [1, 1]


def test_release_heap_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    heap._glibc.cache_clear()
    try:
        monkeypatch.setattr(heap.sys, "platform", "darwin")
        assert release_heap() is False
        heap._glibc.cache_clear()
        monkeypatch.setattr(heap.sys, "platform", "linux")
        monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: object())  # a libc without malloc_trim (musl)
        assert release_heap() is False
    finally:
        heap._glibc.cache_clear()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_heap_trims_under_glibc() -> None:
    assert release_heap() is True


def test_a_server_process_sets_up_glibcs_heap(monkeypatch: pytest.MonkeyPatch, model_file: Path) -> None:
    limits = []
    monkeypatch.setattr(heap, "configure_heap", lambda arenas: limits.append(arenas) or True)
    serving.prepare_process(1, 1, model_file.parent)
    assert limits == [serving.SERVER_HEAP_ARENAS]


def test_configure_heap_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    heap._glibc.cache_clear()
    try:
        monkeypatch.setattr(heap.sys, "platform", "darwin")
        assert CONFIGURE_HEAP(2) is False
    finally:
        heap._glibc.cache_clear()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="these mallopt settings are glibc's")
def test_configure_heap_under_glibc() -> None:
    """In a process of its own: the settings hold for the rest of a process's life."""
    code = "from mtbioner.runtime.heap import configure_heap; print(configure_heap(2))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


_THREAD_HEAP = """
import ctypes, sys, threading
from mtbioner.apps.serving import SERVER_HEAP_ARENAS
from mtbioner.runtime.heap import configure_heap, release_heap
arenas = int(sys.argv[1]) if len(sys.argv) > 1 else SERVER_HEAP_ARENAS
assert configure_heap(arenas)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
def work():  # a large run in a model thread: 48 MB in 256 KB blocks, touched, then freed
    blocks = [libc.malloc(256 << 10) for _ in range(192)]
    for b in blocks:
        ctypes.memset(b, 1, 256 << 10)
    for b in blocks:
        libc.free(b)
before = rss()
for _ in range(3):
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
release_heap()
print(round(rss() - before, 1))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's arenas")
def test_what_a_model_thread_freed_goes_back_to_the_system() -> None:
    """glibc's malloc_trim gives back the free top of the main heap but not of a thread's own arena, which a
    server process would then keep for good (issue 43: a replacement worker held 59 MB so, from its first large
    request on). With the server's one arena, 48 MB freed in another thread go back; with two, part stays."""
    run = [sys.executable, "-c", _THREAD_HEAP]
    kept = float(subprocess.run(run, capture_output=True, text=True, check=True).stdout)
    assert kept < 5
    kept_with_two = float(subprocess.run([*run, "2"], capture_output=True, text=True, check=True).stdout)
    assert kept_with_two > 10  # the test can tell: a thread arena's top stays resident


class _Timer:
    """Stands in for ``threading.Timer``: records what it would run, and when."""

    made: list[_Timer] = []

    def __init__(self, wait: float, function) -> None:
        self.wait, self.function, self.daemon, self.started = wait, function, False, False
        _Timer.made.append(self)

    def start(self) -> None:
        self.started = True


def test_releases_are_spaced_out_and_one_follows_the_last_large_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """At once when the last release is old; and once more an interval after the last large run (one timer)."""
    trims, clock = [], [100.0]
    monkeypatch.setattr(heap, "release_heap", lambda: trims.append(clock[0]) or True)
    _Timer.made = []
    release = HeapReleaser(interval=5.0, clock=lambda: clock[0], timer=_Timer)
    release()
    assert trims == [100.0] and len(_Timer.made) == 1
    timer = _Timer.made[0]
    assert (timer.wait, timer.daemon, timer.started) == (5.0, True, True)
    clock[0] = 102.0
    release()  # too soon: the timer will see to it
    clock[0] = 103.0
    release()
    assert trims == [100.0] and len(_Timer.made) == 1
    clock[0] = 105.0
    timer.function()  # fires: the last large run was 2 s ago, so it waits the rest of an interval after it
    assert trims == [100.0] and len(_Timer.made) == 2 and _Timer.made[1].wait == 3.0
    clock[0] = 108.0
    _Timer.made[1].function()  # an interval after the last large run: what it (and its answer) left goes back
    assert trims == [100.0, 108.0]
    clock[0] = 110.0
    release()  # the interval counts from that release: no trim yet, a timer for an interval from now
    assert trims == [100.0, 108.0] and len(_Timer.made) == 3 and _Timer.made[2].wait == 5.0
    clock[0] = 115.0
    _Timer.made[2].function()
    assert trims == [100.0, 108.0, 115.0]
    clock[0] = 130.0
    release()  # idle for long: at once, and the trailing release is set again
    assert trims == [100.0, 108.0, 115.0, 130.0] and len(_Timer.made) == 4


def test_a_served_tagger_releases_after_a_large_run_and_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    trims = []
    monkeypatch.setattr(heap, "release_heap", lambda: trims.append(1) or True)
    served = _tagger(release_memory=True)
    served._releaser.timer = _Timer
    _Timer.made = []
    _run(served, 32, 128)
    assert trims == [1] and len(_Timer.made) == 1  # at once, and a trailing release set
    _run(served, 32, 128)
    assert trims == [1] and len(_Timer.made) == 1  # too soon; the timer already pending covers it
    _run(served, 1, 8)  # a small run: nothing
    assert trims == [1] and len(_Timer.made) == 1


def test_no_request_stays_in_memory_once_answered() -> None:
    # Each lane used to hold its last call, and so its last request's texts and entities, until its next call:
    # tens of MB in a worker after a large request (the soak's creep).
    import asyncio
    import gc

    from mtbioner.apps.batching import MicroBatcher, _Job
    from tests.test_serving import Recorder

    def jobs_alive() -> int:
        gc.collect()
        return sum(type(o) is _Job for o in gc.get_objects())

    async def scenario() -> list[int]:
        batcher = MicroBatcher(Recorder(), window_s=0.0, slice_sentences=2)  # type: ignore[arg-type]
        await batcher.start()
        try:
            alive = []
            for text in (" ".join(f"w{i}" for i in range(9)), "short"):  # the main lane, then the express lane
                assert await batcher.tag([text])
                alive.append(jobs_alive())
            return alive
        finally:
            await batcher.close()

    assert asyncio.run(scenario()) == [0, 0]


def test_a_queued_request_holds_offsets_not_words() -> None:
    # A full queue of 8,000 questions held 14 MB of words (TextSentence and Token objects) in every worker for as
    # long as the queue stayed full; it now holds three integers a sentence and reads the words at their turn.
    import asyncio
    import gc
    import threading

    from mtbioner.apps.batching import MicroBatcher
    from mtbioner.data.text import TextSentence
    from mtbioner.runtime.tagging import Tagger
    from tests.test_serving import Recorder

    class RealSentences(Recorder):
        """Sentences as the real tagger cuts them; the first call waits at a gate."""

        sentence_bounds = staticmethod(Tagger.sentence_bounds)
        sentence = staticmethod(Tagger.sentence)

        def __init__(self) -> None:
            super().__init__()
            self.gate, self.started = threading.Event(), threading.Event()

        def sentence_entities(self, units, heads):
            self.started.set()
            assert self.gate.wait(30), "the test never opened the gate"
            assert all(isinstance(sentence, TextSentence) for _, sentence in units)
            return [[] for _ in units]

    def sentences_alive() -> int:
        gc.collect()
        return sum(type(o) is TextSentence for o in gc.get_objects())

    async def scenario() -> tuple[int, int]:
        tagger = RealSentences()
        batcher = MicroBatcher(tagger, window_s=0.0, max_batch_sentences=8, slice_sentences=8)  # type: ignore[arg-type]
        await batcher.start()
        try:
            request = asyncio.ensure_future(batcher.tag(["Is MYC a gene? " * 500]))
            assert await asyncio.to_thread(tagger.started.wait, 30), "no call started"
            queued = batcher._queued
            alive = sentences_alive()  # the 8 of the call in flight, not the 492 waiting
            tagger.gate.set()
            assert await request == [[]]
            return queued, alive
        finally:
            tagger.gate.set()
            await batcher.close()

    queued, alive = asyncio.run(scenario())
    assert queued == 492
    assert alive <= 8


def test_each_text_is_answered_as_soon_as_its_sentences_are_tagged() -> None:
    # Every head's spans of a whole large request, held until its last sentence was tagged, were what stepped a
    # worker's memory up at its first large request (~28 MB of small objects the Python allocator kept).
    import asyncio

    from mtbioner.apps.batching import MicroBatcher
    from tests.test_serving import Recorder

    class Finishing(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.finished: list[tuple[str, int]] = []  # (text, calls made by then)

        def finish(self, text, found, types=None, min_score=0.0, flat=False, merge_types=True):
            self.finished.append((text, len(self.log)))
            return [f"{text}:{len(found)}"]

    async def scenario(tagger: Finishing, render=None) -> list:
        batcher = MicroBatcher(tagger, window_s=0.0, max_batch_sentences=2, slice_sentences=2)  # type: ignore[arg-type]
        await batcher.start()
        try:
            return await batcher.tag(["a b", "", "c d e", "f"], render=render)
        finally:
            await batcher.close()

    tagger = Finishing()
    assert asyncio.run(scenario(tagger)) == [["a b:2"], [":0"], ["c d e:3"], ["f:1"]]
    assert tagger.calls == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert tagger.finished == [("a b", 1), ("", 1), ("c d e", 3), ("f", 3)]
    # the server's answer is written text by text: only that is kept of a finished text
    rendered = asyncio.run(scenario(Finishing(), render=lambda found: f"<{found[0]}>"))
    assert rendered == ["<a b:2>", "<:0>", "<c d e:3>", "<f:1>"]
