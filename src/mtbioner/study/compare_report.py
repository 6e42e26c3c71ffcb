"""The reports of a comparison (:mod:`mtbioner.study.compare`): a terminal summary, a Markdown page, and one
self-contained HTML page of every disagreement (inline CSS and JS, a Content Security Policy that forbids loading
anything, every piece of text escaped).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import MtbionerError
from ..fileio import atomic_write
from ..runtime.tagging import Entity
from .compare import GOLD, Compared, Comparison, Difference, Key


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def format_summary(c: Comparison) -> str:
    """A few plain-text lines for the terminal: sentences, disagreements, agreement, gold F1."""
    overall, _ = c.unanimity()
    counts = c.counts()
    lines = [
        f"{len(c.sentences)} sentences ({c.source}), {len(c.disagreements)} where the models disagree",
        "entities: " + ", ".join(f"{m} {sum(counts[m].values())}" for m in c.models),
        f"found by all models: {overall.every} of {overall.any} ({_num(overall.percent)}%)",
    ]
    for (a, b), (agreement, _) in c.pairwise().items():
        lines.append(f"agreement F1 {a} vs {b}: {_num(agreement.f1)}")
    for model in c.models if c.has_gold else []:
        report = c.scores.get(model)
        if report is None:
            lines.append(f"gold {model}: not scored, {c.unscored[model]}")
        else:
            o = report.overall
            lines.append(f"gold {model}: P {o.precision:.2f}  R {o.recall:.2f}  F1 {o.f1:.2f}")
    for model, d in c.differences().items():
        lines.append(f"F1 {model} - {_reference(c)}: {_difference(d)}")
    return "\n".join(lines)


def _reference(c: Comparison) -> str:
    return next(m for m in c.models if m in c.scores)


def _difference(d: Difference) -> str:
    low, high = d.difference.low, d.difference.high
    return f"{d.difference.value:+.2f} [{low:+.2f}, {high:+.2f}] {d.verdict}"


def _difference_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["model", f"F1 - {_reference(c)}", "95% interval", "verdict", "sentences"]
    rows = [
        [m, f"{d.difference.value:+.2f}", f"[{d.difference.low:+.2f}, {d.difference.high:+.2f}]", d.verdict,
         str(d.sentences)]
        for m, d in c.differences().items()
    ]  # fmt: skip
    return header, rows


DIFFERENCE_NOTE = (
    "Paired bootstrap over the sentences (1,000 resamples, seed 42, the same resampled sentences for both "
    "models): win / loss when the whole interval is above / below 0, tie when it holds 0."
)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~!])")


def _md(text: str) -> str:
    """Text safe inside Markdown (tables included): specials escaped, whitespace runs one space."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]], escape: bool = True) -> list[str]:
    """A Markdown table; cells are plain text (escaped here) unless ``escape`` is off."""
    cell = _md if escape else str

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _type_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """Entities found per type by gold and each model, found by all models / by any, and their ratio."""
    columns = [*([(GOLD, c.gold_counts())] if c.has_gold else []), *c.counts().items()]
    overall, per_type = c.unanimity()
    header = ["type", *(name for name, _ in columns), "found by all", "found by any", "all agree %"]
    rows = [["all types", *(str(sum(n.values())) for _, n in columns)]]
    rows += [[t, *(str(n[t]) for _, n in columns)] for t in per_type]
    for row, unanimity in zip(rows, [overall, *per_type.values()], strict=True):
        row += [str(unanimity.every), str(unanimity.any), _num(unanimity.percent)]
    return header, rows


def _pair_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["models", "type", "both", "only first", "only second", "agreement F1"]
    rows = []
    for (a, b), (overall, per_type) in c.pairwise().items():
        for name, g in [("all types", overall), *per_type.items()]:
            rows.append([f"{a} vs {b}", name, str(g.both), str(g.only_a), str(g.only_b), _num(g.f1)])
    return header, rows


def _score_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["model", "type", "P", "R", "F1", "gold", "predicted"]
    rows = []
    for model in c.models:
        report = c.scores.get(model)
        if report is None:
            rows.append([model, "–", "–", "–", "–", "–", f"not scored: {c.unscored[model]}"])
            continue
        o = report.overall
        rows.append([model, "all types", _num(o.precision), _num(o.recall), _num(o.f1), str(o.support),
                     str(report.predicted)])  # fmt: skip
        for name, s in report.types.items():
            rows.append(["", name, _num(s.precision), _num(s.recall), _num(s.f1), str(s.support), ""])
    return header, rows


def _md_entities(entities: Sequence[Entity], disputed: frozenset[Key]) -> str:
    parts = []
    for e in entities:
        item = f"{_md(e.text)} ({_md(e.type)})"
        parts.append(f"**{item}**" if (e.start, e.end, e.type) in disputed else item)
    return ", ".join(parts) or "–"


def render_markdown(c: Comparison, max_examples: int = 20) -> str:
    """The summary: agreement per type, pairwise agreement, gold scores, the first disagreements."""
    lines = [
        "# Model comparison",
        "",
        "Models: " + ", ".join(f"{_md(m)} (heads: {_md(', '.join(c.heads.get(m, [])))})" for m in c.models) + ".",
        f"Tagged: {_md(c.source)}; {len(c.sentences)} sentences, {len(c.disagreements)} where the models "
        "disagree. Entities match when span and type are exactly the same.",
        "",
        "## Entities per type",
        "",
        *_md_table(*_type_rows(c)),
        "",
        "## Pairwise agreement",
        "",
        "Agreement F1 = 2·both / (2·both + only first + only second): the F1 of either model scored "
        "against the other.",
        "",
        *_md_table(*_pair_rows(c)),
    ]
    if c.has_gold:
        lines += ["", f"## Scores against gold ({_md(c.source)})", "", *_md_table(*_score_rows(c))]
        if c.differences():
            header, rows = _difference_rows(c)
            header, rows = [_md(h) for h in header], [[_md(row[0]), *row[1:]] for row in rows]  # names escaped
            lines += ["", "### F1 differences", "", DIFFERENCE_NOTE, "", *_md_table(header, rows, escape=False)]
    shown = c.disagreements[:max_examples]
    lines += ["", f"## Disagreements (first {len(shown)} of {len(c.disagreements)})", ""]
    if not c.disagreements:
        lines.append("The models found exactly the same entities in every sentence.")
    for s in shown:
        disputed = s.disputed()
        lines += [f"**{_md(s.label)}**, differs in {_md(', '.join(s.disputed_types()))}", "", f"> {_md(s.text)}", ""]
        rows = [[GOLD, _md_entities(s.gold, frozenset())]] if s.gold is not None else []
        rows += [[_md(m), _md_entities(s.found[m], disputed)] for m in c.models]
        lines += [*_md_table(["", "entities (bold: not found by every model)"], rows, escape=False), ""]
    return "\n".join(lines).rstrip() + "\n"


# Fixed colours for the usual corpora's types, as on the serve page (static/app.js); others cycle.
_KNOWN = {
    "chemical": "#86efac", "chem": "#86efac", "drug": "#86efac", "disease": "#fca5a5", "gene": "#93c5fd",
    "protein": "#c4b5fd", "dna": "#fcd34d", "rna": "#fdba74", "cell_line": "#67e8f9", "cell_type": "#f9a8d4",
    "species": "#bef264",
}  # fmt: skip
_PALETTE = ["#a5b4fc", "#fde68a", "#99f6e4", "#fecdd3", "#d9f99d", "#e9d5ff", "#bae6fd", "#fed7aa"]


def type_colours(types: Sequence[str]) -> dict[str, str]:
    """A distinct background colour per type (a known type keeps its serve-page colour)."""
    colours: dict[str, str] = {}
    spare = 0
    for type_ in types:
        colour = _KNOWN.get(type_.lower())
        if colour is None or colour in colours.values():
            colour = _PALETTE[spare % len(_PALETTE)]
            spare += 1
        colours[type_] = colour
    return colours


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _marked(
    text: str,
    entities: Sequence[Entity],
    index: Mapping[str, int],
    colours: Mapping[str, str],
    disputed: frozenset[Key],
    gold: frozenset[Key] | None,
    model: bool,
) -> str:
    """``text`` with its entities as ``<mark>`` elements, as the serve page draws them.

    The text is cut at every entity boundary; runs covered by the same entities become one mark,
    striped when several types overlap there, labelled with the types of the entities ending there.
    A mark lists its entities as JSON ``[[start, end, type], ...]`` in ``data-entities`` (for
    tests and scripts) and the legend indices of its types in ``data-t`` (for the type filter);
    ``disputed`` entities (not found by every model) get a dashed outline.
    """
    cuts = sorted({0, len(text), *(e.start for e in entities), *(e.end for e in entities)})
    groups: list[tuple[tuple[Entity, ...], int, int]] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        covering = tuple(e for e in entities if e.start <= a and e.end >= b)
        if groups and groups[-1][0] == covering:
            groups[-1] = (covering, groups[-1][1], b)
        else:
            groups.append((covering, a, b))
    out = []
    for covering, a, b in groups:
        if not covering:
            out.append(_esc(text[a:b]))
            continue
        types = list(dict.fromkeys(e.type for e in covering))
        if len(types) == 1:
            style = f"background:{colours[types[0]]}"
        else:
            stops = ", ".join(f"{colours[t]} {i * 8}px, {colours[t]} {(i + 1) * 8}px" for i, t in enumerate(types))
            style = f"background:repeating-linear-gradient(135deg, {stops})"
        keys = [(e.start, e.end, e.type) for e in covering]
        css = "entity disputed" if any(k in disputed for k in keys) else "entity"
        notes = [_note(e, gold, model) for e in covering]
        ending = dict.fromkeys(e.type for e in covering if e.end == b)
        labels = "".join(f'<span class="label">{_esc(t)}</span>' for t in ending)
        out.append(
            f'<mark class="{css}" data-t="{" ".join(str(index[t]) for t in types)}" '
            f'data-entities="{_esc(json.dumps(keys, ensure_ascii=False))}" style="{style}" '
            f'title="{_esc("; ".join(notes))}">{_esc(text[a:b])}{labels}</mark>'
        )
    return "".join(out)


def _note(entity: Entity, gold: frozenset[Key] | None, model: bool) -> str:
    """The tooltip line of one entity: type, text, offsets; a model's also its score and whether gold has it."""
    note = f"{entity.type} “{entity.text}” {entity.start}–{entity.end}"
    if model:
        note += f", score {entity.score:.2f}"
        if gold is not None:
            note += ", in gold" if (entity.start, entity.end, entity.type) in gold else ", not in gold"
    return note


def _html_table(table_id: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table of plain-text cells (escaped here)."""

    def cell(value: str, tag: str) -> str:
        return f"<{tag}>{_esc(value)}</{tag}>"

    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(c: Comparison, max_sentences: int | None = None) -> str:
    """One offline page: the tables of the summary, then each disagreeing sentence, a row per model."""
    types = c.types
    colours = type_colours(types)
    index = {t: i for i, t in enumerate(types)}
    legend = "".join(
        f'<button type="button" class="chip" data-type="{_esc(t)}" data-t="{index[t]}" '
        f'style="--colour:{colours[t]}"><span class="swatch"></span>{_esc(t)}</button>'
        for t in types
    )
    shown = c.disagreements if max_sentences is None else c.disagreements[:max_sentences]
    articles = "".join(_html_sentence(s, c.models, index, colours) for s in shown)
    if not c.disagreements:
        articles = '<p class="none">The models found exactly the same entities in every sentence.</p>'
    scores = ""
    if c.has_gold:
        scores = f"<h2>Scores against gold</h2>{_html_table('scores', *_score_rows(c))}"
        if c.differences():
            scores += (
                f'<h2>F1 differences</h2><p class="note">{_esc(DIFFERENCE_NOTE)}</p>'
                f"{_html_table('differences', *_difference_rows(c))}"
            )
    models = ", ".join(f"<code>{_esc(m)}</code>" for m in c.models)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Model comparison: {_esc(", ".join(c.models))}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>Model comparison</h1><span class="sub">{models} on {_esc(c.source)}</span></header>
<main>
<section class="card" id="summary">
<p>{len(c.sentences)} sentences, <strong>{len(c.disagreements)}</strong> where the models disagree.
Entities match when span and type are exactly the same.</p>
<h2>Entities per type</h2>{_html_table("types", *_type_rows(c))}
<h2>Pairwise agreement</h2>
<p class="note">Agreement F1 = 2·both / (2·both + only first + only second): the F1 of either model scored
against the other.</p>{_html_table("pairs", *_pair_rows(c))}
{scores}
</section>
<section class="card" id="disagreements">
<div class="result-head"><h2>Where the models disagree ({len(shown)} of {len(c.disagreements)} sentences)</h2>
<div id="legend" class="legend">{legend}</div></div>
<p class="note">Dashed outline: an entity not every model found. Hover a highlight for its details;
click a type to hide it.</p>
{articles}
</section>
</main>
<script>{_JS}</script>
</body>
</html>
"""


def _html_sentence(s: Compared, models: Sequence[str], index, colours) -> str:
    disputed = s.disputed()
    gold = None if s.gold is None else s.gold_keys()
    rows = []
    if s.gold is not None:
        marked = _marked(s.text, s.gold, index, colours, frozenset(), None, model=False)
        rows.append(_html_row('data-row="gold" class="row gold"', GOLD, len(s.gold), marked))
    for m in models:
        marked = _marked(s.text, s.found[m], index, colours, disputed, gold, model=True)
        rows.append(_html_row(f'data-model="{_esc(m)}" class="row"', m, len(s.found[m]), marked))
    differs = ", ".join(s.disputed_types())
    return (
        f'<article class="sentence" data-label="{_esc(s.label)}"><h3>{_esc(s.label)}'
        f'<span class="differs">differs in {_esc(differs)}</span></h3>{"".join(rows)}</article>'
    )


def _plural(count: int) -> str:
    return "entity" if count == 1 else "entities"


def _html_row(attributes: str, name: str, count: int, marked: str) -> str:
    return (
        f'<div {attributes}><div class="who">{_esc(name)}<span class="n">{count} {_plural(count)}</span></div>'
        f'<div class="text">{marked}</div></div>'
    )


_CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7fb; --card:#fff;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif;
  color: var(--ink); background: var(--bg); }
* { box-sizing: border-box; }
body { margin: 0; }
header { display:flex; align-items:baseline; gap:1.25rem; padding:0.9rem 2rem; background:#111827; color:#f9fafb; }
header h1 { margin:0; font-size:1.35rem; }
header .sub { color:#d1d5db; font-size:0.9rem; }
header code { background:#374151; color:#f9fafb; }
main { max-width:72rem; margin:1.5rem auto; padding:0 1.25rem; display:grid; gap:1.25rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:1.1rem 1.25rem; }
h2 { font-size:1.05rem; margin:1.2rem 0 0.4rem; }
.note { color:var(--muted); font-size:0.85rem; }
table { border-collapse:collapse; width:100%; font-size:0.88rem; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:0.25rem 0.6rem; border-bottom:1px solid var(--line); }
th { color:var(--muted); font-weight:600; font-size:0.78rem; text-transform:uppercase; }
.result-head { display:flex; align-items:center; gap:1rem; flex-wrap:wrap; }
.legend { display:flex; gap:0.45rem; flex-wrap:wrap; }
.chip { display:inline-flex; align-items:center; gap:0.4rem; font:inherit; font-size:0.85rem;
  padding:0.25rem 0.6rem; border:1px solid var(--line); border-radius:999px; background:#fff; cursor:pointer; }
.chip .swatch { width:0.8rem; height:0.8rem; border-radius:3px; background:var(--colour); }
.chip.off { opacity:0.45; text-decoration:line-through; }
.sentence { border-top:1px solid var(--line); padding:0.7rem 0; }
.sentence h3 { font-size:0.85rem; color:var(--muted); margin:0 0 0.4rem; font-weight:600; }
.differs { margin-left:0.8rem; font-weight:400; }
.row { display:grid; grid-template-columns:12rem 1fr; gap:0.8rem; padding:0.15rem 0; }
.row.gold { background:#f9fafb; }
.who { font-weight:600; font-size:0.85rem; overflow-wrap:anywhere; }
.who .n { display:block; font-weight:400; color:var(--muted); font-size:0.75rem; }
.text { line-height:2.1; white-space:pre-wrap; overflow-wrap:anywhere; }
mark.entity { color:inherit; padding:0.1em 0.25em; border-radius:5px; box-decoration-break:clone;
  -webkit-box-decoration-break:clone; cursor:help; }
mark.entity.disputed { outline:2px dashed #374151; outline-offset:1px; }
mark.entity.muted { background:none !important; outline:none; padding:0; }
mark.entity.muted .label { display:none; }
mark.entity .label { font-size:0.62em; font-weight:700; text-transform:uppercase; margin-left:0.4em;
  padding:0.05em 0.35em; border-radius:3px; background:rgb(255 255 255 / 65%); color:#374151; }
code { font-size:0.9em; background:#eef2ff; padding:0.05em 0.3em; border-radius:3px; }
"""

_JS = """
"use strict";
const hidden = new Set();
for (const chip of document.querySelectorAll("#legend .chip")) {
  chip.addEventListener("click", () => {
    const t = chip.dataset.t;
    if (hidden.has(t)) { hidden.delete(t); } else { hidden.add(t); }
    chip.classList.toggle("off", hidden.has(t));
    for (const mark of document.querySelectorAll("mark.entity")) {
      mark.classList.toggle("muted", mark.dataset.t.split(" ").every((i) => hidden.has(i)));
    }
  });
}
"""


def write_reports(
    c: Comparison, html_path: str | Path | None, md_path: str | Path | None, max_examples: int = 20
) -> None:
    """Write the HTML page (every disagreement) and the Markdown summary (the first ``max_examples``), atomically."""
    if max_examples < 0:
        raise MtbionerError(f"max_examples must be 0 or more, not {max_examples}")
    if html_path is not None:
        with atomic_write(html_path) as handle:
            handle.write(render_html(c))
    if md_path is not None:
        with atomic_write(md_path) as handle:
            handle.write(render_markdown(c, max_examples))
