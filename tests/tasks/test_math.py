"""Tests for ttcjax.tasks.math."""

import collections
import json
import os
from pathlib import Path

import pytest

from ttcjax.tasks import math as math_task

EQUIVALENT = [
    ("5", "5"),
    ("5.0", "5"),
    ("5.00", "5"),
    ("007", "7"),
    ("-0", "0"),
    ("3.", "3"),
    ("$5$", "5"),
    ("\\frac{1}{2}", "0.5"),
    ("1/2", "\\frac12"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\tfrac{3}{4}", "0.75"),
    (".5", "0.5"),
    ("-.5", "-\\frac{1}{2}"),
    ("0.0000672", ".0000672"),
    ("-\\frac{35}{9}", "\\frac{-35}{9}"),
    ("\\frac{1}{3}", "0.333333"),
    ("1\\frac{4}{5}", "9/5"),
    ("137 \\frac{1}{2}", "137.5"),
    ("\\frac 59", "\\frac{5}{9}"),
    ("\\frac9{19}", "9/19"),
    ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("11\\sqrt2", "11 \\sqrt{2}"),
    ("2\\sqrt{5}", "2 \\sqrt 5"),
    ("\\sqrt[3]2", "\\sqrt[3]{2}"),
    ("\\binom{5}{2}", "\\dbinom52"),
    ("x^{2}+1", "x^2 + 1"),
    ("4210_{5}", "4210_5"),
    ("1 \\pm \\sqrt{19}", "1\\pm\\sqrt{19}"),
    ("5 \\text{ cm}", "5"),
    ("5 cm", "5"),
    ("864 \\mbox{ inches}^2", "864"),
    ("5.4 \\text{ cents}", "5.4"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90"),
    ("\\$18.90", "18.9"),
    ("10\\%", "10"),
    ("50%", "50"),
    ("x = 5", "5"),
    ("y=2x+3", "2x + 3"),
    ("x \\in [-2,7]", "[-2, 7]"),
    ("1,000", "1000"),
    ("10,\\!080", "10080"),
    ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
    ("\\$32,\\!348", "32348"),
    ("\\text{Evelyn}", "Evelyn"),
    ("\\text{east}", "East"),
    ("\\text{(C)}", "C"),
    ("(C)", "\\text{(C)}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("(1, 2)", "(1,2)"),
    ("[1,2)", "[1, 2)"),
    ("(\\frac{1}{2}, 3)", "(0.5, 3)"),
    ("(x=1, y=2)", "(1,2)"),
    ("\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", "[\\frac{\\pi^2}{8},\\frac{5\\pi^2}{4}]"),
    ("(0,9) \\cup (9,36)", "(0, 9)\\cup(9, 36)"),
    ("(-\\infty, 0]", "(-\\infty,0]"),
    ("3, 5, 7", "7,5,3"),
    ("\\{1,2\\}", "\\{2, 1\\}"),
    ("\\{1\\pm\\sqrt{5},-2\\}", "\\{-2, 1\\pm\\sqrt5\\}"),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}",
     "\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\end{pmatrix}"),
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
     "\\begin{pmatrix}-1&0\\\\0&-1.0\\end{pmatrix}"),
]

NOT_EQUIVALENT = [
    ("5", "6"),
    ("-5", "5"),
    ("1000000", "1000001"),
    ("2.5", "2.50001"),
    ("\\frac{1}{3}", "0.33"),
    ("1/2", "2/1"),
    ("3i", "3"),
    ("x+1", "x-1"),
    ("\\sqrt{2}", "\\sqrt{3}"),
    ("(1,2)", "[1,2)"),
    ("[1,2]", "[1,2)"),
    ("(1,2)", "(2,1)"),
    ("(1,2)", "(1,2,3)"),
    ("1,2", "1,2,3"),
    ("1,234", "1,2,3,4"),
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("(0,9)\\cup(9,36)", "(0,9)\\cup(9,37)"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1&2\\end{pmatrix}"),
    ("\\text{Evelyn}", "Navin"),
    ("\\text{(C)}", "D"),
    ("\\text{even}", "odd"),
    ("AB", "ab"),
    ("x=5", "y=6"),
    ("9^9^9^9", "9"),
    ("10^{100}", "100"),
    ("1/0", "0"),
    ("", ""),
    ("5 \\text{ and } 6", "5"),
]


@pytest.mark.parametrize("pred, target", EQUIVALENT)
def test_equivalent(pred, target):
    assert math_task.is_equiv(pred, target)
    assert math_task.is_equiv(target, pred)


@pytest.mark.parametrize("pred, target", NOT_EQUIVALENT)
def test_not_equivalent(pred, target):
    assert not math_task.is_equiv(pred, target)
    assert not math_task.is_equiv(target, pred)


def test_none_is_never_equivalent():
    assert not math_task.is_equiv(None, "5")
    assert not math_task.is_equiv("5", None)


@pytest.mark.parametrize("raw, normalized", [
    ("\\frac12", "\\frac{1}{2}"),
    ("\\dfrac{3}{4}", "\\frac{3}{4}"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("5 \\text{ cm}", "5"),
    ("\\text{Evelyn}", "Evelyn"),
    ("x = 5", "5"),
    ("1,000", "1000"),
    (".5", "0.5"),
    ("2.50", "2.5"),
    ("3/4", "\\frac{3}{4}"),
    ("\\frac{\\frac12}3", "\\frac{\\frac{1}{2}}{3}"),
    ("\\frac\\pi2", "\\frac{\\pi}{2}"),
    (None, ""),
])
def test_normalize_answer(raw, normalized):
    assert math_task.normalize_answer(raw) == normalized


@pytest.mark.parametrize("text, expected", [
    ("so the answer is $\\boxed{5}$.", "5"),
    ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
    ("\\boxed{x^{2}+\\sqrt{y_{1}}}", "x^{2}+\\sqrt{y_{1}}"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("$\\boxed 5$.", "5"),
    ("\\boxed 12.", "12"),
    ("\\boxed {7}", "7"),
    ("\\fbox{7}", "7"),
    ("\\boxed{1} and \\fbox{2}", "2"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\boxed{\\text{(C)}}.", "\\text{(C)}"),
    ("\\boxed{ 3 }", "3"),
    ("working...\n#### 42\n", "42"),
    ("\\boxed{5", None),
    ("\\boxed{}", None),
    ("\\boxed", None),
    ("no answer here", None),
    ("", None),
    (None, None),
])
def test_extract_boxed(text, expected):
    assert math_task.extract_boxed(text) == expected


HOSTILE = [
    "9^9^9^9",
    "10^{10^{10^{10}}}",
    "{" * 100_000 + "}" * 100_000,
    "\\boxed{" * 100_000,
    "\\frac" * 100_000,
    "\\frac{" * 300 + "}" * 300,
    "\\sqrt" * 190,
    "\\text{" * 140 + "}" * 140,
    "(" * 450 + ")" * 450,
    "1," * 450,
    "\\{" + "1," * 300 + "\\}",
    "9" * 999,
    "0." + "0" * 900 + "1",
    "1" * 1_000_000,
    "x" * 1_000_000 + "\\boxed{5}",
    "\\left(" * 150 + "1" + "\\right)" * 140,
    "\\begin{pmatrix}" + "1&" * 300 + "\\end{pmatrix}",
]


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_inputs_return(index):
    hostile = HOSTILE[index]
    boxed = math_task.extract_boxed("\\boxed{" + hostile + "}")
    assert boxed is None or isinstance(boxed, str)
    assert isinstance(math_task.extract_boxed(hostile), (str, type(None)))
    assert isinstance(math_task.normalize_answer(hostile), str)
    assert isinstance(math_task.is_equiv(hostile, hostile), bool)
    assert isinstance(math_task.is_equiv(hostile, "5"), bool)
    assert isinstance(math_task.is_equiv(hostile, hostile[::-1]), bool)


def test_hostile_lists_exhaust_their_budget():
    a = ",".join(f"({i},{i + 1})" for i in range(200))
    b = ",".join(f"({i},{i + 1})" for i in reversed(range(200)))
    assert isinstance(math_task.is_equiv(a, b), bool)


def _write(tmp_path, rows, name="probs.jsonl"):
    path = tmp_path / name
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_jsonl_fields(tmp_path):
    path = _write(tmp_path, [
        {"problem": "1+1?", "solution": "It is $\\boxed{2}$.", "level": "Level 3",
         "type": "Algebra"},
        "",
        {"problem": "2+2?", "answer": "4", "level": 1, "subject": "Prealgebra",
         "unique_id": "test/prealgebra/1.json"},
        {"problem": "3+3?", "answer": 6, "level": "Level ?"},
    ])
    problems = math_task.load_jsonl(path)
    assert [p.uid for p in problems] == ["probs.jsonl:1", "test/prealgebra/1.json", "probs.jsonl:4"]
    assert [p.answer for p in problems] == ["2", "4", "6"]
    assert [p.level for p in problems] == [3, 1, 0]
    assert [p.subject for p in problems] == ["Algebra", "Prealgebra", ""]
    assert problems[1].solution == ""


@pytest.mark.parametrize("bad_row, message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "JSON object"),
    ({"solution": "\\boxed{1}"}, "problem"),
    ({"problem": "  ", "answer": "1"}, "problem"),
    ({"problem": "p"}, "'solution' or an 'answer'"),
    ({"problem": "p", "solution": "no box here"}, "boxed"),
    ({"problem": "p", "answer": "1", "level": "hard"}, "level"),
])
def test_load_jsonl_malformed_line_names_file_and_line(tmp_path, bad_row, message):
    good = {"problem": "p", "answer": "1"}
    path = _write(tmp_path, [good, good, bad_row])
    with pytest.raises(ValueError, match=message) as info:
        math_task.load_jsonl(path)
    assert f"{path}:3" in str(info.value)


def _math500_path() -> Path:
    override = os.environ.get("TTCJAX_MATH500")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared/data/math500/test.jsonl"


@pytest.fixture(scope="module")
def math500():
    path = _math500_path()
    if not path.is_file():
        pytest.skip(f"MATH-500 not found at {path}: shared data is only present in the "
                    "development workspace")
    return math_task.load_jsonl(path)


def test_math500_loads(math500):
    assert len(math500) == 500
    levels = collections.Counter(p.level for p in math500)
    assert [levels[k] for k in range(1, 6)] == [43, 90, 105, 128, 134]
    assert all(p.problem and p.solution and p.answer and p.subject for p in math500)


def test_math500_boxed_solution_matches_answer(math500):
    failures = [p.uid for p in math500
                if not math_task.is_equiv(math_task.extract_boxed(p.solution), p.answer)]
    assert not failures, failures


def test_math500_answers_reject_each_other(math500):
    # A grader that says yes too often would pass the test above; distinct
    # normalised answers must not match.
    answers = sorted({math_task.normalize_answer(p.answer): p.answer for p in math500}.items())
    wrong = [(a, b) for (_, a), (_, b) in zip(answers, answers[1:]) if math_task.is_equiv(a, b)]
    assert not wrong, wrong
