"""Distilled students of the shipped model: test F1, int8 size and speed beside the teacher, in one run.

For each depth in ``--layers`` (default 2, 3, 4), every step the real CLI, each skipped when its output exists
(distillation resumes):

1. ``mtbioner distill TEACHER --layers N --splits train,devel --output WORK/sN`` (the teacher's own text);
2. ``mtbioner export WORK/sN WORK/sN-int8 --quantize int8 --check ALL --split devel``;
3. ``mtbioner evaluate WORK/sN-int8`` on every test set (the teacher's int8 model too).

Then ``benchmarks/inference.py`` measures, in one run, its five systems (HF pipeline, four single-task models,
torch, ONNX fp32 and int8, built from the teacher's torch weights), the teacher's shipped int8 model, every student
and (with ``--spacy``) the spaCy peer on the BC5CDR test sentences; its table is ``OUT/inference.md``. The rule
fixed before any student was measured (issue 16): a student qualifies when it runs at least 2.5x the teacher's
int8 sentences/s and loses at most 1.5 F1 against the teacher's int8 model on every corpus; with ``--install``
the qualifying student with the best mean F1 is copied to ``src/mtbioner/models/fast`` with a model card. The
table, the rule's outcome and the trade-off figure (F1 against sentences/s) go to
``benchmarks/results/students.{json,md,png}``.

    python benchmarks/students.py --data-dir ../shared/data --spacy runs/peers/BC5CDR/model-best --install

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

CORPORA = ["BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA"]
REPO = Path(__file__).resolve().parent.parent
SPEED_UP, MAX_LOSS = 2.5, 1.5


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


def build(layers: int, args: argparse.Namespace, log: Path) -> tuple[Path, list[str]]:
    """Distil, export and score one student; returns its int8 folder and the commands."""
    student, int8 = args.work / f"s{layers}", args.work / f"s{layers}-int8"
    limit = ["--limit", str(args.limit)] if args.limit else []
    distill = ["distill", str(args.teacher), "--layers", str(layers), "--splits", "train,devel"]
    distill += ["--data-dir", str(args.data_dir), "--output", str(student), "--epochs", str(args.epochs), *limit]
    commands = ["mtbioner " + shlex.join(distill)]
    if not finished(student):
        resume = (student / "checkpoint").exists()
        cli([*(["distill", "--output", str(student), "--resume"] if resume else distill), "--no-progress"], log)
    export = ["export", str(student), str(int8), "--quantize", "int8", "--check", ",".join(CORPORA)]
    export += ["--split", "devel", "--max-drop", str(args.max_drop), "--data-dir", str(args.data_dir), *limit]
    commands.append("mtbioner " + shlex.join(export))
    if not (int8 / "model.onnx").is_file():
        cli(export, log)
    commands.append(score(int8, args.work / f"s{layers}-test.json", args, log))
    return int8, commands


def score(model: Path, out: Path, args: argparse.Namespace, log: Path) -> str:
    limit = ["--limit", str(args.limit)] if args.limit else []
    evaluate = ["evaluate", str(model), *CORPORA, "--data-dir", str(args.data_dir), "--json", str(out), *limit]
    if not out.is_file():
        cli([*evaluate, "--no-progress"], log)
    return "mtbioner " + shlex.join(evaluate)


def test_f1(path: Path) -> dict[str, float]:
    corpora = json.loads(path.read_text(encoding="utf-8"))["corpora"]
    return {name: round(s["f1"], 2) for name, s in corpora.items()}


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


def judge(rows: list[dict]) -> None:
    """The issue's rule, applied to each student row in place (``qualifies`` and why not)."""
    teacher = rows[0]
    for row in rows[1:]:
        speed_up = row["sentences_per_s"] / teacher["sentences_per_s"]
        loss = max(teacher["f1"][c] - row["f1"][c] for c in CORPORA)
        row["speed_up"], row["worst_f1_loss"] = round(speed_up, 2), round(loss, 2)
        row["qualifies"] = speed_up >= SPEED_UP and loss <= MAX_LOSS


def figure(rows: list[dict], others: list[dict], path: Path) -> None:
    """F1 against sentences/s: mean test F1 of the four corpora, and BC5CDR F1 beside the other systems."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        mean = sum(row["f1"].values()) / len(row["f1"])
        left.scatter(row["sentences_per_s"], mean, color="C0" if row["layers"] == 6 else "C1")
        left.annotate(f"{row['layers']} layers", (row["sentences_per_s"], mean), textcoords="offset points",
                      xytext=(5, 4))  # fmt: skip
        right.scatter(row["sentences_per_s"], row["f1"]["BC5CDR"], color="C0" if row["layers"] == 6 else "C1")
        right.annotate(f"mtbioner {row['layers']}L int8", (row["sentences_per_s"], row["f1"]["BC5CDR"]),
                       textcoords="offset points", xytext=(5, 4))  # fmt: skip
    for other in others:
        right.scatter(other["sentences_per_s"], other["bc5cdr_f1"], color="C2", marker="s")
        right.annotate(other["name"], (other["sentences_per_s"], other["bc5cdr_f1"]), textcoords="offset points",
                       xytext=(5, -10))  # fmt: skip
    rule = SPEED_UP * rows[0]["sentences_per_s"]  # the speed a student needs to ship (same run)
    for axis in (left, right):
        axis.axvline(rule, color="grey", linestyle="--", linewidth=1)
        axis.annotate(f"{SPEED_UP}x teacher", (rule, 0.97), xycoords=("data", "axes fraction"), rotation=90,
                      xytext=(-12, 0), textcoords="offset points", color="grey", va="top")  # fmt: skip
    left.set(xlabel="BC5CDR test sentences/s (2 CPU cores)", ylabel="mean test F1, 4 corpora",
             title="Teacher and students (int8)")  # fmt: skip
    right.set(xlabel="BC5CDR test sentences/s (2 CPU cores)", ylabel="BC5CDR test F1", title="Beside other systems")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [
        f"Distilled students of the shipped model, one run on {describe(report['machine'])}; speed: BC5CDR test "
        "sentences as raw text, entities out (`benchmarks/inference.py`, same run); F1: test, exact match.",
        "",
        "| model | layers | int8 MB | "
        + " | ".join(CORPORA)
        + " | sentences/s | vs teacher | worst F1 loss | qualifies |",
        "|---|---:|---:|" + "---:|" * len(CORPORA) + "---:|---:|---:|---|",
    ]
    for row in rows:
        f1 = " | ".join(f"{row['f1'][c]:.2f}" for c in CORPORA)
        qualifies = "-" if "qualifies" not in row else ("**yes**" if row["qualifies"] else "no")
        lines.append(
            f"| {row['name']} | {row['layers']} | {row['disk_mb']} | {f1} | {row['sentences_per_s']} | "
            f"{row.get('speed_up', 1.0)}x | {row.get('worst_f1_loss', '-')} | {qualifies} |"
        )
    if report["others"]:
        lines += ["", "Other systems in the same run (BC5CDR only):", "", "| system | sentences/s | BC5CDR F1 |"]
        lines += ["|---|---:|---:|"]
        lines += [f"| {o['name']} | {o['sentences_per_s']} | {o['bc5cdr_f1']} |" for o in report["others"]]
    chosen = report["chosen"]
    lines += [
        "",
        f"Rule (issue 16): at least {SPEED_UP}x the teacher's int8 sentences/s and at most {MAX_LOSS} F1 below it "
        "on every corpus. "
        + (
            f"**Shipped: the {chosen}-layer student** as `fast` (`mtbioner tag --model fast`)."
            if chosen
            else "**No student meets both: none ships**; the trade-off is in `students.png`."
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default="default", help="shipped model name or torch folder (default: default)")
    parser.add_argument("--teacher-int8", type=Path, default=REPO / "src" / "mtbioner" / "models" / "default")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MTBIONER_DATA", "../shared/data")))
    parser.add_argument("--layers", default="2,3,4")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--spacy", type=Path, help="the spaCy BC5CDR peer (benchmarks/peers.py) to time too")
    parser.add_argument("--work", type=Path, default=Path("runs/students"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--limit", type=int, help="first N sentences of each split (smoke runs)")
    parser.add_argument("--install", action="store_true", help="ship the qualifying student as `fast`")
    parser.add_argument("--max-drop", type=float, default=0.5, help="int8 export check: most F1 lost to int8")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="benchmarks/inference.py systems built from the teacher's torch weights")  # fmt: skip
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.work / "build.log"
    depths = [int(x) for x in args.layers.split(",")]
    commands, students = [], {}
    for layers in depths:
        students[layers], done = build(layers, args, log)
        commands += done
    commands.append(score(args.teacher_int8, args.work / "teacher-test.json", args, log))
    measured = speeds(args, students, args.teacher_int8)
    systems = measured["systems"]
    teacher = {"name": "teacher (shipped `default`)", "layers": 6, "folder": str(args.teacher_int8)}
    teacher["f1"] = test_f1(args.work / "teacher-test.json")
    rows = [{**teacher, **pick(systems, "extra:teacher int8 (6 layers)")}]
    for layers, folder in students.items():
        row = {"name": f"student {layers}", "layers": layers, "folder": str(folder)}
        row["f1"] = test_f1(args.work / f"s{layers}-test.json")
        rows.append({**row, **pick(systems, f"extra:student, {layers} layers, int8")})
    judge(rows)
    others = [
        {"name": name, "sentences_per_s": s["sentences_per_s"], "bc5cdr_f1": s["bc5cdr_f1"]}
        for key, s in systems.items()
        for name in [{"hf-pipeline": "HF pipeline (fp32)", "spacy-peer": "spaCy CNN peer"}.get(key)]
        if name
    ]
    qualifying = [r for r in rows[1:] if r["qualifies"]]
    best = max(qualifying, key=lambda r: sum(r["f1"].values()), default=None)
    commands.append(measured["command"])
    report = {"machine": measured["machine"], "rows": rows, "others": others, "commands": commands,
              "chosen": best["layers"] if best else None, "limit": args.limit}  # fmt: skip
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
