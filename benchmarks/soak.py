"""Soak: ``mtbioner serve --workers 2`` for a set time under mixed load, with workers killed mid-request.

What users of a service in production ask: does memory creep, does a worker that dies take requests with it,
does the server say clearly when it is full. The server (the shipped model unless ``--model``) runs on 127.0.0.1
as uvicorn's supervisor and its worker processes; this script is its only client. For ``--minutes`` (30) it sends:

  utterance   a chatbot's one-sentence question, ``--utterance-rate`` per second, open loop (latency counts from
              the scheduled time, so a client that falls behind counts against the server)
  paragraph   one abstract (JNLPBA test documents, ~9 sentences), ``--paragraph-rate`` per second
  malformed   a bad body (broken JSON, wrong types, invalid UTF-8, ...), ``--malformed-rate`` per second: 422
  large       once a period: 64 texts of abstracts, ~0.9 MB (under the 64-text and 1 MB limits): 200, or 503
              when the queue is full; with it three requests just past a limit (65 texts, a body one byte over
              the limit, one sentence over ``max_request_sentences``): 413 each
  burst       once a period: ``--burst-requests`` requests at once, each 64 texts of short sentences, holding
              ``--burst-factor`` times what the workers' queues admit (``--queue-limit`` sentences each, passed
              as ``--max-queue-sentences``; by default 1.5 large requests, 8,000 with the JNLPBA abstracts, so
              that a lone large request is admitted and a burst fills the queues within seconds of work): 200,
              or 503 with ``Retry-After``, never a timeout
  kill        in each of the first ``--kills`` periods: 64 abstracts on a connection of their own; once a worker
              holds that connection (psutil) and has worked on it for ``--kill-after`` s, it gets SIGKILL (if it
              was answered first, a 503 from a full queue say, it is sent again, five tries). Kept: what that
              client saw, its retry, the other requests that had to be sent again, when uvicorn's supervisor
              started a new worker, and when the new worker answered (the service whole again).

A period is ``--period`` s (300; shorter runs shrink it): large at 20 %, burst at 50 %, kill at 83 % of it, so
that with the defaults the kills (~250 s, ~550 s) fall between a burst and the next large request, before the
tenth minute. Nothing heavy starts in the last 20 % (at most 2 minutes), so the run ends on time.

Every request has a client timeout (a timeout counts as a hang); a request whose connection breaks is sent
again, up to ``--retries`` (2) times (tagging is idempotent); every request's outcome is counted exactly once.
Every ``--sample-every`` s: each worker's resident memory, open file descriptors and threads (psutil: the workers
are the supervisor's children), and ``GET /health``. The verdict follows issue 43: each worker's memory in the
last ten minutes within 5 % of its tenth-minute value (shorter runs: the last third against the minute at a
third), no request unanswered, utterance p99 under 50 ms outside the kill windows, no 5xx but 503 with
``Retry-After``, and each kill mid-request, its retry answered and the service whole again.

    python benchmarks/soak.py [--minutes 30] [--kills 2] [--out benchmarks/results/soak]

Writes ``soak.json``, ``soak.md`` (verdict, kills, per-minute table), ``soak.png`` (latency and memory over time)
and ``server.log`` (the server's log without its per-request lines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from _machine import machine, publish
from _soak_report import per_minute, plot, to_markdown, verdict
from serving import UTTERANCES, abstracts, free_port

from mtbioner.apps.serving import DEFAULTS, default_threads
from mtbioner.data.text import split_sentences
from mtbioner.runtime.shipped import resolve_model

HOST = "127.0.0.1"  # the only address this script sends to
RESULTS = Path(__file__).parent / "results" / "soak"
JSON_TYPE = {"Content-Type": "application/json"}
TIMEOUT_S = {"utterance": 10, "paragraph": 30, "malformed": 10, "over-limit": 60}  # others: --heavy-timeout
MALFORMED = [
    b'{"text": "unterminated',
    b"MYC binds aspirin",
    b"",
    b'["MYC"]',
    b'{"text": "a", "texts": ["b"]}',
    b'{"texts": ["ok", 7]}',
    b'{"text": "a", "min_score": 1.5}',
    b'{"text": "MYC \xff binds"}',
    b'{"text": "MYC \\ud800 binds"}',
    b'{"text": "a", "lang": "en"}',
]
FALLBACK = [  # paragraphs when the JNLPBA test split is not at --data-dir
    "Mutations in BRCA1 and BRCA2 raise the lifetime risk of breast and ovarian cancer in carriers.",
    "Tamoxifen lowered the recurrence of estrogen receptor positive tumours, while aspirin had no effect.",
    "Expression of IL-2 and TNF-alpha rose in activated T cells after stimulation with ionomycin.",
    "Patients treated with cisplatin developed nephrotoxicity, which magnesium supplementation reduced.",
    "The p53 protein binds DNA and arrests the cell cycle in fibroblasts exposed to ultraviolet light.",
    "Metformin improved insulin sensitivity in mice fed a high fat diet without changing body weight.",
    "Knock-down of KRAS in HeLa cells reduced proliferation and the phosphorylation of ERK1 and ERK2.",
    "Chronic use of ibuprofen was associated with kidney damage in elderly patients with hypertension.",
]


# --------------------------------------------------------------------------- inputs


def body(**fields) -> bytes:
    return json.dumps(fields).encode("utf-8")


def joined(sources: list[str], count: int, chars: int) -> list[str]:
    """``count`` texts of at most ``chars`` characters (at least one source) each, ``sources`` joined round-robin."""
    texts, i = [], 0
    for _ in range(count):
        text = sources[i % len(sources)]
        i += 1
        while len(text) + 1 + len(sources[i % len(sources)]) <= chars:
            text += " " + sources[i % len(sources)]
            i += 1
        texts.append(text)
    return texts


def sentences(texts: list[str]) -> int:
    return sum(len(split_sentences(text)) for text in texts)


def make_inputs(args: argparse.Namespace) -> tuple[dict, dict]:
    """The request bodies of every kind, what they hold (bytes, texts, sentences), and the queue limit.

    Unless ``--queue-limit`` is given, each worker's queue holds 1.5 large requests (rounded up to 1,000
    sentences): one is admitted whole, and a burst fills the queues within seconds of work.
    """
    test = args.data_dir / "JNLPBA" / "test.tsv"
    docs = abstracts(args.data_dir, count=400) if test.is_file() else joined(FALLBACK, 40, 1500)
    limits, n = DEFAULTS, DEFAULTS.max_texts
    large = joined(docs, n, int(0.95 * limits.max_bytes) // n - 64)
    queue = args.queue_limit or 1000 * math.ceil(1.5 * sentences(large) / 1000)
    questions = [u if u.endswith((".", "?")) else u + "." for u in UTTERANCES]
    each = math.ceil(args.burst_factor * queue * args.workers / args.burst_requests / n)  # a question: a sentence
    burst = [" ".join(questions[(t * each + j) % len(questions)] for j in range(each)) for t in range(n)]
    kill = joined(docs, n, 2 * int(np.mean([len(d) for d in docs])))
    bodies = {
        "utterance": [body(text=u) for u in UTTERANCES],
        "paragraph": [body(text=d) for d in docs[:64]],
        "malformed": MALFORMED,
        "large": [body(texts=large)],
        "over-limit": [
            body(texts=["MYC"] * (n + 1)),
            body(text="a" * limits.max_bytes),
            body(text="MYC rose. " * (limits.max_request_sentences + 1)),
        ],
        "burst": [body(texts=burst)],
        "kill-victim": [body(texts=kill)],
    }
    assert len(bodies["large"][0]) < limits.max_bytes, "the large request must fit the byte limit"
    sizes = {}
    for kind, texts in (("large", large), ("burst", burst), ("kill-victim", kill)):
        sizes[kind] = {"bytes": len(bodies[kind][0]), "texts": n, "sentences": sentences(texts)}
    for kind, texts in (("paragraph", docs[:64]), ("utterance", UTTERANCES)):
        mean = np.mean([len(b) for b in bodies[kind]])
        sizes[kind] = {"bytes": round(mean), "texts": 1, "sentences": round(sentences(texts) / len(texts), 1)}
    sizes["source"] = str(test) if test.is_file() else "built-in sentences (no JNLPBA test split found)"
    sizes["queue_limit"] = queue
    return bodies, sizes


def effective_period(duration: float, period: float, kills: int) -> float:
    """``--period``, shortened so that a short run still holds every kill and two large requests and bursts."""
    return min(period, duration / max(2, kills + 1))


def make_schedule(duration: float, period: float, kills: int) -> list[tuple[float, str]]:
    """(seconds, event) for the large requests, bursts and kills; none in the last 20 % (at most 2 minutes)."""
    period = effective_period(duration, period, kills)
    quiet = duration - min(120.0, 0.2 * duration)
    events = []
    for k in range(math.ceil(duration / period)):
        events += [(k * period + 0.2 * period, "large"), (k * period + 0.5 * period, "burst")]
        if k < kills:
            events.append((k * period + 0.83 * period, "kill"))
    return sorted((round(at, 1), what) for at, what in events if at < quiet)


# --------------------------------------------------------------------------- the server


class Server:
    """``mtbioner serve --workers N`` in a subprocess: uvicorn's supervisor, and its workers as its children."""

    def __init__(self, model: Path, workers: int, queue_limit: int, log: Path) -> None:
        self.port = free_port()
        self.command = [sys.executable, "-m", "mtbioner", "serve", str(model), "--host", HOST, "--port"]
        self.command += [str(self.port), "--workers", str(workers), "--max-queue-sentences", str(queue_limit)]
        self.command += ["--log-level", "info"]  # uvicorn's supervisor says at info when a worker died
        self.log = log.open("wb")
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        self.root = psutil.Process(self.process.pid)
        self._workers: set[int] = set()

    def workers(self) -> list[psutil.Process]:
        """The live workers: multiprocessing's spawned children (not its resource tracker)."""
        found = []
        try:
            children = self.root.children()
        except psutil.Error:  # the supervisor itself is gone
            return []
        for child in children:
            try:
                if child.pid not in self._workers and "spawn_main" in " ".join(child.cmdline()):
                    self._workers.add(child.pid)  # (a child just forked still shows the parent's command line)
                if child.pid in self._workers and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        children = self.root.children(recursive=True) if self.process.poll() is None else []
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for child in children:  # started by this script; is_running() also checks the start time
            if child.is_running():
                child.kill()
        self.log.close()


def owner(workers: list[psutil.Process], client_port: int) -> int | None:
    """The worker holding the server end of the connection from ``client_port``."""
    for worker in workers:
        try:
            listing = getattr(worker, "net_connections", None) or worker.connections  # psutil < 6
            if any(c.raddr and c.raddr.port == client_port for c in listing(kind="tcp")):
                return worker.pid
        except psutil.Error:
            continue
    return None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, str | None, bytes]:
    """Status, ``Retry-After`` and body of one HTTP/1.1 response, read whole; a closed connection raises."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    retry_after = re.search(rb"(?i)\r\nretry-after: *(\S+)", head)
    content = await reader.readexactly(int(length.group(1)) if length else 0)
    return int(head.split(b" ", 2)[1]), retry_after and retry_after.group(1).decode(), content


async def open_request(port: int, method: str, path: str, payload: bytes = b"") -> tuple:
    """A request on a connection of its own: (reader, writer, the client's port)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
    writer.write(head.encode() + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    await writer.drain()
    return reader, writer, writer.get_extra_info("sockname")[1]


async def health_from(server: Server) -> tuple[int, int | None]:
    """``GET /health`` on a new connection: its status and the worker that answered (kept open until known)."""
    reader, writer, client_port = await open_request(server.port, "GET", "/health")
    try:
        status, _, _ = await asyncio.wait_for(read_response(reader), 10)
        return status, await asyncio.to_thread(owner, server.workers(), client_port)
    finally:
        writer.close()


# --------------------------------------------------------------------------- the run


class Soak:
    """The client: streams, timed events and samplers on one event loop; every outcome recorded once."""

    def __init__(self, server: Server, bodies: dict, args: argparse.Namespace, schedule: list) -> None:
        self.server, self.bodies, self.args, self.schedule = server, bodies, args, schedule
        self.duration = 60 * args.minutes
        self.outcomes: list[tuple] = []  # (kind, sent s, latency s, status, error, first error, retry-after, valid)
        self.issued = 0
        self.samples: list[dict] = []
        self.health: list[dict] = []
        self.kills: list[dict] = []
        self.tasks: set[asyncio.Task] = set()
        self.start = 0.0
        self.http: httpx.AsyncClient | None = None

    def now(self) -> float:
        return time.monotonic() - self.start

    def spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def post(self, kind: str, payload: bytes, sent: float | None = None, first_error: str | None = None):
        """One request, sent again (``--retries`` times) while its connection breaks; recorded once whatever happens.

        ``first_error``: what its first try (made elsewhere) saw. A timeout is not retried: that is a hang.
        """
        sent = self.now() if sent is None else sent
        self.issued += 1
        status, error, retry_after, valid, retried = 0, None, None, False, first_error
        limit = TIMEOUT_S.get(kind, self.args.heavy_timeout)
        try:
            for _ in range(self.args.retries + (0 if first_error else 1)):
                try:
                    response = await asyncio.wait_for(self.http.post("/v1/tag", content=payload), limit)
                except (TimeoutError, httpx.TimeoutException):
                    error = f"no answer in {limit} s"
                    break
                except httpx.TransportError as exc:  # the connection broke (its worker was killed, say)
                    error = type(exc).__name__
                    retried = retried or error
                    await asyncio.sleep(0.05)
                    continue
                status, retry_after, error = response.status_code, response.headers.get("retry-after"), None
                valid = answer_is_valid(kind, status, response.content, retry_after)
                break
        except asyncio.CancelledError:
            error = "still unanswered when the run ended"
            raise
        finally:
            self.outcomes.append((kind, sent, self.now() - sent, status, error, retried, retry_after, valid))

    async def stream(self, kind: str, rate: float) -> None:
        bodies = self.bodies[kind]
        for i in range(int(rate * self.duration)):
            scheduled = i / rate
            await asyncio.sleep(max(0.0, scheduled - self.now()))
            self.spawn(self.post(kind, bodies[i % len(bodies)], sent=scheduled))

    async def events(self) -> None:
        for at, what in self.schedule:
            await asyncio.sleep(max(0.0, at - self.now()))
            if what == "large":
                for kind in ("large", "over-limit"):
                    for payload in self.bodies[kind]:
                        self.spawn(self.post(kind, payload))
            elif what == "burst":
                for _ in range(self.args.burst_requests):
                    self.spawn(self.post("burst", self.bodies["burst"][0]))
            else:
                self.spawn(self.kill())

    async def kill(self) -> None:
        """SIGKILL the worker holding a request of 64 abstracts, mid-request; what its client saw; the recovery."""
        payload, victim = self.bodies["kill-victim"][0], None
        for _ in range(5):  # a request answered before its worker could be killed (a full queue's 503) is sent again
            at, before = self.now(), {w.pid for w in self.server.workers()}
            reader, writer, client_port = await open_request(self.server.port, "POST", "/v1/tag", payload)
            answer = asyncio.create_task(read_response(reader))
            while victim is None and self.now() - at < 10 and not answer.done():
                victim = await asyncio.to_thread(owner, self.server.workers(), client_port)
                await asyncio.sleep(0.02)
            await asyncio.sleep(self.args.kill_after)  # the worker has read the body; it is splitting and tagging
            if victim is not None and not answer.done():
                break
            victim = None
            try:
                status, retry_after, content = await asyncio.wait_for(answer, self.args.heavy_timeout)
                valid = answer_is_valid("kill-victim", status, content, retry_after)
                self.outcomes.append(("kill-victim", at, self.now() - at, status, None, None, retry_after, valid))
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
                self.outcomes.append(("kill-victim", at, self.now() - at, 0, type(exc).__name__, None, None, False))
            self.issued += 1
            writer.close()
            await asyncio.sleep(3)
        else:
            self.kills.append({"at_s": round(at, 1), "killed_at_s": None, "error": "no request stayed in flight"})
            return
        os.kill(victim, signal.SIGKILL)
        killed = self.now()
        recovering = asyncio.create_task(self.recovery(before, killed))
        status = 0
        try:
            status, retry_after, content = await asyncio.wait_for(answer, self.args.heavy_timeout)
            saw = f"HTTP {status}, answered as its worker died"
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            saw = f"connection closed without an answer ({type(exc).__name__})"
        except TimeoutError:
            saw = f"no answer in {self.args.heavy_timeout} s (a hang)"
        writer.close()
        record = {"at_s": round(at, 1), "killed_at_s": round(killed, 2), "worker": victim, "mid_request": True}
        record.update(client_saw=saw, client_saw_after_ms=round(1000 * (self.now() - killed), 1))
        if status:  # answered after all: one outcome, nothing to resend
            valid = answer_is_valid("kill-victim", status, content, retry_after)
            self.outcomes.append(("kill-victim", at, self.now() - at, status, None, None, retry_after, valid))
            self.issued += 1
        else:
            await self.post("kill-victim", payload, sent=at, first_error=saw)  # its client sends it again
            _, _, latency, status, error, _, retry_after, _ = self.outcomes[-1]
            record.update(retry_status=status or error, retry_answered_after_s=round(at + latency - killed, 2))
            record["retry_after"] = retry_after
        record.update(await recovering)
        self.kills.append(record)

    async def recovery(self, before: set[int], killed: float) -> dict:
        """When the supervisor started a new worker, and when that worker answered (the service whole again)."""
        found: dict = {"new_worker": None, "new_worker_started_after_s": None, "whole_after_s": None, "probes": 0}
        while self.now() - killed < 120:
            new = {w.pid for w in self.server.workers()} - before
            if new and found["new_worker"] is None:
                found.update(new_worker=min(new), new_worker_started_after_s=round(self.now() - killed, 2))
            if found["new_worker"] is not None:
                found["probes"] += 1
                try:
                    status, answered_by = await health_from(self.server)
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    status, answered_by = 0, None
                if status == 200 and answered_by == found["new_worker"]:
                    found["whole_after_s"] = round(self.now() - killed, 2)
                    break
            await asyncio.sleep(0.05)
        return found

    def sample_processes(self, t: float) -> list[dict]:
        rows = []
        for role, process in [("supervisor", self.server.root)] + [("worker", w) for w in self.server.workers()]:
            try:
                with process.oneshot():
                    rss, fds, threads = process.memory_info().rss, process.num_fds(), process.num_threads()
                rows.append({"t": round(t, 1), "role": role, "pid": process.pid, "rss_mb": round(rss / 2**20, 1)})
                rows[-1].update(fds=fds, threads=threads)
            except psutil.Error:
                continue
        client = psutil.Process().memory_info().rss
        rows.append({"t": round(t, 1), "role": "client", "pid": os.getpid(), "rss_mb": round(client / 2**20, 1)})
        return rows

    async def sampler(self) -> None:
        while self.now() < self.duration:
            t = self.now()
            self.samples += await asyncio.to_thread(self.sample_processes, t)
            try:
                response = await self.http.get("/health", timeout=5)
                self.health.append({"t": round(t, 1), "status": response.status_code})
                self.health[-1]["queued"] = response.json().get("queued_sentences")
            except (httpx.HTTPError, ValueError) as exc:
                self.health.append({"t": round(t, 1), "status": 0, "error": type(exc).__name__})
            await asyncio.sleep(max(0.0, t + self.args.sample_every - self.now()))

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        timeout = httpx.Timeout(self.args.heavy_timeout + 30, connect=10)
        url = f"http://{HOST}:{self.server.port}"
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, headers=JSON_TYPE) as self.http:
            self.start = time.monotonic()
            args = self.args
            streams = [
                self.stream("utterance", args.utterance_rate),
                self.stream("paragraph", args.paragraph_rate),
                self.stream("malformed", args.malformed_rate),
                self.events(),
                self.sampler(),
            ]
            await asyncio.gather(*streams)
            drain = self.now() + args.heavy_timeout + 60  # every request has a timeout; this is a last resort
            while self.tasks and self.now() < drain:
                await asyncio.wait(set(self.tasks), timeout=1)
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.samples += self.sample_processes(self.now())


def answer_is_valid(kind: str, status: int, content: bytes, retry_after: str | None) -> bool:
    """Whether the answer is what that status promises: entities for each text, a reason, a Retry-After."""
    if status == 200 and kind in ("utterance", "paragraph"):
        try:
            return isinstance(json.loads(content).get("entities"), list)
        except (ValueError, AttributeError):
            return False
    if status == 200:
        return content.startswith(b'{"results":[') and content.count(b'{"entities":') == DEFAULTS.max_texts
    if status == 503:
        return retry_after is not None and retry_after.isdigit() and content.startswith(b'{"detail"')
    return status in (413, 422) and content.startswith(b'{"detail"')


def wait_until_serving(server: Server, workers: int, timeout: float = 300) -> None:
    """Until every worker has answered ``/health`` itself."""

    async def probe() -> None:
        answered: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(answered) < workers:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {server.log.name}")
            try:
                status, by = await health_from(server)
                answered |= {by} if status == 200 and by is not None else set()
                await asyncio.sleep(0.05)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                await asyncio.sleep(0.5)

    asyncio.run(probe())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long traffic is sent")
    parser.add_argument("--model", help="model folder or shipped name (default: the shipped model)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=2, help="workers killed mid-request (SIGKILL)")
    parser.add_argument("--kill-after", type=float, default=1.0, help="s a worker works on the request before")
    parser.add_argument("--utterance-rate", type=float, default=20.0, help="utterances per second")
    parser.add_argument("--paragraph-rate", type=float, default=0.5, help="abstracts per second")
    parser.add_argument("--malformed-rate", type=float, default=0.2, help="malformed bodies per second")
    parser.add_argument("--period", type=float, default=300.0, help="s between large requests, bursts and kills")
    parser.add_argument("--burst-requests", type=int, default=16)
    parser.add_argument("--burst-factor", type=float, default=1.25, help="a burst's sentences / all queues' room")
    parser.add_argument("--queue-limit", type=int, help="the server's --max-queue-sentences (default: 1.5 large)")
    parser.add_argument("--retries", type=int, default=2, help="resends of a request whose connection broke")
    parser.add_argument("--heavy-timeout", type=float, default=300.0, help="client timeout of large requests, s")
    parser.add_argument("--sample-every", type=float, default=5.0, help="s between memory and /health samples")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MTBIONER_DATA", "../shared/data")))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.sample_every = min(args.sample_every, max(1.0, args.minutes))  # short runs: still a few per minute

    model = resolve_model(args.model)
    bodies, sizes = make_inputs(args)
    schedule = make_schedule(60 * args.minutes, args.period, args.kills)
    import uvicorn

    facts = machine(
        uvicorn=uvicorn.__version__,
        threads_per_worker=default_threads(args.workers),
        load_average_before=[round(x, 2) for x in os.getloadavg()],
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(model, args.workers, sizes["queue_limit"], Path(tmp) / "server.log")
        try:
            wait_until_serving(server, args.workers)
            soak = Soak(server, bodies, args, schedule)
            asyncio.run(soak.run())
        finally:
            server.stop()
            log = (Path(tmp) / "server.log").read_text(errors="replace").splitlines()
            quiet = [line for line in log if '"POST /v1/tag"' not in line and '"GET /health"' not in line]
            (args.out / "server.log").write_text("\n".join(quiet) + "\n")
    facts["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    labels: dict[int, str] = {}
    for s in soak.samples:
        if s["role"] == "worker" and s["pid"] not in labels:
            labels[s["pid"]] = f"w{len(labels) + 1}"
    minutes = per_minute(soak, labels)
    report = {
        "machine": facts,
        "model": args.model or f"the shipped {model.name!r} model",
        "minutes": args.minutes,
        "rates": {
            "utterance": args.utterance_rate,
            "paragraph": args.paragraph_rate,
            "malformed": args.malformed_rate,
        },
        "period_s": round(effective_period(60 * args.minutes, args.period, args.kills), 1),
        "burst_requests": args.burst_requests,
        "inputs": sizes,
        "schedule": schedule,
        "server_command": shlex.join(
            ["mtbioner", "serve", *([args.model] if args.model else []), *server.command[5:]]
        ).replace(f"--port {server.port}", "--port P"),
        "command": "python " + shlex.join(["benchmarks/soak.py", *(argv if argv is not None else sys.argv[1:])]),
        "workers": {str(pid): label for pid, label in labels.items()},
        "verdict": verdict(soak, minutes, labels),
        "kills": soak.kills,
        "per_minute": minutes,
        "samples": soak.samples,
        "health": soak.health,
    }
    publish(args.out, "soak", report, to_markdown(report))
    plot(soak, labels, args.out / "soak.png")
    print(to_markdown(report))
    return 0 if all(report["verdict"]["criteria"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
