"""Tagging speed on abstracts: sentences/s and documents/s, per batch size, and through the CLI.

Documents are rebuilt from the four corpora's test sets: JNLPBA's ``-DOCSTART-`` documents
(PubMed abstracts), and groups of 10 consecutive sentences for BC2GM, BC5CDR and
NCBI-disease, whose files carry no document markers (10 sentences is about one abstract).
Tokens are joined with spaces, without a space before closing punctuation or after opening
brackets. The model is a 4-head linear model on the packaged all-MiniLM-L6-v2, saved and
loaded like a trained one. Its heads are untrained (seeded), with the ``O`` logit raised by
``--o-bias`` so that about as many words are tagged as in the corpora (0.6: 4-11% of words per
head; random heads would tag most words, and decoding and writing those would not be
typical); otherwise speed does not depend on the weights.

Measured:

* ``Tagger.tag_batch`` over ``--docs`` documents in one call (all their sentences sorted by
  length and batched together) for each of ``--batch-sizes``, and document by document
  (one call per document, as a naive loop would) at the default batch size; best of ``--passes``,
  the settings taking turns ``--rounds`` times;
* ``python -m mtbioner tag MODEL --input DOCS.jsonl --output OUT.jsonl`` on ``--cli-docs``
  documents (the CLI path, ``tag_documents`` in chunks of 256): wall time including start-up
  and model loading, peak memory of that process, and whether the progress bar was drawn.

    python benchmarks/tagging.py --data-dir ../shared/data

Writes ``benchmarks/results/tagging.json`` and ``tagging.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import describe, machine

from mtbioner import INFERENCE_BATCH_SIZE
from mtbioner.data.corpus import read_corpus
from mtbioner.data.text import split_sentences
from mtbioner.fileio import atomic_write, write_json
from mtbioner.model.model import MultiTaskTagger
from mtbioner.runtime.tagging import Tagger

CORPORA = ["BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA"]
DEFAULT_THREADS = torch.get_num_threads()
NO_SPACE_BEFORE = set(".,;:)]}%")
NO_SPACE_AFTER = set("([{")


def detokenize(tokens: list[str]) -> str:
    """Corpus tokens back to plain text, spacing punctuation as a paper would."""
    out = ""
    for token in tokens:
        if out and token not in NO_SPACE_BEFORE and out[-1] not in NO_SPACE_AFTER:
            out += " "
        out += token
    return out


def load_documents(data_dir: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Documents of each corpus' test split, and each corpus' label list (for the heads)."""
    documents: dict[str, list[str]] = {}
    labels: dict[str, list[str]] = {}
    for name in CORPORA:
        corpus = read_corpus(data_dir / name, splits=["test"])
        labels[name] = corpus.labels
        groups: dict[int, list[str]] = {}
        for index, sentence in enumerate(corpus.sentences("test")):
            key = sentence.document if name == "JNLPBA" else index // 10
            groups.setdefault(key, []).append(detokenize(list(sentence.tokens)))
        documents[name] = [" ".join(group) for group in groups.values()]
    return documents, labels


def interleave(documents: dict[str, list[str]], count: int) -> list[str]:
    """``count`` documents taken in turn from each corpus (cycling when a corpus runs out)."""
    picked = []
    for i in range(count):
        pool = documents[CORPORA[i % len(CORPORA)]]
        picked.append(pool[(i // len(CORPORA)) % len(pool)])
    return picked


def untrained_model(labels: dict[str, list[str]], o_bias: float) -> MultiTaskTagger:
    torch.manual_seed(0)
    model = MultiTaskTagger.from_encoder(labels)
    with torch.no_grad():
        for name, corpus_labels in labels.items():
            model.head(name).classifier.bias[corpus_labels.index("O")] += o_bias
    return model


def time_tagging(tagger: Tagger, docs: list[str], one_call: bool, passes: int = 1) -> float:
    """Seconds to tag ``docs``, best of ``passes`` (one pass moves by ~10% on shared hosts)."""
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        if one_call:
            tagger.tag_batch(docs)
        else:
            for doc in docs:
                tagger(doc)
        best = min(best, time.perf_counter() - started)
    return best


# Runs the CLI as its grandchild and writes its peak RSS (kB) to argv[1]. On Linux a child's ru_maxrss starts from
# the RSS of the process it was forked from, so the CLI is forked from this small launcher, not from this benchmark
# (which holds torch and a model: its children would all report ~1 GB).
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as peak:
    peak.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_cli(model: Path, docs: list[str], folder: Path, threads: int) -> dict:
    """Tag a JSONL file through ``python -m mtbioner tag``, as a user would."""
    source, output = folder / "docs.jsonl", folder / "out.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        for i, doc in enumerate(docs, 1):
            handle.write(json.dumps({"id": f"doc{i}", "text": doc, "source": "benchmark"}) + "\n")
    command = [sys.executable, "-m", "mtbioner", "tag", str(model), "--input", str(source), "--output", str(output)]
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    peak_file = folder / "peak_kb"
    launched = [sys.executable, "-c", _LAUNCHER, str(peak_file), *command]
    done = subprocess.run(launched, capture_output=True, text=True, check=True, env=env)
    seconds = time.perf_counter() - started
    lines = output.read_text(encoding="utf-8").splitlines()
    return {
        "documents": len(docs),
        "input_mb": round(source.stat().st_size / 1e6, 2),
        "wall_seconds": round(seconds, 1),
        "docs_per_s": round(len(docs) / seconds, 1),
        "output_records": len(lines),
        "entities": sum(len(json.loads(line)["entities"]) for line in lines),
        "peak_rss_mb": round(int(peak_file.read_text()) / 1024, 1),
        "progress_bar_drawn": "100%" in done.stderr and f"{len(docs)}/{len(docs)}" in done.stderr,
        "stderr_last_line": done.stderr.strip().splitlines()[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--docs", type=int, default=200, help="documents for the batch-size comparison")
    parser.add_argument("--batch-sizes", default="16,32,64", help="windows per forward pass, comma-separated")
    parser.add_argument("--cli-docs", type=int, default=1000, help="documents in the JSONL file given to the CLI")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads")
    parser.add_argument("--model", type=Path, help="a trained model folder instead of the seeded untrained heads")
    parser.add_argument("--passes", type=int, default=3, help="timed passes per setting, best kept")
    parser.add_argument(
        "--rounds", type=int, default=1, help="the settings take turns this many times (host noise hits them all)"
    )
    parser.add_argument("--o-bias", type=float, default=0.6, help="added to each untrained head's O logit")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    documents, labels = load_documents(args.data_dir)
    docs = interleave(documents, args.docs)
    sentences = sum(len(split_sentences(doc)) for doc in docs)
    words = sum(len(s.tokens) for doc in docs for s in split_sentences(doc))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or Path(tmp) / "model"
        if args.model is None:
            untrained_model(labels, args.o_bias).save_pretrained(model_dir)
        started = time.perf_counter()
        tagger = Tagger.load(model_dir)
        load_seconds = time.perf_counter() - started
        tagger.tag_batch(docs[:8])  # warm-up: first calls allocate
        runs = [(b, True) for b in batch_sizes] + [(INFERENCE_BATCH_SIZE, False)]
        timings: dict[tuple[int, bool], list[float]] = {run: [] for run in runs}
        for _ in range(args.rounds):  # round-robin, so a slow spell of the host hits every setting
            for batch_size, one_call in runs:
                tagger.batch_size = batch_size
                timings[batch_size, one_call].append(time_tagging(tagger, docs, one_call, args.passes))
                print(batch_size, one_call, round(sentences / timings[batch_size, one_call][-1], 1), file=sys.stderr)
        for (batch_size, one_call), times in timings.items():
            seconds = min(times)
            rows.append(
                {
                    "mode": "all documents in one call" if one_call else "one call per document",
                    "batch_size": batch_size,
                    "seconds": round(seconds, 1),
                    "sentences_per_s": round(sentences / seconds, 1),
                    "sentences_per_s_rounds": [round(sentences / t, 1) for t in times],
                    "docs_per_s": round(len(docs) / seconds, 2),
                    "words_per_s": round(words / seconds),
                }
            )
        cli = run_cli(model_dir, interleave(documents, args.cli_docs), Path(tmp), args.threads)
    if args.cli_docs < 10_000:
        cli["extrapolated_10k_docs_minutes"] = round(cli["wall_seconds"] * 10_000 / args.cli_docs / 60, 1)
    result = {
        "benchmark": "tagging",
        "encoder": "all-MiniLM-L6-v2 (packaged), 4 linear heads"
        if args.model is None
        else f"{type(tagger.backend).__name__}, {len(tagger.corpora)} heads",
        "model": f"trained: {args.model}" if args.model else f"untrained heads, O bias {args.o_bias}",
        "corpora": CORPORA,
        "documents": len(docs),
        "sentences": sentences,
        "words": words,
        "sentences_per_document": round(sentences / len(docs), 1),
        "entities_per_document_cli": round(cli["entities"] / cli["documents"], 1),
        "model_load_seconds": round(load_seconds, 2),
        "default_batch_size": INFERENCE_BATCH_SIZE,
        "passes": args.passes,
        "rounds": args.rounds,
        "runs": rows,
        "cli": cli,
        "machine": machine(),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "command": "python benchmarks/tagging.py --data-dir ../shared/data"
        + (f" --docs {args.docs}" if args.docs != 200 else "")
        + (f" --batch-sizes {args.batch_sizes}" if args.batch_sizes != "16,32,64" else "")
        + (f" --cli-docs {args.cli_docs}" if args.cli_docs != 1000 else "")
        + (f" --model {args.model}" if args.model else "")
        + (f" --threads {args.threads}" if args.threads != DEFAULT_THREADS else "")
        + (f" --passes {args.passes}" if args.passes != 3 else "")
        + (f" --rounds {args.rounds}" if args.rounds != 1 else "")
        + (f" --out {args.out}" if args.out != Path(__file__).parent / "results" else "")
        + (f" --o-bias {args.o_bias}" if args.o_bias != 0.6 else ""),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "tagging.json", result)
    with atomic_write(args.out / "tagging.md") as handle:
        handle.write(markdown(result) + "\n")
    print(markdown(result))


def markdown(r: dict) -> str:
    m, cli = r["machine"], r["cli"]
    lines = [
        "# Tagging speed",
        "",
        f"{r['documents']} abstracts from the test sets of {', '.join(r['corpora'])} "
        f"({r['sentences']} sentences, {r['words']} words, {r['sentences_per_document']} sentences per document), "
        f"{r['encoder']} ({r.get('model', 'untrained heads')}). Model loading: {r['model_load_seconds']} s.",
        "",
        f"| mode | batch size | seconds (best of {r.get('passes', 1)}) | sentences/s | documents/s | words/s "
        f"| sentences/s per round ({r.get('rounds', 1)}, taking turns) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in r["runs"]:
        rounds = " / ".join(str(x) for x in row.get("sentences_per_s_rounds", [row["sentences_per_s"]]))
        lines.append(
            f"| {row['mode']} | {row['batch_size']} | {row['seconds']} | {row['sentences_per_s']} | "
            f"{row['docs_per_s']} | {row['words_per_s']} | {rounds} |"
        )
    lines += [
        "",
        f"CLI path (`python -m mtbioner tag MODEL --input docs.jsonl --output out.jsonl`, chunks of 256 documents, "
        f"default batch of {r.get('default_batch_size', 64)} windows, "
        "wall time including start-up and model loading):",
        "",
        "| documents | input MB | seconds | documents/s | entities | peak memory (MB) | progress bar |",
        "|---:|---:|---:|---:|---:|---:|---|",
        f"| {cli['documents']} | {cli['input_mb']} | {cli['wall_seconds']} | {cli['docs_per_s']} | "
        f"{cli['entities']} | {cli['peak_rss_mb']} | {'yes' if cli['progress_bar_drawn'] else 'no'} |",
    ]
    if "extrapolated_10k_docs_minutes" in cli:
        lines += [
            "",
            f"10,000 documents: about {cli['extrapolated_10k_docs_minutes']} minutes, **extrapolated** linearly from "
            f"the {cli['documents']}-document run (not measured).",
        ]
    lines += [
        "",
        f"Machine: {describe(m)}, torch threads: {m['torch_threads']}, torch {m['torch']}, "
        f"Python {m['python']}. Load average before/after: {r['load_average_before']} / {r['load_average_after']}"
        " (1, 5, 15 min)"
        + (
            "; above the core count, other processes competed for the CPU and the figures are conservative."
            if max(r["load_average_before"][0], r["load_average_after"][0]) > m["cores"]
            else ": no other work ran on the machine."
        ),
        "",
        f"Command: `{r['command']}`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
