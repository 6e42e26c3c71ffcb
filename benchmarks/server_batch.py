"""Windows per forward pass in the server: speed and peak memory of its model calls, by batch size.

A server call holds at most ``max_batch_sentences`` (64) sentences, of several requests: a burst's questions or the
slices of large requests. Inside a call the sentences are sorted by length and cut into batches, and each batch is
padded to its longest sentence, so with 64 sentences of mixed lengths a batch of 32 pads half of them to a long one;
and a server process runs ONNX Runtime without its memory arena (``prepare_process``), so every tensor is a fresh
allocation. This measures what ``SERVER_BATCH_SIZE`` rests on: for each batch size, in a fresh process set up as a
server worker (``prepare_process``, one thread, the shipped model unless ``--model``), the soak's texts
(``soak.make_inputs``, as ``server_memory.py`` builds them) cut into sentences and tagged in calls of ``--call``
sentences, as the server's ``MicroBatcher`` would hand them over (``Tagger.sentence_entities``): the first ``--texts``
texts of its large request (abstracts) and of its burst (questions). Recorded: sentences/s of each, and the peak
resident memory above the loaded model (``ru_maxrss``; the abstracts run first, so the questions' peak is rarely above
theirs). Batch sizes run one after another, ``--repeats`` times each by turns; compare them only within one run, on a
quiet host.

    python benchmarks/server_batch.py [--data-dir ../shared/data] [--batch-sizes 32,16,8,4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _fresh import batch_sizes, run_fresh  # noqa: E402
from _machine import describe, machine, publish  # noqa: E402


def child(args: argparse.Namespace) -> dict:
    """One batch size, in this fresh process: load as a server worker, tag the abstracts, then the questions."""
    from server_memory import inputs

    from mtbioner.apps.serving import prepare_process
    from mtbioner.runtime.shipped import resolve_model
    from mtbioner.runtime.tagging import Tagger

    folder = resolve_model(args.model)
    prepare_process(1, 2, folder)
    tagger = Tagger.load(folder, batch_size=args.batch_size)
    bodies, _ = inputs(args.data_dir)  # the soak's request bodies
    first = tagger.sentence_spans("MYC rose.")[0]
    tagger.sentence_entities([("MYC rose.", tagger.sentence("MYC rose.", *first))], tagger.corpora)
    time.sleep(6)  # the heap releaser's trailing release
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row: dict = {"batch_size": args.batch_size}
    for kind, name in (("large", "abstracts"), ("burst", "questions")):
        texts = json.loads(bodies[kind][0])["texts"][: args.texts]
        units = [(text, start, end) for text in texts for start, end in tagger.sentence_spans(text)]
        started = time.perf_counter()
        for at in range(0, len(units), args.call):
            part = units[at : at + args.call]
            tagger.sentence_entities([(text, tagger.sentence(text, s, e)) for text, s, e in part], tagger.corpora)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row[name] = {
            "sentences": len(units),
            "sentences_per_s": round(len(units) / seconds, 1),
            "peak_above_loaded_mb": round(peak - loaded, 1),
        }
    return row


def markdown(runs: list[dict], meta: dict) -> str:
    lines = [
        "# Windows per forward pass in the server: speed and peak memory of its model calls",
        "",
        "Method: the docstring of `benchmarks/server_batch.py`.",
        "",
        f"- machine: {describe(meta['machine'])}",
        f"- model: {meta['model']}; calls of {meta['call']} sentences; the first {meta['texts']} texts of the soak's"
        f" large request and of its burst; load average before: {meta['load_before']}",
        "",
        "| batch | abstracts, sentences/s | peak above loaded MB | questions, sentences/s |",
        "|---:|---:|---:|---:|",
    ]
    for size in meta["batch_sizes"]:
        rows = [r for r in runs if r["batch_size"] == size]
        rates = " / ".join(str(r["abstracts"]["sentences_per_s"]) for r in rows)
        peaks = " / ".join(str(r["abstracts"]["peak_above_loaded_mb"]) for r in rows)
        questions = " / ".join(str(r["questions"]["sentences_per_s"]) for r in rows)
        lines.append(f"| {size} | {rates} | {peaks} | {questions} |")
    counts = runs[0]["abstracts"]["sentences"], runs[0]["questions"]["sentences"]
    lines += [
        "",
        f"Each cell: one figure per repeat ({counts[0]:,} abstract and {counts[1]:,} question sentences).",
        "",
        "Reproduce:",
        "",
        "```",
        meta["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", help="model folder or shipped name (default: the shipped default)")
    parser.add_argument("--batch-sizes", default="32,16,8,4", help="comma-separated windows per forward pass")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the batch sizes, by turns")
    parser.add_argument("--call", type=int, default=64, help="sentences per call (the server's max_batch_sentences)")
    parser.add_argument("--texts", type=int, default=24, help="texts of each request body")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "server_batch")
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)  # the child process's
    args = parser.parse_args(argv)
    args.batch_sizes = batch_sizes(parser, args.batch_sizes)
    for name in ("repeats", "call", "texts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.batch_size:
        print(json.dumps(child(args)))
        return 0
    load_before = [round(v, 2) for v in os.getloadavg()]
    runs = []
    for _ in range(args.repeats):
        for size in args.batch_sizes:
            run = run_fresh(__file__, [*argv, "--batch-size", str(size)], f"batch size {size}")
            if run is None:
                return 1
            runs.append(run)
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    meta = {
        "machine": machine(threads=1),
        "model": args.model or "the shipped default",
        "load_before": load_before,
        "batch_sizes": args.batch_sizes,
        "call": args.call,
        "texts": args.texts,
        "command": " ".join(["python benchmarks/server_batch.py", *argv]),
    }
    publish(args.out, "server_batch", {"meta": meta, "runs": runs}, markdown(runs, meta))
    print(markdown(runs, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
