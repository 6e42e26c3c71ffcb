"""The full-scale report: Table 2 with bootstrap intervals, and every multi- vs single-task difference.

Selected by ``report: {kind: full, ...}`` in a study file (``experiments/full.yaml``); the
reduced-budget study keeps :mod:`mtbioner.study.report`, whose helpers this module reuses. The
section names what to show, with ``{corpus}`` standing for each corpus in run names::

    report:
      kind: full
      corpora: [BC2GM, BC5CDR, NCBI-disease, JNLPBA]          # rows (default: these four)
      bootstrap: {resamples: 1000, seed: 42, confidence: 0.95}
      reference: mt4                  # encoder updates of every run are shown relative to this run
      tables:                         # Table-2-like tables, e.g. one per encoder
        - title: default encoder
          columns: {single-task: "single-{corpus}", MT-3: mt3, MT-4: mt4}
      comparisons:                    # A - B per corpus that both runs score
        - {label: MT-4 − single-task, a: mt4, b: "single-{corpus}"}

Every number is read from ``RESULTS/RUN.json`` and ``RESULTS/RUN.predictions/CORPUS.json.gz``
(written by ``mtbioner experiment run``); intervals come from :mod:`mtbioner.study.bootstrap`. A run
with no result is listed as missing; one whose result has no stored predictions (results from
before predictions were kept) is shown without intervals, and the report says so.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MtbionerError
from ..fileio import atomic_write
from .bootstrap import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    Comparison,
    compare_counts,
    f1_from_counts,
    f1_interval,
    read_predictions,
)
from .bootstrap import sentence_counts as count_entities
from .experiment import predictions_file
from .report import CORPORA, JNLPBA_NOTE, _cost, _f, _paper, _shown, hardware_line, load_results
from .study_file import Study

VERDICT_WORDS = {"win": "**wins** over", "loss": "**loses** to", "tie": "ties with"}


@dataclass
class Spec:
    """The ``report`` section of a study file, checked."""

    corpora: list[str]
    tables: list[tuple[str, dict[str, str]]]
    comparisons: list[tuple[str, str, str]]
    resamples: int = RESAMPLES
    seed: int = SEED
    confidence: float = CONFIDENCE
    reference: str | None = None
    title: str = "MT-BioNER at full scale: multi-task vs single-task, with confidence intervals"


def report_spec(study: Study) -> Spec:
    """Read and check the study's ``report`` section (run names must be the study's).

    Raises:
        MtbionerError: A table or comparison names no run of the study.
    """
    section = study.report
    names = {run.name for run in study.runs}
    corpora = [str(c) for c in section.get("corpora", CORPORA)]

    def check(pattern: str, where: str) -> str:
        if not any(_name(pattern, c) in names for c in corpora):
            raise MtbionerError(f"{study.path}: report: {where} names {pattern!r}, which is no run of the study")
        return str(pattern)

    tables = []
    for i, table in enumerate(section.get("tables") or []):
        columns = {str(label): check(p, f"table {i + 1}") for label, p in (table.get("columns") or {}).items()}
        tables.append((str(table.get("title", "")), columns))
    comparisons = []
    for item in section.get("comparisons") or []:
        label = str(item.get("label", f"{item.get('a')} − {item.get('b')}"))
        comparisons.append((label, check(item["a"], label), check(item["b"], label)))
    boot = section.get("bootstrap") or {}
    reference = section.get("reference")
    if reference is not None and reference not in names:
        raise MtbionerError(f"{study.path}: report: reference {reference!r} is no run of the study")
    spec = Spec(
        corpora,
        tables,
        comparisons,
        int(boot.get("resamples", RESAMPLES)),
        int(boot.get("seed", SEED)),
        float(boot.get("confidence", CONFIDENCE)),
        reference,
    )
    spec.title = str(section.get("title", spec.title))
    return spec


def _name(pattern: str, corpus: str) -> str:
    return pattern.replace("{corpus}", corpus)


@dataclass
class Row:
    """One A - B comparison on one corpus; ``result`` is None when there is no interval (``note`` says why)."""

    label: str
    corpus: str
    a: str
    b: str
    f1_a: float | None = None
    f1_b: float | None = None
    result: Comparison | None = None
    note: str = ""

    @property
    def difference(self) -> float | None:
        if self.result is not None:
            return self.result.difference.value
        return None if self.f1_a is None or self.f1_b is None else round(self.f1_a - self.f1_b, 4)


@dataclass
class _Data:
    """A study's results and stored predictions, read once."""

    study: Study
    spec: Spec
    results: dict[str, dict[str, Any]]
    counts: dict[tuple[str, str], Any] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)

    def applies(self, run: str, corpus: str) -> bool:
        """Whether the study has ``run`` and it is scored on ``corpus``."""
        return any(r.name == run and corpus in r.corpora and r.evaluate for r in self.study.runs)

    def score(self, run: str, corpus: str) -> dict | None:
        return self.results.get(run, {}).get("scores", {}).get(corpus)

    def entity_counts(self, run: str, corpus: str):
        """Per-sentence counts from the stored predictions, or None when there are none."""
        key = (run, corpus)
        if key not in self.counts:
            file = predictions_file(self.study.results, run, corpus)
            self.counts[key] = count_entities(*read_predictions(file)) if file.is_file() else None
            score = self.score(run, corpus)
            if self.counts[key] is not None and score is not None:
                stored = float(f1_from_counts(*self.counts[key].sum(axis=0)))
                if abs(stored - score["f1"]) > 0.01:
                    self.mismatches.append(
                        f"`{run}` on {corpus}: RUN.json F1 {score['f1']:.2f}, predictions {stored:.2f}"
                    )
        return self.counts[key]

    def compare(self, label: str, corpus: str, a: str, b: str) -> Row:
        row = Row(label, corpus, a, b)
        missing = [run for run in (a, b) if self.score(run, corpus) is None]
        if missing:
            row.note = "missing: " + ", ".join(f"`{r}`" for r in missing)
            row.f1_a, row.f1_b = (self.score(a, corpus) or {}).get("f1"), (self.score(b, corpus) or {}).get("f1")
            return row
        row.f1_a, row.f1_b = self.score(a, corpus)["f1"], self.score(b, corpus)["f1"]
        counts_a, counts_b = self.entity_counts(a, corpus), self.entity_counts(b, corpus)
        if counts_a is None or counts_b is None:
            row.note = "no interval: no stored predictions for " + ", ".join(
                f"`{r}`" for r, c in ((a, counts_a), (b, counts_b)) if c is None
            )
            return row
        try:
            result = compare_counts(counts_a, counts_b, self.spec.resamples, self.spec.seed, self.spec.confidence)
        except MtbionerError as error:
            row.note = f"no interval: {error}"
            return row
        assert isinstance(result, Comparison)
        row.result = result
        return row


def comparison_rows(data: _Data) -> list[Row]:
    """Every comparison of the spec on every corpus both of its runs score."""
    rows = []
    for label, a_pattern, b_pattern in data.spec.comparisons:
        for corpus in data.spec.corpora:
            a, b = _name(a_pattern, corpus), _name(b_pattern, corpus)
            if data.applies(a, corpus) and data.applies(b, corpus):
                rows.append(data.compare(label, corpus, a, b))
    return rows


def compare_runs(study: Study, a: str, b: str) -> list[Row]:
    """Run ``a`` against run ``b`` on every corpus both score (``mtbioner experiment compare``)."""
    names = {run.name for run in study.runs}
    unknown = [r for r in (a, b) if r not in names]
    if unknown:
        raise MtbionerError(f"no run named {', '.join(unknown)} in {study.path}")
    data = _Data(study, report_spec(study), load_results(study))
    corpora = [c for r in study.runs if r.name == a for c in r.corpora]
    return [data.compare(f"{a} − {b}", c, a, b) for c in corpora if data.applies(b, c)]


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _interval_text(row: Row) -> str:
    if row.result is None:
        return "–"
    d = row.result.difference
    return f"[{d.low:+.2f}, {d.high:+.2f}]"


def _table2(data: _Data, paper: dict, columns: dict[str, str]) -> list[str]:
    systems = list(paper.get("systems", {}).values())
    head = ["Corpus", *(f"{s['label']} F1" for s in systems), *(f"{label} F1 [95% CI]" for label in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for corpus in data.spec.corpora:
        row = [corpus + (" †" if corpus == "JNLPBA" else "")]
        row += [_f(s["f1"].get(corpus)) for s in systems]
        for pattern in columns.values():
            run = _name(pattern, corpus)
            if not data.applies(run, corpus):
                row.append("n/a")
                continue
            score = data.score(run, corpus)
            if score is None:
                row.append("missing")
                continue
            counts = data.entity_counts(run, corpus)
            cell = f"**{score['f1']:.2f}**"
            if counts is not None:
                ci = f1_interval(counts, data.spec.resamples, data.spec.seed, data.spec.confidence)
                cell += f" [{ci.low:.2f}, {ci.high:.2f}]"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _precision_recall(data: _Data, columns: dict[str, str]) -> list[str]:
    head = ["Corpus", *(f"{label} P / R" for label in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for corpus in data.spec.corpora:
        cells = [corpus]
        for pattern in columns.values():
            s = data.score(_name(pattern, corpus), corpus)
            cells.append(f"{s['precision']:.2f} / {s['recall']:.2f}" if s else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _differences(rows: list[Row]) -> list[str]:
    level = f"{100 * rows[0].result.confidence:.0f}%" if rows and rows[0].result else "95%"
    lines = [
        f"| Comparison (A − B) | Corpus | A | B | F1 A | F1 B | Δ F1 | {level} CI | verdict for A | sentences |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = f"**{r.result.verdict}**" if r.result else r.note
        sentences = str(r.result.sentences) if r.result else "–"
        lines.append(
            f"| {r.label} | {r.corpus} | `{r.a}` | `{r.b}` | {_f(r.f1_a)} | {_f(r.f1_b)} | {_signed(r.difference)} "
            f"| {_interval_text(r)} | {verdict} | {sentences} |"
        )
    return lines


def at_a_glance(rows: list[Row], corpora: list[str]) -> list[str]:
    """Every comparison on every corpus in one table: A − B, its interval and the verdict (win / loss bold)."""
    labels = list(dict.fromkeys(r.label for r in rows))
    cells = {(r.label, r.corpus): r for r in rows}
    lines = ["| A − B | " + " | ".join(corpora) + " |", "|---|" + "---|" * len(corpora)]
    for label in labels:
        row = [label]
        for corpus in corpora:
            r = cells.get((label, corpus))
            if r is None:
                row.append("n/a")
            elif r.result is not None:
                d, verdict = r.result.difference, r.result.verdict
                shown = verdict if verdict == "tie" else f"**{verdict}**"
                row.append(f"{d.value:+.2f} [{d.low:+.2f}, {d.high:+.2f}] {shown}")
            elif r.difference is not None:
                row.append(f"{r.difference:+.2f} (no interval)")
            else:
                row.append("not run yet")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _verdicts(rows: list[Row], corpora: list[str]) -> list[str]:
    lines = []
    for corpus in corpora:
        parts, waiting = [], []
        for r in (r for r in rows if r.corpus == corpus):
            if r.result is not None:
                d = r.result.difference
                parts.append(
                    f"{r.label}: `{r.a}` {VERDICT_WORDS[r.result.verdict]} `{r.b}` "
                    f"({d.value:+.2f} F1, CI {d.low:+.2f} to {d.high:+.2f})"
                )
            elif r.difference is not None:
                parts.append(f"{r.label}: {r.difference:+.2f} F1, no interval")
            else:
                waiting.append(r.label)
        if waiting:
            parts.append("not run yet: " + ", ".join(f"*{label}*" for label in waiting))
        if parts:
            lines.append(f"- **{corpus}**: " + "; ".join(parts) + ".")
    return lines or ["- (no comparisons defined)"]


def _plot(rows: list[Row], corpora: list[str], out: Path, level: str) -> bool:
    """Forest plot of the differences with their intervals, one panel per corpus; False when nothing to draw."""
    drawn = [r for r in rows if r.difference is not None]
    if not drawn:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r.label for r in drawn))
    panels = [c for c in corpora if any(r.corpus == c for r in drawn)]
    colors = {"win": "tab:green", "loss": "tab:red", "tie": "tab:gray"}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 2.5, 0.45 * len(labels) + 1.6), sharey=True)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, corpus in zip(axes, panels, strict=True):
        for r in (r for r in drawn if r.corpus == corpus):
            y = labels.index(r.label)
            if r.result is None:
                ax.plot(r.difference, y, "o", mfc="none", color="black")  # no stored predictions: no interval
                continue
            d = r.result.difference
            err = [[d.value - d.low], [d.high - d.value]]
            ax.errorbar(d.value, y, xerr=err, fmt="o", capsize=3, color=colors[r.result.verdict])
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(corpus)
        ax.set_xlabel("Δ F1 (A − B), points")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].invert_yaxis()
    title = (
        f"A − B with {level} paired-bootstrap intervals (green: A wins, red: A loses, grey: tie; hollow: no interval)"
    )
    width = fig.get_figwidth()
    fig.suptitle(textwrap.fill(title, int(width * 14)), fontsize=9)  # a narrow (one-panel) figure wraps it
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def _steps(record: dict) -> int | None:
    train = record.get("train", {})
    if train.get("total_steps"):
        return int(train["total_steps"])
    log = record.get("log") or []
    return log[-1].get("step") if log else None


def _updates(data: _Data) -> list[str]:
    reference = data.spec.reference
    ref_steps = _steps(data.results[reference]) if reference in data.results else None
    tail = f" | vs `{reference}`" if reference else ""
    lines = [
        f"| Run | corpora | encoder | training windows / epoch | epochs | steps / epoch | encoder updates{tail} |",
        "|---|---|---|---|---|---|---|" + ("---|" if reference else ""),
    ]
    for run, r in data.results.items():
        options = r.get("options", {})
        steps = _steps(r)
        windows = sum(r.get("model", {}).get("training_sentences", {}).values())
        ratio = f" | {steps / ref_steps:.3f}" if reference and steps and ref_steps else (" | –" if reference else "")
        encoder = Path(options["encoder"]).name if options.get("encoder") else "default"
        lines.append(
            f"| `{run}` | {', '.join(r.get('corpora', []))} | {encoder} | {windows} | {options.get('epochs', '–')} "
            f"| {r.get('train', {}).get('steps_per_epoch') or '–'} | {steps or '–'}{ratio} |"
        )
    return lines


def render(study: Study, output: Path) -> str:
    """The report's Markdown for ``output``; writes its figure into ``figures/`` beside it."""
    spec = report_spec(study)
    data = _Data(study, spec, load_results(study))
    paper = _paper(study)
    missing = [run.name for run in study.runs if run.name not in data.results]
    without = [
        run
        for run, r in data.results.items()
        if r.get("scores") and not all(predictions_file(study.results, run, c).is_file() for c in r["scores"])
    ]
    rows = comparison_rows(data)
    budget = ", ".join(f"{k}={v}" for k, v in study.budget.items())
    command = f"mtbioner experiment report {_shown(study.path)} --output {_shown(output)}"
    level = f"{100 * spec.confidence:.0f}%"
    out = [
        f"# {spec.title}",
        "",
        f"Generated by `{command}` from `{_shown(study.results)}/*.json` and the test predictions stored beside "
        "them (`RUN.predictions/CORPUS.json.gz`), each written by `mtbioner experiment run` with the exact commands "
        "and commit (listed at the end). Nothing here is typed in by hand except the paper's published F1 "
        "(`experiments/paper.yaml`), labelled as the paper's.",
        "",
        f"- Budget, the same for every run unless the run says otherwise: {budget}.",
        f"- Intervals: paired bootstrap over test sentences, {spec.resamples} resamples, seed {spec.seed}, "
        f"{level} percentile intervals of entity-level F1 (exact match, as conlleval); method in "
        "`src/mtbioner/study/bootstrap.py`. A verdict is **win** when the whole interval of A − B is above 0, "
        "**loss** when below, **tie** otherwise. Each interval is per comparison, not corrected for the many "
        "comparisons.",
        hardware_line(data.results),
        f"- Runs finished: {len(data.results)} of {len(study.runs)}"
        + (f"; **not yet run: {', '.join(missing)}** (shown as missing)." if missing else "."),
    ]
    if without:
        out.append(
            f"- Results without stored predictions, so without intervals: {', '.join(without)} (finished before "
            "predictions were kept; delete the RUN.json and rerun the study to score the kept model again)."
        )
    out.append("")
    if rows:
        out += [
            f"## At a glance: A − B in F1 points, [{level} interval], verdict for A",
            "",
            *at_a_glance(rows, spec.corpora),
            "",
            "n/a: a run of the comparison does not score that corpus. Details, with each run's F1, below.",
            "",
        ]
    for title, columns in spec.tables:
        out += [f"## Test F1 beside the paper's (Table 2){': ' + title if title else ''}", ""]
        out += [*_table2(data, paper, columns), "", "Precision / recall:", "", *_precision_recall(data, columns), ""]
    out += [
        f"† {JNLPBA_NOTE} The paper's figures use BioBERT / BERT-base (110M parameters); `n/a`: the run does not "
        "score that corpus.",
        "",
        "## Differences with confidence intervals",
        "",
        *(_differences(rows) if rows else ["(no comparisons defined)"]),
        "",
    ]
    figure = output.parent / "figures" / f"{output.stem}-differences.png"
    if _plot(rows, spec.corpora, figure, level):
        out += [f"![F1 differences with {level} intervals]({figure.relative_to(output.parent)})", ""]
    out += ["### Per corpus: does A win, lose or tie?", "", *_verdicts(rows, spec.corpora), ""]
    if data.mismatches:
        out += ["**Stored predictions disagree with the recorded scores:** " + "; ".join(data.mismatches), ""]
    nothing = ["| (no run finished yet) |"] if not data.results else []
    out += ["## Encoder updates", "", *_updates(data), *nothing, ""]
    if spec.reference:
        out += [
            f"One update is one optimizer step on one batch; the last column divides by `{spec.reference}`'s "
            "updates. The equal-updates controls set their epochs so that this ratio is near 1 (the study file "
            "shows the computation).",
            "",
        ]
    cost = _cost(data.results)
    out += ["## Cost", "", *cost[:2], *nothing, *cost[2:], ""]
    out += ["## Runs and commands", "", f"- This report, its intervals and figure: `{command}`"]
    for run, r in data.results.items():
        about = f" ({r['description']})" if r.get("description") else ""
        out.append(f"- `{run}`{about}, commit `{r.get('commit', '?')}`:")
        for step in r.get("commands", {}).values():
            out.append(f"  `{step}`")
    out.append(
        f"- One comparison alone: `mtbioner experiment compare {_shown(study.path)} RUN_A RUN_B` "
        "(same resamples and seed)."
    )
    return "\n".join(out) + "\n"


def write_report(study: Study, output: str | Path) -> Path:
    """Write the full-scale report and its figure (``figures/`` beside it), atomically."""
    target = Path(output)
    text = render(study, target)
    with atomic_write(target) as handle:
        handle.write(text)
    return target
