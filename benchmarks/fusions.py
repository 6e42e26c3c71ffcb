"""Which ONNX Runtime fusions make the fastest int8 (or fp32) graph on this CPU: all, light, or none.

One torch model folder is exported to int8 three times (``mtbioner export --quantize int8`` with
``--fusions all``, ``--fusions light`` and ``--no-optimize``; ``--precision fp32``: ``--quantize none``,
written as ``fusions-fp32.json``/``.md``), each export then tags the BC5CDR test
sentences as raw text with ``Tagger.tag_batch`` (after a warm-up; best of 3 passes, the three graphs
taking turns for ``--rounds`` rounds so that a change in the host's load hits all of them) and is
scored on the BC5CDR test set (conlleval, as ``mtbioner evaluate``). The fusions change only how
the same network is computed: F1 moves only by int8 rounding.

    python benchmarks/fusions.py --model runs/speed/default-torch --data-dir ../shared/data

MODEL is a torch folder with a BC5CDR head (the shipped model's weights: see docs/performance.md).
Writes ``benchmarks/results/fusions.json`` and ``fusions.md`` (``--out`` to choose the folder).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from _machine import describe, machine, publish, taking_turns

VARIANTS = {
    "all": {"fusions": "all"},
    "light": {"fusions": "light"},
    "none": {"optimize": False},
}


def export_variants(model: Path, work: Path, precision: str = "int8") -> dict[str, Path]:
    """One export per variant in ``precision`` (kept in ``work``; an existing one is reused)."""
    from mtbioner.runtime.export import export_onnx

    folders = {}
    for name, options in VARIANTS.items():
        folder = work / f"{precision}-{name}"
        if not (folder / "config.json").is_file():
            export_onnx(model, folder, "int8" if precision == "int8" else "none", **options)
        folders[name] = folder
    return folders


def speeds(folders: dict[str, Path], texts: list[str], rounds: int) -> dict[str, list[float]]:
    """Sentences/s of each graph per round (best of 3 passes)."""
    from mtbioner import Tagger

    return taking_turns({name: Tagger.load(folder).tag_batch for name, folder in folders.items()}, texts, rounds)


def f1_scores(folders: dict[str, Path], data_dir: Path) -> dict[str, float]:
    """BC5CDR test F1 of each graph."""
    from mtbioner.data.corpus import read_corpus
    from mtbioner.runtime.evaluation import evaluate_corpus
    from mtbioner.runtime.loading import load_backend

    corpus = read_corpus(data_dir / "BC5CDR")
    return {
        name: round(evaluate_corpus(load_backend(folder), corpus, "test", "BC5CDR")[0].overall.f1, 2)
        for name, folder in folders.items()
    }


def op_counts(folder: Path) -> dict[str, int]:
    """The fused operators a graph holds."""
    import onnx

    fused = ("QAttention", "Attention", "SkipLayerNormalization", "BiasGelu", "LayerNormalization")
    ops = [node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node]
    return {op: ops.count(op) for op in fused if op in ops}


def markdown(report: dict) -> str:
    lines = [
        f"# {report.get('precision', 'int8')} graph fusions",
        "",
        f"BC5CDR test sentences ({report['sentences']}) tagged as raw text, {report.get('precision', 'int8')}, "
        f"{describe(report['machine'])}; "
        f"load average before/after: {report['load_before']} / {report['load_after']}.",
        "",
        "| fusions | export option | fused operators | sentences/s per round (best of 3 passes) | best | BC5CDR F1 |",
        "|---|---|---|---|---:|---:|",
    ]
    for name, row in report["variants"].items():
        option = "--no-optimize" if name == "none" else f"--fusions {name}"
        ops = ", ".join(f"{op} {n}" for op, n in row["operators"].items()) or "-"
        rounds = " / ".join(str(r) for r in row["sentences_per_s"])
        lines.append(f"| {name} | `{option}` | {ops} | {rounds} | {max(row['sentences_per_s'])} | {row['f1']} |")
    lines += ["", f"Model: `{report['model']}`.", "", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="torch model folder with a BC5CDR head")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="weights of the exports")
    parser.add_argument("--limit", type=int, default=None, help="first N test sentences (quick checks)")
    parser.add_argument("--work", type=Path, default=Path("runs/fusions"), help="where the exports are kept")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mtbioner.data.corpus import read_corpus

    sentences = read_corpus(args.data_dir / "BC5CDR").splits["test"].sentences[: args.limit]
    texts = [" ".join(sentence.tokens) for sentence in sentences]
    load_before = round(os.getloadavg()[0], 2)
    folders = export_variants(args.model, args.work, args.precision)
    rates = speeds(folders, texts, args.rounds)
    scores = f1_scores(folders, args.data_dir)
    report = {
        "sentences": len(texts),
        "precision": args.precision,
        "model": str(args.model),
        "machine": machine(),
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "variants": {
            name: {"sentences_per_s": rates[name], "f1": scores[name], "operators": op_counts(folders[name])}
            for name in VARIANTS
        },
        "command": "python benchmarks/fusions.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }
    publish(args.out, "fusions" if args.precision == "int8" else "fusions-fp32", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
