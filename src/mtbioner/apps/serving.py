"""Serve a tagger over HTTP: a JSON API for chatbots, and a web page for people.

``create_app`` builds a FastAPI app around a :class:`~mtbioner.runtime.tagging.Tagger`:

* ``POST /v1/tag`` tags one text (``{"text": ...}``) or several (``{"texts": [...]}``);
* ``GET /v1/model`` describes the model; ``GET /health`` says whether to send work here: 200
  ``{"status": "ready"}``, or 503 ``{"status": "not ready", "reason": ...}`` with ``Retry-After`` while the
  queue is full or the server is starting or stopping, so that a load balancer can act on the status alone;
* ``GET /`` is a page that highlights what the model finds; ``/docs`` and ``/redoc`` are
  the OpenAPI pages, their JavaScript and CSS served by the app (fastapi-offline), so
  that everything works without internet access.

Inference never runs on the event loop: a :class:`~mtbioner.apps.batching.MicroBatcher` cuts
requests into sentences and tags the sentences of concurrent requests together on model threads:
short requests (an utterance) on an express lane of their own, larger ones round-robin a few
sentences each per call, so that one forward pass serves many clients and a short utterance never
waits behind a large request. Oversized requests get 413, malformed ones 422, and a full queue 503
with ``Retry-After``, each as JSON.

A server process lives for days: :func:`prepare_process` sets its threads and has its ONNX Runtime
sessions give a large request's memory back to the system (issue 43's soak).

With ``--workers N`` uvicorn's own supervisor (uvicorn >= 0.30) runs the worker processes and starts a new one
when one dies; a request inside the dead worker sees its connection closed, and its retry is answered by another.
"""

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import __version__
from ..errors import MtbionerError
from .batching import BatchStats, MicroBatcher, Overloaded, TooMuchWork

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..data.entity import Entity
    from ..runtime.tagging import Tagger

logger = logging.getLogger("mtbioner.serve")

SERVER_HEAP_ARENAS = 1  # glibc malloc arenas of a server process (prepare_process; heap.configure_heap says why)
SERVER_BATCH_SIZE = 4
"""Windows per forward pass in the server (``mtbioner tag`` keeps 32). A server call holds up to 64 sentences of
mixed lengths (a burst's questions, slices of large requests), so a batch of 32 pads half of them to a long one's
length, and ONNX Runtime's arena (``SERVER_ARENA``) keeps room for the largest batch. ``benchmarks/server_batch.py``
(the shipped int8 model, one thread, 64-sentence calls, no arena, Intel Xeon with AMX, 2026-12-06): batch 32 / 16 /
8 / 4 tagged the soak's abstracts at 124 / 191 / 245 / 275 sentences/s with a peak of 198 / 100 / 52 / 16 MB above
the loaded model, its questions at 744 / 909 / 945 / 959. With the arena kept, a replayed worker held 170 MB at
batch 4 and 189 MB at batch 8 (``benchmarks/server_memory.py``). A lone large request is tagged in slices of
``slice_sentences`` whatever this is."""
SERVER_ARENA = True
"""Whether a server process keeps ONNX Runtime's CPU memory arena (its glibc heap is released after large runs
either way: ``prepare_process``). Without it every tensor came from glibc's heap, and between releases a worker's
runs faulted freed pages in again: in the eleventh soak its minutes moved in a band 15-20 MB wide (9.3 % and
21.3 % against the 5 % goal). Kept, at ``SERVER_BATCH_SIZE`` 4, it holds what the largest batch so far needed.
Filling it at start-up with a batch of full-length windows raised a replayed worker's level from 170 to 189 MB, so
it grows with the requests instead."""
SETTINGS_ENV = "MTBIONER_SERVE"  # how ``--workers N`` hands the model and settings to each worker process


@dataclass
class ServeSettings:
    """Limits and batching of the HTTP server.

    Args:
        max_texts: Most texts in one request (more: 413).
        max_bytes: Largest request body in bytes (larger: 413).
        batch_window_ms: How long the first waiting request holds the batch open for others.
            Requests that arrive while the model is busy are batched whatever the window.
        max_batch_sentences: Most sentences tagged in one model call.
        slice_sentences: Requests of at most this many sentences take the express lane (their own
            model thread); larger ones put at most this many sentences into each main-lane call.
        max_request_sentences: Most sentences one request may hold (more: 413); one longer than 1,000 characters
            counts once per 1,000 (here and in the choice of lane).
        max_queue_sentences: Most sentences waiting in all; a request past it gets 503 + Retry-After.
        batch_size: Windows per forward pass inside one call (a model folder's; a given ``Tagger`` keeps its own).
        link: Entity linking: ``hpo``, a knowledge-base TSV or a saved index (none by default).
    """

    max_texts: int = 64
    max_bytes: int = 1_000_000
    batch_window_ms: float = 2.0
    max_batch_sentences: int = 64
    slice_sentences: int = 4
    max_request_sentences: int = 50_000
    max_queue_sentences: int = 100_000
    batch_size: int = SERVER_BATCH_SIZE
    link: str | None = None

    def __post_init__(self) -> None:
        names = ("max_texts", "max_bytes", "max_batch_sentences", "slice_sentences", "max_request_sentences")
        for name in (*names, "max_queue_sentences", "batch_size"):
            if getattr(self, name) < 1:
                raise MtbionerError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.batch_window_ms <= 1000:
            raise MtbionerError(f"batch_window_ms must be between 0 and 1000, not {self.batch_window_ms}")


# --------------------------------------------------------------------------- middleware


class BodyLimit:
    """Answers 413 to request bodies over ``max_bytes`` (and 422 to bodies that are not UTF-8) before parsing.

    The body is read (and dropped past the limit) instead of closing the connection at
    once, so that a client still sending gets the JSON answer rather than a reset.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > 64 * self.max_bytes:
            await _send_json(send, 413, {"detail": self._message(int(declared))}, close=True)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size <= self.max_bytes:
                chunks.append(body)
            if not message.get("more_body", False):
                break
        if size > self.max_bytes:
            await _send_json(send, 413, {"detail": self._message(size)})
            return
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            detail = f"request body is not UTF-8: byte {exc.start} is {body[exc.start]:#x}"
            await _send_json(send, 422, {"detail": detail})
            return
        await self.app(scope, _replay(body, receive), send)

    def _message(self, size: int) -> str:
        return f"request body of {size} bytes is over the limit of {self.max_bytes} bytes (--max-bytes)"


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_json(send: Any, status: int, content: dict, close: bool = False) -> None:
    body = json.dumps(content).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One log line per request: client, method, path, status and time taken."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            logger.info(
                '%s "%s %s" %s %.1f ms',
                client[0],
                scope["method"],
                scope["path"],
                status or "-",
                1000 * (time.perf_counter() - start),
            )


# --------------------------------------------------------------------------- the app


def _schemas(max_text_note: str):
    """Pydantic request/response models (built lazily: pydantic is only needed to serve)."""
    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

    def utf8(text: str, where: str = "text") -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where} is not valid Unicode (lone surrogate at character {exc.start})") from None
        return text

    class TagRequest(BaseModel):
        """Give ``text`` (one) or ``texts`` (several), not both."""

        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"text": "Mutations in BRCA1 cause breast cancer."}]},
        )
        text: str | None = Field(None, description="One text; the answer is {'entities': [...]}.")
        texts: list[str] | None = Field(
            None, description=f"Several texts; the answer is {{'results': [...]}}, in order. {max_text_note}"
        )
        types: list[str] | None = Field(None, description="Keep only these entity types.")
        corpora: list[str] | None = Field(None, description="Run only these heads.")
        # strict: true is not a score (pydantic read it as 1.0 and dropped everything), nor "no" a boolean
        min_score: float = Field(
            0.0, ge=0.0, le=1.0, strict=True, description="Drop entities less confident than this."
        )
        flat: bool = Field(False, strict=True, description="Resolve overlapping entities to the best one.")
        merge_types: bool = Field(
            True,
            strict=True,
            description="One answer in the merged scheme (Gene, Chemical, Disease, Species, Anatomy, CellLine, "
            "CellType); false: every head's own answer in its corpus's types.",
        )
        link: bool = Field(True, strict=True, description="Give concept ids when the server links entities (--link).")
        link_threshold: float | None = Field(
            None, ge=0.0, le=1.0, strict=True, description="Lowest link score that gives an id."
        )

        @field_validator("text")
        @classmethod
        def _text_utf8(cls, value: str | None) -> str | None:
            return None if value is None else utf8(value)

        @field_validator("texts")
        @classmethod
        def _texts_utf8(cls, value: list[str] | None) -> list[str] | None:
            return None if value is None else [utf8(t, f"texts[{i}]") for i, t in enumerate(value)]

        @model_validator(mode="after")
        def _one_of(self) -> "TagRequest":
            if (self.text is None) == (self.texts is None):
                raise ValueError("give exactly one of 'text' (a string) or 'texts' (a list of strings)")
            return self

    class EntityOut(BaseModel):
        start: int = Field(description="First character, 0-based, in the given text.")
        end: int = Field(description="One past the last character: text[start:end] == entity text.")
        text: str
        type: str
        corpus: list[str] = Field(description="Heads that found this span with this type.")
        score: float = Field(description="Confidence, 0..1.")
        sources: list[dict] | None = Field(None, description="merge_types: each (corpus, original type) pair.")
        nested: list[dict] | None = Field(None, description="merge_types: shorter entities folded into this one.")
        id: str | None = Field(None, description="With --link: the concept id (None below the threshold).")
        id_name: str | None = Field(None, description="With --link: the concept's name.")
        link_score: float | None = Field(None, description="With --link: the link's score, 0..1.")

    class TagResponse(BaseModel):
        entities: list[EntityOut]

    class BatchTagResponse(BaseModel):
        results: list[TagResponse]

    class ErrorResponse(BaseModel):
        detail: str | list[dict]

    return TagRequest, TagResponse, BatchTagResponse, ErrorResponse


def _static_dir() -> Path:
    return Path(__file__).parent.parent / "static"


def _encoder_name(path: str) -> str:
    """A short name for the encoder folder, never the whole local path (``.../all_minilm_l6_v2/model``)."""
    parts = [p for p in Path(path).parts if p not in ("/", "model", "models", "encoder")]
    return parts[-1] if parts else path


def model_info(tagger: "Tagger", settings: ServeSettings) -> dict:
    """What ``GET /v1/model`` answers: enough for a client (or the page) to build its options."""
    config = tagger.backend.config
    encoder = config.encoder_config
    return {
        "corpora": {
            name: {"entity_types": head.entity_types, "head": head.head} for name, head in config.corpora.items()
        },
        "entity_types": tagger.entity_types,
        "merged_types": tagger.merged_types,  # the types of the default answer
        "encoder": {
            "name": _encoder_name(config.encoder),
            "model_type": encoder.get("model_type"),
            "layers": encoder.get("num_hidden_layers"),
            "hidden_size": encoder.get("hidden_size"),
        },
        "backend": "torch" if hasattr(tagger.backend, "parameters") else "onnx",
        "max_length": config.max_length,
        "version": {"server": __version__, "model": config.mtbioner_version, "format": config.format_version},
        "linking": None
        if tagger.linker is None
        else {
            "knowledge_base": settings.link,
            "concepts": len(tagger.linker),
            "threshold": tagger.linker.threshold,
            "metadata": tagger.linker.kb.metadata,
        },
        "limits": {
            "max_texts": settings.max_texts,
            "max_bytes": settings.max_bytes,
            "max_request_sentences": settings.max_request_sentences,
        },
    }


def create_app(model: "Tagger | str | Path", settings: ServeSettings | None = None) -> "FastAPI":
    """A FastAPI app serving ``model`` (a :class:`Tagger` or a model folder) with these limits."""
    from fastapi import HTTPException
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline import FastAPIOffline

    from ..runtime.tagging import Tagger

    settings = settings or ServeSettings()
    tagger = model if isinstance(model, Tagger) else Tagger.load(model, batch_size=settings.batch_size)
    if settings.link is not None and tagger.linker is None:
        from ..runtime.knowledge_bases import load_linker

        tagger.linker = load_linker(settings.link)
    batcher = MicroBatcher(
        tagger,
        settings.batch_window_ms / 1000,
        settings.max_batch_sentences,
        settings.slice_sentences,
        settings.max_request_sentences,
        settings.max_queue_sentences,
    )
    info = model_info(tagger, settings)
    TagRequest, TagResponse, BatchTagResponse, ErrorResponse = _schemas(
        f"At most {settings.max_texts} texts and {settings.max_bytes} bytes per request."
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        app.state.serving = True
        try:
            yield
        finally:
            app.state.serving = False
            await batcher.close()

    app = FastAPIOffline(
        title="MT-BioNER",
        version=__version__,
        description="Biomedical named entities (genes, chemicals, diseases, ...) in raw text, with character offsets.",
        lifespan=lifespan,
        static_url="/docs-assets",
    )
    app.state.tagger = tagger
    app.state.batcher = batcher
    app.state.settings = settings
    app.state.serving = False  # True from the end of start-up to the start of shutdown

    _add_error_handlers(app)
    errors = {413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}

    def not_serving() -> HTTPException:
        return HTTPException(503, "the server is starting or shutting down", headers={"Retry-After": "1"})

    @app.post("/v1/tag", response_model=TagResponse | BatchTagResponse, responses=errors, tags=["tagging"])
    async def tag(request: TagRequest) -> JSONResponse:  # type: ignore[valid-type]
        """Entities of one text (``text``) or of several (``texts``), with offsets into each text."""
        texts = [request.text] if request.text is not None else request.texts
        if len(texts) > settings.max_texts:
            message = f"{len(texts)} texts in one request; the limit is {settings.max_texts} (--max-texts)"
            raise HTTPException(413, message)
        reason, retry_after = readiness(batcher, app.state.serving)
        if reason is not None:  # full (or stopping): refuse at once, not after the work of splitting the texts
            batcher.stats.refused += 1
            raise HTTPException(503, reason, headers={"Retry-After": str(retry_after)})
        linking = tagger.linker is not None and request.link
        try:
            found = await batcher.tag(
                texts,
                request.types,
                request.corpora,
                request.min_score,
                request.flat,
                request.merge_types,
                render=None if linking else _text_json,
            )
        except Overloaded as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
        except TooMuchWork as exc:
            raise HTTPException(413, str(exc)) from None
        except MtbionerError as exc:
            raise HTTPException(422, str(exc)) from None
        except RuntimeError:
            if app.state.serving:
                raise
            raise not_serving() from None  # the batcher closed while this request waited
        if not linking:
            return Response(_answer_json(found, request.text is not None), media_type="application/json")
        import asyncio

        dicts = [[e.to_dict() for e in ents] for ents in found]
        loop = asyncio.get_running_loop()
        dicts = await loop.run_in_executor(None, tagger.link, dicts, request.link_threshold)
        results = [{"entities": ents} for ents in dicts]
        return JSONResponse(results[0] if request.text is not None else {"results": results})

    @app.get("/v1/model", tags=["model"])
    async def describe() -> dict:
        """Corpora (heads) with their entity types, the encoder, versions and request limits."""
        return info

    @app.get("/health", tags=["model"], responses={503: {"description": "Not ready: full, starting or stopping."}})
    async def health() -> JSONResponse:
        """Ready (200) or not ready (503 with ``Retry-After`` and the reason); batching counters and the queue."""
        reason, retry_after = readiness(batcher, app.state.serving)
        body = {
            "status": "ready" if reason is None else "not ready",
            "batching": asdict(batcher.stats),
            "waiting": batcher.waiting,
            "queued_sentences": batcher.queued_sentences,
            "max_queue_sentences": batcher.max_queue_sentences,
        }
        if reason is None:
            return JSONResponse(body)
        return JSONResponse({**body, "reason": reason}, status_code=503, headers={"Retry-After": str(retry_after)})

    static = _static_dir()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static / "index.html")

    app.mount("/static", StaticFiles(directory=static), name="static")
    return _wrap(app, settings)


def readiness(batcher: MicroBatcher, serving: bool) -> tuple[str | None, int]:
    """Why this server should be sent no work now (``None``: it is ready), and in how many seconds to ask again.

    The queue is full when it holds ``max_queue_sentences``: a request of even one sentence would get 503. A
    process still loading its model does not answer at all (uvicorn accepts connections only after start-up).
    """
    if not serving:
        return "the server is starting or shutting down", 1
    queued, limit = batcher.queued_sentences, batcher.max_queue_sentences
    if queued < limit:
        return None, 0
    rate = batcher.stats.sentences_per_s or 50.0
    reason = f"the queue is full: {queued} sentences queued, the limit is {limit} (--max-queue-sentences)"
    return reason, max(1, math.ceil((queued - limit + 1) / rate))


def _add_error_handlers(app: "FastAPI") -> None:
    """Every error as JSON ``{"detail": ...}``: bad bodies 422 without echoing them, the unexpected 500."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Echo where and what, never the input itself: it may be large, or not even encodable.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (nesting too deep for json, say)
            return JSONResponse({"detail": f"request body is not valid JSON: {exc.detail}"}, status_code=422)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error while answering a request")
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def _wrap(app: "FastAPI", settings: ServeSettings) -> "FastAPI":
    """Add the body limit (before any parsing) and, around everything, the access log."""
    app.add_middleware(BodyLimit, max_bytes=settings.max_bytes)
    app.add_middleware(AccessLog)
    return app


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def running(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a background thread; yield its base URL (tests, notebooks).

    ``port=0`` picks a free port.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="mtbioner-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)


def check_port(host: str, port: int) -> None:
    """Fail with one clear line when the address is taken, instead of uvicorn's exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MtbionerError(f"--host {host!r}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise MtbionerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _text_json(entities: "list[Entity]") -> str:
    """One text's part of the answer, written as Starlette's ``JSONResponse`` writes JSON.

    :meth:`MicroBatcher.tag` calls it as soon as the text's entities are known, so that only text is kept of them:
    a large request's answer, held as entities until its last text was tagged and then as one tree of dicts, took
    ~10 MB of small objects, which the Python allocator kept after the request (issue 43,
    ``MicroBatcher._finish_texts``).
    """
    entry = {"entities": [e.to_dict() for e in entities]}
    return json.dumps(entry, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _answer_json(parts: list[str], single: bool) -> bytes:
    """The response body from the texts' parts (:func:`_text_json`): one text's answer, or ``{"results": [...]}``."""
    return (parts[0] if single else '{"results":[' + ",".join(parts) + "]}").encode("utf-8")


def default_threads(workers: int = 1) -> int:
    """Threads per worker: its share of the cores, less one for the event loop (at least 1).

    A torch (or ONNX Runtime) pool that claims every core competes with the event loop, the other workers and
    any client on the machine, and its threads then spin instead of working: on a busy
    2-core machine a short utterance took 630 ms with 2 threads and 28 ms with 1.
    """
    return max(1, (os.cpu_count() or 1) // workers - 1)


def set_threads(threads: int | None, workers: int, model: str | Path | None = None) -> None:
    """Threads of this server process's model (``default_threads`` unless given), torch or ONNX Runtime."""
    from ..runtime.loading import set_backend_threads

    set_backend_threads(threads or default_threads(workers), model)


def prepare_process(threads: int | None, workers: int, model: str | Path | None = None) -> None:
    """Set this server process up for its model, before loading it: threads (``set_threads``) and memory.

    A server process lives for days and sees a few large requests among many small ones. It therefore hands what
    a large run left in glibc's heap back to the system (:func:`~mtbioner.runtime.onnx_backend.set_release_memory`,
    which holds the measurements), keeping ONNX Runtime's arena only as ``SERVER_ARENA`` says: with the library's
    defaults, each worker's resident memory stepped up after large requests and bursts and stayed there (issue 43);
    and glibc's heap is set up so that memory goes back only then, without page faults in between, in at most
    ``SERVER_HEAP_ARENAS`` arenas (:func:`~mtbioner.runtime.heap.configure_heap`). Called in the one process of
    ``mtbioner serve`` and in each ``--workers`` process (:func:`app_from_environment`), which uvicorn spawns
    afresh, so that nothing rests on inherited state.
    """
    from ..runtime.heap import configure_heap
    from ..runtime.onnx_backend import set_release_memory

    set_threads(threads, workers, model)
    set_release_memory(True, arena=SERVER_ARENA)
    configure_heap(SERVER_HEAP_ARENAS)


def app_from_environment() -> "FastAPI":
    """App factory for uvicorn's worker processes (``--workers N``): model and settings from the environment."""
    from ..quiet import quiet_libraries

    quiet_libraries()
    spec = json.loads(os.environ[SETTINGS_ENV])
    prepare_process(spec["threads"], spec["workers"], spec["model"])
    return create_app(spec["model"], ServeSettings(**spec["settings"]))


LOCAL = "127.0.0.1"
DEFAULTS = ServeSettings()


__all__ = ["BatchStats", "MicroBatcher", "ServeSettings", "create_app", "model_info", "prepare_process", "running"]
