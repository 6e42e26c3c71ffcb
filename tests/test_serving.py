"""The HTTP server: answers, status codes for every bad input, limits, batching, concurrency, the CLI."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mtbioner.apps.serving import MicroBatcher, ServeSettings, create_app, running, set_threads
from mtbioner.data.corpus import read_corpus
from mtbioner.model.encoding import collate, encode
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.tagging import Tagger
from tests.test_fast_tokenizer import run_without_torch

SENTENCE = "Treatment with sodium chloride reduced MYC binding, and aspirin lowered KRAS levels in mice."
CORPORA = ("toy_gene", "toy_chem")


def fit(model: MultiTaskTagger, corpora: list, steps: int = 120) -> None:
    """Fine-tune on the toy corpora, all sentences in one batch per corpus (a few seconds).

    ``mtbioner.learn.training.train`` would do the same with evaluation and checkpoints each
    epoch, which takes minutes on a busy CPU; the server tests need only a model that finds
    the toy genes and chemicals.
    """
    batches = {}
    for corpus in corpora:
        sentences = corpus.sentences("train") + corpus.sentences("devel")
        labels = model.config.corpora[corpus.name].labels
        windows = encode(
            model.tokenizer,
            [s.tokens for s in sentences],
            model.config.max_length,
            tags=[s.tags for s in sentences],
            label2id={label: i for i, label in enumerate(labels)},
        )
        batches[corpus.name] = collate(windows, model.tokenizer.pad_token_id or 0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention (10x slower on a busy CPU)
    try:
        model.train()
        for _ in range(steps):
            optimiser.zero_grad()
            loss = sum(model(b.input_ids, b.attention_mask, name, b.labels).loss for name, b in batches.items())
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
        model.eval()


def toy_model_dir(tiny_encoder: Path, toy_dir: Path, base: Path) -> Path:
    """A tiny model that finds the toy corpora's genes and chemicals, saved once per test session."""
    folder = base / "toy-tagger"
    if not (folder / "config.json").is_file():
        corpora = [read_corpus(toy_dir / name) for name in CORPORA]
        torch.manual_seed(3)
        model = MultiTaskTagger.from_encoder({c.name: c.labels for c in corpora}, tiny_encoder, max_length=32)
        fit(model, corpora)
        model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def toy_model(tiny_encoder: Path, toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy_model_dir(tiny_encoder, toy_dir, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tagger(toy_model: Path) -> Tagger:
    return Tagger.load(toy_model)


SETTINGS = ServeSettings(max_texts=8, max_bytes=4000, batch_window_ms=5)


@pytest.fixture(scope="module")
def client(tagger: Tagger):
    from fastapi.testclient import TestClient

    with TestClient(create_app(tagger, SETTINGS), raise_server_exceptions=False) as test_client:
        yield test_client


def same(api: list[dict], direct: list[dict]) -> None:
    """Equal entities; scores within rounding (batch padding may move the fourth decimal)."""
    assert [(e["start"], e["end"], e["text"], e["type"], e["corpus"]) for e in api] == [
        (e["start"], e["end"], e["text"], e["type"], e["corpus"]) for e in direct
    ]
    for a, d in zip(api, direct, strict=True):
        assert a["score"] == pytest.approx(d["score"], abs=2e-4)


# --------------------------------------------------------------------------- answers


def test_toy_model_finds_entities(tagger: Tagger) -> None:
    found = {(e["text"], e["type"]) for e in tagger(SENTENCE, flat=True, merge_types=False)}  # the heads' own types
    assert {("MYC", "GENE"), ("KRAS", "GENE"), ("aspirin", "CHEM")} <= found


def test_one_text(client, tagger: Tagger) -> None:
    response = client.post("/v1/tag", json={"text": SENTENCE})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["entities"] and body["entities"]
    same(body["entities"], tagger(SENTENCE))
    for e in body["entities"]:
        assert SENTENCE[e["start"] : e["end"]] == e["text"]


def test_many_texts_answered_in_order(client, tagger: Tagger) -> None:
    texts = [SENTENCE, "", "MYC", "aspirin and HER2 were studied .\n\nSecond paragraph: KRAS.", "   "]
    response = client.post("/v1/tag", json={"texts": texts})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(texts)
    for result, direct in zip(results, tagger.tag_batch(texts), strict=True):
        same(result["entities"], direct)
    assert client.post("/v1/tag", json={"texts": []}).json() == {"results": []}
    assert client.post("/v1/tag", json={"texts": ["", "  "]}).json() == {"results": [{"entities": []}] * 2}
    assert client.post("/v1/tag", json={"text": " "}).json() == {"entities": []}


@pytest.mark.parametrize(
    "options",
    [
        {"types": ["CHEM"]},
        {"corpora": ["toy_gene"]},
        {"min_score": 0.9},
        {"flat": True},
        {"types": ["GENE"], "flat": True},
    ],
)
def test_options_as_in_the_tagging_api(client, tagger: Tagger, options: dict) -> None:
    response = client.post("/v1/tag", json={"text": SENTENCE, **options})
    assert response.status_code == 200
    same(response.json()["entities"], tagger(SENTENCE, **options))


def test_unicode_offsets_are_characters(client) -> None:
    text = "Ünïcödé 🧬 aspirin — MYC"
    entities = client.post("/v1/tag", json={"text": text}).json()["entities"]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)


def test_model_health_and_docs(client, tagger: Tagger) -> None:
    info = client.get("/v1/model").json()
    assert set(info["corpora"]) == set(CORPORA)
    assert info["corpora"]["toy_chem"]["entity_types"] == ["CHEM"]
    assert info["entity_types"] == ["CHEM", "GENE"]
    assert info["encoder"]["model_type"] == "bert" and info["encoder"]["layers"] == 2
    assert info["version"]["server"] and info["version"]["format"] == 1
    assert info["limits"] == {"max_texts": 8, "max_bytes": 4000, "max_request_sentences": 50000}
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ready"
    assert health.json()["batching"]["calls"] >= 1 and health.json()["max_queue_sentences"] == 100_000
    schema = client.get("/openapi.json").json()
    assert "/v1/tag" in schema["paths"] and "/v1/model" in schema["paths"]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/"])
def test_pages_load_nothing_from_outside(client, path: str) -> None:
    import re

    page = client.get(path)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets, path
    for url in assets:
        if url.startswith("data:"):
            continue
        assert not url.startswith(("http:", "https:", "//")), url
        absolute = url if url.startswith("/") else "/" + url
        assert client.get(absolute).status_code == 200, url


def test_page_assets_reference_no_cdn(client) -> None:
    for name in ("index.html", "app.js", "style.css"):
        text = client.get(f"/static/{name}").text.replace("http://www.w3.org/2000/svg", "")  # a namespace
        assert "http://" not in text and "https://" not in text, name
        assert "@import" not in text and "url(http" not in text


# --------------------------------------------------------------------------- bad input


def post_raw(client, body: bytes | str, content_type: str = "application/json"):
    return client.post("/v1/tag", content=body, headers={"Content-Type": content_type})


BAD = {
    "malformed JSON": b'{"text": "unterminated',
    "not JSON at all": b"MYC binds aspirin",
    "empty body": b"",
    "a list": b'["MYC"]',
    "a string": b'"MYC"',
    "no text": b"{}",
    "both text and texts": b'{"text": "a", "texts": ["b"]}',
    "text is a number": b'{"text": 5}',
    "text is null": b'{"text": null}',
    "texts is a string": b'{"texts": "MYC"}',
    "texts holds a number": b'{"texts": ["ok", 7]}',
    "unknown field": b'{"text": "a", "lang": "en"}',
    "min_score above 1": b'{"text": "a", "min_score": 1.5}',
    "min_score negative": b'{"text": "a", "min_score": -0.1}',
    "min_score a word": b'{"text": "a", "min_score": "high"}',
    "flat a word": b'{"text": "a", "flat": "maybe"}',
    "min_score true": b'{"text": "a", "min_score": true}',  # was read as 1.0: every entity dropped
    "flat a string that reads as a boolean": b'{"text": "a", "flat": "yes"}',
    "merge_types a number": b'{"text": "a", "merge_types": 0}',
    "types a string": b'{"text": "a", "types": "GENE"}',
    "lone surrogate": b'{"text": "MYC \\ud800 binds"}',
    "invalid UTF-8": b'{"text": "MYC \xff binds"}',
    "NaN score": b'{"text": "a", "min_score": NaN}',
    "deep nesting": b"[" * 1900 + b"]" * 1900,
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_422_json(client, name: str) -> None:
    response = post_raw(client, BAD[name])
    assert response.status_code == 422, (name, response.text)
    assert "detail" in response.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": "a", "types": ["PROTEIN"]}, "unknown entity types ['PROTEIN']"),
        ({"texts": ["a"], "corpora": ["BC5CDR"]}, "unknown corpora ['BC5CDR']"),
        ({"text": "a", "types": ["Gene"], "merge_types": False}, "unknown entity types ['Gene'] in the per-corpus"),
    ],
)
def test_tagger_request_errors_are_422_with_the_message(client, body: dict, message: str) -> None:
    response = client.post("/v1/tag", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_a_lone_surrogate_names_the_text_it_is_in(client) -> None:
    response = post_raw(client, b'{"texts": ["fine", "MYC \\ud800 binds"]}')
    assert response.status_code == 422 and "texts[1] is not valid Unicode" in response.text, response.text


def test_wrong_method_and_path_are_json(client) -> None:
    assert client.get("/v1/tag").status_code == 405
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


def test_text_plain_content_type(client) -> None:
    response = post_raw(client, json.dumps({"text": "MYC"}), "text/plain")
    assert response.status_code in (200, 422)  # never a 500
    assert response.json()


# --------------------------------------------------------------------------- limits


def test_too_many_texts_is_413(client) -> None:
    assert client.post("/v1/tag", json={"texts": ["a"] * 8}).status_code == 200
    response = client.post("/v1/tag", json={"texts": ["a"] * 9})
    assert response.status_code == 413
    assert "9 texts" in response.json()["detail"] and "8" in response.json()["detail"]


def test_too_many_bytes_is_413(client) -> None:
    fits = json.dumps({"text": "a" * 3900})
    assert len(fits) <= 4000 and post_raw(client, fits).status_code == 200
    response = post_raw(client, json.dumps({"text": "a" * 4000}))
    assert response.status_code == 413
    assert "4000 bytes" in response.json()["detail"]


def test_too_many_bytes_without_content_length_is_413(client) -> None:
    def chunks():
        yield b'{"text": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    response = client.post("/v1/tag", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_huge_body_gets_413_not_a_dropped_connection(tagger: Tagger) -> None:
    import httpx

    app = create_app(tagger, ServeSettings(max_bytes=1000))
    with running(app) as url:
        body = b'{"text": "' + b"a" * 2_000_000 + b'"}'  # over 64 times the limit: answered before reading
        response = httpx.post(f"{url}/v1/tag", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert httpx.get(f"{url}/health").status_code == 200


def test_settings_are_checked() -> None:
    from mtbioner.errors import MtbionerError

    with pytest.raises(MtbionerError, match="max_texts"):
        ServeSettings(max_texts=0)
    with pytest.raises(MtbionerError, match="batch_window_ms"):
        ServeSettings(batch_window_ms=-1)


# --------------------------------------------------------------------------- concurrency and batching


def test_a_served_folder_runs_the_servers_batch_size(toy_model: Path) -> None:
    """Small batches in the server (SERVER_BATCH_SIZE says why), any other on request; the library keeps 32."""
    from mtbioner.apps.serving import SERVER_BATCH_SIZE
    from mtbioner.constants import INFERENCE_BATCH_SIZE

    assert SERVER_BATCH_SIZE < INFERENCE_BATCH_SIZE
    assert create_app(toy_model).state.tagger.batch_size == SERVER_BATCH_SIZE
    assert create_app(toy_model, ServeSettings(batch_size=3)).state.tagger.batch_size == 3
    assert Tagger.load(toy_model).batch_size == INFERENCE_BATCH_SIZE


def test_fifty_concurrent_requests_all_answered_correctly(tagger: Tagger) -> None:
    import httpx

    words = ["MYC", "aspirin", "KRAS", "sodium chloride", "HER2", "mice", "hydrogen peroxide", "PTEN"]
    texts = [f"{words[i % 8]} and {words[(i * 3) % 8]} were measured in sample {i} ." for i in range(50)]
    expected = tagger.tag_batch(texts)
    app = create_app(tagger, ServeSettings(batch_window_ms=20))

    async def load(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            return await asyncio.gather(*(http.post("/v1/tag", json={"text": t}) for t in texts))

    with running(app) as url:
        responses = asyncio.run(load(url))
        stats = httpx.get(f"{url}/health").json()["batching"]
    assert [r.status_code for r in responses] == [200] * 50
    for response, direct in zip(responses, expected, strict=True):
        same(response.json()["entities"], direct)
    assert stats["requests"] == 50
    assert stats["calls"] < 50 and stats["largest_call"] > 1  # requests were tagged together


def test_event_loop_answers_while_the_model_works(toy_model: Path) -> None:
    import httpx

    slow = Tagger.load(toy_model)
    inner = slow.sentence_entities

    def sentence_entities(*args, **kwargs):
        time.sleep(1.5)
        return inner(*args, **kwargs)

    slow.sentence_entities = sentence_entities  # type: ignore[method-assign]
    with running(create_app(slow)) as url:
        worker = threading.Thread(target=httpx.post, args=(f"{url}/v1/tag",), kwargs={"json": {"text": "MYC"}})
        worker.start()
        time.sleep(0.2)
        started = time.perf_counter()
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert time.perf_counter() - started < 1.0
        worker.join()


def test_bad_options_fail_alone_among_concurrent_requests(tagger: Tagger) -> None:
    import httpx

    app = create_app(tagger, ServeSettings(batch_window_ms=50))
    bodies = [
        {"text": "MYC"},
        {"text": "MYC", "types": ["NOPE"]},
        {"text": "aspirin"},
        {"text": "x", "corpora": ["no"]},
    ]

    async def load(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            responses = await asyncio.gather(*(http.post("/v1/tag", json=b) for b in bodies))
            return [r.status_code for r in responses]

    with running(app) as url:
        assert asyncio.run(load(url)) == [200, 422, 200, 422]


class Recorder:
    """A stand-in tagger: every word of a text is one sentence; each call's sentences are recorded with the
    name of the thread that made it (``mtbioner-tagger``: the main lane, ``mtbioner-express``: the express lane)."""

    corpora = ["toy"]

    def __init__(self, delay: float = 0.0) -> None:
        self.log: list[tuple[str, list[str]]] = []  # one append per call: atomic, whichever lane's thread calls
        self.delay = delay

    @property
    def calls(self) -> list[list[str]]:
        """Every call's sentences, in the order the calls ended."""
        return [call for _, call in self.log]

    def lane(self, prefix: str) -> list[list[str]]:
        """The calls made on threads whose names start with ``prefix``: one lane's, in order."""
        return [call for thread, call in self.log if thread.startswith(prefix)]

    def check_options(self, texts, types, corpora, min_score, merge_types=True) -> list[str]:
        return ["toy"]

    @staticmethod
    def sentence_bounds(text: str) -> tuple[list[int], list[int]]:
        """Every word is a sentence."""
        spans = [match.span() for match in re.finditer(r"\S+", text)]
        return [start for start, _ in spans], [end for _, end in spans]

    @staticmethod
    def sentence(text: str, start: int, end: int) -> str:
        return text[start:end]

    def sentence_entities(self, units, heads) -> list[list[str]]:
        time.sleep(self.delay)
        self.log.append((threading.current_thread().name, [sentence for _, sentence in units]))
        return [[sentence] for _, sentence in units]

    @staticmethod
    def finish(text, found, types=None, min_score=0.0, flat=False, merge_types=True) -> list[str]:
        return list(found)


def _batcher_run(recorder: Recorder, *requests, **settings) -> list:
    async def scenario() -> list:
        batcher = MicroBatcher(recorder, **settings)  # type: ignore[arg-type]
        await batcher.start()
        try:
            return await asyncio.gather(*(request(batcher) for request in requests))
        finally:
            await batcher.close()

    return asyncio.run(scenario())


def test_batcher_groups_by_options_and_respects_the_caps() -> None:
    recorder = Recorder()
    results = _batcher_run(
        recorder,
        lambda b: b.tag(["a b", "c"]),
        lambda b: b.tag(["d"], types=["GENE"]),
        lambda b: b.tag(["e f g"]),
        lambda b: b.tag(["h"]),
        lambda b: b.tag(["i"], types=["GENE"]),
        window_s=0.05,
        max_batch_sentences=4,
        slice_sentences=2,
    )
    assert results == [[["a", "b"], ["c"]], [["d"]], [["e", "f", "g"]], [["h"]], [["i"]]]
    # requests of one slice or less: the express lane, whole, those with the oldest one's options together
    assert recorder.lane("mtbioner-express") == [["d", "i"], ["h"]]
    # larger ones: the main lane, at most two each per call, four in all, round-robin
    assert recorder.lane("mtbioner-tagger") == [["a", "b", "e", "f"], ["g", "c"]]
    assert all(len(call) <= 4 for call in recorder.calls)
    assert sorted(w for call in recorder.calls for w in call) == list("abcdefghi")  # each sentence once


def test_one_long_sentence_takes_the_main_lane() -> None:
    # 3,000 characters with no sentence end weigh three sentences: more than a slice of two, so not express
    recorder = Recorder()
    _batcher_run(recorder, lambda b: b.tag(["x" * 3_000]), lambda b: b.tag(["short"]), slice_sentences=2)
    assert recorder.lane("mtbioner-tagger") == [["x" * 3_000]] and recorder.lane("mtbioner-express") == [["short"]]


def test_a_small_request_is_not_starved_by_a_large_one() -> None:
    recorder = Recorder(delay=0.01)
    large = " ".join(f"w{i}" for i in range(400))

    async def small_later(batcher: MicroBatcher):
        await asyncio.sleep(0.1)  # the large request is being tagged by now
        return await batcher.tag(["hello"])

    results = _batcher_run(
        recorder, lambda b: b.tag([large]), small_later, window_s=0.0, max_batch_sentences=64, slice_sentences=8
    )
    assert results[1] == [["hello"]]
    assert len(results[0][0]) == 400
    small_call = next(i for i, call in enumerate(recorder.calls) if "hello" in call)
    assert small_call < 25  # ~10 calls in 0.1 s; without slicing it would come after all 50
    assert recorder.calls[small_call] == ["hello"] and len(recorder.calls) == 51  # a call of its own
    assert recorder.lane("mtbioner-express") == [["hello"]]  # on the express lane, beside the large one's calls


def test_a_stream_of_small_requests_does_not_starve_a_large_one() -> None:
    """Small requests have a lane of their own: the main lane's calls are the large request's slices, one after
    another, however many small ones arrive (tests/test_express_lane.py times the same on a longer stream)."""
    recorder = Recorder(delay=0.005)
    large = " ".join(f"w{i}" for i in range(40))

    async def small(batcher: MicroBatcher, k: int):
        await asyncio.sleep(0.002 * k)  # one after another, so one is nearly always waiting
        return await batcher.tag([f"s{k}"])

    requests = [lambda b: b.tag([large])] + [lambda b, k=k: small(b, k) for k in range(60)]
    results = _batcher_run(recorder, *requests, window_s=0.0, max_batch_sentences=64, slice_sentences=4)
    assert recorder.lane("mtbioner-tagger") == [[f"w{i}" for i in range(j, j + 4)] for j in range(0, 40, 4)]
    assert all(w.startswith("s") for call in recorder.lane("mtbioner-express") for w in call)
    assert results[1:] == [[[f"s{k}"]] for k in range(60)]


def test_work_limits_raise_413_and_503_errors() -> None:
    from mtbioner.apps.batching import Overloaded, TooMuchWork

    recorder = Recorder(delay=0.05)

    async def too_big(batcher: MicroBatcher):
        with pytest.raises(TooMuchWork, match=r"11 sentences in one request \(.*\); one request may hold 10"):
            await batcher.tag([" ".join("x" * 11)])
        # 12,000 characters without a sentence end: one sentence, but twelve sentences' worth of work
        with pytest.raises(TooMuchWork, match="12 sentences in one request"):
            await batcher.tag(["x" * 12_000])

    async def queue_full(batcher: MicroBatcher):
        await asyncio.sleep(0.02)
        with pytest.raises(Overloaded, match="sentences are queued") as raised:
            await batcher.tag(["a b c d e f"])
        assert raised.value.retry_after >= 1

    _batcher_run(
        recorder,
        lambda b: b.tag([" ".join("y" * 10)]),
        too_big,
        queue_full,
        max_request_sentences=10,
        max_queue_sentences=12,
        slice_sentences=1,
    )


def test_http_503_carries_retry_after(tagger: Tagger) -> None:
    import httpx

    app = create_app(tagger, ServeSettings(max_queue_sentences=1, max_request_sentences=5))
    with running(app) as url:
        too_many = httpx.post(f"{url}/v1/tag", json={"text": "MYC rose. " * 6})
        assert too_many.status_code == 413 and "one request may hold 5" in too_many.json()["detail"]
        app.state.batcher._queued = 1  # as if another request's sentence were waiting
        try:
            busy = httpx.post(f"{url}/v1/tag", json={"text": "MYC rose."})
        finally:
            app.state.batcher._queued = 0
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
        assert httpx.post(f"{url}/v1/tag", json={"text": "MYC rose."}).status_code == 200


def test_health_says_not_ready_with_retry_after_while_the_queue_is_full(tagger: Tagger) -> None:
    import httpx

    app = create_app(tagger, ServeSettings(max_queue_sentences=3))
    with running(app) as url:
        assert httpx.get(f"{url}/health").json()["status"] == "ready"
        app.state.batcher._queued = 3  # as if other requests' sentences were waiting
        try:
            full = httpx.get(f"{url}/health")
            refused = httpx.post(f"{url}/v1/tag", json={"text": "MYC rose."})
        finally:
            app.state.batcher._queued = 0
        ready = httpx.get(f"{url}/health")
    assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
    assert full.json()["status"] == "not ready" and "queue is full: 3 sentences queued" in full.json()["reason"]
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert "the queue is full" in refused.json()["detail"]  # refused before its text was split
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and "reason" not in ready.json()


def test_not_ready_before_start_up_is_503_not_500(tagger: Tagger) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(create_app(tagger))  # no ``with``: the lifespan (the batcher) never starts
    health = client.get("/health")
    assert health.status_code == 503 and health.headers["retry-after"] == "1"
    assert health.json()["reason"] == "the server is starting or shutting down"
    tagged = client.post("/v1/tag", json={"text": "MYC"})
    assert tagged.status_code == 503 and tagged.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("serving", "queued", "rate", "expected"),
    [
        (True, 0, 0.0, (None, 0)),
        (True, 9, 0.0, (None, 0)),
        (True, 10, 0.0, ("the queue is full: 10 sentences queued, the limit is 10 (--max-queue-sentences)", 1)),
        (True, 310, 100.0, ("the queue is full: 310 sentences queued, the limit is 10 (--max-queue-sentences)", 4)),
        (False, 0, 0.0, ("the server is starting or shutting down", 1)),
    ],
)
def test_readiness(serving: bool, queued: int, rate: float, expected: tuple) -> None:
    from mtbioner.apps.serving import readiness

    batcher = MicroBatcher(Recorder(), max_queue_sentences=10)  # type: ignore[arg-type]
    batcher._queued = queued
    batcher.stats.sentences_per_s = rate
    assert readiness(batcher, serving) == expected


def test_long_texts_cut_into_slices_give_the_same_entities(tagger: Tagger) -> None:
    import httpx

    text = " ".join(f"MYC and aspirin were measured in sample {i}." for i in range(30))
    expected = tagger.tag_batch([text, "KRAS binds HER2."])
    with running(create_app(tagger, ServeSettings(slice_sentences=2, max_batch_sentences=4))) as url:
        response = httpx.post(f"{url}/v1/tag", json={"texts": [text, "KRAS binds HER2."]}, timeout=120)
        stats = httpx.get(f"{url}/health").json()["batching"]
    assert response.status_code == 200
    for got, direct in zip(response.json()["results"], expected, strict=True):
        same(got["entities"], direct)
    assert stats["calls"] >= 8 and stats["largest_call"] <= 4  # 31 sentences, at most 4 per call


# --------------------------------------------------------------------------- the command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_command_serves_and_logs_one_line_per_request(toy_model: Path) -> None:
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mtbioner", "serve", str(toy_model), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
        assert httpx.post(f"{url}/v1/tag", json={"text": "MYC binds aspirin"}).status_code == 200
        assert httpx.post(f"{url}/v1/tag", json={"texts": ["x"] * 100}).status_code == 413
        assert "<textarea" in httpx.get(url).text
    finally:
        server.terminate()
        _, log = server.communicate(timeout=60)
    lines = [line for line in log.splitlines() if "/v1/tag" in line]
    assert len(lines) == 2, log
    assert '"POST /v1/tag" 200' in lines[0] and '"POST /v1/tag" 413' in lines[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing-model"], "missing-model: no such model folder"),
        (["{model}", "--max-texts", "0"], "max_texts must be at least 1"),
        (["{model}", "--workers", "0"], "--workers must be at least 1"),
        (["{model}", "--port", "{taken}"], "cannot listen on 127.0.0.1:{taken}"),
    ],
)
def test_serve_command_errors_are_one_line(
    args: list[str], message: str, toy_model: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from mtbioner import cli

    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        argv = [a.format(model=toy_model, taken=port) for a in args]
        monkeypatch.setattr(sys, "argv", ["mtbioner", "serve", *argv])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message.format(taken=port) in err


@pytest.mark.parametrize(("version", "supervised"), [("0.29.0", False), ("0.30.0", True), ("0.55.0", True)])
def test_workers_need_uvicorns_supervisor(version: str, supervised: bool) -> None:
    from mtbioner.cli.serve import _check_supervisor
    from mtbioner.errors import MtbionerError

    if supervised:
        _check_supervisor(version)
    else:
        with pytest.raises(MtbionerError, match="needs uvicorn >= 0.30"):
            _check_supervisor(version)


def test_serving_an_exported_model_uses_threads_for_onnx_and_never_imports_torch() -> None:
    """``--threads`` governs the ONNX Runtime session of an exported model, and torch stays out of the process."""
    script = (
        "from fastapi.testclient import TestClient\n"
        "from mtbioner.apps.serving import ServeSettings, create_app, set_threads\n"
        "from mtbioner.runtime.shipped import resolve_model\n"
        "folder = resolve_model(None)\n"
        "set_threads(1, 1, folder)\n"
        "app = create_app(folder, ServeSettings())\n"
        "with TestClient(app) as client:\n"
        "    entities = client.post('/v1/tag', json={'text': 'BRCA1 mutations cause breast cancer.'}).json()\n"
        "assert entities['entities'], entities\n"
        "from mtbioner.runtime import onnx_backend\n"
        "session = onnx_backend.open_session(folder / onnx_backend.ONNX_NAME)\n"
        "assert session.get_session_options().intra_op_num_threads == 1\n"
    )
    run_without_torch(script)


def test_set_threads_sets_torch_threads_for_a_torch_model(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        set_threads(1, 1, tmp_path)  # not an exported folder: a torch model will be served
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        from mtbioner.runtime import onnx_backend

        onnx_backend.set_num_threads(None)


def test_the_answer_is_written_text_by_text_as_starlettes_json_response_writes_it() -> None:
    from starlette.responses import JSONResponse

    from mtbioner.apps.serving import _answer_json, _text_json
    from mtbioner.data.entity import Entity

    alpha = Entity(0, 4, "2Rα", "GENE", ("JNLPBA", "BC2GM"), 0.98765, (("JNLPBA", "protein"),))
    nested = Entity(0, 9, "IL-2Rα chain", "GENE", ("BC2GM",), 0.5, nested=(alpha,))
    for entities in ([alpha, nested], []):
        expected = JSONResponse({"entities": [e.to_dict() for e in entities]}).body
        assert _text_json(entities).encode("utf-8") == expected
    assert "2Rα" in _text_json([alpha])  # UTF-8, not \\u escapes
    parts = [_text_json(entities) for entities in ([alpha], [])]
    expected = JSONResponse({"results": [{"entities": [alpha.to_dict()]}, {"entities": []}]}).body
    assert _answer_json(parts, single=False) == expected
    assert _answer_json(parts[:1], single=True) == JSONResponse({"entities": [alpha.to_dict()]}).body
