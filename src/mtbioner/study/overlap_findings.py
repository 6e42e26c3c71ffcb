"""What the overlap numbers mean: the merge policy they support and the findings, as sentences.

Every number in a sentence is computed here from an :class:`~mtbioner.study.overlap.Analysis`, so the
report's prose cannot drift from its tables. :func:`recommend` derives the single-entity-set merge
policy (which corpus types may share a merged type, and where a corpus's ``O`` must not be read
as a negative); :func:`findings` writes the bullets of the report's findings section.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .overlap import (
    MISSED,
    NONE,
    PARTIAL,
    TYPE_GROUPS,
    Analysis,
    Key,
    PairOverlap,
    View,
    merged_type,
    type_ambiguity,
)

# --------------------------------------------------------------------------- numbers the findings use


def members(view: View, group: str, groups: Mapping[str, Sequence[str]] = TYPE_GROUPS) -> list[str]:
    """The view's types that belong to a merged type."""
    return [t for t in view.types if merged_type(t, groups) == group]


def labelled_as(pair: PairOverlap, a_types: Sequence[str], b_types: Sequence[str], weighted: bool = True) -> float:
    """Share of A's strings' occurrences that B labels with one of ``b_types`` (same span or inside one)."""
    shares = pair.shares(a_types, weighted)
    return sum(shares.get(t, 0.0) + shares.get(f"in {t}", 0.0) for t in b_types)


def exact_as(pair: PairOverlap, a_types: Sequence[str], b_types: Sequence[str], weighted: bool = True) -> float:
    shares = pair.shares(a_types, weighted)
    return sum(shares.get(t, 0.0) for t in b_types)


def inside_as(pair: PairOverlap, a_types: Sequence[str], b_types: Sequence[str], weighted: bool = True) -> float:
    shares = pair.shares(a_types, weighted)
    return sum(shares.get(f"in {t}", 0.0) for t in b_types)


def boundary(pair: PairOverlap, a_types: Sequence[str], b_types: Sequence[str], weighted: bool = True) -> float:
    """Share of occurrences a ``b_types`` entity overlaps without holding: shorter or crossing."""
    shares = pair.shares(a_types, weighted)
    return sum(shares.get(f"~{t}", 0.0) for t in b_types)


def unlabelled(pair: PairOverlap, a_types: Sequence[str] | None = None, weighted: bool = True) -> float:
    return pair.shares(a_types, weighted).get(NONE, 0.0)


def share(part: float, whole: float) -> float | None:
    """``part / whole``, or ``None`` for an empty whole."""
    return part / whole if whole else None


def pct(value: float | None, digits: int = 1) -> str:
    """A share as a percentage for the report, ``–`` where there is nothing to share."""
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def num(value: int) -> str:
    """A count with thousands separators."""
    return f"{value:,}"


def _names(types: Sequence[str]) -> str:
    return "/".join(types)


@dataclass
class GroupPair:
    """How corpus B labels corpus A's strings of one merged type (the evidence for merging)."""

    group: str
    source: str
    target: str
    a_types: list[str]
    b_types: list[str]
    strings: int
    found: int
    labelled: float  # same group, exact or inside (string-weighted)
    exact: float
    inside: float
    boundary: float
    none: float
    other_group: float  # labelled with a B type of another merged type
    baseline_none: float | None  # B's own strings of the group, unlabelled in B's held-out text
    contrast: float | None  # A's types outside the group, labelled with b_types
    contrast_types: list[str]


def group_pairs(analysis: Analysis) -> list[GroupPair]:
    """Every ordered pair of corpora that both annotate some merged type, with the merge evidence."""
    out: list[GroupPair] = []
    for group in analysis.groups:
        annotating = [v for v in analysis.views if members(v, group, analysis.groups)]
        for a in annotating:
            for b in annotating:
                if a.name == b.name:
                    continue
                pair = analysis.pair(a.name, b.name)
                base = analysis.pair(b.name, b.name)
                assert pair is not None
                a_types, b_types = members(a, group, analysis.groups), members(b, group, analysis.groups)
                others_b = [t for t in b.types if t not in b_types]
                others_a = [t for t in a.types if t not in a_types and pair.count("found", [t])]
                out.append(
                    GroupPair(
                        group,
                        a.name,
                        b.name,
                        a_types,
                        b_types,
                        pair.count("strings", a_types),
                        pair.count("found", a_types),
                        labelled_as(pair, a_types, b_types),
                        exact_as(pair, a_types, b_types),
                        inside_as(pair, a_types, b_types),
                        boundary(pair, a_types, b_types),
                        unlabelled(pair, a_types),
                        labelled_as(pair, a_types, others_b),
                        unlabelled(base, b_types) if base and base.count("found", b_types) else None,
                        labelled_as(pair, others_a, b_types) if others_a else None,
                        others_a,
                    )
                )
    return out


Rule = tuple[str, str]  # (the rule, why the numbers support it)


@dataclass
class Policy:
    """The merge policy the numbers support, each rule with the sentence that justifies it.

    ``type_map``: merged type -> the ``CORPUS TYPE`` pairs it takes in; ``merged``: the merged types
    the string evidence supports; ``rules``: (rule, evidence) pairs in the order the report lists them.
    """

    type_map: dict[str, list[str]]
    merged: list[str]
    rules: list[Rule]


def _string_shares(pair: PairOverlap, key: Key, columns: Sequence[str]) -> float:
    counts = pair.seen[key]
    return sum(counts[c] for c in columns) / sum(counts.values())


def cross_group(pair: PairOverlap, groups: Mapping[str, Sequence[str]] = TYPE_GROUPS) -> dict[str, float]:
    """String-weighted sums over A's found strings: B labels them with another merged type (same span:
    ``exact``; holding them: ``inside``), and, for strings whose merged type B does not annotate at
    all, how many there are (``absent``) and their unlabelled shares (``absent_none``)."""
    out = {"strings": 0.0, "exact": 0.0, "inside": 0.0, "absent": 0.0, "absent_none": 0.0}
    b_groups = {merged_type(t, groups) for t in pair.target_types}
    for key in pair.keys(found=True):
        a_groups = {merged_type(t, groups) for t in pair.strings[key]}
        other = [t for t in pair.target_types if merged_type(t, groups) not in a_groups]
        out["strings"] += 1
        out["exact"] += _string_shares(pair, key, other)
        out["inside"] += _string_shares(pair, key, [f"in {t}" for t in other])
        if not a_groups & b_groups:
            out["absent"] += 1
            out["absent_none"] += _string_shares(pair, key, [NONE])
    return out


def recommend(analysis: Analysis) -> Policy:
    """Choose the merge rules from the measured numbers (each evidence line states its bar)."""
    evidence = [e for e in group_pairs(analysis) if e.found]
    type_map: dict[str, list[str]] = {}
    for view in analysis.views:
        for t in view.types:
            type_map.setdefault(merged_type(t, analysis.groups), []).append(f"{view.name} {t}")
    merged, rules = _merge_rules(evidence, type_map)
    rules += _own_type_rules(analysis, type_map)
    rules += _span_rules(analysis, [e for e in evidence if e.group in merged])
    sums: Counter[str] = Counter()
    for pair in analysis.cased:
        if pair.source != pair.target:
            sums.update(cross_group(pair, analysis.groups))
    rules += _cross_type_rules(sums) + _silver_rules(evidence, sums)
    return Policy(type_map, merged, rules)


def _merge_rules(evidence: list[GroupPair], type_map: dict[str, list[str]]) -> tuple[list[str], list[Rule]]:
    """Which merges the strings support: labelled with the candidate type often, and more than other types."""
    rules: list[Rule] = []
    verdicts: dict[str, list[tuple[bool, str]]] = defaultdict(list)
    for e in evidence:
        line = f"{e.target} labels {e.source}'s {_names(e.a_types)} strings {_names(e.b_types)} at {pct(e.labelled)}"
        if e.contrast is not None:
            line += f" and {e.source}'s {_names(e.contrast_types)} strings at {pct(e.contrast)}"
        ok = e.labelled >= 0.3 and (e.contrast is None or e.labelled >= 2 * e.contrast)
        verdicts[e.group].append((ok, line))
    merged = [g for g, rows in verdicts.items() if all(ok for ok, _ in rows)]
    refused = [g for g in verdicts if g not in merged]
    single = [g for g, members_ in type_map.items() if len(members_) == 1]
    if verdicts:
        lines = [line for g in verdicts for _, line in verdicts[g]]
        rule = (
            "Type map: "
            + "; ".join(f"{g} ← {', '.join(type_map[g])}" for g in type_map if g in merged or len(type_map[g]) > 1)
            + (f"; {', '.join(single)} stay as they are" if single else "")
            + ". Every merged entity keeps its original (corpus, type) pairs."
        )
        why = (
            "A merge is supported when the other corpus labels a corpus's strings with the candidate type (same span "
            "or inside a longer entity, string-weighted) at 30% or more, and at least twice as often as the source's "
            "strings of other types: " + "; ".join(lines) + "."
        )
        if refused:
            why += " Not supported by the strings, so decide on other grounds: " + ", ".join(refused) + "."
        rules.append((rule, why))
    return merged, rules


def _own_type_rules(analysis: Analysis, type_map: dict[str, list[str]]) -> list[Rule]:
    """A corpus that splits a merged type (JNLPBA's protein / DNA / RNA) keeps its own type on it."""
    rules: list[Rule] = []
    for view in analysis.views:
        for g, members_ in type_map.items():
            mine = [m.split(" ", 1)[1] for m in members_ if m.split(" ", 1)[0] == view.name]
            if len(mine) > 1:
                several, total = type_ambiguity(view, mine, min_chars=analysis.min_chars)
                rules.append(
                    (
                        f"Keep {view.name}'s own type ({_names(mine)}) on every merged {g} entity it labels.",
                        f"{view.name} separates them consistently by string: only {num(several)} of its {num(total)} "
                        f"distinct {_names(mine)} strings ({pct(share(several, total))}) carry two of these types, "
                        "so merging drops a distinction the corpus makes; kept as an attribute, nothing is lost.",
                    )
                )
    return rules


def _span_rules(analysis: Analysis, same: list[GroupPair]) -> list[Rule]:
    """Same span, and nested or crossing spans, of one merged type."""
    rules: list[Rule] = []
    if not same:
        return rules
    exact = sum(e.exact for e in same) / len(same)
    inside = sum(e.inside for e in same) / len(same)
    crossing = sum(e.boundary for e in same) / len(same)
    pairs = f"averaged over the {len(same)} ordered corpus pairs of merged types"
    rules.append(
        (
            "Same span, same merged type (BC2GM GENE and JNLPBA DNA on `BRCA1`): one entity of the merged type, "
            "listing every (corpus, type) that found it, with the highest score.",
            f"Same-span agreement is the commonest labelled outcome: {pct(exact)} of occurrences get the same "
            f"span, {pct(inside)} lie inside a longer entity of the merged type and {pct(crossing)} overlap "
            f"one otherwise ({pairs}).",
        )
    )
    own = [
        inside_as(base, e.b_types, e.b_types)
        for e in same
        if (base := analysis.pair(e.target, e.target)) is not None and base.count("found", e.b_types)
    ]
    within = (
        f" Within one corpus the same happens ({pct(sum(own) / len(own))} of held-out occurrences of a "
        "corpus's own strings lie inside a longer entity of the same corpus): nesting is how names are "
        "written, not a clash of conventions, and a flat corpus keeps the longer mention."
        if own
        else ""
    )
    ratio = inside / crossing if crossing else float("inf")
    if inside >= 3 * crossing:
        rules.append(
            (
                "Overlapping spans of one merged type: nested (one holds the other): keep the longer span, "
                "recording the shorter with its corpus; crossing: keep the higher score.",
                f"Partial overlaps are mostly nesting: {pct(inside)} of occurrences lie inside a longer entity "
                f"against {pct(crossing)} shorter or crossing, {ratio:.1f} to 1 (the bar for 'keep the longer' "
                f"is 3 to 1).{within} The longer span holds every annotated word of both (`IL-2` / `IL-2 "
                "gene`); crossing spans have no such containment, so the model's confidence decides.",
            )
        )
    else:
        rules.append(
            (
                "Overlapping spans of one merged type: keep the higher score.",
                f"Partial overlaps are not mostly nesting ({pct(inside)} inside a longer entity against "
                f"{pct(crossing)} shorter or crossing, under the 3 to 1 bar), so neither convention is "
                "preferred.",
            )
        )
    return rules


def _cross_type_rules(sums: Counter[str]) -> list[Rule]:
    """Different merged types on one span, or one inside the other."""
    if not sums["strings"]:
        return []
    return [
        (
            "Different merged types on the same span (an abbreviation that is a gene in one corpus and a disease "
            "in another): keep the higher score. Nested entities of different merged types (a gene name inside "
            "a cell-type mention): keep both.",
            f"Of cross-corpus occurrences, {pct(sums['exact'] / sums['strings'])} get the same span with another "
            f"merged type and {pct(sums['inside'] / sums['strings'])} lie inside an entity of another merged "
            f"type (string-weighted, {num(int(sums['strings']))} string-corpus pairs). Same-span cases are real "
            "ambiguities that context decides; nested ones are two different things, both correct (`CD4` in "
            "`CD4+ T cells`).",
        ),
    ]


def _silver_rules(evidence: list[GroupPair], sums: Counter[str]) -> list[Rule]:
    """Where a corpus's O must not be read as a negative: types it does not annotate."""
    lines = []
    if sums["absent"]:
        lines.append(
            f"strings whose merged type the other corpus does not annotate are unlabelled there at "
            f"{pct(sums['absent_none'] / sums['absent'])} (string-weighted, {num(int(sums['absent']))} string-corpus "
            "pairs): that O is the other scheme, not a judgement"
        )
    for e in evidence:
        if e.baseline_none is not None:
            gap = 100 * (e.none - e.baseline_none)
            lines.append(
                f"{e.target} leaves {e.source}'s {_names(e.a_types)} strings unlabelled at {pct(e.none)} against "
                f"{pct(e.baseline_none)} for its own held-out strings ({gap:+.1f} points)"
            )
    if not lines:
        return []
    return [
        (
            "Silver conflicts: a corpus's O is evidence against its own types only. Training on the merged set, "
            "mask the loss of the merged types a corpus does not annotate; within a type it does annotate its O "
            "stands (its annotators' decision), and the disagreement is reported rather than overwritten.",
            "; ".join(lines) + ".",
        )
    ]


# --------------------------------------------------------------------------- findings


def examples(pair: PairOverlap, types: Sequence[str], n: int = 5) -> str:
    """The strings B most often leaves unlabelled, with how often, for a findings sentence."""
    return ", ".join(f"`{text}` ({none} of {total})" for text, none, total in pair.conflicts(types, n))


def findings(analysis: Analysis) -> list[str]:
    """The findings, as Markdown bullets; every number in them is computed here."""
    out: list[str] = []
    views = analysis.views
    mentions = {v.name: sum(v.entities.values()) for v in views}
    total_mentions, total_tokens = sum(mentions.values()), sum(v.tokens for v in views)
    biggest = max(views, key=lambda v: mentions[v.name])
    out.append(
        f"**Size.** {biggest.name} is the largest corpus here: {num(mentions[biggest.name])} of the "
        f"{num(total_mentions)} entity mentions ({pct(share(mentions[biggest.name], total_mentions))}) and "
        f"{num(biggest.tokens)} of the {num(total_tokens)} tokens ({pct(share(biggest.tokens, total_tokens))}) of "
        f"the {'+'.join(views[0].splits)} splits: when batches are drawn in proportion to corpus size (the paper's "
        "mixed training) it supplies the largest share of the shared encoder's updates."
    )
    for e in group_pairs(analysis):
        if not e.found:
            out.append(f"**{e.group}, {e.source} → {e.target}.** None of {e.source}'s strings occur in {e.target}.")
            continue
        base = (
            ""
            if e.baseline_none is None
            else f", against {pct(e.baseline_none)} for {e.target}'s own held-out strings"
        )
        out.append(
            f"**{e.group}, {e.source} → {e.target}.** {num(e.found)} of {e.source}'s {num(e.strings)} distinct "
            f"{_names(e.a_types)} strings ({pct(share(e.found, e.strings))}) occur in {e.target}'s text. "
            f"{e.target} labels them {_names(e.b_types)} with the same span at {pct(e.exact)}, inside a longer "
            f"{_names(e.b_types)} entity at {pct(e.inside)}, overlapping otherwise at {pct(e.boundary)}, with "
            f"another type at {pct(e.other_group)}, and leaves them unlabelled (silver conflict) at {pct(e.none)}"
            f"{base} (string-weighted shares of occurrences)."
        )
    out += _finer_split(analysis)
    out += _model_findings(analysis)
    return out


def _finer_split(analysis: Analysis) -> list[str]:
    """Where one corpus splits a merged type another keeps whole (JNLPBA protein/DNA/RNA against BC2GM GENE)."""
    out: list[str] = []
    groups = analysis.groups
    for group in groups:
        annotating = [v for v in analysis.views if members(v, group, groups)]
        for fine in annotating:
            for coarse in annotating:
                f_types, c_types = members(fine, group, groups), members(coarse, group, groups)
                if fine.name == coarse.name or len(f_types) <= len(c_types):
                    continue
                into = analysis.pair(coarse.name, fine.name)  # coarse strings in the fine corpus's text
                back = analysis.pair(fine.name, coarse.name)  # fine strings in the coarse corpus's text
                base_f, base_c = analysis.pair(fine.name, fine.name), analysis.pair(coarse.name, coarse.name)
                assert into and back and base_f and base_c
                if not into.count("found", c_types) or not back.count("found", f_types):
                    continue
                exact = {t: exact_as(into, c_types, [t]) for t in f_types}
                total = sum(exact.values())
                if total:
                    split = ", ".join(
                        f"{t} {pct(share(v, total))}" for t, v in sorted(exact.items(), key=lambda x: -x[1])
                    )
                    out.append(
                        f"**{fine.name} splits what {coarse.name} calls {_names(c_types)}.** Where {fine.name} labels "
                        f"a {coarse.name} {_names(c_types)} string with the same span, the type is {split}: what is "
                        f"one type for the {coarse.name} head is {len(f_types)} types for the {fine.name} head."
                    )
                none_back, none_into = unlabelled(back, f_types), unlabelled(into, c_types)
                own_c = unlabelled(base_c, c_types) if base_c.count("found", c_types) else None
                own_f = unlabelled(base_f, f_types) if base_f.count("found", f_types) else None
                excess_back = none_back - (own_c or 0.0)
                excess_into = none_into - (own_f or 0.0)
                wider = excess_back >= 0.05 and excess_back > excess_into
                heading = (
                    f"{fine.name} annotates more than {coarse.name}"
                    if wider
                    else f"{coarse.name} labels {fine.name}'s strings about as often as {fine.name} labels its"
                )
                out.append(
                    f"**{heading}.** {coarse.name} leaves {fine.name}'s {_names(f_types)} strings unlabelled at "
                    f"{pct(none_back)} of occurrences ({pct(unlabelled(back, f_types, weighted=False))} counting "
                    f"every occurrence), against {pct(own_c)} for its own held-out strings; {fine.name} leaves "
                    f"{coarse.name}'s strings unlabelled at {pct(none_into)} (its own baseline {pct(own_f)}). "
                    f"{coarse.name} never labels {num(back.count('never', f_types))} of the "
                    f"{num(back.count('found', f_types))} {fine.name} strings it contains; the most frequent "
                    f"unlabelled ones: {examples(back, f_types)}."
                )
                others = [t for t in fine.types if t not in f_types]
                if others:
                    nested = inside_as(into, c_types, others) + exact_as(into, c_types, others)
                    out.append(
                        f"**{fine.name} also puts {coarse.name}'s {_names(c_types)} strings inside other types.** "
                        f"{pct(nested)} of their occurrences in {fine.name} are labelled, or lie inside, "
                        f"{_names(others)} (e.g. a gene name inside a cell-type mention), where the {coarse.name} "
                        f"head is taught {_names(c_types)} for the same words."
                    )
                if wider:
                    paper = (
                        ", which is consistent with the drop the MT-BioNER paper saw on the other corpora when "
                        "JNLPBA was added"
                        if fine.name == "JNLPBA"
                        else ""
                    )
                    out.append(
                        f"**What this says about the {fine.name} effect.** {fine.name} brings, for {group}, a finer "
                        f"type split and a wider scope than {coarse.name}: strings {coarse.name} leaves O "
                        f"({pct(none_back)}, {100 * excess_back:.1f} points above its own baseline) are entities "
                        f"for {fine.name}. With one head per corpus these labels do not contradict each other "
                        "directly, but the shared encoder has to carry each corpus's conventions besides the meaning "
                        f"of the words{paper}. Strings cannot show causation; the model part (`--model`) shows how "
                        "each head tags the other corpora's test entities."
                    )
    return out


def _model_findings(analysis: Analysis) -> list[str]:
    if not analysis.confusions:
        return []
    out: list[str] = []
    groups = analysis.groups
    for c in analysis.confusions:
        if c.corpus == c.head:
            continue
        for group in groups:
            gold_types = [t for t in c.gold_types if merged_type(t, groups) == group]
            head_types = [t for t in c.head_types if merged_type(t, groups) == group]
            gold = c.gold(gold_types)
            if not gold_types or not head_types or not gold:
                continue
            rows = Counter()
            for t in gold_types:
                rows.update(c.row(t))
            same = sum(rows[t] for t in head_types)
            by_type = ", ".join(f"{t} {pct(share(rows[t], gold))}" for t in head_types if rows[t])
            out.append(
                f"**Model: {c.head} head on {c.corpus} {c.split}.** Of {num(gold)} gold {_names(gold_types)} "
                f"entities it tags {pct(share(same, gold))} with the same span as {group} ({by_type or 'none'}), "
                f"{pct(share(rows[PARTIAL], gold))} partly and misses {pct(share(rows[MISSED], gold))}; it also "
                f"predicts {num(sum(c.row(NONE).values()))} spans {c.corpus} has no entity for."
            )
    return out
