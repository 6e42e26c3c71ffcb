"""Draw the package's parts and the imports between them, from the code (grimp, import-linter's graph).

    python scripts/draw_architecture.py      # writes docs/architecture.png and the table in docs/architecture.md

Each part is a band, top (command line) to bottom (data), listing its modules; an arrow from one part to another
says how many module-to-module imports go that way (type-only and function-level ones included). The table
between the ``<!-- imports:begin -->`` and ``<!-- imports:end -->`` markers of docs/architecture.md is rewritten.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import grimp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROWS = [["cli"], ["study"], ["apps", "learn"], ["runtime"], ["model"], ["data"], ["(root)"]]
ORDER = [name for row in ROWS for name in row]
COLOURS = {
    "cli": "#d9d9d9", "study": "#fde0c5", "apps": "#c6dbef", "learn": "#c7e9c0", "runtime": "#dadaeb",
    "model": "#fcbba1", "data": "#fff2ae", "(root)": "#f0f0f0",
}  # fmt: skip


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 2 or (len(pieces) == 2 and pieces[1] in COLOURS) else "(root)"


def read_graph() -> tuple[dict[str, list[str]], Counter]:
    graph = grimp.build_graph("mtbioner", cache_dir=None)
    modules: dict[str, list[str]] = {}
    edges: Counter = Counter()
    for module in sorted(graph.modules):
        name = module.split(".")[-1]
        if module == "mtbioner" or name == "__init__" or module.count(".") == 1 and name in COLOURS:
            continue
        modules.setdefault(part(module), []).append(name)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith("mtbioner.") and part(imported) != part(module):
                edges[(part(module), part(imported))] += 1
    return modules, edges


def draw(modules: dict[str, list[str]], edges: Counter, out: Path) -> None:
    """Left: the parts as layers with their modules. Right: imports from each part (row) to each (column);
    every count lies right of the diagonal, which is what "one way down" means."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 8.5), gridspec_kw={"width_ratios": [1.7, 1]})
    left.set_xlim(0, 10)
    left.set_ylim(0, len(ROWS) * 1.25)
    left.axis("off")
    for row, parts in enumerate(ROWS):
        y = (len(ROWS) - row - 1) * 1.25 + 0.1
        width = 10 / len(parts)
        for column, name in enumerate(parts):
            x = column * width
            box = FancyBboxPatch(
                (x + 0.05, y), width - 0.2, 1.0, boxstyle="round,pad=0.02", fc=COLOURS[name], ec="#555"
            )
            left.add_patch(box)
            left.text(x + 0.2, y + 0.85, name, fontsize=12, fontweight="bold", va="top")
            names = modules.get(name, [])
            per_line = max(1, int((width - 0.4) // 1.25))
            lines = [", ".join(names[i : i + per_line]) for i in range(0, len(names), per_line)]
            left.text(x + 0.2, y + 0.55, "\n".join(lines), fontsize=8, va="top", family="monospace")
    left.set_title("Parts, top to bottom; each imports only the parts below it")
    matrix = [[edges.get((a, b), 0) for b in ORDER] for a in ORDER]
    right.imshow([[min(v, 1) * (0.3 + v / 40) for v in row] for row in matrix], cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value:
                right.text(j, i, str(value), ha="center", va="center", fontsize=9)
    right.set_xticks(range(len(ORDER)), ORDER, rotation=45, ha="right")
    right.set_yticks(range(len(ORDER)), ORDER)
    right.set_xlabel("imported part")
    right.set_ylabel("importing part")
    right.set_title("Module imports between parts (from the code)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def table(edges: Counter) -> str:
    order = ORDER
    lines = ["| importing part | imported part | imports |", "|---|---|---:|"]
    for (source, target), count in sorted(edges.items(), key=lambda e: (order.index(e[0][0]), order.index(e[0][1]))):
        lines.append(f"| {source} | {target} | {count} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    modules, edges = read_graph()
    draw(modules, edges, args.out / "architecture.png")
    page = args.out / "architecture.md"
    if page.is_file():
        text = page.read_text(encoding="utf-8")
        begin, end = "<!-- imports:begin -->", "<!-- imports:end -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            tail = rest.split(end, 1)[1]
            page.write_text(f"{head}{begin}\n{table(edges)}\n{end}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
