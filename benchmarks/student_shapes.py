"""How fast a student of the shipped model can be on this CPU, by its shape alone (issue 42).

A network's speed does not depend on what it has learnt, only on its shape: its layers, feed-forward width and
attention heads. Each shape is cut from the teacher by ``mtbioner.learn.students.make_student`` (the layers,
neurons and heads ``mtbioner distill`` keeps; not distilled further), exported to int8 like any model
(``mtbioner export --quantize int8``, the default light fusions), and tags the BC5CDR test sentences as raw text
with ``Tagger.tag_batch``, taking turns with the teacher's own export and, with ``--spacy``, the spaCy peer of
``peers.py`` (``nlp.pipe``), for ``--rounds`` rounds of best-of-3 passes in one process, so a slow spell of the
host hits every system. No F1 is measured: these students are not trained. The table says which shapes can reach
the CNN's speed here at all, so that hours of distillation go only to those (their F1 is ``student_screen.py``'s
and ``students.py``'s to measure).

    python benchmarks/student_shapes.py --data-dir ../shared/data --spacy runs/peers/BC5CDR/model-best \\
        --work runs/shapes --out benchmarks/results/epyc-avx2

A shape is ``L<layers>`` with optional ``-F<feed-forward width>`` and ``-H<attention heads>``: ``L3-F768-H6``.
``--extra NAME=FOLDER`` adds an exported model (a distilled student) to the same turns.
Writes ``student_shapes.json`` and ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

from _machine import describe, machine, publish, taking_turns

SHAPES = "L6,L4,L3,L3-F768,L3-H6,L3-F768-H6,L2,L2-F768-H6,L1-F768-H6"
SHAPE = re.compile(r"^L(\d+)(?:-F(\d+))?(?:-H(\d+))?$")


def parse_shape(text: str) -> tuple[int, int | None, int | None]:
    """``L3-F768-H6`` -> (3, 768, 6)."""
    match = SHAPE.match(text)
    if not match:
        raise SystemExit(f"--shapes: {text!r} is not L<layers>[-F<width>][-H<heads>], e.g. L3-F768-H6")
    layers, width, heads = match.groups()
    return int(layers), int(width) if width else None, int(heads) if heads else None


def export_shapes(teacher: str, shapes: list[str], work: Path) -> dict[str, Path]:
    """One int8 export per shape, cut from ``teacher`` (an existing export in ``work`` is reused)."""
    from mtbioner.learn.distillation import load_teacher
    from mtbioner.learn.students import make_student
    from mtbioner.runtime.export import export_onnx

    model = None
    folders = {}
    for shape in shapes:
        folder = work / shape / "int8"
        if not (folder / "config.json").is_file():
            model = model or load_teacher(teacher).eval()
            layers, width, heads = parse_shape(shape)
            make_student(model, layers, intermediate_size=width, attention_heads=heads).save_pretrained(
                work / shape / "torch"
            )
            export_onnx(work / shape / "torch", folder, "int8")
        folders[shape] = folder
    return folders


def runners(folders: dict[str, Path], spacy_model: Path | None) -> dict:
    """What each system's pass calls: ``Tagger.tag_batch`` or spaCy's ``nlp.pipe``."""
    from mtbioner import Tagger

    found = {}
    for name, folder in folders.items():
        tagger = Tagger.load(folder)
        found[name] = tagger.tag_batch
    if spacy_model is not None:
        import spacy

        nlp = spacy.load(spacy_model)
        found["spaCy peer"] = lambda texts: list(nlp.pipe(texts, batch_size=256))
    return found


def size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6, 1)


def markdown(report: dict) -> str:
    peer = report["rates"].get("spaCy peer")
    lines = [
        "# Student shapes: int8 speed by shape alone",
        "",
        f"BC5CDR test sentences ({report['sentences']}) tagged as raw text, {describe(report['machine'])}; "
        f"load average before/after: {report['load_before']} / {report['load_after']}. Students cut from "
        f"`{report['teacher']}` by `make_student` and exported to int8 (light fusions), not distilled: no F1.",
        "",
        "| system | layers | feed-forward | heads | MB | sentences/s per round (best of 3 passes) | best | "
        + ("vs spaCy |" if peer else "|"),
        "|---|---:|---:|---:|---:|---|---:|" + ("---:|" if peer else ""),
    ]
    for name, rates in report["rates"].items():
        shape = report["shapes"].get(name, {})
        cells = [shape.get(k, "-") for k in ("layers", "intermediate_size", "heads")] + [shape.get("mb", "-")]
        row = f"| {name} | " + " | ".join(str(c) for c in cells)
        row += f" | {' / '.join(str(r) for r in rates)} | {max(rates)} |"
        lines.append(row + (f" {max(rates) / max(peer):.2f}x |" if peer else ""))
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="default", help="a shipped model's name or a model folder")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--shapes", default=SHAPES, help=f"comma-separated (default {SHAPES})")
    parser.add_argument("--spacy", type=Path, default=None, help="the spaCy peer's pipeline (peers.py)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=FOLDER", help="also time this export")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N test sentences (quick checks)")
    parser.add_argument("--work", type=Path, default=Path("runs/shapes"), help="where the exports are kept")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mtbioner.data.corpus import read_corpus
    from mtbioner.model.attention_heads import head_count
    from mtbioner.runtime.onnx_backend import read_onnx_config

    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for shape in shapes:
        parse_shape(shape)  # refuse a bad spec before anything is built
    sentences = read_corpus(args.data_dir / "BC5CDR").splits["test"].sentences[: args.limit]
    texts = [" ".join(sentence.tokens) for sentence in sentences]
    load_before = round(os.getloadavg()[0], 2)
    folders = export_shapes(args.teacher, shapes, args.work)
    for extra in args.extra:
        name, _, folder = extra.partition("=")
        if not (Path(folder) / "model.onnx").is_file():
            raise SystemExit(f"--extra {extra}: {folder} holds no model.onnx (export the student first)")
        folders[name] = Path(folder)
    rates = taking_turns(runners(folders, args.spacy), texts, args.rounds)
    described = {}
    for name, folder in folders.items():
        encoder = read_onnx_config(folder)[0].encoder_config
        described[name] = {
            "layers": encoder["num_hidden_layers"],
            "intermediate_size": encoder["intermediate_size"],
            "heads": head_count(encoder),
            "mb": size_mb(folder),
        }
    report = {
        "sentences": len(texts),
        "teacher": args.teacher,
        "machine": machine(),
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "shapes": described,
        "rates": rates,
        "command": "python benchmarks/student_shapes.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }
    publish(args.out, "student_shapes", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
