"""The soak's report (``benchmarks/soak.py``): per-minute figures, the verdict of issue 43, the plot, the table.

Kept apart from the load generator so that each reads on its own: this module only reads what a
:class:`soak.Soak` recorded (its outcomes, samples and kills) and never talks to the server.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from _machine import describe

if TYPE_CHECKING:
    from soak import Soak

EXPECTED = {  # a full queue refuses any request, an utterance too: 503 with Retry-After
    "utterance": {200, 503},
    "paragraph": {200, 503},
    "malformed": {422},
    "over-limit": {413},
    "large": {200, 503},
    "burst": {200, 503},
    "kill-victim": {200, 503},
}


def ms_stats(latencies: list[float]) -> dict:
    if not latencies:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = 1000 * np.asarray(latencies)
    p50, p99 = np.percentile(ms, [50, 99])
    return {
        "n": len(ms),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "max_ms": round(float(ms.max()), 1),
    }


def per_minute(soak: Soak, labels: dict[int, str]) -> list[dict]:
    rows = []
    for minute in range(math.ceil(soak.duration / 60)):
        mine = [o for o in soak.outcomes if minute * 60 <= o[1] < minute * 60 + 60]
        statuses = Counter(str(o[3]) if o[3] else "no answer" for o in mine)
        kinds = {k: ms_stats([o[2] for o in mine if o[0] == k and o[3] == 200]) for k in EXPECTED}
        workers: dict[str, dict] = {}
        for s in soak.samples:
            if s["role"] == "worker" and minute * 60 <= s["t"] < minute * 60 + 60:
                workers.setdefault(labels[s["pid"]], {"rss": [], "fds": [], "threads": []})
                for key, value in (("rss", s["rss_mb"]), ("fds", s["fds"]), ("threads", s["threads"])):
                    workers[labels[s["pid"]]][key].append(value)
        health = Counter(h["status"] for h in soak.health if minute * 60 <= h["t"] < minute * 60 + 60)
        events = [what for at, what in soak.schedule if minute * 60 <= at < minute * 60 + 60]
        rows.append(
            {
                "minute": minute + 1,
                "kinds": kinds,
                "statuses": dict(sorted(statuses.items())),
                "retried": sum(1 for o in mine if o[5]),
                "workers": {
                    w: {
                        "rss_mb": round(float(np.median(v["rss"])), 1),
                        "rss_floor_mb": round(float(min(v["rss"])), 1),
                        "fds": max(v["fds"]),
                        "threads": max(v["threads"]),
                    }
                    for w, v in sorted(workers.items())
                },
                "health": {str(k): v for k, v in sorted(health.items())},
                "events": events,
            }
        )
    return rows


def kill_windows(kills: list[dict]) -> list[tuple[float, float]]:
    """From sending the doomed request to 2 s after the new worker answered (60 s if it never did)."""
    return [(k["at_s"], k["killed_at_s"] + (k.get("whole_after_s") or 60) + 2) for k in kills if k["killed_at_s"]]


def inside(outcome: tuple, windows: list[tuple[float, float]]) -> bool:
    """Whether the request was in flight at some time inside one of ``windows``."""
    return any(outcome[1] <= end and outcome[1] + outcome[2] >= start for start, end in windows)


def floors(minutes: list[dict], label: str, reference: int, last: list[int]) -> dict:
    """Context beside the verdict: the minute's smallest sample, what a worker keeps between its busy moments (the
    median also counts the memory a burst or large request holds while it is being worked on)."""
    at = next(m["workers"][label]["rss_floor_mb"] for m in minutes if m["minute"] == reference)
    late = [m["workers"][label]["rss_floor_mb"] for m in minutes if m["minute"] in last]
    worst = max(abs(v / at - 1) for v in late)
    return {
        "reference_mb": at,
        "last_min_mb": min(late),
        "last_max_mb": max(late),
        "worst_change_pct": round(100 * worst, 2),
    }


def verdict(soak: Soak, minutes: list[dict], labels: dict[int, str]) -> dict:
    """Issue 43's "done when", each measured: met or not, with the figures."""
    total = len(minutes)
    if total >= 20:
        reference, last = 10, list(range(total - 9, total + 1))
    else:
        reference, last = max(1, total // 3), list(range(total - max(1, total // 3) + 1, total + 1))
    memory, replaced = {}, []  # replaced: alive in the reference minute, gone before the end
    for label in sorted(set(labels.values())):
        at = [m["workers"][label]["rss_mb"] for m in minutes if m["minute"] == reference and label in m["workers"]]
        late = [m["workers"].get(label, {}).get("rss_mb") for m in minutes if m["minute"] in last]
        if at and late and None not in late:
            worst = max(abs(v / at[0] - 1) for v in late)
            memory[label] = {"reference_mb": at[0], "last_min_mb": min(late), "last_max_mb": max(late)}
            memory[label]["worst_change_pct"] = round(100 * worst, 2)
            memory[label]["floors"] = floors(minutes, label, reference, last)
        elif at:
            replaced.append(label)
    windows = kill_windows(soak.kills)
    outside = [o[2] for o in soak.outcomes if o[0] == "utterance" and o[3] == 200 and not inside(o, windows)]
    for k in soak.kills:  # what the other clients saw: retried requests, and the first answer after the kill
        if k["killed_at_s"] is not None:
            start, end = next(w for w in windows if w[0] == k["at_s"])
            others = [o for o in soak.outcomes if o[5] and o[0] != "kill-victim"]
            k["other_requests_retried"] = sum(1 for o in others if inside(o, [(start, end)]))
            done = [o[1] + o[2] for o in soak.outcomes if o[3] == 200 and o[1] >= k["killed_at_s"]]
            k["first_answer_after_s"] = round(min(done) - k["killed_at_s"], 3) if done else None
    unanswered = [o for o in soak.outcomes if not o[3]]
    bad_5xx = [o for o in soak.outcomes if o[3] >= 500 and not (o[3] == 503 and o[6])]
    unexpected = [o for o in soak.outcomes if o[3] and (o[3] not in EXPECTED[o[0]] or not o[7])]
    utterances = ms_stats(outside)
    answered = [
        k.get("retry_status") == 200 or (k.get("retry_status") == 503 and k.get("retry_after")) for k in soak.kills
    ]
    kills_ok = [
        k.get("mid_request") and ok and k.get("whole_after_s") for k, ok in zip(soak.kills, answered, strict=True)
    ]
    return {
        "memory_windows": {"reference_minute": reference, "last_minutes": last},
        "memory": memory,
        "memory_not_comparable": replaced,
        "utterances_outside_kill_windows": utterances,
        "requests": soak.issued,
        "outcomes_recorded": len(soak.outcomes),
        "unanswered": len(unanswered),
        "hangs": sum(1 for o in unanswered if o[4] and o[4].startswith(("no answer in", "still unanswered"))),
        "unanswered_examples": [o[:6] for o in unanswered[:20]],
        "5xx_other_than_503_with_retry_after": len(bad_5xx),
        "503_with_retry_after": sum(1 for o in soak.outcomes if o[3] == 503 and o[6]),
        "503_by_kind": dict(Counter(o[0] for o in soak.outcomes if o[3] == 503)),
        "unexpected_answers": len(unexpected),
        "unexpected_examples": [o[:7] for o in unexpected[:20]],
        "retried_after_a_broken_connection": sum(1 for o in soak.outcomes if o[5]),
        "retried_outside_kill_windows": sum(1 for o in soak.outcomes if o[5] and not inside(o, windows)),
        "retried_outside_examples": [o[:6] for o in soak.outcomes if o[5] and not inside(o, windows)][:20],
        "criteria": {
            "memory of each worker within 5 % of its reference minute": bool(memory)
            and not replaced
            and all(m["worst_change_pct"] <= 5 for m in memory.values()),
            "no request unanswered, each counted once": not unanswered and len(soak.outcomes) == soak.issued,
            "utterance p99 < 50 ms outside the kill windows": utterances["p99_ms"] is not None
            and utterances["p99_ms"] < 50,
            "no 5xx but 503 with Retry-After": not bad_5xx,
            f"{soak.args.kills} workers killed mid-request, each retry answered (200, or 503 with Retry-After), "
            "the service whole again": len(kills_ok) == soak.args.kills and all(kills_ok),
        },
    }


# --------------------------------------------------------------------------- the report


def plot(soak: Soak, labels: dict[int, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(10.0, soak.duration / 120)
    edges = np.arange(0, soak.duration + width, width)
    columns = list(zip(*soak.outcomes, strict=True))
    kind, retried = np.array(columns[0]), np.array([bool(r) for r in columns[5]])
    sent, latency, status = np.array(columns[1]), np.array(columns[2]), np.array(columns[3], dtype=int)
    where = np.digitize(sent, edges) - 1
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 9), sharex=True, height_ratios=[3, 3, 2])
    for name, q, style in (("utterance", 50, "-"), ("utterance", 99, "-"), ("paragraph", 99, ":")):
        chosen = (kind == name) & (status == 200)
        xs = [(edges[b] + width / 2) / 60 for b in range(len(edges) - 1) if np.any(chosen & (where == b))]
        ys = [
            1000 * np.percentile(latency[chosen & (where == b)], q)
            for b in range(len(edges) - 1)
            if np.any(chosen & (where == b))
        ]
        top.plot(xs, ys, style, label=f"{name} p{q}")
    top.axhline(50, color="grey", lw=0.8, ls="--", label="50 ms")
    title = f"mtbioner serve --workers {soak.args.workers}: soak"
    top.set(yscale="log", ylabel=f"latency of 200 answers, ms ({width:g} s bins)", title=title)
    for label in sorted(set(labels.values()), key=lambda w: int(w[1:])):
        rows = [s for s in soak.samples if s["role"] == "worker" and labels[s["pid"]] == label]
        middle.plot([s["t"] / 60 for s in rows], [s["rss_mb"] for s in rows], label=f"{label} (pid {rows[0]['pid']})")
    middle.set(ylabel="resident memory, MB")
    counts = {
        "503 (full)": status == 503,
        "413/422 (as expected)": (status == 413) | (status == 422),
        "retried": retried,
        "no answer": status == 0,
    }
    for name, chosen in counts.items():
        ys = np.bincount(where[chosen], minlength=len(edges) - 1)[: len(edges) - 1]
        bottom.step(edges[:-1] / 60, ys, where="post", label=name)
    bottom.set(xlabel="minutes", ylabel="requests per bin, by sending time")
    for axis in (top, middle, bottom):
        for start, end in kill_windows(soak.kills):
            axis.axvspan(start / 60, end / 60, color="red", alpha=0.2)
        for at, what in soak.schedule:
            if what != "kill":
                axis.axvline(at / 60, color="green" if what == "burst" else "orange", lw=0.6, alpha=0.6)
        axis.legend(loc="upper right", fontsize=7, ncols=2)
        axis.grid(alpha=0.3)
    bottom.text(0, -0.45, "red: kill windows; orange: large requests; green: bursts", transform=bottom.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cell(stats: dict) -> str:
    return "–" if not stats["n"] else f"{stats['p50_ms']} / {stats['p99_ms']}"


def to_markdown(report: dict) -> str:
    facts, judged, sizes = report["machine"], report["verdict"], report["inputs"]
    lines = [
        "# Soak: `mtbioner serve` under mixed load, workers killed mid-request",
        "",
        "Method: the docstring of `benchmarks/soak.py`. Server and client are two processes on one machine.",
        "",
        f"- machine: {describe(facts)}; Python {facts['python']}, uvicorn {facts['uvicorn']}",
        f"- load average before / after: {facts['load_average_before']} / {facts['load_average_after']}",
        f"- model: {report['model']}; server: `{report['server_command']}`",
        f"- {report['minutes']} minutes; per second: {report['rates']}; period {report['period_s']} s; "
        f"bursts of {report['burst_requests']} requests; queue limit {sizes['queue_limit']:,} sentences a worker",
        "- request sizes: "
        + "; ".join(
            f"{k} {v['bytes']:,} B, {v['texts']} texts, {v['sentences']} sentences"
            for k, v in sizes.items()
            if isinstance(v, dict)
        )
        + f" (paragraphs from {sizes['source']})",
        "",
        "| done when | met |",
        "|---|---|",
    ]
    lines += [f"| {name} | **{'met' if met else 'not met'}** |" for name, met in judged["criteria"].items()]
    u = judged["utterances_outside_kill_windows"]
    windows = judged["memory_windows"]
    lines += [
        "",
        f"Requests: {judged['requests']:,}, outcomes recorded {judged['outcomes_recorded']:,}, unanswered "
        f"{judged['unanswered']} (of which client timeouts: {judged['hangs']}), "
        f"retried after a broken connection {judged['retried_after_a_broken_connection']} "
        f"({judged['retried_outside_kill_windows']} outside the kill windows), "
        f"503 with Retry-After {judged['503_with_retry_after']} "
        f"({', '.join(f'{kind} {n}' for kind, n in sorted(judged['503_by_kind'].items())) or 'none'}), "
        f"other 5xx {judged['5xx_other_than_503_with_retry_after']}, "
        f"answers other than expected {judged['unexpected_answers']}. Utterances outside the kill windows: "
        f"{u['n']:,}, p50 {u['p50_ms']} ms, p99 {u['p99_ms']} ms, max {u['max_ms']} ms.",
        "",
        f"Memory (median of the minute's samples, MB): minute {windows['reference_minute']} against minutes "
        f"{windows['last_minutes'][0]}–{windows['last_minutes'][-1]}: "
        + (
            "; ".join(
                f"{w} {m['reference_mb']} -> {m['last_min_mb']}–{m['last_max_mb']} ({m['worst_change_pct']} %)"
                for w, m in judged["memory"].items()
            )
            or "no worker lived through both"
        )
        + (
            f"; replaced after the reference minute: {', '.join(judged['memory_not_comparable'])}"
            if judged["memory_not_comparable"]
            else ""
        )
        + (
            ". Context, not the verdict: the minute's smallest sample, "
            + "; ".join(
                f"{w} {f['reference_mb']} -> {f['last_min_mb']}–{f['last_max_mb']} ({f['worst_change_pct']} %)"
                for w, m in judged["memory"].items()
                for f in [m["floors"]]
            )
            if judged["memory"]
            else ""
        ),
        "",
        "| kill at s | worker | mid-request | the client saw | after ms | its retry | others retried "
        "| first answer after s | new worker after s | whole again after s |",
        "|---:|---:|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for k in report["kills"]:
        lines.append(
            f"| {k['at_s']} | {k.get('worker')} | {k.get('mid_request')} | {k.get('client_saw', k.get('error'))} "
            f"| {k.get('client_saw_after_ms')} "
            f"| {k.get('retry_status', '–')} in {k.get('retry_answered_after_s', '–')} s "
            f"| {k.get('other_requests_retried')} | {k.get('first_answer_after_s')} "
            f"| {k.get('new_worker_started_after_s')} | {k.get('whole_after_s')} |"
        )
    lines += [
        "",
        "Per minute, by when a request was sent (latency: p50 / p99 ms of the 200 answers; workers: RSS MB / open "
        "file descriptors / threads, the most in the minute for the last two):",
        "",
        "| min | utterances | utterance ms | paragraph ms | large ms | burst ms | statuses | retried | /health "
        "| workers | events |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---|---|---|",
    ]
    for m in report["per_minute"]:
        k = m["kinds"]
        workers = ", ".join(f"{w} {v['rss_mb']:.0f}/{v['fds']}/{v['threads']}" for w, v in m["workers"].items())
        lines.append(
            f"| {m['minute']} | {k['utterance']['n']} | {cell(k['utterance'])} | {cell(k['paragraph'])} "
            f"| {cell(k['large'])} | {cell(k['burst'])} | {' '.join(f'{s}:{n}' for s, n in m['statuses'].items())} "
            f"| {m['retried']} | {' '.join(f'{s}:{n}' for s, n in m['health'].items())} | {workers} "
            f"| {', '.join(m['events'])} |"
        )
    lines += ["", "Workers: " + ", ".join(f"{w} = pid {pid}" for pid, w in report["workers"].items()), ""]
    lines += ["Reproduce:", "", "```", report["command"], "```", ""]
    return "\n".join(lines)
