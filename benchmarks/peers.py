"""A peer measured here, in one run: spaCy's NER pipeline trained the way scispaCy trains its NER models.

scispaCy's en_ner_bc5cdr_md and en_ner_jnlpba_md are spaCy pipelines (CNN tok2vec + transition-based NER)
trained on the same MTL-Bioinformatics-2016 IOB splits as mtbioner's corpora; their published test F1 is 84.28
(BC5CDR) and 72.06 (JNLPBA). They also carry 50k word vectors trained on PubMed, which cannot be had here (no
model hub), so the peer trained here is spaCy's default CPU NER pipeline without pretrained vectors (``spacy
init config --pipeline ner --optimize efficiency``: HashEmbedCNN tok2vec of width 96, depth 4, as scispaCy's
md configs, without their static vectors): the same network, less pre-training. It is trained on each corpus'
train split with devel for spaCy's model selection (as scispaCy did), then scored on test exactly like
mtbioner: the test sentences' own words (no re-tokenization), entity-level exact match, seqeval in conlleval
mode.

Speed: both systems tag the BC5CDR test sentences as raw text (words joined by spaces) in the same
run, on this machine: spaCy's ``nlp.pipe`` (its tokenizer included) and mtbioner's ``Tagger`` (its
sentence splitter, tokenizer and decoder included), best of ``--repeats`` runs.

    python benchmarks/peers.py --data-dir ../shared/data [--model default] [--corpora BC5CDR,JNLPBA]

Writes ``benchmarks/results/peers.json`` and ``peers.md``; trained spaCy pipelines go to ``--work``
(default ``runs/peers``; a corpus whose training finished is not trained again).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _machine import describe, machine

from mtbioner.data.corpus import read_corpus, resolve_corpus
from mtbioner.fileio import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"
SCISPACY_F1 = {"BC5CDR": 84.28, "JNLPBA": 72.06}  # allenai/scispacy docs/index.md, en_ner_*_md


def doc_bin(corpus, split: str, nlp, path: Path) -> int:
    """The split as a spaCy DocBin (IOB2 tags become ``doc.ents``); returns the sentence count."""
    from spacy.tokens import Doc, DocBin

    docs = DocBin()
    sentences = corpus.sentences(split)
    for sentence in sentences:
        docs.add(Doc(nlp.vocab, words=list(sentence.tokens), ents=list(sentence.tags)))
    docs.to_disk(path)
    return len(sentences)


def train_spacy(corpus, work: Path, max_steps: int, patience: int) -> tuple[Path, float]:
    """``spacy train`` with spaCy's default CPU NER config (no vectors); the best model and the seconds taken."""
    import spacy

    folder = work / corpus.name
    best = folder / "model-best"
    timing = folder / "train_seconds.txt"
    if best.is_dir() and timing.is_file():  # spaCy writes model-best during training: done only with the timing
        return best, float(timing.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    nlp = spacy.blank("en")
    doc_bin(corpus, "train", nlp, folder / "train.spacy")
    doc_bin(corpus, "devel", nlp, folder / "devel.spacy")
    config = folder / "config.cfg"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "init",
            "config",
            str(config),
            "--lang",
            "en",
            "--pipeline",
            "ner",
            "--optimize",
            "efficiency",
            "--force",
        ],
        check=True,
        capture_output=True,
    )
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "train",
            str(config),
            "--output",
            str(folder),
            "--paths.train",
            str(folder / "train.spacy"),
            "--paths.dev",
            str(folder / "devel.spacy"),
            "--training.max_steps",
            str(max_steps),
            "--training.patience",
            str(patience),
        ],
        check=True,
    )
    seconds = time.perf_counter() - started
    timing.write_text(f"{seconds:.1f}")
    return best, seconds


def spacy_scores(model: Path, corpus) -> dict:
    """Test P/R/F1 of a spaCy pipeline on the corpus' own words (IOB out of ``doc.ents``)."""
    import spacy
    from spacy.tokens import Doc

    from mtbioner.runtime.evaluation import score

    nlp = spacy.load(model)
    sentences = corpus.sentences("test")
    docs = (Doc(nlp.vocab, words=list(s.tokens)) for s in sentences)
    predicted = []
    for doc in nlp.pipe(docs, batch_size=256):
        predicted.append([f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc])
    overall, _, _ = score([s.tags for s in sentences], predicted)
    return {"precision": overall.precision, "recall": overall.recall, "f1": overall.f1}


def mtbioner_scores(model: str | None, corpus) -> dict:
    """Test P/R/F1 of an mtbioner model's head of the same name (as ``mtbioner evaluate``)."""
    from mtbioner.runtime.evaluation import evaluate_corpus
    from mtbioner.runtime.loading import load_backend

    backend = load_backend(model)
    report, _ = evaluate_corpus(backend, corpus, "test", corpus.name)
    o = report.overall
    return {"precision": o.precision, "recall": o.recall, "f1": o.f1}


def speeds(spacy_model: Path, model: str | None, texts: list[str], repeats: int) -> dict:
    """Best-of-``repeats`` sentences/s of both systems on the same raw texts."""
    import spacy

    from mtbioner.runtime.tagging import Tagger

    nlp = spacy.load(spacy_model)
    tagger = Tagger.load(model)

    def best(run) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return round(len(texts) / min(times), 1)

    return {
        "spacy": best(lambda: list(nlp.pipe(texts, batch_size=256))),
        "mtbioner": best(lambda: tagger.tag_batch(texts)),
    }


def to_markdown(report: dict) -> str:
    lines = [
        "# A peer measured here: spaCy NER (scispaCy's recipe, no PubMed vectors) vs mtbioner",
        "",
        f"- machine: {describe(report['machine'])}",
        f"- mtbioner model: {report['model']}",
        "- spaCy: `spacy init config --pipeline ner --optimize efficiency` (HashEmbedCNN tok2vec, width 96, depth 4, "
        "+ transition-based NER), "
        "trained on train, devel for model selection; scispaCy's own md models add 50k PubMed word vectors, "
        "which cannot be had here",
        "",
        "| corpus | spaCy here F1 (P / R) | scispaCy md published F1 | mtbioner F1 (P / R) | spaCy training |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in report["corpora"].items():
        s, m = row["spacy"], row["mtbioner"]
        lines.append(
            f"| {name} | {s['f1']:.2f} ({s['precision']:.2f} / {s['recall']:.2f}) | "
            f"{SCISPACY_F1.get(name, float('nan')):.2f} | {m['f1']:.2f} ({m['precision']:.2f} / {m['recall']:.2f}) | "
            f"{row['spacy_train_seconds'] / 60:.0f} min |"
        )
    if report.get("speed"):
        sp = report["speed"]
        lines += [
            "",
            f"Speed on {sp['sentences']} BC5CDR test sentences as raw text (best of {sp['repeats']}): "
            f"spaCy {sp['spacy']} sentences/s, mtbioner {sp['mtbioner']} sentences/s.",
        ]
    lines += ["", "Reproduce:", "", "```", report["command"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MTBIONER_DATA", "../shared/data")))
    parser.add_argument("--model", default=None, help="mtbioner model folder or shipped name (default: shipped)")
    parser.add_argument("--corpora", default="BC5CDR,JNLPBA")
    parser.add_argument("--work", type=Path, default=Path("runs/peers"))
    parser.add_argument("--max-steps", type=int, default=20000, help="spaCy's default")
    parser.add_argument("--patience", type=int, default=1600, help="spaCy's default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="first N sentences of each split (smoke runs)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--train-only", action="store_true", help="train the spaCy peers now, compare later")
    args = parser.parse_args(argv)

    report: dict = {"machine": machine(), "model": args.model or "shipped default", "corpora": {}}
    for name in [c.strip() for c in args.corpora.split(",") if c.strip()]:
        corpus = read_corpus(resolve_corpus(name, args.data_dir), ["train", "devel", "test"], args.limit)
        spacy_model, seconds = train_spacy(corpus, args.work, args.max_steps, args.patience)
        if args.train_only:
            print(f"{name}: {spacy_model} ({seconds:.0f} s of training)", flush=True)
            continue
        report["corpora"][name] = {
            "spacy": spacy_scores(spacy_model, corpus),
            "mtbioner": mtbioner_scores(args.model, corpus),
            "spacy_train_seconds": round(seconds, 1),
        }
        print(name, report["corpora"][name], flush=True)
        if name == "BC5CDR":
            texts = [" ".join(s.tokens) for s in corpus.sentences("test")]
            report["speed"] = {"sentences": len(texts), "repeats": args.repeats}
            report["speed"].update(speeds(spacy_model, args.model, texts, args.repeats))
    if args.train_only:
        return 0
    report["command"] = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/peers.py", *(argv or sys.argv[1:])])
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "peers.json", report)
    with atomic_write(args.out / "peers.md") as handle:
        handle.write(to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
