from __future__ import annotations

import random

import pytest

from mtbioner.runtime.evaluation import score

from .conlleval import conlleval

CASES = [
    # (gold, predicted, (correct, predicted entities, gold entities)) counted by hand
    ([["B-A", "I-A", "O"]], [["B-A", "I-A", "O"]], (1, 1, 1)),
    ([["B-A", "I-A", "O"]], [["B-A", "O", "O"]], (0, 1, 1)),  # boundary wrong
    ([["B-A", "I-A", "O"]], [["B-B", "I-B", "O"]], (0, 1, 1)),  # type wrong
    ([["O", "I-A", "I-A"]], [["O", "B-A", "I-A"]], (1, 1, 1)),  # I after O opens a chunk (conlleval)
    ([["B-A", "B-A"]], [["B-A", "I-A"]], (0, 1, 2)),
    ([["B-A", "I-B", "O", "B-A"]], [["B-A", "B-B", "O", "O"]], (2, 2, 3)),  # I-B after A opens a B chunk
    ([["O", "O"], ["B-A"]], [["O", "B-A"], ["O"]], (0, 1, 1)),
    ([["O"]], [["O"]], (0, 0, 0)),
]


@pytest.mark.parametrize(("gold", "predicted", "counts"), CASES)
def test_hand_counted_cases(gold, predicted, counts) -> None:
    correct, n_predicted, n_gold = counts
    overall, _types, found = score(gold, predicted)
    p = 100 * correct / n_predicted if n_predicted else 0.0
    r = 100 * correct / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    assert found == n_predicted
    assert overall.support == n_gold
    assert (overall.precision, overall.recall, overall.f1) == pytest.approx((p, r, f), abs=1e-3)


def test_per_type_scores() -> None:
    gold = [["B-A", "O", "B-B", "I-B"], ["B-A"]]
    pred = [["B-A", "O", "B-B", "O"], ["O"]]
    _, types, _ = score(gold, pred)
    assert types["A"].precision == 100 and types["A"].recall == 50 and types["A"].support == 2
    assert types["B"].f1 == 0 and types["B"].support == 1


def _lines(gold, pred):
    lines = []
    for g_sentence, p_sentence in zip(gold, pred, strict=True):
        lines.extend(f"w {g} {p}" for g, p in zip(g_sentence, p_sentence, strict=True))
        lines.append("")
    return lines


@pytest.mark.parametrize("seed", range(300))
def test_identical_to_conlleval_on_random_sequences(seed: int) -> None:
    rng = random.Random(seed)
    tags = ["O", "O", "O", "B-A", "I-A", "B-B", "I-B", "B-Gene-or-protein", "I-Gene-or-protein"]
    gold, pred = [], []
    for _ in range(rng.randint(1, 6)):
        n = rng.randint(1, 12)
        gold.append([rng.choice(tags) for _ in range(n)])
        pred.append([rng.choice(tags) for _ in range(n)])
    reference = conlleval(_lines(gold, pred))
    overall, types, found = score(gold, pred)
    ref = reference["overall"]
    assert (overall.precision, overall.recall, overall.f1) == pytest.approx(
        (ref["precision"], ref["recall"], ref["f1"]), abs=1e-3
    )
    assert found == ref["predicted"] and overall.support == ref["support"]
    assert set(types) == set(reference["types"])
    for name, s in types.items():
        r = reference["types"][name]
        assert (s.precision, s.recall, s.f1, s.support) == pytest.approx(
            (r["precision"], r["recall"], r["f1"], r["support"]), abs=1e-3
        )
