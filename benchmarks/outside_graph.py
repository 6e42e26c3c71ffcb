"""Time spent outside ONNX Runtime when tagging raw text, for this checkout and a baseline revision, in one run.

``Tagger.tag_batch`` on the BC5CDR test sentences (tokens joined by spaces, as raw text) with an
exported model: the total time, the time inside ``InferenceSession.run`` (the graph), and the
rest (sentence splitting, tokenization, windows, padding, copying scores out, decoding, entity
objects): the part a faster CPU does not shrink much. Each tree runs in its own interpreter
(``PYTHONPATH`` to its ``src``), the same model, texts and threads; best of 3 warm passes, plus the
first (cold) pass.

    python benchmarks/outside_graph.py --model MODEL_INT8 --data-dir ../shared/data --baseline c398ef0

With ``--stages``, one more pass runs under ``cProfile`` and the time outside the graph is split into its
stages (:data:`STAGES`: sentence splitting, sub-token windows, padding, decoding every head, labels to spans,
the merged answer, the rest): a profile slows Python code far more than the graph, so read each stage as a
share of the profiled time outside the graph, not as milliseconds (issue 42: what to make faster around a
small student's graph).

Writes ``benchmarks/results/outside_graph.json`` and ``.md`` (not with ``--limit`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _machine import baseline_and_checkout, describe, machine, publish
from inference import time_graph

REPO = Path(__file__).resolve().parent.parent
# stage -> (file name, function) whose cumulative profiled time it is; none calls another (the graph's run is
# timed apart), so the rest of the time outside the graph is what these leave
STAGES = {
    "sentence splitting": ("text.py", "split_sentences"),
    "windows": ("encoding.py", "encode"),
    "padding": ("encoding.py", "collate"),
    "decoding": ("decoding.py", "decode_all"),
    "labels to spans": ("schemes.py", "tags_to_spans"),
    "merged answer": ("answer.py", "answer"),
}


def child(args: argparse.Namespace) -> None:
    """Tag the texts with the mtbioner on ``sys.path``; print timings as JSON."""
    import mtbioner
    from mtbioner.data.corpus import read_corpus
    from mtbioner.runtime.onnx_backend import OnnxTagger
    from mtbioner.runtime.tagging import Tagger

    corpus = read_corpus(args.data_dir / "BC5CDR", splits=["test"], limit=args.limit)
    texts = [" ".join(s.tokens) for s in corpus.sentences("test")]
    backend = OnnxTagger.from_pretrained(args.model, threads=args.threads)
    tag = time_graph(backend, Tagger(backend).tag_batch)
    passes = []
    for _ in range(4):
        started = time.perf_counter()
        found = tag(texts)
        passes.append({"total": time.perf_counter() - started, "graph": tag.graph_seconds})
    n = len(texts)

    def per_sentence(p: dict) -> dict:
        return {
            "sentences_per_s": round(n / p["total"], 1),
            "total_ms": round(1e3 * p["total"] / n, 4),
            "graph_ms": round(1e3 * p["graph"] / n, 4),
            "outside_ms": round(1e3 * (p["total"] - p["graph"]) / n, 4),
        }

    best = min(passes[1:], key=lambda p: p["total"])
    result = {
        "mtbioner_file": mtbioner.__file__,
        "sentences": n,
        "entities": sum(map(len, found)),
        "cold": per_sentence(passes[0]),
        "warm": per_sentence(best),
    }
    if args.stages:
        result["stages"] = profiled_stages(tag, texts)
    print(json.dumps(result))


def profiled_stages(tag, texts: list[str]) -> dict[str, float]:
    """One pass under cProfile: each stage's share (%) of the time spent outside the graph, and the rest."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.runcall(tag, texts)
    outside = time.perf_counter() - started - tag.graph_seconds
    seconds = dict.fromkeys(STAGES, 0.0)
    for (file, _, function), (*_, cumulative, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        for stage, (name, wanted) in STAGES.items():
            if function == wanted and Path(file).name == name and "mtbioner" in Path(file).parts:
                seconds[stage] += cumulative
    shares = {stage: round(100 * value / outside, 1) for stage, value in seconds.items()}
    shares["other"] = round(100 - sum(shares.values()), 1)
    return shares


def measure(src: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", "--model", str(args.model), "--data-dir", str(args.data_dir)]
    command += ["--threads", str(args.threads)] + (["--limit", str(args.limit)] if args.limit else [])
    command += ["--stages"] if args.stages else []
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(args.threads)}
    env["TOKENIZERS_PARALLELISM"] = "false"
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(result["mtbioner_file"]).resolve().is_relative_to(src.resolve()):
        sys.exit(f"the child imported {result['mtbioner_file']}, not the tree under {src}")
    return result


def markdown(rows: list[dict], facts: dict, meta: dict) -> str:
    lines = [
        f"Time outside ONNX Runtime when tagging the {meta['sentences']} BC5CDR test sentences as raw text "
        f"(`Tagger.tag_batch`), {meta['threads']} threads, on {describe(facts)}.",
        "",
        f"Model: `{meta['model']}` ({meta['heads']} head(s)).",
        "",
        "| code | sentences/s | total ms/sentence | in the graph | outside the graph | outside, first pass |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        w, c = row["warm"], row["cold"]
        lines.append(
            f"| {row['label']} | {w['sentences_per_s']} | {w['total_ms']:.3f} | {w['graph_ms']:.3f} | "
            f"{w['outside_ms']:.3f} | {c['outside_ms']:.3f} |"
        )
    if len(rows) == 2:
        before, after = rows[0]["warm"]["outside_ms"], rows[1]["warm"]["outside_ms"]
        lines += ["", f"Outside the graph: {before / after:.2f}x less time per sentence than the baseline."]
    staged = [row for row in rows if "stages" in row]
    if staged:
        names = list(staged[0]["stages"])
        lines += [
            "",
            "Where the time outside the graph goes (% of it, one pass under cProfile; `--stages`):",
            "",
            "| code | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
            *(f"| {row['label']} | " + " | ".join(f"{row['stages'][n]:.1f}" for n in names) + " |" for row in staged),
        ]
    lines += [
        "",
        "Warm: best of 3 passes after a first one (the first pass is also shown: it fills the word-piece cache). "
        "Load average before the run: " + str(meta["load_before"]) + ".",
        "",
        f"Command: `{meta['command']}`",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported (ONNX) model folder")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MTBIONER_DATA", "../shared/data")))
    parser.add_argument("--baseline", help="git revision to measure beside this checkout")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--stages", action="store_true", help="also split the time outside the graph by stage")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model, args.data_dir = args.model.resolve(), args.data_dir.resolve()
    if args.child:
        child(args)
        return
    load_before = round(os.getloadavg()[0], 2)
    rows = baseline_and_checkout(args.baseline, lambda src: measure(src, args))
    config = json.loads((args.model / "config.json").read_text())
    meta = {
        "sentences": rows[-1]["sentences"],
        "threads": args.threads,
        "model": str(args.model),
        "heads": len(config.get("corpora", {})),
        "load_before": load_before,
        "command": "python benchmarks/outside_graph.py " + shlex.join(sys.argv[1:]),
    }
    facts = machine()
    text = markdown(rows, facts, meta)
    print(text)
    if args.limit and args.out is None:
        return
    publish(
        args.out or Path(__file__).parent / "results", "outside_graph", {"machine": facts, **meta, "rows": rows}, text
    )


if __name__ == "__main__":
    main()
