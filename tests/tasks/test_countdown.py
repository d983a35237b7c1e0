"""Tests for ttcjax.tasks.countdown."""

import itertools
import random
import re

import pytest

from ttcjax import tasks
from ttcjax.tasks import countdown
from ttcjax.tasks.countdown import CountdownConfig

CONFIG = CountdownConfig()


@pytest.fixture(scope="module")
def problems():
    return countdown.generate(CONFIG, 300, seed=0)


def _problem(numbers, target, max_value=999):
    """A hand-made problem (the checkers read numbers, target and max_value)."""
    n, rate = countdown.solve(numbers, target, max_value)
    return countdown.Problem(
        uid="hand", question=f"Reach {target} from {' '.join(map(str, sorted(numbers)))}",
        solution="", answer=str(target), numbers=tuple(sorted(numbers)), target=target,
        max_value=max_value, n_solutions=n, solve_rate=rate, draws=1)


P24 = _problem((3, 4, 6, 8), 24)
GOOD = "8-6=2, left 2 3 4\n4*3=12, left 2 12\n12*2=24, left 24\n#### 24\n"


def test_documented_example_is_valid_and_prompt_ends_in_a_newline():
    assert countdown.check_steps(P24, GOOD) == [True] * 4
    assert countdown.reachable_after_steps(P24, GOOD) == [True] * 4
    assert countdown.grade(GOOD, P24)
    assert countdown.prompt(P24) == "Reach 24 from 3 4 6 8\n"


def test_reference_solutions_round_trip(problems):
    task = tasks.get("countdown")
    assert task.has_step_checker and task.step_delimiter == "\n"
    for p in problems:
        steps = task.split_steps(p.solution)
        assert "".join(steps) == p.solution and all(s.endswith("\n") for s in steps)
        assert len(steps) == p.n_numbers  # n - 1 operations, then "#### target"
        assert task.check_steps(p, p.solution) == [True] * len(steps)
        assert task.reachable_after_steps(p, p.solution) == [True] * len(steps)
        assert task.grade(p.solution, p)
        assert p.answer == str(p.target)
        answer = task.extract_answer(p.solution)
        assert answer.endswith(f"#### {p.target}") and task.grade_answer(answer, p)
        assert task.is_equiv(answer, answer)
        assert p.question == f"Reach {p.target} from {' '.join(map(str, p.numbers))}"
        assert list(p.numbers) == sorted(p.numbers) and p.n_solutions >= 1
        assert 0 < p.solve_rate <= 1 and p.draws >= 1


def test_strings_stay_short_and_values_in_range(problems):
    for p in problems:
        assert CONFIG.min_numbers <= p.n_numbers <= CONFIG.max_numbers
        assert all(CONFIG.min_number <= n <= CONFIG.max_number for n in p.numbers)
        assert CONFIG.min_target <= p.target <= CONFIG.max_target
        assert len(p.question) <= 30
        assert max(len(line) for line in p.solution.split("\n")) < 40
        assert "=0," not in p.solution and "--" not in p.solution and "=-" not in p.solution


def test_generation_is_deterministic_by_seed():
    assert countdown.generate(CONFIG, 40, seed=3) == countdown.generate(CONFIG, 40, seed=3)
    assert countdown.generate(CONFIG, 40, seed=3) != countdown.generate(CONFIG, 40, seed=4)
    assert countdown.generate(CONFIG, 10, seed=1) == countdown.generate(CONFIG, 30, seed=1)[:10]
    uids = [p.uid for p in countdown.generate(CONFIG, 3, seed=7)]
    assert uids == ["countdown-7-0", "countdown-7-1", "countdown-7-2"]


def test_difficulty_spread_and_features(problems):
    counts = {p.n_numbers for p in problems}
    assert counts == {3, 4}
    assert any(p.n_solutions == 1 for p in problems) and any(p.n_solutions >= 10 for p in problems)
    task = tasks.get("countdown")
    assert task.difficulty_features(problems[0]) == {
        "n_numbers": problems[0].n_numbers, "n_solutions": problems[0].n_solutions,
        "solve_rate": problems[0].solve_rate}


def test_solution_counts_on_hand_checked_cases():
    # From 1 1 1 the only move is on the pair (1, 1): 1+1=2 -> (1, 2), or 1*1 or
    # 1/1 -> (1, 1) (1-1=0 is illegal). From (1, 2): 2+1=3, 2-1=1, 2*1=2,
    # 2/1=2; from (1, 1): 1+1=2, 1*1=1, 1/1=1.
    assert countdown.solve((1, 1, 1), 3) == (1, pytest.approx(1 / 12))
    assert countdown.solve((1, 1, 1), 2)[0] == 4  # 2*1, 2/1, and 1+1 after 1*1 or 1/1
    assert countdown.solve((1, 1, 1), 1)[0] == 5  # 2-1, and 1*1 or 1/1 twice over
    assert countdown.solve((1, 1, 1), 4) == (0, 0.0)
    assert countdown.solve((2, 2), 4) == (2, pytest.approx(2 / 3))  # 2+2, 2*2; not 2/2
    assert countdown.solve((3, 7), 2)[0] == 0  # 7/3 is not exact
    assert countdown.solve((6, 6, 6), 216, max_value=100) == (0, 0.0)  # 36*6 > cap
    assert countdown.solve((6, 6, 6), 216)[0] == 1


def _brute_force_solutions(numbers, target, max_value):
    """Every solution text, by trying ordered index pairs (independent of the solver)."""
    found = set()

    def walk(state, lines):
        if len(state) == 1:
            if state[0] == target:
                found.add("".join(lines) + f"#### {target}\n")
            return
        for i, j in itertools.permutations(range(len(state)), 2):
            a, b = state[i], state[j]
            if a < b:
                continue
            for op, value in (("+", a + b), ("-", a - b), ("*", a * b),
                              ("/", a // b if a % b == 0 else -1)):
                if 0 < value <= max_value:
                    rest = sorted([x for k, x in enumerate(state) if k not in (i, j)] + [value])
                    walk(rest, lines + [f"{a}{op}{b}={value}, left {' '.join(map(str, rest))}\n"])

    walk(sorted(numbers), [])
    return found


def test_solver_matches_brute_force_and_every_solution_grades():
    rng = random.Random(0)
    for _ in range(25):
        numbers = [rng.randint(1, 9) for _ in range(rng.choice((3, 4)))]
        target = rng.randint(1, 40)
        p = _problem(numbers, target, max_value=200)
        texts = _brute_force_solutions(numbers, target, 200)
        assert p.n_solutions == len(texts), (numbers, target)
        assert all(countdown.grade(t, p) for t in texts)


@pytest.mark.parametrize("text, valid, reachable", [
    # Bad arithmetic.
    ("8-6=3, left 3 3 4\n", [False], [False]),
    # A number not available (5), and 6 used twice when there is one 6.
    ("8-5=3, left 3 3 4 6\n", [False], [False]),
    ("6+6=12, left 3 4 8 12\n", [False], [False]),
    # Right operation, wrong or unsorted remaining list.
    ("8-6=2, left 2 3\n", [False], [False]),
    ("8-6=2, left 3 2 4\n", [False], [False]),
    # Illegal results: negative, zero, inexact division, over the cap.
    ("6-8=2, left 2 3 4\n", [False], [False]),
    ("4-4=0, left 0 3 6 8\n", [False], [False]),
    ("8/3=2, left 2 4 6\n", [False], [False]),
    # Commuted + and * are fine (6 8 12 -> 2 12 -> 24); a valid step into a dead
    # end is valid but unreachable (no move from 3 4 48 leads to 24).
    ("3*4=12, left 6 8 12\n", [True], [True]),
    ("8*6=48, left 3 4 48\n48*4=192, left 3 192\n", [True, True], [False, False]),
    # Noncanonical numbers.
    ("08-6=2, left 2 3 4\n", [False], [False]),
    # A valid step after a wrong one is judged against what the wrong one wrote.
    ("8-6=3, left 3 3 4\n3+3=6, left 4 6\n", [False, True], [False, False]),
    # The answer line alone, a wrong answer, an answer too early, anything after it.
    ("#### 24\n", [False], [False]),
    ("8-6=2, left 2 3 4\n4*3=12, left 2 12\n12*2=24, left 24\n#### 25\n",
     [True, True, True, False], [True, True, True, False]),
    ("8-6=2, left 2 3 4\n#### 24\n", [True, False], [True, False]),
    (GOOD + "#### 24\n", [True] * 4 + [False], [True] * 4 + [False]),
    (GOOD + "\n", [True] * 4 + [False], [True] * 4 + [False]),
])
def test_wrong_steps_are_caught(text, valid, reachable):
    assert countdown.check_steps(P24, text) == valid
    assert countdown.reachable_after_steps(P24, text) == reachable
    assert countdown.grade(text, P24) is (all(valid) and text.rstrip("\n").split("\n")[-1]
                                          .startswith("####"))


def test_dead_end_is_valid_but_unreachable():
    # 8+6=14 leaves 3 4 14, from which 24 cannot be reached (checked by the solver).
    assert countdown.solve((3, 4, 14), 24)[0] == 0
    text = "8+6=14, left 3 4 14\n"
    assert countdown.check_steps(P24, text) == [True]
    assert countdown.reachable_after_steps(P24, text) == [False]


def test_step_results_are_capped_by_max_value():
    p = _problem((6, 6, 6), 36, max_value=100)
    assert countdown.check_steps(p, "6*6=36, left 6 36\n36*6=216, left 216\n") == [True, False]


def test_grade_needs_a_derivation_not_just_the_answer():
    task = tasks.get("countdown")
    assert task.extract_answer("#### 24\n") == "#### 24"
    assert not task.grade("#### 24\n", P24) and not task.grade_answer("#### 24", P24)
    assert not task.grade_answer("24", P24)  # the target is not a derivation
    assert not task.grade(GOOD.replace("#### 24\n", ""), P24)  # target reached, no answer line
    assert task.grade(GOOD.rstrip("\n"), P24)  # an output stopped at EOS
    assert not task.grade(None, P24) and not task.grade("", P24)


def test_answer_is_the_canonical_derivation():
    task = tasks.get("countdown")
    want = "8-6=2, left 2 3 4; 4*3=12, left 2 12; 12*2=24, left 24; #### 24"
    assert task.extract_answer(GOOD) == want
    # Commuted + and * operands, no final newline, spaces in the answer line:
    # the same derivation.
    same = "8-6=2, left 2 3 4\n3*4=12, left 2 12\n2*12=24, left 24\n####  24 "
    assert task.extract_answer(same) == want and task.is_equiv(task.extract_answer(same), want)
    other = "8*3=24, left 4 6 24\n6-4=2, left 2 24\n24/2=12, left 12\n#### 12\n"
    assert not task.is_equiv(task.extract_answer(other), want)
    assert not task.is_equiv(None, want) and not task.is_equiv("24", want)
    # No answer unless the text ends with a "####" line after parsable steps.
    assert task.extract_answer(GOOD.replace("#### 24\n", "")) is None
    assert task.extract_answer(GOOD + "\n") is None
    assert task.extract_answer("x\n#### 24\n") is None
    assert task.extract_answer("#### 2x4") is None and task.extract_answer(None) is None
    assert task.extract_answer("####  " + "9" * 40) is None  # bounded int parsing
    assert task.extract_answer("8-6=2, left 2 3 4\n#### 24\n#### 24\n") is None


def _corruptions(text, rng, count):
    """``count`` one- or two-character mutations of ``text``."""
    alphabet = "0123456789+-*/=, left#\n "
    out = []
    for _ in range(count):
        chars = list(text)
        for _ in range(rng.choice((1, 2))):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        out.append("".join(chars))
    return out


def test_grade_answer_agrees_with_grade(problems):
    """Grading the extracted derivation is grading the text, on every reference
    solution, on corrupted ones and on valid derivations of other problems."""
    task, rng = tasks.get("countdown"), random.Random(0)
    texts = [(p.solution, p) for p in problems]
    texts += [(t, p) for p in problems[:100] for t in _corruptions(p.solution, rng, 10)]
    texts += [(problems[i].solution, problems[i + 1]) for i in range(len(problems) - 1)]
    texts += [(t.rstrip("\n"), p) for t, p in texts[:50]]
    rights = 0
    for text, p in texts:
        verdict = task.grade(text, p)
        assert task.grade_answer(task.extract_answer(text), p) is verdict, text
        rights += verdict
    assert len(problems) <= rights < len(texts)  # both verdicts occur


def _canonical(text):
    """``text`` with a final newline and every ``a+b``/``a*b`` written larger first."""
    def swap(match):
        a, op, b = int(match[1]), match[2], int(match[3])
        return f"{max(a, b)}{op}{min(a, b)}="
    lines = text.rstrip("\n").split("\n")
    return "".join(re.sub(r"^([0-9]+)([+*])([0-9]+)=", swap, line) + "\n" for line in lines)


def test_untrusted_text_never_raises():
    rng = random.Random(0)
    alphabet = "0123456789+-*/=, left#\n "
    texts = [bytes(rng.randrange(256) for _ in range(rng.randrange(80))).decode("latin-1")
             for _ in range(300)]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(80)))
              for _ in range(300)]
    chars = list(GOOD)
    for _ in range(300):  # one- and two-character mutations of a valid solution
        mutated = list(chars)
        for _ in range(rng.choice((1, 2))):
            mutated[rng.randrange(len(mutated))] = rng.choice(alphabet)
        texts.append("".join(mutated))
    texts += ["9" * 10_000 + "+1=1, left 1\n", "1" + "+" * 5000, "#### " + "9" * 5000,
              "8-6=2, left " + "2 " * 3000 + "\n"]
    for text in texts:
        valid = countdown.check_steps(P24, text)
        reachable = countdown.reachable_after_steps(P24, text)
        assert len(valid) == len(reachable) == len(countdown.split_steps(text))
        assert all(isinstance(v, bool) for v in valid + reachable)
        assert countdown.grade_answer(countdown.extract_answer(text), P24) is (
            countdown.grade(text, P24))
        if countdown.grade(text, P24):  # only a genuine derivation: same lines as a solution
            assert _canonical(text) in _brute_force_solutions((3, 4, 6, 8), 24, 999), text


def test_registry_and_problem_count():
    task = tasks.get("countdown", config=CountdownConfig(min_numbers=2, max_numbers=2))
    assert isinstance(task, countdown.CountdownTask) and "countdown" in tasks.registered()
    assert {p.n_numbers for p in task.problems(20, seed=0)} == {2}
    with pytest.raises(ValueError, match="give a problem count"):
        task.problems(None, seed=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_numbers=1), "min_numbers"),
    (dict(max_numbers=6), "max_numbers"),
    (dict(min_numbers=4, max_numbers=3), "min_numbers"),
    (dict(min_number=0), "min_number"),
    (dict(max_number=2000), "max_number"),
    (dict(min_target=50, max_target=20), "min_target"),
    (dict(max_target=1000), "max_target"),
    (dict(max_value=0), "max_value"),
    (dict(min_solutions=0), "min_solutions"),
    (dict(min_solutions=5, max_solutions=2), "max_solutions"),
])
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CountdownConfig(**kwargs)


def test_config_type_errors_and_impossible_configs():
    with pytest.raises(TypeError, match="max_number"):
        CountdownConfig(max_number=12.0)
    with pytest.raises(TypeError, match="max_solutions"):
        CountdownConfig(max_solutions=True)
    # Two numbers from 1..2 never reach 90: generation says which setting to widen.
    impossible = CountdownConfig(min_numbers=2, max_numbers=2, max_number=2, min_target=90)
    with pytest.raises(ValueError, match="widen CountdownConfig"):
        countdown.generate(impossible, 1, seed=0)


def test_max_solutions_draws_hard_problems():
    hard = countdown.generate(CountdownConfig(max_solutions=1), 30, seed=0)
    assert all(p.n_solutions == 1 for p in hard)
    assert all(countdown.grade(p.solution, p) for p in hard)


def test_drills_are_legal_play_without_the_target(problems):
    task = tasks.get("countdown")
    assert task.has_drills and not tasks.get("arithmetic").has_drills
    assert tasks.get("arithmetic").drill(None, 0) is None
    last_is_target = 0
    for p in problems[:100]:
        prompt, text = task.drill(p, seed=7)
        assert (prompt, text) == task.drill(p, seed=7)  # deterministic
        assert prompt == f"Play {' '.join(map(str, p.numbers))}\n"
        assert len(prompt) <= task.max_prompt_chars() + 1
        steps = task.split_steps(text)
        assert len(steps) == p.n_numbers and steps[-1].startswith("#### ")
        final = int(steps[-1][5:])
        # Every move is legal: the text solves the game whose target is the
        # number it ends on, and nothing in it needed the problem's target.
        game = _problem(p.numbers, final)
        assert task.check_steps(game, text) == [True] * len(steps)
        assert task.grade(text, game)
        last_is_target += final == p.target
    # The point of a drill: its last result is not the target to copy.
    assert last_is_target < 10
    assert len({task.drill(p, seed=s)[1] for p in problems[:20]
                for s in range(3)}) > 40  # seeds draw different games



def test_a_drill_always_finds_a_move():
    # Equal numbers leave only a/a (sums and products pass max_value).
    prompt, text = countdown.drill(_problem((7, 7), 1, max_value=10), seed=0)
    assert prompt == "Play 7 7\n" and text == "7/7=1, left 1\n#### 1\n"
