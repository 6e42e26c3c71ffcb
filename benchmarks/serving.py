"""HTTP serving under load: requests/s and p50/p99 latency of ``POST /v1/tag``, and the server's memory.

The server is ``mtbioner serve`` in its own process; this script is the client, another
process on the same machine (so the two compete for the same cores, as a chatbot backend
and its server would on one small box). Scenarios:

  utterance-50rps   open loop: a short chatbot utterance every 20 ms for DURATION seconds
                    (the issue's goal: p99 < 50 ms at 50 requests/s, no failed request);
                    latency runs from the request's *scheduled* time, so a client that falls
                    behind counts against the server (no coordinated omission).
  utterance-max     closed loop: CONCURRENCY clients, each sending its next utterance as
                    soon as the last is answered: the most requests/s the server sustains.
  utterance-50rps + 1 MB request
                    the open loop again while one client's ~0.9 MB request (64 texts of short
                    sentences, under the 1 MB and 64-text limits) is being tagged: a chatbot's
                    utterances must not wait behind another client's batch job (goal: p99 < 100 ms,
                    no failed utterance). The large request is sent first and must still be in
                    flight when the utterances end; its progress is read from ``GET /health``.
  abstract-max      the same with whole abstracts (JNLPBA test documents, ~250 words).
  utterance-max, no batching
                    utterance-max against a second server with batching off
                    (``--max-batch-sentences 1 --batch-window-ms 0``): what micro-batching buys.
  ..., ONNX fp32    with ``--onnx``: the two utterance scenarios against the model exported
                    with ``mtbioner.runtime.export.export_onnx`` (served by ONNX Runtime).

CPU time per request is the user + system time of the server (and of this client) over
the scenario, divided by its requests: where the machine's time goes. Every request is
checked: status 200 and an ``entities`` list; anything else (or a transport error) is a
failed request. Server memory is the resident set size of the server
process (and its children), sampled every 0.25 s: after loading, and the peak under load.

    python benchmarks/serving.py [--model MODEL] [--data-dir ../shared/data] [--duration 20] [--onnx]

Without ``--model`` the server gets an untrained model of the default encoder
(all-MiniLM-L6-v2) with heads for the four corpora's label sets: its latency is a trained
model's (same network), its entities are noise. Writes ``benchmarks/results/serving.json``
and ``serving.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from _machine import describe, machine

from mtbioner.apps.serving import default_threads
from mtbioner.fileio import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"
LABEL_SETS = {
    "BC2GM": ["GENE"],
    "BC5CDR": ["Chemical", "Disease"],
    "NCBI-disease": ["Disease"],
    "JNLPBA": ["DNA", "RNA", "cell_line", "cell_type", "protein"],
}
UTTERANCES = [
    "I take metformin for my diabetes, is that ok with alcohol?",
    "Can ibuprofen cause stomach ulcers?",
    "My mother has breast cancer and a BRCA1 mutation.",
    "What are the side effects of tamoxifen?",
    "I have had a migraine for three days.",
    "Is paracetamol safe during pregnancy?",
    "My son was diagnosed with asthma, should he avoid aspirin?",
    "Does lisinopril interact with potassium supplements?",
    "I feel dizzy since I started amlodipine.",
    "What is the treatment for hepatitis C?",
    "Can warfarin and vitamin K be taken together?",
    "Is Parkinson's disease hereditary?",
    "My doctor mentioned a mutation in the CFTR gene.",
    "How long does it take for amoxicillin to work on strep throat?",
    "I have chest pain and shortness of breath.",
    "Does caffeine make anxiety worse?",
]


# --------------------------------------------------------------------------- inputs


def abstracts(data_dir: Path, count: int = 64) -> list[str]:
    """JNLPBA test documents (MEDLINE abstracts), tokens joined by spaces."""
    docs: list[list[str]] = []
    for line in (data_dir / "JNLPBA" / "test.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("-DOCSTART-"):
            docs.append([])
        elif line.strip() and docs:
            docs[-1].append(line.split("\t")[0])
    return [" ".join(doc) for doc in docs if len(doc) > 50][:count]


def untrained_model(folder: Path) -> Path:
    """Default encoder plus fresh heads for the four corpora: a real-sized network, no training."""
    from mtbioner.model.model import MultiTaskTagger

    labels = {name: sorted({"O", *(f"{p}-{t}" for t in types for p in "BI")}) for name, types in LABEL_SETS.items()}
    MultiTaskTagger.from_encoder(labels).save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``mtbioner serve`` in a subprocess, with its memory sampled while it runs."""

    def __init__(self, model: Path, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "mtbioner",
            "serve",
            str(model),
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            *extra,
        ]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        self.peak = 0

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"server exited: {self.log.read().decode(errors='replace')}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit("server did not start in time")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process tree so far."""
        try:
            root = psutil.Process(self.process.pid)
            times = [p.cpu_times() for p in [root, *root.children(recursive=True)]]
        except psutil.Error:
            return 0.0
        return sum(t.user + t.system for t in times)

    def rss(self) -> int:
        try:
            root = psutil.Process(self.process.pid)
            total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return 0
        self.peak = max(self.peak, total)
        return total

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.rss()
            await asyncio.sleep(0.25)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --------------------------------------------------------------------------- load


async def request(client: httpx.AsyncClient, text: str) -> bool:
    try:
        response = await client.post("/v1/tag", json={"text": text})
        return response.status_code == 200 and isinstance(response.json().get("entities"), list)
    except (httpx.HTTPError, ValueError):
        return False


async def open_loop(client: httpx.AsyncClient, texts: list[str], rate: float, duration: float) -> tuple:
    """One request every 1/rate s; latency from its scheduled start."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal failures
        ok = await request(client, texts[i % len(texts)])
        latencies.append(loop.time() - scheduled)
        failures += not ok

    start = loop.time()
    tasks = []
    for i in range(int(rate * duration)):
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return latencies, failures, loop.time() - start


async def closed_loop(client: httpx.AsyncClient, texts: list[str], concurrency: int, duration: float) -> tuple:
    """``concurrency`` clients sending back to back until ``duration`` is over."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures = 0
    start = loop.time()

    async def worker(offset: int) -> None:
        nonlocal failures
        i = offset
        while loop.time() - start < duration:
            sent = loop.time()
            ok = await request(client, texts[i % len(texts)])
            latencies.append(loop.time() - sent)
            failures += not ok
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, failures, loop.time() - start


def large_request(max_bytes: int = 900_000, texts: int = 64) -> list[str]:
    """64 texts of short sentences, ~0.9 MB of JSON in all: one client's batch job."""
    sentences = [u if u.endswith((".", "?")) else u + "." for u in UTTERANCES]
    per_text = max_bytes // texts
    body: list[str] = []
    for k in range(texts):
        parts, size, i = [], 0, k
        while size < per_text:
            parts.append(sentences[i % len(sentences)])
            size += len(parts[-1]) + 1
            i += 1
        body.append(" ".join(parts))
    return body


async def in_flight(server: Server, big: list[str], started: asyncio.Event) -> dict:
    """Send the large request; report its status and time (or that it was still running when cancelled)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=3600) as client:
        sent = time.perf_counter()
        task = asyncio.create_task(client.post("/v1/tag", json={"texts": big}))
        while (await client.get("/health")).json().get("queued_sentences", 0) == 0 and not task.done():
            await asyncio.sleep(0.05)
        started.set()
        try:
            response = await asyncio.shield(task)
            return {"status": response.status_code, "seconds": round(time.perf_counter() - sent, 1)}
        except asyncio.CancelledError:
            task.cancel()
            raise


async def scenario(server: Server, name: str, texts: list[str], mode: str, level: float, duration: float) -> dict:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    extra: dict = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        for text in texts[:8]:  # warm-up: connections, first forward passes
            await request(client, text)
        big_task = None
        if mode == "mixed":
            big = large_request()
            extra["large_request_bytes"] = len(httpx.Request("POST", "/", json={"texts": big}).content)
            started = asyncio.Event()
            big_task = asyncio.create_task(in_flight(server, big, started))
            await started.wait()  # split and queued: the utterances start while it is being tagged
        stop = asyncio.Event()
        sampler = asyncio.create_task(server.sample(stop))
        run = closed_loop if mode == "closed" else open_loop
        server_cpu, me = server.cpu_seconds(), psutil.Process()
        client_cpu = sum(me.cpu_times()[:2])
        latencies, failures, elapsed = await run(client, texts, int(level) if mode == "closed" else level, duration)
        server_cpu = server.cpu_seconds() - server_cpu
        client_cpu = sum(me.cpu_times()[:2]) - client_cpu
        stop.set()
        await sampler
        if big_task is not None:
            health = (await client.get("/health")).json()
            extra["large_request_in_flight_at_end"] = not big_task.done()
            extra["large_request_sentences_left_at_end"] = health["queued_sentences"]
            extra["large_request"] = big_task.result() if big_task.done() else "still running (cancelled)"
            big_task.cancel()
    ms = np.array(latencies) * 1000
    return {
        "scenario": name,
        "mode": f"{int(level)} concurrent clients" if mode == "closed" else f"{level:g} req/s offered",
        "requests": len(latencies),
        "failed": failures,
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "words_per_text": round(float(np.mean([len(t.split()) for t in texts])), 1),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(len(latencies), 1), 1),
        "client_cpu_ms_per_request": round(1000 * client_cpu / max(len(latencies), 1), 1),
        "server_rss_peak_mb": round(server.peak / 2**20),
        **extra,
    }


# --------------------------------------------------------------------------- report


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def machine_facts() -> dict:
    return machine(
        torch_threads_in_server=default_threads(1),
        http_stack="httptools + uvloop" if _installed("httptools") and _installed("uvloop") else "h11 + asyncio",
        load_average_before=[round(x, 2) for x in os.getloadavg()],
    )


def to_markdown(report: dict) -> str:
    facts = report["machine"]
    lines = [
        "# Serving benchmark: `mtbioner serve` under load",
        "",
        "Method: see the docstring of `benchmarks/serving.py`. Server and client are two processes on one machine.",
        "",
        f"- machine: {describe(facts)}; Python {facts['python']}, torch {facts['torch']} "
        f"({facts['torch_threads_in_server']} torch thread(s) in the server); uvicorn with {facts['http_stack']}",
        f"- load average before / after: {facts['load_average_before']} / {facts['load_average_after']} "
        + (
            "(other jobs were running on the same cores, so these figures are conservative)"
            if facts["load_average_before"][0] > facts["cores"]
            else "(nothing else ran on the machine; the 'after' figure counts this benchmark's own server and client)"
        ),
        f"- model: {report['model']}",
        f"- server memory (RSS) after loading: {report['server_rss_loaded_mb']} MB",
        "- goals: p99 < 50 ms for an utterance at 50 req/s, and < 100 ms while a 1 MB request is being tagged, "
        "no failed request: "
        + "; ".join(f"{name} **{'met' if met else 'not met'}**" for name, met in report["goal_met"].items()),
        "",
        "| scenario | load | requests | failed | req/s | p50 ms | p90 ms | p99 ms | max ms | words/text "
        "| server CPU ms/req | client CPU ms/req | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["scenarios"]:
        lines.append(
            f"| {r['scenario']} | {r['mode']} | {r['requests']} | {r['failed']} | {r['rps']} | {r['p50_ms']} | "
            f"{r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['words_per_text']} | "
            f"{r['server_cpu_ms_per_request']} | {r['client_cpu_ms_per_request']} | {r['server_rss_peak_mb']} |"
        )
    for r in report["scenarios"]:
        if "large_request" in r:
            lines.append(
                f"\n{r['scenario']}: the large request ({r['large_request_bytes']:,} bytes) was "
                + (
                    f"still being tagged when the utterances ended ({r['large_request_sentences_left_at_end']:,} "
                    "sentences left), as intended"
                    if r["large_request_in_flight_at_end"]
                    else f"finished before the utterances ended: {r['large_request']}"
                )
                + "."
            )
    lines += ["", "Reproduce:", "", "```", report["command"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: an untrained 4-head MiniLM model)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MTBIONER_DATA", "../shared/data")))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--rate", type=float, default=50.0, help="utterances per second in the open-loop scenario")
    parser.add_argument("--concurrency", type=int, default=32, help="clients in the closed-loop utterance scenarios")
    parser.add_argument("--abstract-concurrency", type=int, default=8)
    parser.add_argument("--onnx", action="store_true", help="also serve the model exported to ONNX (fp32)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    facts = machine_facts()
    texts = abstracts(args.data_dir)
    utterance_50 = ("utterance-50rps", UTTERANCES, "open", args.rate)
    utterance_max = ("utterance-max", UTTERANCES, "closed", args.concurrency)
    mixed = ("utterance-50rps + 1 MB request", UTTERANCES, "mixed", args.rate)
    results: list[dict] = []
    loaded = 0
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or untrained_model(Path(tmp) / "model")
        described = str(args.model) if args.model else f"untrained all-MiniLM-L6-v2 + linear heads {list(LABEL_SETS)}"
        runs = [utterance_50, utterance_max, ("abstract-max", texts, "closed", args.abstract_concurrency), mixed]
        servers = [
            ("", model, [], runs),
            (", no batching", model, ["--max-batch-sentences", "1", "--batch-window-ms", "0"], [utterance_max]),
        ]
        if args.onnx:
            from mtbioner.runtime.export import export_onnx

            export_onnx(model, Path(tmp) / "onnx")
            servers.append((", ONNX fp32", Path(tmp) / "onnx", [], [utterance_50, utterance_max, mixed]))
        for suffix, folder, extra, runs in servers:
            server = Server(folder, extra)
            try:
                server.wait_ready()
                loaded = loaded or server.rss()
                for name, inputs, mode, level in runs:
                    server.peak = 0
                    results.append(asyncio.run(scenario(server, name + suffix, inputs, mode, level, args.duration)))
                    print(results[-1], flush=True)
            finally:
                server.stop()
    facts["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    goals = {
        r["scenario"]: r["failed"] == 0 and r["p99_ms"] < (100 if "1 MB" in r["scenario"] else 50)
        for r in results
        if "50rps" in r["scenario"]
    }
    report = {
        "machine": facts,
        "model": described,
        "server_rss_loaded_mb": round(loaded / 2**20),
        "goal_met": goals,
        "scenarios": results,
        "command": "python " + " ".join(shlex.quote(a) for a in ["benchmarks/serving.py", *(argv or sys.argv[1:])]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "serving.json", report)
    with atomic_write(args.out / "serving.md") as handle:
        handle.write(to_markdown(report))
    print(to_markdown(report))
    return 0 if all(r["failed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
