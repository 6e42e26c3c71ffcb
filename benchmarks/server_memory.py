"""One server worker's memory under the soak's requests, replayed in one process: the server's set-up and the defaults.

The soak (``benchmarks/soak.py``) judges memory as issue 43 asks, over 30 minutes with two workers and faults. This
replays one worker's share in minutes, so that a memory setting or fix can be compared in one run on one host. Each
set-up runs in a fresh process (heap settings are process-wide) that builds the app (``create_app``, the shipped model
unless ``--model``) and sends it, in-process through FastAPI's ``TestClient``, the soak's own request bodies
(``soak.make_inputs``): by turns its large request (64 texts, ~0.9 MB, ~5,200 sentences; with it, as in the soak, its
three requests just past a limit, answered 413) and one of its burst requests (64 texts of questions, ~1,300
sentences), each followed by ``--settle`` s of utterances (one every 50 ms; the heap releaser's interval is 5 s). With
``--concurrent``, the soak's mix at once instead: utterances (and an abstract every 2 s) all the while, and each burst
as ``--burst-requests`` requests at once against a queue of 1.5 large requests (200 or 503). Resident memory is read
after loading and after each settle. Set-ups:

  defaults  ``set_threads`` only: ONNX Runtime's CPU arena, glibc's own heap settings (the library's, ``mtbioner tag``)
  server    ``prepare_process``, as ``mtbioner serve`` and each ``--workers`` process: one glibc arena, memory
            back to the system only when released (``configure_heap``), and the server's choice of the two below
  server-malloc  ``server`` with Python's objects from glibc's malloc (``PYTHONMALLOC=malloc``), which
            ``malloc_trim`` gives back page by page; Python's own allocator gives a 1 MiB arena back only when all
            of it is free (docs/performance.md, "Soak": flatter, but utterances wait longer beside a large request)
  arena-release  ``server`` with ONNX Runtime's CPU arena kept (it holds the tensors of the largest batch) and glibc's
            free heap released after large runs and once more after the last (``HeapReleaser``)
  no-arena  ``server`` without the arena (every tensor from glibc's heap), released as above
  arena     ``server`` with the arena kept and no releases

``--batch-sizes`` runs each set-up with each of these windows per forward pass (default: the server's own,
``SERVER_BATCH_SIZE``); a row names its batch size.

What matters is the last rounds against the first (a worker whose memory steps up at each large request creeps; one
that keeps its level after the first is flat) and the level itself. Speed: the sentences/s of the large requests,
set-ups one after the other (compare them only within one run, on a quiet host).

    python benchmarks/server_memory.py [--data-dir ../shared/data] [--rounds 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _fresh import batch_sizes, run_fresh  # noqa: E402
from _machine import describe, machine, publish  # noqa: E402

from mtbioner.apps.serving import SERVER_BATCH_SIZE  # noqa: E402

SETUPS = ("defaults", "server", "server-malloc", "arena-release", "no-arena", "arena")
VARIANTS = {"arena-release": (True, True), "no-arena": (True, False), "arena": (False, True)}
"""A variant's ``set_release_memory(release, arena)``, set after ``prepare_process``."""
JSON = {"content-type": "application/json"}


def environment(setup: str) -> dict[str, str]:
    """The child's environment: this process's, with ``PYTHONMALLOC=malloc`` for ``server-malloc`` only."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    if setup == "server-malloc":
        environ["PYTHONMALLOC"] = "malloc"
    return environ


def rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def inputs(data_dir: Path) -> tuple[dict, dict]:
    """The soak's request bodies and sizes, with its defaults (2 workers, queue of 1.5 large requests)."""
    import soak

    defaults = argparse.Namespace(data_dir=data_dir, queue_limit=None, burst_factor=1.25, workers=2, burst_requests=16)
    return soak.make_inputs(defaults)


def chat(client, bodies: dict, stop: threading.Event, paragraphs: bool) -> None:
    """An utterance every 50 ms until ``stop``; with ``paragraphs``, every 40th is an abstract (the soak's 0.5/s)."""
    count = 0
    while not stop.is_set():
        kind = "paragraph" if paragraphs and count % 40 == 39 else "utterance"
        client.post("/v1/tag", content=bodies[kind][count % len(bodies[kind])], headers=JSON).raise_for_status()
        count += 1
        time.sleep(0.05)


def send(client, bodies: list[bytes]) -> list[int]:
    """The requests of ``bodies`` at once (one thread each); their status codes, in the order of ``bodies``."""
    statuses: list[int] = [0] * len(bodies)

    def one(index: int) -> None:
        statuses[index] = client.post("/v1/tag", content=bodies[index], headers=JSON).status_code

    senders = [threading.Thread(target=one, args=(index,)) for index in range(len(bodies))]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    return statuses


def child(args: argparse.Namespace) -> dict:
    """One set-up, in this (fresh) process: load, rounds of a large or burst request and utterances."""
    from fastapi.testclient import TestClient

    from mtbioner.apps.serving import ServeSettings, create_app, prepare_process, set_threads
    from mtbioner.runtime.shipped import resolve_model

    folder = resolve_model(args.model)
    (set_threads if args.setup == "defaults" else prepare_process)(None, 2, folder)
    if args.setup in VARIANTS:
        from mtbioner.runtime.onnx_backend import set_release_memory

        set_release_memory(*VARIANTS[args.setup])
    bodies, sizes = inputs(args.data_dir)
    rounds, rates = [], []
    settings = ServeSettings(max_queue_sentences=sizes["queue_limit"], batch_size=args.batch_size)
    with TestClient(create_app(folder, settings)) as client:
        client.post("/v1/tag", content=bodies["utterance"][0], headers=JSON).raise_for_status()
        loaded = rss_mb()
        stop = threading.Event()
        talker = threading.Thread(target=chat, args=(client, bodies, stop, args.concurrent), daemon=True)
        if args.concurrent:
            talker.start()
        for number in range(args.rounds):
            kind = "large" if number % 2 == 0 else "burst"
            copies = args.burst_requests if kind == "burst" and args.concurrent else 1
            started = time.perf_counter()
            over_limit = bodies["over-limit"] if kind == "large" else []  # sent with it, as the soak does
            statuses = send(client, [bodies[kind][0]] * copies + over_limit)
            refused = statuses[copies:]
            statuses = sorted(statuses[:copies])
            if set(statuses) - {200, 503} or 200 not in statuses or set(refused) - {413}:
                raise RuntimeError(f"round {number + 1} ({kind}): statuses {statuses}, over the limits {refused}")
            if kind == "large":
                rates.append(sizes["large"]["sentences"] / (time.perf_counter() - started))
            if args.concurrent:
                time.sleep(args.settle)
            else:
                settle = threading.Event()
                threading.Timer(args.settle, settle.set).start()
                chat(client, bodies, settle, paragraphs=False)
            rounds.append({"after": kind, "rss_mb": rss_mb(), "refused": statuses.count(503)})
            name = f"{args.setup}, batch {args.batch_size}"
            print(f"{name} round {number + 1} ({kind}): {rounds[-1]['rss_mb']} MB", file=sys.stderr, flush=True)
        stop.set()
        if args.concurrent:
            talker.join()
    trace = [r["rss_mb"] for r in rounds]
    return {
        "setup": args.setup,
        "python_allocator": os.environ.get("PYTHONMALLOC", "pymalloc"),
        "batch_size": args.batch_size,
        "loaded_mb": loaded,
        "rounds": rounds,
        "first_mb": trace[0],
        "last_mb": trace[-1],
        "range_mb": [min(trace), max(trace)],
        "spread_pct": round(100 * (max(trace) / min(trace) - 1), 1),
        "large_sentences_per_s": round(sum(rates) / len(rates), 1),
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# One server worker's memory under the soak's requests, replayed in one process",
        "",
        "Method: the docstring of `benchmarks/server_memory.py`; the soak itself is in `benchmarks/results/soak`.",
        "",
        f"- machine: {describe(meta['machine'])}",
        f"- model: {meta['model']}; {meta['rounds']} rounds (large and burst by turns, each followed by"
        f" {meta['settle']} s of utterances{'; the mix at once (--concurrent)' if meta['concurrent'] else ''});"
        f" load average before: {meta['load_before']}",
        "",
        "| set-up | Python's allocator | batch | RSS after loading MB | after round 1 | after the last |"
        " range after round 1 | spread | large request, sentences/s |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        low, high = row["range_mb"]
        lines.append(
            f"| {row['setup']} | {row['python_allocator']} | {row['batch_size']} |"
            f" {row['loaded_mb']} | {row['first_mb']} | {row['last_mb']} |"
            f" {low}–{high} |"
            f" {row['spread_pct']} % | {row['large_sentences_per_s']} |"
        )
    lines += ["", "After each round (MB):", ""]
    for row in rows:
        trace = ", ".join(f"{r['after']} {r['rss_mb']}" for r in row["rounds"])
        lines.append(f"- {row['setup']}, batch {row['batch_size']}: {trace}")
    lines += ["", "Reproduce:", "", "```", meta["command"], "```", ""]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", help="model folder or shipped name (default: the shipped default)")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--batch-sizes", default=str(SERVER_BATCH_SIZE), help="comma-separated windows per pass")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--settle", type=float, default=7.0, help="s of utterances after each large or burst")
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="the soak's mix at once: utterances and abstracts throughout, bursts of --burst-requests requests",
    )
    parser.add_argument("--burst-requests", type=int, default=16, help="with --concurrent")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "server_memory")
    parser.add_argument("--setup", choices=SETUPS, help=argparse.SUPPRESS)  # the child process's set-up
    parser.add_argument("--batch-size", type=int, default=SERVER_BATCH_SIZE, help=argparse.SUPPRESS)  # and batch
    args = parser.parse_args(argv)
    unknown = set(args.setups.split(",")) - set(SETUPS)
    if unknown:
        parser.error(f"--setups: unknown {', '.join(sorted(unknown))} (known: {', '.join(SETUPS)})")
    args.batch_sizes = batch_sizes(parser, args.batch_sizes)
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.setup:
        print(json.dumps(child(args)))
        return 0
    load_before = [round(v, 2) for v in os.getloadavg()]
    rows = []
    for setup in args.setups.split(","):
        for size in args.batch_sizes:
            child_argv = [*argv, "--setup", setup, "--batch-size", str(size)]
            row = run_fresh(__file__, child_argv, f"the {setup} set-up", environment(setup))
            if row is None:
                return 1
            rows.append(row)
    meta = {
        "machine": machine(),
        "model": args.model or "the shipped default",
        "load_before": load_before,
        "rounds": args.rounds,
        "settle": args.settle,
        "concurrent": args.concurrent,
        "command": " ".join(["python benchmarks/server_memory.py", *argv]),
    }
    publish(args.out, "server_memory", {"meta": meta, "rows": rows}, markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
