"""benchmarks/outside_graph.py --stages: the time outside the graph is split by the package's own functions."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import outside_graph  # noqa: E402

from mtbioner.data.text import split_sentences


def test_stages_are_shares_of_the_time_outside_the_graph() -> None:
    texts = ["TNF-alpha rose in serum. It fell after aspirin (p<0.05). IL-2 did not."] * 300

    def tag(batch: list[str]) -> None:
        time.sleep(0.05)  # stands for the graph, which the benchmark times apart
        tag.graph_seconds = 0.05
        for text in batch:
            split_sentences(text)

    shares = outside_graph.profiled_stages(tag, texts)
    assert list(shares) == [*outside_graph.STAGES, "other"]
    assert shares["sentence splitting"] > 50, shares  # nearly all that runs outside the "graph"
    assert all(shares[stage] == 0 for stage in outside_graph.STAGES if stage != "sentence splitting"), shares
    assert abs(sum(shares.values()) - 100) < 0.2 and shares["other"] >= 0
