"""Which gold mentions one study run finds and another misses, on one corpus's scored split (issue 40).

Reads the predictions two runs of a study wrote (``experiments/results/<study>/<run>.predictions/<corpus>.json.gz``)
and the corpus's words, and counts the gold mentions each run finds exactly, then lists the ones only the first
finds, each with what the second predicted over it, most frequent first:

    python benchmarks/devel_differences.py four-t2 ten-t3 NCBI-disease --data-dir ../shared/data

Devel only (the study's split); never point it at test predictions to choose anything.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path

from seqeval.metrics.sequence_labeling import get_entities

RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "results" / "ten"


def predictions(results: Path, run: str, corpus: str) -> dict:
    with gzip.open(results / f"{run}.predictions" / f"{corpus}.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


def words(path: Path) -> list[list[str]]:
    """The words of each sentence of a two-column file (blank line between sentences)."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line.split("\t")[0])
        elif current:
            sentences.append(current)
            current = []
    return [*sentences, current] if current else sentences


def spans(tags: str) -> set[tuple[int, int]]:
    return {(start, end) for _, start, end in get_entities(tags.split())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("corpus")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    a, b = (predictions(args.results, run, args.corpus) for run in (args.first, args.second))
    text = words(args.data_dir / args.corpus / f"{a['split']}.tsv")
    if not (len(text) == len(a["gold"]) == len(b["gold"])):
        raise SystemExit(f"error: {args.corpus} {a['split']}: the predictions do not match the corpus's sentences")
    counts, only_first = Counter(), Counter()
    for sentence, gold, first, second in zip(text, a["gold"], a["predicted"], b["predicted"], strict=True):
        found_a, found_b = spans(first), spans(second)
        for start, end in spans(gold):
            counts["gold"] += 1
            counts[(start, end) in found_a, (start, end) in found_b] += 1
            if (start, end) in found_a and (start, end) not in found_b:
                over = [" ".join(sentence[s : e + 1]) for s, e in sorted(found_b) if s <= end and e >= start]
                only_first[f"{' '.join(sentence[start : end + 1])}  ->  {' | '.join(over) or '(nothing)'}"] += 1
    cells = ((True, True), (True, False), (False, True), (False, False))
    both, first_only, second_only, neither = (counts[cell] for cell in cells)
    print(f"{args.corpus} {a['split']}: {counts['gold']} gold mentions; both {both}, only {args.first} {first_only}, "
          f"only {args.second} {second_only}, neither {neither}")  # fmt: skip
    print(f"found by {args.first}, not by {args.second} (what {args.second} predicted there):")
    for mention, n in only_first.most_common(args.top):
        print(f"{n:4d}  {mention}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
