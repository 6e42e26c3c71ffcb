"""Write the study report (Markdown + PNG plots) from stored run results, without training.

Every figure in the report is read from ``RESULTS/RUN.json`` files written by
:mod:`mtbioner.study.experiment`; the paper's published numbers come from ``paper.yaml`` beside
the study file and are always labelled as the paper's. Runs that have no result yet are
listed as missing instead of being left out silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from .study_file import Study

CORPORA = ("BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA")
ABLATIONS = {
    "mt4": "mixed (Algorithm I), fine-tuned, linear",
    "mt4-sequential": "sequential (Algorithm II)",
    "mt4-frozen": "frozen encoder",
    "mt4-crf": "CRF heads",
}
JNLPBA_NOTE = (
    "JNLPBA: the shared `train.tsv` is a careful rebuild of the original training split "
    "(`shared/data/JNLPBA/PROVENANCE.md`: 1% of sentences could not be located and are left out), "
    "so JNLPBA comparisons with the paper are approximate."
)


def load_results(study: Study) -> dict[str, dict[str, Any]]:
    """Results of the study's runs that have finished, by run name, in the study's order."""
    found = {}
    for run in study.runs:
        file = study.results / f"{run.name}.json"
        if file.is_file():
            found[run.name] = json.loads(file.read_text(encoding="utf-8"))
    return found


def _paper(study: Study) -> dict[str, Any]:
    import yaml

    file = study.path.parent / "paper.yaml"
    return yaml.safe_load(file.read_text(encoding="utf-8")) if file.is_file() else {"systems": {}}


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _score(results: dict, run: str, corpus: str) -> dict | None:
    return results.get(run, {}).get("scores", {}).get(corpus)


def _encoder_label(results: dict) -> str:
    for record in results.values():
        encoder = record.get("options", {}).get("encoder")
        return Path(encoder).name if encoder else "MiniLM-L6"
    return "MiniLM-L6"


def _table2(results: dict, paper: dict, encoder: str) -> list[str]:
    ours = [("single-task", None), ("mt3", "MT-3"), ("mt4", "MT-4")]
    head = ["Corpus"]
    for system in paper.get("systems", {}).values():
        head.append(f"{system['label']} F1")
    for _, label in ours:
        head += [f"{label or 'single-task'} ({encoder}) P", "R", "F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for corpus in CORPORA:
        row = [corpus + (" †" if corpus == "JNLPBA" else "")]
        for system in paper.get("systems", {}).values():
            row.append(_f(system["f1"].get(corpus)))
        for run, _ in ours:
            name = f"single-{corpus}" if run == "single-task" else run
            s = _score(results, name, corpus)
            row += [_f(s and s["precision"]), _f(s and s["recall"]), f"**{_f(s and s['f1'])}**"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _deltas(results: dict) -> tuple[list[str], list[str]]:
    lines = ["| Corpus | single-task F1 | MT 3 corpora F1 (Δ) | MT 4 corpora F1 (Δ) |", "|---|---|---|---|"]
    worse = []
    for corpus in CORPORA:
        single = _score(results, f"single-{corpus}", corpus)
        cells = [corpus, _f(single and single["f1"])]
        for run in ("mt3", "mt4"):
            s = _score(results, run, corpus)
            if s is None or single is None:
                cells.append(_f(s and s["f1"]))
                continue
            delta = s["f1"] - single["f1"]
            cells.append(f"{s['f1']:.2f} ({delta:+.2f})")
            if delta < 0:
                worse.append(f"{run} on {corpus} ({delta:+.2f} F1)")
        lines.append("| " + " | ".join(cells) + " |")
    return lines, worse


def _ablations(results: dict) -> list[str]:
    lines = ["| System | " + " | ".join(CORPORA) + " | mean F1 |", "|---|" + "---|" * (len(CORPORA) + 1)]
    for run, label in ABLATIONS.items():
        scores = [_score(results, run, c) for c in CORPORA]
        f1s = [s["f1"] for s in scores if s]
        mean = sum(f1s) / len(f1s) if len(f1s) == len(CORPORA) else None
        lines.append(f"| {label} (`{run}`) | " + " | ".join(_f(s and s["f1"]) for s in scores) + f" | {_f(mean)} |")
    return lines


def _curves_plot(results: dict, out: Path) -> bool:
    """Figure-3-style devel F1 per epoch, mixed vs sequential; False when neither run is there."""
    runs = {"mixed (Algorithm I)": "curve-mixed", "sequential (Algorithm II)": "curve-sequential"}
    if not any(r in results for r in runs.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(CORPORA) + 1, figsize=(16, 3.4), sharey=False)
    for label, run in runs.items():
        log = results.get(run, {}).get("log", [])
        epochs = [e["epoch"] for e in log]
        style = "-o" if run == "curve-mixed" else "--s"
        for ax, corpus in zip(axes, CORPORA, strict=False):
            ax.plot(epochs, [e["devel"].get(corpus, {}).get("f1") for e in log], style, label=label)
        axes[-1].plot(epochs, [e.get("mean_devel_f1") for e in log], style, label=label)
    for ax, title in zip(axes, [*CORPORA, "mean"], strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("devel F1 (%)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def _f1_plot(results: dict, out: Path) -> bool:
    systems = [(f"single-{c}", "single-task") for c in CORPORA] + [(r, r) for r in ABLATIONS] + [("mt3", "mt3")]
    labels = ["single-task", "mt3", *ABLATIONS]
    if not any(_score(results, run, c) for run, _ in systems for c in CORPORA):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = []
        for corpus in CORPORA:
            run = f"single-{corpus}" if label == "single-task" else label
            s = _score(results, run, corpus)
            values.append(s["f1"] if s else 0.0)
        ax.bar([x + i * width for x in range(len(CORPORA))], values, width, label=label)
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(CORPORA))], CORPORA)
    ax.set_ylabel("test F1 (%)")
    ax.legend(fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def _cost(results: dict) -> list[str]:
    lines = [
        "| Run | training windows / epoch | epochs | windows/s | training time (s) | peak RSS train (MB) "
        "| test tagging time (s) | peak RSS evaluate (MB) | model size (MB) | load average start / end | host |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, r in results.items():
        train, ev = r.get("train", {}), r.get("evaluate", {})
        per_epoch = sum(r.get("model", {}).get("training_sentences", {}).values())
        tag_seconds = sum(s.get("seconds", 0.0) for s in r.get("scores", {}).values()) if r.get("scores") else None
        lines.append(
            f"| `{run}` | {per_epoch} | {len(r.get('log') or []) or r.get('options', {}).get('epochs', '–')} "
            f"| {train.get('windows_per_s', '–')} "
            f"| {_train_seconds(train)} | {train.get('peak_rss_mb') or '–'} | {_f(tag_seconds)} "
            f"| {ev.get('peak_rss_mb', '–')} | {r.get('model', {}).get('size_mb', '–')} | {_load(r)} | {_host(r)} |"
        )
    return lines + [
        "",
        "Load average: the 1-minute load when the run started and ended (not recorded: –). A run keeps about as "
        "many threads busy as the machine has cores, and the average lags by a minute, so a value near the core "
        "count (or a little above, from the previous run) is a run alone; far above it, other work shared the CPU "
        "and that run's timings are slower than an idle machine's. Host: the CPU and cores the run was timed on; "
        "hosts differ in speed (an AVX-512 host may train twice as fast as an AVX2 one), so compare times only "
        "between runs on the same host.",
    ]


def _host(result: dict) -> str:
    hardware = result.get("hardware") or {}
    if not hardware.get("cpu"):
        return "–"
    isa = f" ({hardware['isa']})" if hardware.get("isa") else ""
    gpu = f", {hardware['gpu']}" if hardware.get("gpu") else ""
    return f"{hardware['cpu']}{isa}, {hardware.get('cores', '?')} cores{gpu}"


def hardware_line(results: dict[str, dict]) -> str:
    """The report header's hardware: every host the runs used, with its runs, since times compare only within one."""
    if not results:
        return "- Hardware: (no run finished yet)."
    hosts: dict[str, list[str]] = {}
    for name, result in results.items():
        hosts.setdefault(_host(result), []).append(name)
    machines = [result.get("hardware") or {} for result in results.values()]
    torch = ", ".join(sorted({str(machine.get("torch", "?")) for machine in machines}))
    if len(hosts) == 1:
        gpu = "" if any(machine.get("gpu") for machine in machines) else ", no GPU"
        return f"- Hardware: {next(iter(hosts))}{gpu}; torch {torch}."
    parts = [
        f"{host} ({', '.join(names)})" if len(names) <= 3 else f"{host} ({len(names)} runs)"
        for host, names in sorted(hosts.items(), key=lambda item: -len(item[1]))
    ]
    unknown = not all(machine.get("isa") for machine in machines)
    return (
        f"- Hardware: {len(hosts)} hosts as recorded: {'; '.join(parts)}; torch {torch}. Times compare only between "
        "runs on the same host (the cost table's host column)"
        + (
            ", and a record without the instruction set (older runs) may name the same host as one with it."
            if unknown
            else "."
        )
    )


def _train_seconds(train: dict) -> str:
    """Wall time of the training command; a resumed run's covers only the epochs after the resume."""
    if not train.get("seconds"):
        return "–"
    return (
        f"{train['seconds']} (resumed: later epochs only)" if train.get("resumed") is True else str(train["seconds"])
    )


def _load(result: dict) -> str:
    load = result.get("load_average", {})
    if "start" not in load:
        return "–"
    return f"{load['start'][0]:.1f} / {load['end'][0]:.1f}" if "end" in load else f"{load['start'][0]:.1f} / –"


def _one_vs_four(results: dict) -> list[str]:
    singles = [results.get(f"single-{c}") for c in CORPORA]
    mt4 = results.get("mt4")
    if mt4 is None or any(s is None for s in singles):
        return ["(needs `mt4` and all four single-task runs)"]
    size4 = sum(s["model"]["size_mb"] for s in singles)
    train4 = sum(s["train"]["seconds"] or 0 for s in singles)
    tag4 = sum(s["scores"][c]["seconds"] for s, c in zip(singles, CORPORA, strict=True))
    tag1 = sum(mt4["scores"][c]["seconds"] for c in CORPORA)
    return [
        "| | four single-task models | one 4-corpus model |",
        "|---|---|---|",
        f"| size on disk (MB) | {size4:.1f} | {mt4['model']['size_mb']:.1f} |",
        f"| training time (s), same sentences | {train4:.0f} | {mt4['train']['seconds'] or 0:.0f} |",
        f"| tagging the 4 test sets, each with its own head (s) | {tag4:.1f} | {tag1:.1f} |",
        "",
        "Tagging one text for every entity type costs one encoder pass with the 4-corpus model and four with "
        "single-task models; `benchmarks/inference.py` measures that directly (systems (b) and (c)).",
    ]


def _bc5cdr_time(results: dict) -> list[str]:
    lines = []
    for run in ("mt4", "single-BC5CDR"):
        s = _score(results, run, "BC5CDR")
        if s and s.get("seconds"):
            rate = s["sentences"] / s["seconds"]
            lines.append(f"- `{run}`: {s['sentences']} sentences in {s['seconds']:.1f} s ({rate:.0f} sentences/s)")
    return lines or ["- (not measured yet)"]


def render(study: Study, figures: Path, relative_to: Path) -> str:
    """The report's Markdown; writes its plots into ``figures``."""
    results = load_results(study)
    paper = _paper(study)
    encoder = _encoder_label(results)
    missing = [run.name for run in study.runs if run.name not in results]
    budget = ", ".join(f"{k}={v}" for k, v in study.budget.items())
    out = [
        "# MT-BioNER with mtbioner: multi-task vs single-task on four biomedical corpora",
        "",
        f"Generated by `mtbioner experiment report {_shown(study.path)}` from `{_shown(study.results)}/*.json` "
        "(each written by `mtbioner experiment run`, with the exact commands and commit). Nothing here is typed "
        "in by hand except the paper's published F1 (`experiments/paper.yaml`), which is labelled as such.",
        "",
        f"- Encoder of every run of ours: **{encoder}** (all-MiniLM-L6-v2 unless the study sets `encoder`, 22M "
        "parameters). The paper used BioBERT and BERT-base (110M parameters).",
        "- MT-3: one model on BC2GM, BC5CDR, NCBI-disease; MT-4: one model on all four; single-task: one model each.",
        f"- Budget, the same for every system: {budget}. See the study file for why it is below the paper's.",
        hardware_line(results),
        f"- Runs finished: {len(results)} of {len(study.runs)}"
        + (f"; **not yet run: {', '.join(missing)}** (their cells show –)." if missing else "."),
        "",
        "## Test F1 beside the paper's (Table 2)",
        "",
        *_table2(results, paper, encoder),
        "",
        f"† {JNLPBA_NOTE}",
        "",
    ]
    bar = figures / "f1.png"
    if _f1_plot(results, bar):
        out += [f"![test F1 per corpus and system]({bar.relative_to(relative_to)})", ""]
    deltas, worse = _deltas(results)
    out += ["## Multi-task against single-task", "", *deltas, ""]
    if worse:
        out += [
            "Multi-task is **worse** than single-task here for: " + "; ".join(worse) + ". "
            "Investigation runs (sampling temperature, loss weights, epochs) are listed under *Other runs*.",
            "",
        ]
    elif {"mt3", "mt4"} <= set(results) and all(f"single-{c}" in results for c in CORPORA):
        out += [
            "Multi-task is not worse than single-task on any corpus here. The budget is counted in epochs, as in "
            "the paper, so the shared encoder of a multi-task model gets as many updates as all its corpora's "
            "batches together, while each single-task model gets only its own corpus's.",
            "",
        ]
    out += ["## Ablations (4 corpora, test F1)", "", *_ablations(results), ""]
    curves = figures / "learning-curves.png"
    out += ["## Learning curves: mixed vs sequential (devel F1 per epoch, trained on train only)", ""]
    if _curves_plot(results, curves):
        out += [f"![devel F1 per epoch]({curves.relative_to(relative_to)})", ""]
    else:
        out += ["(runs `curve-mixed` / `curve-sequential` not finished yet)", ""]
    out += ["## Cost", "", *_cost(results), "", "Time to tag the BC5CDR test set:", "", *_bc5cdr_time(results), ""]
    out += ["### One 4-corpus model against four single-task models", "", *_one_vs_four(results), ""]
    standard = {"mt3", "curve-mixed", "curve-sequential", *ABLATIONS, *(f"single-{c}" for c in CORPORA)}
    others = [r for r in results if r not in standard]
    if others:
        out += [
            "## Other runs",
            "",
            "| Run | description | " + " | ".join(CORPORA) + " |",
            "|---|---|" + "---|" * len(CORPORA),
        ]
        for run in others:
            f1s = " | ".join(_f((_score(results, run, c) or {}).get("f1")) for c in CORPORA)
            out.append(f"| `{run}` | {results[run].get('description', '')} | {f1s} |")
        out.append("")
    out += ["## Runs and commands", ""]
    for run, r in results.items():
        out.append(f"- `{run}` ({r.get('description', '')}), commit `{r.get('commit', '?')}`:")
        for command in r.get("commands", {}).values():
            out.append(f"  `{command}`")
    return "\n".join(out) + "\n"


def _shown(path: Path) -> str:
    """``path`` as a reader would type it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_report(study: Study, output: str | Path) -> Path:
    """Write the report and its figures (``FIGURES`` folder beside it), atomically."""
    target = Path(output)
    figures = target.parent / "figures"
    text = render(study, figures, target.parent)
    with atomic_write(target) as handle:
        handle.write(text)
    return target
