"""Distilled students of the shipped model: test F1, the left-out table, int8 size and speed beside the teacher and
the spaCy peer, in one run (issue 42).

For each depth in ``--layers`` (default 2, 3, 4), with the distillation flags of ``--recipe`` (what
``benchmarks/student_screen.py`` kept), every step the real CLI, each skipped when its output exists (distillation
resumes):

1. ``mtbioner distill TEACHER --layers N RECIPE --splits train,devel --output WORK/sN`` (the teacher's own text);
2. ``mtbioner export WORK/sN WORK/sN-int8 --quantize int8 --check ALL --split devel``;
3. ``mtbioner evaluate WORK/sN-int8`` on the test set of every corpus the teacher has a head for (the teacher's int8
   model too);
4. with ``--left-out NAME=FOLDER`` (the leave-out models of ``benchmarks/cross_corpus.py``, ``lo-a`` and ``lo-b``):
   the same depth and recipe distilled from each on its own corpora's train splits (``--held-out`` taken from its
   teacher, so it never learns from the corpora it is scored on), exported to int8 the same way, and its merged
   answer (the package's chosen policy) scored on the left-out test splits beside its teacher's: the left-out
   table of a student.

Then ``benchmarks/inference.py`` measures, in one run, its systems (HF pipeline, single-task models, torch, ONNX fp32
and int8, built from the teacher's torch weights), the teacher's shipped int8 model, every student and (with
``--spacy``) the spaCy peer on the BC5CDR test sentences; its table is ``OUT/inference.md``.

The rule, fixed before any student of the ten-corpus ``default`` was measured (issue 42): a student qualifies when,
in this one run, it tags BC5CDR test **at least as fast as the spaCy peer**, its int8 test F1 is **within 1.0 of the
teacher's int8 model on every corpus**, every row of its left-out table (exact and lenient F1) is **within 1.0 of
its leave-out teacher's**, and its int8 folder is **under 25 MB**. Without ``--spacy`` or ``--left-out`` a part of
the rule is not measured and no student qualifies. With ``--install`` the qualifying student with the best mean F1
is copied to ``src/mtbioner/models/fast`` with a model card. The tables, the rule's outcome and the trade-off figure
(F1 against sentences/s) go to ``benchmarks/results/students.{json,md,png}``.

    python benchmarks/students.py --data-dir ../shared/data --layers 3,4 --recipe '--hidden-weight 1 --epochs 6' \
        --left-out lo-a=runs/lo-a --left-out lo-b=runs/lo-b --spacy runs/peers/BC5CDR/model-best --install

The teacher is the shipped ``default`` model itself (``mtbioner distill default``: its int8 weights are read
back into torch, :mod:`mtbioner.runtime.dequantize`), or any torch folder given with ``--teacher``. The HF pipeline
in the speed run needs torch weights: for an exported teacher they are the read-back ones (``WORK/teacher-torch``).

Smoke run (minutes): ``--limit 30 --epochs 1 --max-drop 100 --work /tmp/students --out /tmp/students-results``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from _machine import describe, publish
from inference import SYSTEMS

from mtbioner.fileio import atomic_dir, atomic_write

REPO = Path(__file__).resolve().parent.parent
MAX_LOSS, MAX_MB = 1.0, 25.0
SPACY_KEY, HF_KEY = "spacy-peer", "hf-pipeline"


def cli(args: list[str], log: Path) -> str:
    """``python -m mtbioner ARGS`` with its output appended to ``log``; returns the command line."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ mtbioner {shlex.join(args)}\n")
        out.flush()
        subprocess.run([sys.executable, "-m", "mtbioner", *args], stdout=out, stderr=subprocess.STDOUT, check=True)
    return "mtbioner " + shlex.join(args)


def finished(student: Path) -> bool:
    info = student / "distillation.json"
    return info.is_file() and bool(json.loads(info.read_text(encoding="utf-8")).get("finished"))


def heads_of(folder: Path) -> list[str]:
    """The corpora a model folder has heads for (its ``config.json``), in order."""
    return list(json.loads((folder / "config.json").read_text(encoding="utf-8"))["corpora"])


def student(teacher: str, name: str, layers: int, splits: str, args: argparse.Namespace, log: Path) -> tuple:
    """Distil and export one student of ``teacher`` (``WORK/NAME`` and ``WORK/NAME-int8``); returns the int8
    folder and the commands."""
    folder, int8 = args.work / name, args.work / f"{name}-int8"
    limit = ["--limit", str(args.limit)] if args.limit else []
    distill = ["distill", teacher, "--layers", str(layers), "--splits", splits, *shlex.split(args.recipe)]
    distill += ["--data-dir", str(args.data_dir), "--output", str(folder), "--epochs", str(args.epochs), *limit]
    commands = ["mtbioner " + shlex.join(distill)]
    if not finished(folder):
        resume = (folder / "checkpoint").exists()
        cli([*(["distill", "--output", str(folder), "--resume"] if resume else distill), "--no-progress"], log)
    export = ["export", str(folder), str(int8), "--quantize", "int8", "--check", ",".join(heads_of(folder))]
    export += ["--split", "devel", "--max-drop", str(args.max_drop), "--data-dir", str(args.data_dir), *limit]
    commands.append("mtbioner " + shlex.join(export))
    if not (int8 / "model.onnx").is_file():
        cli(export, log)
    return int8, commands


def score(model: Path, out: Path, corpora: list[str], args: argparse.Namespace, log: Path) -> str:
    limit = ["--limit", str(args.limit)] if args.limit else []
    evaluate = ["evaluate", str(model), *corpora, "--data-dir", str(args.data_dir), "--json", str(out), *limit]
    if not out.is_file():
        cli([*evaluate, "--no-progress"], log)
    return "mtbioner " + shlex.join(evaluate)


def test_f1(path: Path) -> dict[str, float]:
    corpora = json.loads(path.read_text(encoding="utf-8"))["corpora"]
    return {name: round(s["f1"], 2) for name, s in corpora.items()}


def left_out_table(folder: Path, left_out: list[str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The merged answer of the model in ``folder`` (chosen policy) on the left-out test splits: exact and
    lenient F1 per (corpus, type) row, as ``benchmarks/cross_corpus.py table`` scores them (tagged once, cached)."""
    from cross_corpus import evaluate, load_cells, tag

    from mtbioner.runtime.answer import AnswerPolicy

    policy = json.loads((REPO / "benchmarks" / "results" / "cross_corpus" / "screen.json").read_text())["chosen"]
    spaces = argparse.Namespace(models=folder.parent, cache=args.work / "left-out-cache", data_dir=args.data_dir)
    spaces.splits, spaces.limit = ["test"], args.limit
    models = {folder.name: {"left_out": left_out}}
    tag(spaces, models)
    rows = evaluate(load_cells(spaces, "test", models), AnswerPolicy.from_dict(policy))["rows"]
    return {f"{r['corpus']} {r['type']}": {m: round(r[m]["f1"], 2) for m in ("exact", "lenient")} for r in rows}


def left_out_students(layers: int, args: argparse.Namespace, log: Path) -> tuple[dict, list[str]]:
    """Students of each leave-out teacher at this depth, and their left-out tables beside their teachers'."""
    from cross_corpus import LEAVE_OUT

    tables, commands = {}, []
    for name, teacher in args.left_out.items():
        int8, done = student(str(teacher), f"{name}-s{layers}", layers, "train", args, log)
        commands += done
        left_out = LEAVE_OUT[name]["left_out"]
        tables[name] = {
            "teacher": left_out_table(teacher, left_out, args),
            "student": left_out_table(int8, left_out, args),
        }
    return tables, commands


def speeds(args: argparse.Namespace, students: dict[int, Path], teacher_int8: Path) -> dict:
    """One ``benchmarks/inference.py`` run: its systems, the teacher's int8 model, students (and the spaCy peer).

    Its table is ``OUT/inference.md``: the speed run of record for the shipped model too (its systems are built
    from the teacher's torch weights), so every figure there and in ``students.md`` comes from the same run.
    """
    command = [sys.executable, str(Path(__file__).parent / "inference.py"), "--model", str(torch_teacher(args))]
    command += ["--data-dir", str(args.data_dir), "--systems", args.systems, "--out", os.path.relpath(args.out)]
    command += ["--work", str(args.work / "inference-work")]
    command += ["--extra", f"teacher int8 (6 layers)={os.path.relpath(teacher_int8)}"]  # paths as a user types them
    for layers, folder in students.items():
        command += ["--extra", f"student, {layers} layers, int8={folder}"]
    if args.spacy:
        command += ["--spacy", str(args.spacy)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    subprocess.run(command, check=True)
    return json.loads((args.out / "inference.json").read_text(encoding="utf-8"))


def torch_teacher(args: argparse.Namespace) -> Path:
    """A torch folder of the teacher: itself, or for an export its weights read back (written once)."""
    from mtbioner.learn.distillation import load_teacher, teacher_folder
    from mtbioner.runtime.dequantize import is_export

    folder = teacher_folder(args.teacher)
    if not is_export(folder):
        return folder
    target = args.work / "teacher-torch"
    if not (target / "model.safetensors").is_file():
        load_teacher(folder).save_pretrained(target)
    report = folder / "model_report.json"  # the shipped model's: how it was trained
    commands = json.loads(report.read_text(encoding="utf-8")).get("commands", []) if report.is_file() else []
    note = {"from": os.path.relpath(folder), "train_command": commands[0] if commands else "not recorded"}
    with atomic_write(target / "read_back.json") as handle:
        json.dump(note, handle, indent=1)
    return target


def left_out_loss(tables: dict) -> float | None:
    """The most any left-out row (exact or lenient F1) of a student lost against its leave-out teacher."""
    losses = [
        table["teacher"][row][mode] - table["student"][row][mode]
        for table in tables.values()
        for row in table["teacher"]
        for mode in ("exact", "lenient")
    ]
    return round(max(losses), 2) if losses else None


def judge(rows: list[dict], spacy: dict | None) -> None:
    """The issue's rule, applied to each student row in place: ``qualifies`` and, when not, ``why_not``."""
    teacher = rows[0]
    for row in rows[1:]:
        row["speed_up"] = round(row["sentences_per_s"] / teacher["sentences_per_s"], 2)
        row["worst_f1_loss"] = round(max(teacher["f1"][c] - row["f1"][c] for c in teacher["f1"]), 2)
        row["worst_left_out_loss"] = left_out_loss(row.get("left_out", {}))
        why = []
        if spacy is None:
            why.append("spaCy peer not timed (--spacy)")
        elif row["sentences_per_s"] < spacy["sentences_per_s"]:
            why.append(f"slower than the spaCy peer ({row['sentences_per_s']} < {spacy['sentences_per_s']})")
        if row["worst_f1_loss"] > MAX_LOSS:
            why.append(f"test F1 {row['worst_f1_loss']} below the teacher")
        if row["worst_left_out_loss"] is None:
            why.append("left-out table not measured (--left-out)")
        elif row["worst_left_out_loss"] > MAX_LOSS:
            why.append(f"left-out F1 {row['worst_left_out_loss']} below the leave-out teachers")
        if row["disk_mb"] >= MAX_MB:
            why.append(f"{row['disk_mb']} MB")
        row["qualifies"], row["why_not"] = not why, why


def figure(rows: list[dict], others: list[dict], path: Path) -> None:
    """F1 against sentences/s: mean test F1 over the teacher's corpora, and BC5CDR F1 beside the other systems."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        mean = sum(row["f1"].values()) / len(row["f1"])
        left.scatter(row["sentences_per_s"], mean, color="C0" if row is rows[0] else "C1")
        left.annotate(f"{row['layers']} layers", (row["sentences_per_s"], mean), textcoords="offset points",
                      xytext=(5, 4))  # fmt: skip
        right.scatter(row["sentences_per_s"], row["f1"]["BC5CDR"], color="C0" if row is rows[0] else "C1")
        right.annotate(f"mtbioner {row['layers']}L int8", (row["sentences_per_s"], row["f1"]["BC5CDR"]),
                       textcoords="offset points", xytext=(5, 4))  # fmt: skip
    for other in others:
        right.scatter(other["sentences_per_s"], other["bc5cdr_f1"], color="C2", marker="s")
        right.annotate(other["name"], (other["sentences_per_s"], other["bc5cdr_f1"]), textcoords="offset points",
                       xytext=(5, -10))  # fmt: skip
    peer = next((o for o in others if o["key"] == SPACY_KEY), None)
    if peer:  # the speed a student needs to ship (same run)
        for axis in (left, right):
            axis.axvline(peer["sentences_per_s"], color="grey", linestyle="--", linewidth=1)
            axis.annotate("spaCy peer", (peer["sentences_per_s"], 0.97), xycoords=("data", "axes fraction"),
                          rotation=90, xytext=(-12, 0), textcoords="offset points", color="grey",
                          va="top")  # fmt: skip
    left.set(xlabel="BC5CDR test sentences/s (2 CPU cores)", ylabel=f"mean test F1, {len(rows[0]['f1'])} corpora",
             title="Teacher and students (int8)")  # fmt: skip
    right.set(xlabel="BC5CDR test sentences/s (2 CPU cores)", ylabel="BC5CDR test F1", title="Beside other systems")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(report: dict) -> str:
    rows = report["rows"]
    corpora = list(rows[0]["f1"])
    lines = [
        f"Distilled students of the shipped model, one run on {describe(report['machine'])}; speed: BC5CDR test "
        "sentences as raw text, entities out (`benchmarks/inference.py`, same run); F1: test, exact match, int8.",
        f"Recipe (distillation flags beside `--layers`): `{report['recipe'] or 'none'}`.",
        "",
        "| model | layers | int8 MB | sentences/s | vs teacher | worst test F1 loss | worst left-out loss "
        "| qualifies |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        qualifies = (
            "-" if "qualifies" not in row else "**yes**" if row["qualifies"] else "no: " + "; ".join(row["why_not"])
        )
        left = row.get("worst_left_out_loss")
        lines.append(
            f"| {row['name']} | {row['layers']} | {row['disk_mb']} | {row['sentences_per_s']} | "
            f"{row.get('speed_up', 1.0)}x | {row.get('worst_f1_loss', '-')} | {'-' if left is None else left} | "
            f"{qualifies} |"
        )
    lines += ["", "Test F1 per corpus:", "", "| corpus | " + " | ".join(r["name"] for r in rows) + " |"]
    lines += ["|---|" + "---:|" * len(rows)]
    lines += [f"| {c} | " + " | ".join(f"{r['f1'][c]:.2f}" for r in rows) + " |" for c in corpora]
    students = [r for r in rows[1:] if r.get("left_out")]
    if students:
        lines += ["", "Left-out tables (merged answer, chosen policy, test; exact / lenient F1), each student beside "
                  "its leave-out teacher:", ""]  # fmt: skip
        lines += ["| leave-out model | row | teacher | " + " | ".join(r["name"] for r in students) + " |"]
        lines += ["|---|---|---:|" + "---:|" * len(students)]
        for name, table in students[0]["left_out"].items():
            for cell, teacher in table["teacher"].items():
                scores = [r["left_out"][name]["student"][cell] for r in students]
                both = " | ".join(f"{s['exact']:.2f} / {s['lenient']:.2f}" for s in scores)
                lines.append(f"| {name} | {cell} | {teacher['exact']:.2f} / {teacher['lenient']:.2f} | {both} |")
    if report["others"]:
        lines += ["", "Other systems in the same run (BC5CDR only):", "", "| system | sentences/s | BC5CDR F1 |"]
        lines += ["|---|---:|---:|"]
        lines += [f"| {o['name']} | {o['sentences_per_s']} | {o['bc5cdr_f1']} |" for o in report["others"]]
    chosen = report["chosen"]
    lines += [
        "",
        f"Rule (issue 42): at least the spaCy peer's BC5CDR test sentences/s, at most {MAX_LOSS} F1 below the "
        f"teacher on every test set and on every left-out row, under {MAX_MB:g} MB. "
        + (
            f"**Shipped: the {chosen}-layer student** as `fast` (`mtbioner tag --model fast`)."
            if chosen
            else "**No student meets it: none ships**; the trade-off is in `students.png`."
        ),
        "",
        "![F1 against speed](students.png)",
        "",
        "Commands:",
        "",
        "```",
        *report["commands"],
        "```",
        "",
    ]
    return "\n".join(lines)


def install(row: dict, folder: Path, report: dict) -> Path:
    target = REPO / "src" / "mtbioner" / "models" / "fast"
    with atomic_dir(target) as tmp:
        for item in folder.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        with atomic_write(tmp / "MODEL_CARD.md") as handle:
            handle.write(
                f"# mtbioner shipped model `fast`\n\nA {row['layers']}-layer student distilled from the `default` "
                "model (same heads, tokenizer and entity types), int8 ONNX.\n\n" + markdown(report)
            )
    return target


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default="default", help="shipped model name or torch folder (default: default)")
    parser.add_argument("--teacher-int8", type=Path, default=REPO / "src" / "mtbioner" / "models" / "default")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MTBIONER_DATA", "../shared/data")))
    parser.add_argument("--layers", default="2,3,4")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--recipe", default="", help="more `mtbioner distill` flags for every student, quoted")
    parser.add_argument("--left-out", action="append", default=[], metavar="NAME=FOLDER",
                        help="a leave-out model of cross_corpus.py (lo-a, lo-b) to distil alike")  # fmt: skip
    parser.add_argument("--spacy", type=Path, help="the spaCy BC5CDR peer (benchmarks/peers.py) to time too")
    parser.add_argument("--work", type=Path, default=Path("runs/students"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--limit", type=int, help="first N sentences of each split (smoke runs)")
    parser.add_argument("--install", action="store_true", help="ship the qualifying student as `fast`")
    parser.add_argument("--max-drop", type=float, default=0.5, help="int8 export check: most F1 lost to int8")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="benchmarks/inference.py systems built from the teacher's torch weights")  # fmt: skip
    args = parser.parse_args()
    from cross_corpus import LEAVE_OUT

    left_out = {}
    for item in args.left_out:
        name, _, folder = item.partition("=")
        if name not in LEAVE_OUT or not (Path(folder) / "config.json").is_file():
            parser.error(
                f"--left-out {item}: expected NAME=FOLDER, NAME one of {', '.join(LEAVE_OUT)}, a model folder"
            )
        left_out[name] = Path(folder)
    args.left_out = left_out
    return args


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.work / "build.log"
    corpora = heads_of(args.teacher_int8)
    commands, students, left_out = [], {}, {}
    for layers in [int(x) for x in args.layers.split(",")]:
        students[layers], done = student(args.teacher, f"s{layers}", layers, "train,devel", args, log)
        commands += done
        commands.append(score(students[layers], args.work / f"s{layers}-test.json", corpora, args, log))
        if args.left_out:
            left_out[layers], done = left_out_students(layers, args, log)
            commands += done
    commands.append(score(args.teacher_int8, args.work / "teacher-test.json", corpora, args, log))
    measured = speeds(args, students, args.teacher_int8)
    systems = measured["systems"]
    teacher = {"name": "teacher (shipped `default`)", "layers": 6, "folder": str(args.teacher_int8)}
    teacher["f1"] = test_f1(args.work / "teacher-test.json")
    rows = [{**teacher, **pick(systems, "extra:teacher int8 (6 layers)")}]
    for layers, folder in students.items():
        row = {
            "name": f"student {layers}",
            "layers": layers,
            "folder": str(folder),
            "left_out": left_out.get(layers, {}),
        }
        row["f1"] = test_f1(args.work / f"s{layers}-test.json")
        rows.append({**row, **pick(systems, f"extra:student, {layers} layers, int8")})
    others = [
        {"key": key, "name": name, "sentences_per_s": s["sentences_per_s"], "bc5cdr_f1": s["bc5cdr_f1"]}
        for key, s in systems.items()
        for name in [{HF_KEY: "HF pipeline (fp32)", SPACY_KEY: "spaCy CNN peer"}.get(key)]
        if name
    ]
    judge(rows, next((o for o in others if o["key"] == SPACY_KEY), None))
    qualifying = [r for r in rows[1:] if r["qualifies"]]
    best = max(qualifying, key=lambda r: sum(r["f1"].values()), default=None)
    commands.append(measured["command"])
    report = {"machine": measured["machine"], "rows": rows, "others": others, "commands": commands,
              "recipe": args.recipe, "chosen": best["layers"] if best else None, "limit": args.limit}  # fmt: skip
    figure(rows, others, args.out / "students.png")
    publish(args.out, "students", report, markdown(report))
    print(markdown(report))
    if best and args.install:
        print(f"installed -> {install(best, Path(best['folder']), report)}")


def pick(systems: dict, key: str) -> dict:
    row = systems[key]
    return {"sentences_per_s": row["sentences_per_s"], "disk_mb": row["disk_mb"]}


if __name__ == "__main__":
    main()
