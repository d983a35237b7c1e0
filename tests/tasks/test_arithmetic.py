"""Tests for ttcjax.tasks.arithmetic."""

import collections

import pytest

from ttcjax.tasks import arithmetic
from ttcjax.tasks.arithmetic import ArithmeticConfig

CONFIG = ArithmeticConfig()


@pytest.fixture(scope="module")
def problems():
    return arithmetic.generate(CONFIG, 500, seed=0)


def test_generate_is_deterministic():
    assert arithmetic.generate(CONFIG, 50, seed=3) == arithmetic.generate(CONFIG, 50, seed=3)
    assert arithmetic.generate(CONFIG, 50, seed=3) != arithmetic.generate(CONFIG, 50, seed=4)


def test_problem_does_not_depend_on_how_many_are_drawn():
    assert arithmetic.generate(CONFIG, 10, seed=1) == arithmetic.generate(CONFIG, 30, seed=1)[:10]


def test_uids_are_stable_and_unique(problems):
    assert [p.uid for p in problems[:3]] == ["arith-0-0", "arith-0-1", "arith-0-2"]
    assert len({p.uid for p in problems}) == len(problems)


def test_known_problem_renders_as_documented():
    tokens = arithmetic._tokenize("37+8*4-12")
    lines = arithmetic._solve(tokens)
    assert lines == ["8*4=32, so 37+32-12", "37+32=69, so 69-12", "69-12=57", "#### 57"]


def test_every_solution_checks_out(problems):
    for p in problems:
        assert all(arithmetic.check_solution_steps(p, p.solution)), p
        assert arithmetic.evaluate(p.expression) == int(p.answer)
        assert p.solution.endswith(f"{arithmetic.ANSWER_PREFIX}{p.answer}\n")
        steps = arithmetic.split_steps(p.solution)
        assert len(steps) == p.n_ops + 1
        assert all(s.endswith(arithmetic.STEP_DELIMITER) for s in steps)
        assert "".join(steps) == p.solution


def test_no_negative_values_and_short_strings(problems):
    for p in problems:
        assert "--" not in p.solution and "=-" not in p.solution and " -" not in p.solution
        assert int(p.answer) >= 0
        assert len(p.question) < 40 and len(p.solution) < 130


def test_difficulty_spread(problems):
    n_ops = collections.Counter(p.n_ops for p in problems)
    digits = collections.Counter(p.digits for p in problems)
    assert set(n_ops) == {1, 2, 3, 4} and set(digits) == {1, 2, 3}
    assert any(p.n_ops == 1 and p.digits == 1 for p in problems)
    assert any(p.n_ops == 4 and p.digits == 3 for p in problems)
    assert {op for p in problems for op in "+-*" if op in p.expression} == {"+", "-", "*"}


def test_operator_subset_and_single_op_config():
    config = ArithmeticConfig(min_ops=1, max_ops=1, min_digits=2, max_digits=2, operators="+")
    for p in arithmetic.generate(config, 20, seed=0):
        a, b = p.expression.split("+")
        assert len(a) == len(b) == 2 and int(p.answer) == int(a) + int(b)


def test_grade_accepts_reference_and_rejects_wrong(problems):
    for p in problems[:50]:
        assert arithmetic.grade(p.solution, p)
        assert arithmetic.grade(p.solution, p.answer)
        assert arithmetic.grade(p.solution, int(p.answer))
        assert not arithmetic.grade(p.solution.replace(f"#### {p.answer}", f"#### {int(p.answer) + 1}"), p)
    assert not arithmetic.grade("no answer here", "5")
    assert not arithmetic.grade(None, "5")
    assert not arithmetic.grade("#### 5", "not a number")


@pytest.mark.parametrize("text, expected", [
    ("1+2=3\n#### 3\n", "3"),
    ("#### 3", "3"),
    ("####   42  \nmore junk", "42"),
    ("#### 1\n#### 2\n", "2"),
    ("#### -7\n", "-7"),
    ("#### 007\n", "007"),
    ("1+2=3\n", None),
    ("#### \n", None),
    ("#### abc\n", None),
    ("#### 3.5\n", None),
    ("#### 1e9\n", None),
    ("#### ٣\n", None),  # Arabic-Indic digit: str.isdigit() alone would accept it
    ("#### " + "9" * 10_000, None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert arithmetic.extract_answer(text) == expected


def test_grade_compares_integers_not_strings():
    assert arithmetic.grade("#### 007\n", "7")
    assert arithmetic.grade("#### +7\n", "7")


def test_split_steps_partial_text():
    assert arithmetic.split_steps("1+2=3\n#### 3") == ["1+2=3\n", "#### 3"]
    assert arithmetic.split_steps("") == []


def test_check_solution_steps_flags_errors():
    expression = "37+8*4-12"
    good = "8*4=32, so 37+32-12\n37+32=69, so 69-12\n69-12=57\n#### 57\n"
    assert arithmetic.check_solution_steps(expression, good) == [True] * 4
    wrong_product = "8*4=33, so 37+33-12\n37+33=70, so 70-12\n70-12=58\n#### 58\n"
    assert arithmetic.check_solution_steps(expression, wrong_product) == [False, True, True, True]
    ignores_precedence = "37+8=45, so 45*4-12\n45*4=180, so 180-12\n180-12=168\n#### 168\n"
    assert arithmetic.check_solution_steps(expression, ignores_precedence)[0] is False
    bad_rewrite = "8*4=32, so 37+32-13\n"
    assert arithmetic.check_solution_steps(expression, bad_rewrite) == [False]
    assert arithmetic.check_solution_steps(expression, "garbage\n#### 57\n") == [False, False]


def test_evaluate():
    assert arithmetic.evaluate("2+3*4") == 14
    assert arithmetic.evaluate("2*3-4*1") == 2
    assert arithmetic.evaluate("7") == 7
    for bad in ("", "2+", "+2", "2**3", "2 + 3", "(2+3)", "__import__('os')"):
        assert arithmetic.evaluate(bad) is None


def test_prompt():
    p = arithmetic.generate(CONFIG, 1, seed=0)[0]
    assert arithmetic.prompt(p) == p.question + "\n"
    assert p.question.startswith("Compute: ")


@pytest.mark.parametrize("kwargs, field", [
    (dict(min_ops=0), "min_ops"),
    (dict(min_ops=3, max_ops=2), "min_ops"),
    (dict(max_ops=9), "max_ops"),
    (dict(min_digits=0), "min_digits"),
    (dict(min_digits=3, max_digits=2), "max_digits"),
    (dict(max_digits=7), "max_digits"),
    (dict(operators=""), "operators"),
    (dict(operators="+/"), "operators"),
    (dict(operators="++"), "operators"),
    (dict(max_mul_digits=0), "max_mul_digits"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ArithmeticConfig(**kwargs)


def test_config_rejects_non_int():
    with pytest.raises(TypeError, match="max_ops"):
        ArithmeticConfig(max_ops=2.5)


def test_generate_rejects_negative_count():
    with pytest.raises(ValueError, match="num_problems"):
        arithmetic.generate(CONFIG, -1, seed=0)


def test_hostile_text_is_rejected_not_crashing():
    huge = "9" * 100_000
    assert arithmetic.check_solution_steps("1+2", f"{huge}+1=2\n1+2=3\n#### 3\n")[0] is False
    assert arithmetic.check_solution_steps("1+2", f"{huge[:500]}+1=2\n")[0] is False
    assert arithmetic.evaluate(huge) is None
    assert arithmetic.evaluate("١+2") is None  # non-ASCII digits are not numbers here
    assert not arithmetic.grade(f"#### {huge}\n", "9")
