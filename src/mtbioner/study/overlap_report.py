"""The overlap report: heat maps and Markdown for an :class:`~mtbioner.study.overlap.Analysis`.

``mtbioner overlap`` writes it with :func:`write_report` (atomically; figures beside it).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..fileio import atomic_write
from .overlap import (
    NONE,
    Analysis,
    HeadConfusion,
    PairOverlap,
    entity_strings,
    is_listed,
)
from .overlap_findings import examples, findings, num, pct, recommend, share, unlabelled

# --------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Lay the figure out, write it atomically and free it."""
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, dpi=110, format="png")
    _pyplot().close(fig)


def strings_figure(analysis: Analysis, path: Path) -> None:
    """Heat map: rows A:type, one panel per B corpus (B types exact / inside, other overlap, none)."""
    plt = _pyplot()
    import numpy as np

    rows = [(v.name, t) for v in analysis.views for t in v.types]
    panels = []
    for b in analysis.views:
        columns = [c for t in b.types for c in (t, f"in {t}")] + ["~", NONE]
        grid = np.full((len(rows), len(columns)), np.nan)
        for i, (a_name, a_type) in enumerate(rows):
            pair = analysis.pair(a_name, b.name)
            if pair is None or not pair.count("found", [a_type]):
                continue
            shares = pair.shares([a_type])
            for j, column in enumerate(columns):
                if column == "~":
                    grid[i, j] = sum(shares[f"~{t}"] for t in b.types)
                else:
                    grid[i, j] = shares[column]
        panels.append((b.name, columns, grid))
    widths = [len(c) for _, c, _ in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(8.5, 1.6 + 0.55 * sum(widths)), 1.6 + 0.42 * len(rows)),  # wide enough for the title
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for k, (ax, (name, columns, grid)) in enumerate(zip(axes[0], panels, strict=True)):
        ax.imshow(np.nan_to_num(grid), cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                value = grid[i, j]
                if np.isnan(value):
                    ax.text(j, i, "·", ha="center", va="center", fontsize=7, color="0.6")
                elif value >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > 0.6 else "black",
                    )
        ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), [f"{a}: {t}" for a, t in rows] if k == 0 else [], fontsize=8)
        ax.set_title(f"in {name} text", fontsize=9)
        for i, (a_name, _) in enumerate(rows):
            if a_name == name:  # the held-out baseline rows
                ax.add_patch(plt.Rectangle((-0.5, i - 0.5), len(columns), 1, fill=False, lw=1.2, ec="darkorange"))
    fig.suptitle(
        "How each corpus (panel) annotates the others' entity strings: % of occurrences, each string weighted once\n"
        "T = same span as a T entity, in T = inside a longer T entity, ~ = other overlap, none = unlabelled\n"
        "orange: the corpus's own held-out baseline",
        fontsize=9,
    )
    _save(fig, path)


def model_figure(analysis: Analysis, path: Path) -> None:
    """Heat maps: one per (test corpus, head), gold type x predicted type, row-normalised, counts written."""
    plt = _pyplot()
    import numpy as np

    confusions = analysis.confusions or []
    corpora = list(dict.fromkeys(c.corpus for c in confusions))
    heads = list(dict.fromkeys(c.head for c in confusions))
    fig, axes = plt.subplots(
        len(corpora), len(heads), figsize=(max(6.0, 2.6 * len(heads) + 1), 2.2 * len(corpora) + 1.2), squeeze=False
    )
    for i, corpus in enumerate(corpora):
        for j, head in enumerate(heads):
            ax = axes[i][j]
            c = analysis.confusion(corpus, head)
            assert c is not None
            counts = np.array([[c.counts[(r, k)] for k in c.columns] for r in c.rows], dtype=float)
            totals = counts.sum(axis=1, keepdims=True)
            ax.imshow(
                np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0),
                cmap="Purples",
                vmin=0,
                vmax=1,
                aspect="auto",
            )
            for r in range(counts.shape[0]):
                for k in range(counts.shape[1]):
                    if counts[r, k]:
                        dark = totals[r, 0] and counts[r, k] / totals[r, 0] > 0.6
                        ax.text(
                            k,
                            r,
                            f"{int(counts[r, k])}",
                            ha="center",
                            va="center",
                            fontsize=6,
                            color="white" if dark else "black",
                        )
            ax.set_xticks(range(len(c.columns)), c.columns, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(c.rows)), c.rows, fontsize=7)
            if i == 0:
                ax.set_title(f"{head} head", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{corpus} {c.split} gold", fontsize=8)
    fig.suptitle(
        "Every head (column) on every test set (row): gold type × predicted type at exact span\n"
        "numbers: counts; colour: share of the row; none: predicted spans without a gold span",
        fontsize=9,
    )
    _save(fig, path)


# --------------------------------------------------------------------------- the report


def _link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _overview(analysis: Analysis, fold: bool) -> list[str]:
    names = [v.name for v in analysis.views]
    lines = ["| A's strings \\ in B's text | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a in analysis.views:
        cells = []
        for b in analysis.views:
            pair = analysis.pair(a.name, b.name, fold)
            assert pair is not None
            found, strings = pair.count("found"), pair.count("strings")
            cell = f"{num(found)}/{num(strings)} found · {pct(unlabelled(pair) if found else None)} none"
            cells.append(f"*{cell}* (baseline)" if a.name == b.name else cell)
        lines.append(f"| {a.name} | " + " | ".join(cells) + " |")
    return lines


def _pair_table(pair: PairOverlap, folded: PairOverlap | None) -> list[str]:
    columns = [c for c in pair.outcomes if any(pair.shares([t]).get(c, 0) >= 0.0005 for t in pair.source_types)]
    head = [
        "A type",
        "strings",
        "found in B",
        "found (case-folded)",
        "labelled ≥1",
        "never labelled",
        "occurrences",
        *columns,
        "none (per occurrence)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    for t in pair.source_types:
        shares = pair.shares([t])
        found, strings = pair.count("found", [t]), pair.count("strings", [t])
        row = [
            t,
            num(strings),
            f"{num(found)} ({pct(share(found, strings))})",
            "–" if folded is None else num(folded.count("found", [t])),
            num(pair.count("labelled", [t])),
            num(pair.count("never", [t])),
            num(sum(pair.occurrences([t]).values())),
            *(pct(shares[c]) if found else "–" for c in columns),
            pct(unlabelled(pair, [t], weighted=False) if found else None),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _confusion_table(c: HeadConfusion) -> list[str]:
    lines = [
        f"| {c.corpus} gold \\ {c.head} | " + " | ".join(c.columns) + " | total |",
        "|---|" + "---|" * (len(c.columns) + 1),
    ]
    for r in c.rows:
        counts = [c.counts[(r, k)] for k in c.columns]
        lines.append(f"| {r} | " + " | ".join(num(n) for n in counts) + f" | {num(sum(counts))} |")
    return lines


def render(analysis: Analysis, figures: Path, relative_to: Path, prefix: str = "overlap") -> str:
    """The report's Markdown; writes its heat maps into ``figures`` (links relative to ``relative_to``)."""
    figures.mkdir(parents=True, exist_ok=True)
    out = [
        *_method(analysis),
        *_corpora(analysis),
        "",
        "## Findings",
        "",
        *[f"- {line}" for line in findings(analysis)],
        "",
        *_policy(analysis),
        "",
        *_strings(analysis, figures / f"{prefix}-strings.png", relative_to),
        *_model(analysis, figures / f"{prefix}-model.png", relative_to),
    ]
    return "\n".join(out).rstrip() + "\n"


def _method(analysis: Analysis) -> list[str]:
    splits = "+".join(analysis.views[0].splits)
    return [
        "# Corpus overlap: shared entity strings, how each corpus annotates them, and each head on the others",
        "",
        (f"Generated by `{analysis.command}`" if analysis.command else "Generated by `mtbioner overlap`")
        + "; every number and every sentence of the findings is computed from the corpora (and the model, when "
        "given). Rerun the command to regenerate it.",
        "",
        "## Method",
        "",
        f"- **Strings**: each corpus's distinct entity strings from its **{splits}** split(s). The test split is "
        "never used for the string analysis, so nothing here is chosen on test. Strings with fewer than "
        f"{analysis.min_chars} characters or without a letter (`P`, `1`) are left out: they are rare as "
        "annotations but occur everywhere.",
        "- **Matching**: a string occurs where its exact word sequence does (whole words). "
        + (
            "Tokens are first re-split at punctuation (`IL-2` → `IL - 2`), since JNLPBA keeps hyphenated words "
            "whole while the other corpora split them."
            if analysis.split_punct
            else "Tokens are compared as the corpora tokenize them."
        )
        + " Case-sensitive unless *case-folded* is said.",
        "- **Outcome of an occurrence in B**: `T` = B has a T entity with the same span; `in T` = it lies inside "
        "a longer B entity of type T; `~T` = a T entity overlaps it otherwise (shorter or crossing: a boundary "
        "conflict); `none` = B leaves it unlabelled, a **silver conflict** (A calls it an entity, B's annotators "
        "left it O).",
        "- **Shares** are string-weighted: each found string's occurrences are split into outcome shares and the "
        "strings averaged, so `protein` (hundreds of occurrences) weighs as much as `BRCA1`. Tables also give the "
        "per-occurrence none share.",
        "- **Baseline** (A = B): A's first split's strings in the text of its other split(s) (train strings in "
        "devel text), so no occurrence is the annotation that listed the string: how consistent a corpus is with "
        "itself.",
        "",
    ]


def _corpora(analysis: Analysis) -> list[str]:
    out = [
        "## Corpora",
        "",
        "| Corpus | splits | sentences | tokens | tokens re-split | entity mentions | distinct strings |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in analysis.views:
        mentions = ", ".join(f"{t} {num(n)}" for t, n in sorted(v.entities.items()))
        distinct = len({k for k in entity_strings(v) if is_listed(k, analysis.min_chars)})
        out.append(
            f"| {v.name} | {'+'.join(v.splits)} | {num(v.sentences)} | {num(v.tokens)} | {num(v.split_tokens)} | "
            f"{mentions} | {num(distinct)} |"
        )
    return out


def _policy(analysis: Analysis) -> list[str]:
    policy = recommend(analysis)
    out = [
        "## Recommended merge policy for one entity set (issue 18 item 3)",
        "",
        "Merged types: " + "; ".join(f"**{g}** ← {', '.join(ts)}" for g, ts in policy.type_map.items()) + ".",
        "",
        "Each rule comes with the numbers that chose it (the bars are stated); rerunning on other corpora can "
        "choose differently.",
        "",
    ]
    for i, (rule, why) in enumerate(policy.rules, 1):
        out += [f"{i}. **{rule}**  ", f"   *Evidence:* {why}"]
    return out


def _strings(analysis: Analysis, png: Path, relative_to: Path) -> list[str]:
    strings_figure(analysis, png)
    out = [
        "## String overlap",
        "",
        "Found strings out of A's distinct strings, and the share of their occurrences B leaves unlabelled "
        "(string-weighted); the diagonal is the held-out baseline.",
        "",
        *_overview(analysis, False),
        "",
        "Case-folded:",
        "",
        *_overview(analysis, True),
        "",
        f"![type-by-type string overlap]({_link(png, relative_to)})",
        "",
    ]
    for a in analysis.views:
        for b in analysis.views:
            pair = analysis.pair(a.name, b.name)
            assert pair is not None
            title = f"### {a.name} strings in {b.name} text" + (
                f" (baseline: {pair.baseline})" if pair.baseline else ""
            )
            out += [title, "", *_pair_table(pair, analysis.pair(a.name, b.name, True)), ""]
            unlabelled_rows = [f"{t}: {examples(pair, [t])}" for t in pair.source_types if pair.conflicts([t], 1)]
            if unlabelled_rows:
                out += [
                    "Most often unlabelled in B (unlabelled of all occurrences): " + "; ".join(unlabelled_rows),
                    "",
                ]
    return out


def _model(analysis: Analysis, png: Path, relative_to: Path) -> list[str]:
    out = ["## Model: every head on every test set", ""]
    if analysis.confusions is None:
        out += [
            "Model part: run with `--model MODEL` (a trained or exported model folder) to add every head's "
            "predictions on every corpus's test split, as a gold type × predicted type heat map.",
            "",
        ]
    else:
        model_figure(analysis, png)
        out += [
            f"Model `{analysis.model}`. Each head tags each corpus's **{analysis.confusions[0].split}** split. "
            "This is analysis of a finished model, not model selection: nothing is tuned on it. Cells count gold "
            "entities by the head's prediction at exact span (`partial`: only overlapping predictions, `missed`: "
            "none); the `none` row counts predicted spans with no gold span of the same boundaries.",
            "",
            f"![every head on every test set]({_link(png, relative_to)})",
            "",
        ]
        for c in analysis.confusions:
            out += [
                f"### {c.head} head on {c.corpus} {c.split} ({num(c.sentences)} sentences)",
                "",
                *_confusion_table(c),
                "",
            ]
    return out


def write_report(analysis: Analysis, output: str | Path, figures: str | Path | None = None) -> Path:
    """Write the Markdown report (atomically) and its figures (default: ``figures/`` beside it).

    Figures are named after the report (``overlap.md`` -> ``overlap-strings.png``, ``overlap-model.png``)
    and linked relative to the report's folder.
    """
    target = Path(output)
    folder = Path(figures) if figures is not None else target.parent / "figures"
    text = render(analysis, folder, target.parent, prefix=target.stem)
    with atomic_write(target) as handle:
        handle.write(text)
    return target
