"""``mtbioner serve``: the HTTP service (one process, or several uvicorn workers)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Annotated, Any

import typer

from ..apps.serving import DEFAULTS, LOCAL, SETTINGS_ENV, ServeSettings, check_port, create_app, prepare_process
from ..errors import MtbionerError
from ..quiet import quiet_libraries
from ..runtime.shipped import resolve_model


def _log_config(level: str) -> dict:
    """uvicorn's logging setup plus ours, applied in every worker process alike."""
    from uvicorn.config import LOGGING_CONFIG

    config = json.loads(json.dumps(LOGGING_CONFIG))
    config["loggers"]["mtbioner"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def _check_supervisor(version: str) -> None:
    """``--workers N`` relies on uvicorn's supervisor, which replaces a worker that dies from 0.30 on."""
    release = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if release < (0, 30):
        raise MtbionerError(
            f"--workers needs uvicorn >= 0.30, which starts a new worker when one dies (installed: {version}): "
            "pip install -U 'uvicorn[standard]>=0.30'"
        )


def serve(
    model: Annotated[
        str | None, typer.Argument(help="Model folder (torch or exported ONNX) or shipped name (default: shipped).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens the server to the network.")] = LOCAL,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Server processes, each with its own copy of the model; one that dies is replaced.")
    ] = 1,
    max_texts: Annotated[int, typer.Option(help="Most texts per request (more: 413).")] = DEFAULTS.max_texts,
    max_bytes: Annotated[int, typer.Option(help="Largest request body in bytes (larger: 413).")] = DEFAULTS.max_bytes,
    batch_window_ms: Annotated[
        float, typer.Option(help="How long a request waits for others to join its model call (0: no wait).")
    ] = DEFAULTS.batch_window_ms,
    max_batch_sentences: Annotated[
        int, typer.Option(help="Most sentences tagged in one model call.")
    ] = DEFAULTS.max_batch_sentences,
    slice_sentences: Annotated[
        int,
        typer.Option(
            help="Requests of at most this many sentences take the express lane; larger ones give this many per call.",
        ),
    ] = DEFAULTS.slice_sentences,
    max_request_sentences: Annotated[
        int,
        typer.Option(
            help="Most sentences one request may hold (more: 413); one over 1,000 characters counts per 1,000."
        ),
    ] = DEFAULTS.max_request_sentences,
    max_queue_sentences: Annotated[
        int, typer.Option(help="Most sentences queued in all (past it: 503 with Retry-After).")
    ] = DEFAULTS.max_queue_sentences,
    batch_size: Annotated[
        int, typer.Option(help="Windows per forward pass (smaller than tag's 32: a server call mixes lengths).")
    ] = DEFAULTS.batch_size,
    link: Annotated[
        str | None, typer.Option(help="Link entities to concepts: hpo, a KB file (id<TAB>name<TAB>type...), an index.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Threads per worker, torch or ONNX (default: its share of the cores, less one).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info (a line per request), warning or error.")] = "info",
) -> None:
    """Serve a model over HTTP: POST /v1/tag, GET /v1/model, a web page at /, API docs at /docs.

    Example: mtbioner serve m --port 8000, then open http://127.0.0.1:8000/
    """
    import uvicorn

    if log_level not in ("debug", "info", "warning", "error"):
        raise MtbionerError(f"--log-level {log_level!r}: use debug, info, warning or error")
    if workers < 1:
        raise MtbionerError(f"--workers must be at least 1, not {workers}")
    if threads is not None and threads < 1:
        raise MtbionerError(f"--threads must be at least 1, not {threads}")
    if not 0 <= port <= 65535:
        raise MtbionerError(f"--port must be between 0 and 65535, not {port}")
    settings = ServeSettings(
        max_texts,
        max_bytes,
        batch_window_ms,
        max_batch_sentences,
        slice_sentences,
        max_request_sentences,
        max_queue_sentences,
        batch_size,
        link,
    )
    folder = resolve_model(model)
    quiet_libraries()
    check_port(host, port)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "log_config": _log_config(log_level),
        "access_log": False,  # AccessLog writes the one line per request
    }
    if workers == 1:
        prepare_process(threads, 1, folder)
        app = create_app(folder, settings)
        typer.echo(f"serving {folder} on http://{host}:{port}/ (API docs: /docs)", err=True)
        uvicorn.run(app, **common)
        return
    from ..runtime.loading import describe_model

    _check_supervisor(uvicorn.__version__)
    describe_model(folder)  # a bad folder fails here, once, rather than in every worker
    if link is not None:
        from ..runtime.knowledge_bases import load_linker

        load_linker(link)  # indexes (and caches) the knowledge base once, before the workers start
    os.environ[SETTINGS_ENV] = json.dumps(
        {"model": str(folder), "workers": workers, "threads": threads, "settings": asdict(settings)}
    )
    typer.echo(f"serving {folder} on http://{host}:{port}/ with {workers} workers (API docs: /docs)", err=True)
    uvicorn.run("mtbioner.apps.serving:app_from_environment", factory=True, workers=workers, **common)
