"""Serve a tagger over HTTP: a JSON API for chatbots, and a web page for people.

``create_app`` builds a FastAPI app around a :class:`~mtbioner.tagging.Tagger`:

* ``POST /v1/tag`` tags one text (``{"text": ...}``) or several (``{"texts": [...]}``);
* ``GET /v1/model`` describes the model, ``GET /health`` says it is up;
* ``GET /`` is a page that highlights what the model finds; ``/docs`` and ``/redoc`` are
  the OpenAPI pages, their JavaScript and CSS served by the app (fastapi-offline), so
  that everything works without internet access.

Inference never runs on the event loop: a :class:`MicroBatcher` gathers the texts of
concurrent requests for a short window and tags them in one ``Tagger.entities`` call on a
worker thread, because one forward pass over many short utterances costs little more
than a pass over one. Oversized requests get 413, malformed ones 422, each as JSON.
"""

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import INFERENCE_BATCH_SIZE, __version__
from .errors import MtbionerError

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import FastAPI

    from .tagging import Entity, Tagger

logger = logging.getLogger("mtbioner.serve")

SETTINGS_ENV = "MTBIONER_SERVE"  # how ``--workers N`` hands the model and settings to each worker process


@dataclass
class ServeSettings:
    """Limits and batching of the HTTP server.

    Args:
        max_texts: Most texts in one request (more: 413).
        max_bytes: Largest request body in bytes (larger: 413).
        batch_window_ms: How long the first waiting request holds the batch open for others.
            Requests that arrive while the model is busy are batched whatever the window.
        max_batch_texts: Most texts tagged in one call (a larger request still runs alone).
        batch_size: Windows per forward pass inside one call.
    """

    max_texts: int = 64
    max_bytes: int = 1_000_000
    batch_window_ms: float = 2.0
    max_batch_texts: int = 64
    batch_size: int = INFERENCE_BATCH_SIZE

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_bytes", "max_batch_texts", "batch_size"):
            if getattr(self, name) < 1:
                raise MtbionerError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.batch_window_ms <= 1000:
            raise MtbionerError(f"batch_window_ms must be between 0 and 1000, not {self.batch_window_ms}")


# --------------------------------------------------------------------------- batching


@dataclass(eq=False)
class _Job:
    texts: list[str]
    options: tuple  # (types, corpora, min_score, flat): requests batch together only when these agree
    future: "asyncio.Future"
    arrival: float


@dataclass
class BatchStats:
    """Counters that show whether batching happens (``GET /health`` reports them)."""

    requests: int = 0
    calls: int = 0
    texts: int = 0
    largest_call: int = 0


class MicroBatcher:
    """Gathers the texts of concurrent requests into one ``Tagger.entities`` call on a worker thread.

    The first waiting request opens a window of ``window_s``; every request with the same
    options that arrives before it closes (or while the previous call is still running)
    joins the call, up to ``max_texts`` texts. One thread runs the calls one after another,
    so the model is never used concurrently and the event loop never waits for it.
    """

    def __init__(self, tagger: "Tagger", window_s: float = 0.002, max_texts: int = 64) -> None:
        self.tagger = tagger
        self.window_s = window_s
        self.max_texts = max_texts
        self.stats = BatchStats()
        self._pending: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Requests queued for the next model call."""
        return len(self._pending)

    async def start(self) -> None:
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        self._wakeup = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtbioner-tagger")
        self._task = asyncio.create_task(self._run(), name="mtbioner-batcher")

    async def close(self) -> None:
        import asyncio

        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("server shutting down"))
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def tag(
        self,
        texts: Sequence[str],
        types: Sequence[str] | None = None,
        corpora: Sequence[str] | None = None,
        min_score: float = 0.0,
        flat: bool = False,
    ) -> list[list["Entity"]]:
        """Entities of each text, tagged together with whatever other requests are waiting."""
        import asyncio

        if self._task is None or self._wakeup is None or self._task.done():
            raise RuntimeError("the batcher is not running (is the app's lifespan running?)")
        loop = asyncio.get_running_loop()
        options = (_freeze(types), _freeze(corpora), float(min_score), bool(flat))
        job = _Job(list(texts), options, loop.create_future(), loop.time())
        self._pending.append(job)
        self._wakeup.set()
        return await job.future

    async def _run(self) -> None:
        import asyncio

        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            delay = self._pending[0].arrival + self.window_s - loop.time()
            if delay > 0 and sum(len(j.texts) for j in self._pending) < self.max_texts:
                await asyncio.sleep(delay)
            batch = self._take()
            try:
                await self._execute(batch)
            except Exception as exc:  # a bug here must fail these requests, not stall every later one
                logger.exception("batch failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _take(self) -> list[_Job]:
        """The oldest jobs whose options match the oldest one's, up to ``max_texts`` texts."""
        first = self._pending.popleft()
        batch, count, later = [first], len(first.texts), deque()
        while self._pending:
            job = self._pending.popleft()
            if job.options == first.options and count + len(job.texts) <= self.max_texts:
                batch.append(job)
                count += len(job.texts)
            else:
                later.append(job)
        self._pending.extendleft(reversed(later))
        return batch

    async def _execute(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]  # clients that gave up
        if not batch:
            return
        import asyncio

        texts = [text for job in batch for text in job.texts]
        types, corpora, min_score, flat = batch[0].options
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self._pool, self.tagger.entities, texts, types, corpora, min_score, flat
            )
        except Exception as exc:  # handed to each request, which maps it to a status code
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.stats.requests += len(batch)
        self.stats.calls += 1
        self.stats.texts += len(texts)
        self.stats.largest_call = max(self.stats.largest_call, len(texts))
        start = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(found[start : start + len(job.texts)])
            start += len(job.texts)


def _freeze(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values else None


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

    def utf8(text: str) -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"text is not valid Unicode (lone surrogate at character {exc.start})") from None
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
        min_score: float = Field(0.0, ge=0.0, le=1.0, description="Drop entities less confident than this.")
        flat: bool = Field(False, description="Resolve overlapping entities to the best one.")

        @field_validator("text")
        @classmethod
        def _text_utf8(cls, value: str | None) -> str | None:
            return None if value is None else utf8(value)

        @field_validator("texts")
        @classmethod
        def _texts_utf8(cls, value: list[str] | None) -> list[str] | None:
            return None if value is None else [utf8(t) for t in value]

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

    class TagResponse(BaseModel):
        entities: list[EntityOut]

    class BatchTagResponse(BaseModel):
        results: list[TagResponse]

    class ErrorResponse(BaseModel):
        detail: str | list[dict]

    return TagRequest, TagResponse, BatchTagResponse, ErrorResponse


def _static_dir() -> Path:
    return Path(__file__).with_name("static")


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
        "encoder": {
            "name": _encoder_name(config.encoder),
            "model_type": encoder.get("model_type"),
            "layers": encoder.get("num_hidden_layers"),
            "hidden_size": encoder.get("hidden_size"),
        },
        "backend": "torch" if hasattr(tagger.backend, "parameters") else "onnx",
        "max_length": config.max_length,
        "version": {"server": __version__, "model": config.mtbioner_version, "format": config.format_version},
        "limits": {"max_texts": settings.max_texts, "max_bytes": settings.max_bytes},
    }


def create_app(model: "Tagger | str | Path", settings: ServeSettings | None = None) -> "FastAPI":
    """A FastAPI app serving ``model`` (a :class:`Tagger` or a model folder) with these limits."""
    from fastapi import HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline import FastAPIOffline
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .tagging import Tagger

    settings = settings or ServeSettings()
    tagger = model if isinstance(model, Tagger) else Tagger.load(model, batch_size=settings.batch_size)
    batcher = MicroBatcher(tagger, settings.batch_window_ms / 1000, settings.max_batch_texts)
    info = model_info(tagger, settings)
    TagRequest, TagResponse, BatchTagResponse, ErrorResponse = _schemas(
        f"At most {settings.max_texts} texts and {settings.max_bytes} bytes per request."
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        try:
            yield
        finally:
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

    errors = {413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}

    @app.post("/v1/tag", response_model=TagResponse | BatchTagResponse, responses=errors, tags=["tagging"])
    async def tag(request: TagRequest) -> JSONResponse:  # type: ignore[valid-type]
        """Entities of one text (``text``) or of several (``texts``), with offsets into each text."""
        texts = [request.text] if request.text is not None else request.texts
        if len(texts) > settings.max_texts:
            message = f"{len(texts)} texts in one request; the limit is {settings.max_texts} (--max-texts)"
            raise HTTPException(413, message)
        try:
            found = await batcher.tag(texts, request.types, request.corpora, request.min_score, request.flat)
        except MtbionerError as exc:
            raise HTTPException(422, str(exc)) from None
        results = [{"entities": [e.to_dict() for e in ents]} for ents in found]
        return JSONResponse(results[0] if request.text is not None else {"results": results})

    @app.get("/v1/model", tags=["model"])
    async def describe() -> dict:
        """Corpora (heads) with their entity types, the encoder, versions and request limits."""
        return info

    @app.get("/health", tags=["model"])
    async def health() -> dict:
        """Up and ready; batching counters since start."""
        return {"status": "ok", "batching": asdict(batcher.stats), "waiting": batcher.waiting}

    static = _static_dir()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static / "index.html")

    app.mount("/static", StaticFiles(directory=static), name="static")
    return _wrap(app, settings)


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


def _check_port(host: str, port: int) -> None:
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


def default_threads(workers: int = 1) -> int:
    """Torch threads per worker: its share of the cores, less one for the event loop (at least 1).

    A torch pool that claims every core competes with the event loop, the other workers and
    any client on the machine, and its threads then spin instead of working: on a busy
    2-core machine a short utterance took 630 ms with 2 threads and 28 ms with 1.
    """
    return max(1, (os.cpu_count() or 1) // workers - 1)


def _set_threads(threads: int | None, workers: int) -> None:
    import torch

    torch.set_num_threads(threads or default_threads(workers))


def app_from_environment() -> "FastAPI":
    """App factory for uvicorn's worker processes (``--workers N``): model and settings from the environment."""
    from .cli import _quiet_libraries

    _quiet_libraries()
    spec = json.loads(os.environ[SETTINGS_ENV])
    _set_threads(spec["threads"], spec["workers"])
    return create_app(spec["model"], ServeSettings(**spec["settings"]))


LOCAL = "127.0.0.1"
DEFAULTS = ServeSettings()


def _log_config(level: str) -> dict:
    """uvicorn's logging setup plus ours, applied in every worker process alike."""
    from uvicorn.config import LOGGING_CONFIG

    config = json.loads(json.dumps(LOGGING_CONFIG))
    config["loggers"]["mtbioner"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def serve_command(
    model: Annotated[Path, typer.Argument(help="Model folder (torch or exported ONNX).")],
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens the server to the network.")] = LOCAL,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes, each with its own copy of the model.")] = 1,
    max_texts: Annotated[int, typer.Option(help="Most texts per request (more: 413).")] = DEFAULTS.max_texts,
    max_bytes: Annotated[int, typer.Option(help="Largest request body in bytes (larger: 413).")] = DEFAULTS.max_bytes,
    batch_window_ms: Annotated[
        float, typer.Option(help="How long a request waits for others to join its model call (0: no wait).")
    ] = DEFAULTS.batch_window_ms,
    max_batch_texts: Annotated[
        int, typer.Option(help="Most texts tagged in one model call.")
    ] = DEFAULTS.max_batch_texts,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = DEFAULTS.batch_size,
    threads: Annotated[
        int | None, typer.Option(help="Torch threads per worker (default: its share of the cores, less one).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info (a line per request), warning or error.")] = "info",
) -> None:
    """Serve a model over HTTP: POST /v1/tag, GET /v1/model, a web page at /, API docs at /docs.

    Example: mtbioner serve m --port 8000, then open http://127.0.0.1:8000/
    """
    import uvicorn

    from .cli import _quiet_libraries

    if log_level not in ("debug", "info", "warning", "error"):
        raise MtbionerError(f"--log-level {log_level!r}: use debug, info, warning or error")
    if workers < 1:
        raise MtbionerError(f"--workers must be at least 1, not {workers}")
    if threads is not None and threads < 1:
        raise MtbionerError(f"--threads must be at least 1, not {threads}")
    if not 0 <= port <= 65535:
        raise MtbionerError(f"--port must be between 0 and 65535, not {port}")
    settings = ServeSettings(max_texts, max_bytes, batch_window_ms, max_batch_texts, batch_size)
    _quiet_libraries()
    _check_port(host, port)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "log_config": _log_config(log_level),
        "access_log": False,  # AccessLog writes the one line per request
    }
    if workers == 1:
        _set_threads(threads, 1)
        app = create_app(model, settings)
        typer.echo(f"serving {model} on http://{host}:{port}/ (API docs: /docs)", err=True)
        uvicorn.run(app, **common)
        return
    from .loading import describe_model

    describe_model(model)  # a bad folder fails here, once, rather than in every worker
    os.environ[SETTINGS_ENV] = json.dumps(
        {"model": str(model), "workers": workers, "threads": threads, "settings": asdict(settings)}
    )
    typer.echo(f"serving {model} on http://{host}:{port}/ with {workers} workers (API docs: /docs)", err=True)
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **common)


__all__ = ["BatchStats", "MicroBatcher", "ServeSettings", "create_app", "model_info", "running", "serve_command"]
