"""The rules that decide issue 42's students, as ``benchmarks/`` applies them: a wrong comparison there would ship
(or keep out) a model, so the arithmetic is checked on hand-made rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import student_screen  # noqa: E402
import students  # noqa: E402


def test_a_variant_replaces_the_base_options_it_gives_again() -> None:
    base = ["--layers", "3", "--intermediate-size", "768", "--epochs", "2", "--bf16"]
    assert student_screen.overridden(base, ["--epochs", "8"]) == [
        "--layers", "3", "--intermediate-size", "768", "--bf16", "--epochs", "8",
    ]  # fmt: skip
    assert student_screen.overridden(base, ["--bf16"]) == [*base[:6], "--bf16"]  # a flag without a value
    assert student_screen.overridden(base, ["--hidden-weight", "1"]) == [*base, "--hidden-weight", "1"]


def test_screen_variants_keep_the_listed_order_and_name_an_unknown_one() -> None:
    chosen = student_screen.choose_variants(["base", "epochs8", "hidden"], ["epochs8=--epochs 8", "both=--a 1 --b"])
    assert chosen == {
        "base": [],
        "epochs8": ["--epochs", "8"],
        "hidden": ["--hidden-weight", "1"],
        "both": ["--a", "1", "--b"],
    }
    assert list(chosen) == ["base", "epochs8", "hidden", "both"]
    with pytest.raises(ValueError, match="unknown variant.*nosuch; known: base, hidden"):
        student_screen.choose_variants(["base", "nosuch"], [])


def _screen_row(name: str, in_domain: float, lenient: float | None) -> dict:
    left_out = None if lenient is None else {"lenient": lenient}
    return {"name": name, "in_domain_mean": in_domain, "left_out_mean": left_out}


@pytest.mark.parametrize(
    ("in_domain", "lenient", "kept"),
    [
        (74.50, 60.0, True),  # +0.30 in-domain (74.50 - 74.20 is 0.2999... in floats), left-out unchanged
        (74.49, 61.0, False),  # +0.29: under the gain
        (75.20, 59.4, False),  # +1.00 in-domain, but left-out down 0.6
        (75.20, 59.5, True),  # left-out down exactly 0.5: allowed
    ],
)
def test_the_screen_keeps_an_idea_by_its_gain_and_what_it_costs_left_out(
    in_domain: float, lenient: float, kept: bool
) -> None:
    rows = [_screen_row("base", 74.20, 60.0), _screen_row("idea", in_domain, lenient)]
    student_screen.judge(rows)
    assert rows[1]["kept"] is kept
    assert rows[1]["vs_base"]["in_domain"] == round(in_domain - 74.20, 2)


def test_the_screen_without_left_out_cells_judges_in_domain_only_and_never_judges_a_smaller_shape() -> None:
    rows = [_screen_row("base", 74.20, None), _screen_row("epochs4", 78.58, None), _screen_row("layers2", 70.0, None)]
    student_screen.judge(rows)
    assert rows[1]["kept"] is True and rows[1]["vs_base"]["left_out_lenient"] is None
    assert "kept" not in rows[2]  # a smaller shape's cost is recorded; the speed run decides


def _teacher() -> dict:
    return {"sentences_per_s": 250.0, "f1": {"BC5CDR": 84.5, "NCBI-disease": 82.3}, "disk_mb": 23.6}


def _student(speed: float, f1: dict[str, float], mb: float = 15.5, left_out: dict | None = None) -> dict:
    return {"sentences_per_s": speed, "f1": f1, "disk_mb": mb, "left_out": left_out or {}}


LEFT_OUT = {  # one leave-out teacher's table and its student's: exact and lenient F1 per row
    "lo-a": {
        "teacher": {"BC2GM/Gene": {"exact": 40.0, "lenient": 58.8}},
        "student": {"BC2GM/Gene": {"exact": 39.5, "lenient": 57.9}},
    }
}


def test_a_student_qualifies_only_when_every_part_of_the_rule_holds() -> None:
    good = _student(700.0, {"BC5CDR": 84.0, "NCBI-disease": 81.3}, left_out=LEFT_OUT)
    rows = [_teacher(), good]
    students.judge(rows, {"sentences_per_s": 650.0})
    assert good["qualifies"] and good["why_not"] == []
    assert good["worst_f1_loss"] == 1.0 and good["worst_left_out_loss"] == 0.9 and good["speed_up"] == 2.8


@pytest.mark.parametrize(
    ("student", "spacy", "reason"),
    [
        (_student(600.0, {"BC5CDR": 84.5, "NCBI-disease": 82.3}, left_out=LEFT_OUT), 650.0, "slower than the spaCy"),
        (_student(700.0, {"BC5CDR": 84.5, "NCBI-disease": 81.2}, left_out=LEFT_OUT), 650.0, "test F1 1.1 below"),
        (_student(700.0, {"BC5CDR": 84.5, "NCBI-disease": 82.3}), 650.0, "left-out table not measured"),
        (_student(700.0, {"BC5CDR": 84.5, "NCBI-disease": 82.3}, 25.0, LEFT_OUT), 650.0, "25.0 MB"),
        (_student(700.0, {"BC5CDR": 84.5, "NCBI-disease": 82.3}, left_out=LEFT_OUT), None, "spaCy peer not timed"),
    ],
)
def test_a_student_that_misses_one_part_does_not_qualify_and_says_why(
    student: dict, spacy: float | None, reason: str
) -> None:
    students.judge([_teacher(), student], None if spacy is None else {"sentences_per_s": spacy})
    assert not student["qualifies"]
    assert any(reason in why for why in student["why_not"]), student["why_not"]


def test_the_left_out_loss_is_the_worst_row_in_either_mode() -> None:
    tables = {
        "lo-a": LEFT_OUT["lo-a"],
        "lo-b": {
            "teacher": {"NCBI-disease/Disease": {"exact": 50.0, "lenient": 70.0}},
            "student": {"NCBI-disease/Disease": {"exact": 51.0, "lenient": 68.5}},
        },
    }
    assert students.left_out_loss(tables) == 1.5
    assert students.left_out_loss({}) is None
