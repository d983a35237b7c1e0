"""Countdown: reach a target from given numbers, one operation per step.

A problem gives a target and a multiset of positive integers. A solution
combines two of the numbers with ``+ - * /`` per step, writes the operation,
its result and the numbers that remain (sorted ascending), until a single
number is left; that number must be the target::

    question:  Reach 24 from 3 4 6 8
    solution:  8-6=2, left 2 3 4
               4*3=12, left 2 12
               12*2=24, left 24
               #### 24

Rules (one set for the solver, the generator and the checkers): every number
is used exactly once (the ``####`` line is right only when the one number left
is the target and the written answer); every result is a positive integer no
larger than the problem's ``max_value`` (``a-b`` needs ``a > b``, ``a/b``
needs ``b`` to divide ``a``: no zero, negatives or fractions, so states stay
short); ``+`` and ``*`` may be written in either operand order (references
write the larger first); numbers in steps are canonical decimals and the
``left`` list is sorted ascending, so every state has one spelling.

Unlike the arithmetic task there is a generator-verifier gap: finding a path
needs search over up to 1,152 move sequences for 4 numbers, while checking a
step is one small operation and a multiset comparison. Whether the numbers
left can still reach the target (the ideal value function) is what
:func:`reachable_after_steps` computes and a PRM can learn from Monte-Carlo
labels. Difficulty follows from the count of numbers and of solutions.

Every line ends with :data:`STEP_DELIMITER`. Pure Python: no jax, no numpy, no
``eval``; untrusted text is parsed with bounded string operations.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Optional

from ttcjax.tasks import base as _task_base

STEP_DELIMITER = "\n"
ANSWER_PREFIX = "#### "
QUESTION_PREFIX = "Reach "
PLAY_PREFIX = "Play "  # a drill's prompt: numbers, no target (see `drill`)
LEFT = ", left "
DERIVATION_SEPARATOR = "; "  # joins the lines of an extracted answer

_OPERATORS = "+-*/"
_MAX_INT_CHARS = 32  # bounded int() parsing of untrusted model output
_MAX_LINE_CHARS = 256  # longer lines are never valid steps; not parsed
_MAX_NUMBERS = 5  # the exhaustive solver memoises <~1.5k states at 5 numbers
_ATTEMPTS = 1000


@dataclasses.dataclass(frozen=True)
class CountdownConfig:
    """How Countdown problems are drawn.

    Each problem draws its count of numbers uniformly from ``[min_numbers,
    max_numbers]``, then numbers and target uniformly from their ranges,
    redrawn (same stream, count kept) until the problem has from
    ``min_solutions`` to ``max_solutions`` solutions.

    Attributes:
      min_numbers: fewest numbers in a problem (>= 2).
      max_numbers: most numbers in a problem (<= 5: the solver is exhaustive).
      min_number: smallest number drawn (>= 1).
      max_number: largest number drawn (<= max_value).
      min_target: smallest target drawn (>= 1).
      max_target: largest target drawn (<= max_value).
      max_value: largest value a step may produce (a rule: lines stay short).
      min_solutions: fewest solutions a problem may have (>= 1: all solvable).
      max_solutions: most solutions a problem may have, None for no bound (a
        small bound draws hard problems).
    """

    min_numbers: int = 3
    max_numbers: int = 4
    min_number: int = 1
    max_number: int = 12
    min_target: int = 10
    max_target: int = 99
    max_value: int = 999
    min_solutions: int = 1
    max_solutions: Optional[int] = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "max_solutions" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"CountdownConfig.{field.name} must be an int, got {value!r}")
        if not 2 <= self.min_numbers <= self.max_numbers <= _MAX_NUMBERS:
            raise ValueError(
                f"CountdownConfig.min_numbers/max_numbers must satisfy 2 <= min_numbers <= "
                f"max_numbers <= {_MAX_NUMBERS} (the solver is exhaustive), got "
                f"min_numbers={self.min_numbers}, max_numbers={self.max_numbers}")
        if not 1 <= self.max_value <= 10 ** 9:
            raise ValueError(f"CountdownConfig.max_value must be in [1, 1e9], got {self.max_value}")
        for low, high in (("min_number", "max_number"), ("min_target", "max_target")):
            lo, hi = getattr(self, low), getattr(self, high)
            if not 1 <= lo <= hi <= self.max_value:
                raise ValueError(
                    f"CountdownConfig.{low}/{high} must satisfy 1 <= {low} <= {high} <= "
                    f"max_value={self.max_value}, got {low}={lo}, {high}={hi}")
        if self.min_solutions < 1:
            raise ValueError(f"CountdownConfig.min_solutions must be >= 1 (every problem "
                             f"is solvable), got {self.min_solutions}")
        if self.max_solutions is not None and self.max_solutions < self.min_solutions:
            raise ValueError(
                f"CountdownConfig.max_solutions must be None or >= min_solutions="
                f"{self.min_solutions}, got {self.max_solutions}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One Countdown problem.

    Attributes:
      uid: stable id, ``f"countdown-{seed}-{index}"``.
      question: e.g. ``"Reach 24 from 3 4 6 8"`` (numbers sorted ascending).
      solution: a reference drawn uniformly from all solutions.
      answer: the target as a decimal string, e.g. ``"24"``.
      numbers: the given numbers, sorted ascending.
      target: the target.
      max_value: the largest value a step may produce.
      n_solutions: number of distinct solution texts (moves written in
        canonical operand order; two orders of independent moves count twice).
      solve_rate: probability that uniformly random legal moves reach the
        target (a random policy's pass@1).
      draws: how many (numbers, target) draws generation made to accept it.
    """

    uid: str
    question: str
    solution: str
    answer: str
    numbers: tuple[int, ...]
    target: int
    max_value: int
    n_solutions: int
    solve_rate: float
    draws: int

    @property
    def n_numbers(self) -> int:
        """Count of given numbers (difficulty axis 1)."""
        return len(self.numbers)


def _apply(a: int, op: str, b: int, max_value: int) -> Optional[int]:
    """The result of ``a op b`` under the rules, or None when the move is illegal."""
    value = (a + b if op == "+" else a - b if op == "-" else a * b if op == "*"
             else a // b if b > 0 and a % b == 0 else 0)
    return value if 0 < value <= max_value else None


def _render(numbers) -> str:
    return " ".join(str(n) for n in numbers)


def _moves(state: tuple[int, ...], max_value: int) -> list[tuple[str, tuple[int, ...]]]:
    """Every distinct legal step from a sorted state: (``"a op b=c"``, next state)."""
    moves, seen = [], set()
    for i in range(len(state)):
        for j in range(i):  # state is sorted, so a >= b: the canonical order
            a, b = state[i], state[j]
            if (a, b) in seen:
                continue
            seen.add((a, b))
            rest = state[:j] + state[j + 1:i] + state[i + 1:]
            for op in _OPERATORS:
                c = _apply(a, op, b, max_value)
                if c is not None:
                    moves.append((f"{a}{op}{b}={c}", tuple(sorted(rest + (c,)))))
    return moves


def _analyse(state: tuple[int, ...], target: int, max_value: int,
             memo: dict) -> tuple[int, float]:
    """(number of solutions, random-move solve rate) from a sorted state; memoised."""
    if len(state) == 1:
        return (1, 1.0) if state[0] == target else (0, 0.0)
    if state not in memo:
        res = [_analyse(nxt, target, max_value, memo) for _, nxt in _moves(state, max_value)]
        memo[state] = (sum(n for n, _ in res), sum(r for _, r in res) / max(len(res), 1))
    return memo[state]


def solve(numbers, target: int, max_value: int = CountdownConfig.max_value) -> tuple[int, float]:
    """Exhaustively counts the solutions of a problem.

    Args:
      numbers: the given positive integers (at most 5; any order).
      target: the number to reach.
      max_value: the largest value a step may produce.

    Returns:
      ``(n_solutions, solve_rate)`` as in :class:`Problem`.
    """
    state = tuple(sorted(numbers))
    if not 1 <= len(state) <= _MAX_NUMBERS or min(state) < 1:
        raise ValueError(f"solve takes 1 to {_MAX_NUMBERS} positive numbers, got {numbers!r}")
    return _analyse(state, target, max_value, {})


def _reference(numbers, target, max_value, memo, rng: random.Random) -> list[str]:
    """A solution drawn uniformly from all of them (each move weighted by its count)."""
    state, lines = numbers, []
    while len(state) > 1:
        options = [(head, nxt, _analyse(nxt, target, max_value, memo)[0])
                   for head, nxt in _moves(state, max_value)]
        pick = rng.randrange(sum(n for _, _, n in options))
        for head, nxt, n in options:
            if pick < n:
                break
            pick -= n
        lines.append(f"{head}{LEFT}{_render(nxt)}")
        state = nxt
    return lines + [f"{ANSWER_PREFIX}{target}"]


def generate(config: CountdownConfig, num_problems: int, seed: int) -> list[Problem]:
    """Draws Countdown problems deterministically.

    Problem ``i`` uses its own ``random.Random(f"countdown:{seed}:{i}")``
    stream, so it is the same whatever ``num_problems`` is. Its reference
    solution is drawn uniformly from all its solutions.

    Args:
      config: the difficulty distribution.
      num_problems: how many problems to draw (>= 0).
      seed: integer seed.

    Returns:
      ``num_problems`` problems with uids ``f"countdown-{seed}-{i}"``.

    Raises:
      ValueError: when a problem finds no acceptable draw in 1000 tries.
    """
    if num_problems < 0:
        raise ValueError(f"num_problems must be >= 0, got {num_problems}")
    problems = []
    for i in range(num_problems):
        rng = random.Random(f"countdown:{seed}:{i}")
        count = rng.randint(config.min_numbers, config.max_numbers)
        for draws in range(1, _ATTEMPTS + 1):
            numbers = tuple(sorted(rng.randint(config.min_number, config.max_number)
                                   for _ in range(count)))
            target = rng.randint(config.min_target, config.max_target)
            memo = {}
            n_solutions, solve_rate = _analyse(numbers, target, config.max_value, memo)
            if config.min_solutions <= n_solutions and (
                    config.max_solutions is None or n_solutions <= config.max_solutions):
                break
        else:
            raise ValueError(
                f"countdown problem {i} (seed {seed}, {count} numbers) found no draw with "
                f"{config.min_solutions}..{config.max_solutions} solutions in {_ATTEMPTS} "
                f"tries; widen CountdownConfig's number/target ranges or solution bounds")
        lines = _reference(numbers, target, config.max_value, memo, rng)
        problems.append(Problem(
            uid=f"countdown-{seed}-{i}",
            question=f"{QUESTION_PREFIX}{target} from {_render(numbers)}",
            solution="".join(line + STEP_DELIMITER for line in lines),
            answer=str(target), numbers=numbers, target=target, max_value=config.max_value,
            n_solutions=n_solutions, solve_rate=solve_rate, draws=draws))
    return problems


def prompt(problem: Problem) -> str:
    """The model input: the question and a newline, after which steps follow."""
    return problem.question + STEP_DELIMITER


def drill(problem: Problem, seed: int) -> tuple[str, str]:
    """A practice game on ``problem``'s numbers without its target.

    The prompt is ``"Play a b c\n"``; the text is uniformly random legal
    moves (each state's moves as :func:`_moves` lists them) until one number
    is left, then ``#### n`` with that number, in the notation of a solution::

        Play 3 4 6 8
        8*3=24, left 4 6 24
        24+6=30, left 4 30
        30-4=26, left 26
        #### 26

    Why: every reference solution's last move yields the target, which the
    question states, so a model trained on references alone learns to copy
    the target into the last line instead of computing it. Measured on
    countdown_cpu (no drills): 49% of the policy's samples end with a wrong
    operation whose written result is the target (``14+10=19``), the policy's
    own greedy choice in 4,745 of those 4,786 steps, and a PRM initialised
    from the policy ranks them against correct solutions at within-problem
    AUC 0.54. A drill's last result is whatever the moves make, so the
    model has to compute it there too, as a base LM that knows arithmetic
    would (the paper's base model does). Drawn with
    ``random.Random(f"countdown-drill:{seed}:{problem.uid}")``.

    Measured (countdown_cpu without the ~14x model, 40,000 drills, one
    each after the 40,000 references; 256 held-out problems x 16 samples):
    the copied-target endings fall from 49% to 27% of the samples, but a
    new 18% play to some other number and answer it, as drills do; pass@1
    falls from 0.159 to 0.107 and the PRM's within-problem AUC stays where
    it was (0.556 vs 0.569; vs the copied-target endings 0.51 vs 0.54). So
    the policy's habit is not what limits the PRM, and no preset turns
    drills on.

    Args:
      problem: the problem whose numbers are played.
      seed: the drill stream's seed.

    Returns:
      ``(prompt, text)``, each line ending with :data:`STEP_DELIMITER`.
    """
    rng = random.Random(f"countdown-drill:{seed}:{problem.uid}")
    state, lines = tuple(sorted(problem.numbers)), []
    while len(state) > 1:  # a state always has a move: a-b if a > b, else a/a
        moves = _moves(state, problem.max_value)
        head, state = moves[rng.randrange(len(moves))]
        lines.append(f"{head}{LEFT}{_render(state)}")
    lines.append(f"{ANSWER_PREFIX}{state[0]}")
    return (PLAY_PREFIX + _render(sorted(problem.numbers)) + STEP_DELIMITER,
            "".join(line + STEP_DELIMITER for line in lines))


def split_steps(text: str) -> list[str]:
    """Splits a solution into steps, each keeping its trailing delimiter."""
    steps = text.split(STEP_DELIMITER)
    out = [s + STEP_DELIMITER for s in steps[:-1]]
    return out + [steps[-1]] if steps[-1] else out


def _parse_int(text: str) -> Optional[int]:
    """A (signed) integer with surrounding spaces, as in the ``####`` line; else None."""
    text = text.strip()
    body = text[1:] if text[:1] in "+-" else text
    ok = body and len(body) <= _MAX_INT_CHARS and body.isascii() and body.isdigit()
    return int(text) if ok else None


def _parse_number(text: str) -> Optional[int]:
    """A canonical decimal (digits only, no leading zero) as used in steps; else None."""
    ok = (text and len(text) <= _MAX_INT_CHARS and text.isascii() and text.isdigit()
          and (text[0] != "0" or text == "0"))
    return int(text) if ok else None


def _parse_step(line: str):
    """``(a, op, b, c, left)`` from ``"a op b=c, left x y"``; None if malformed."""
    head, sep, tail = line[:_MAX_LINE_CHARS + 1].partition(LEFT)
    lhs, eq, c = head.partition("=")
    k = next((i for i in range(1, len(lhs)) if lhs[i] in _OPERATORS), -1)
    if not sep or not eq or k < 0 or len(line) > _MAX_LINE_CHARS:
        return None
    a, b, c = _parse_number(lhs[:k]), _parse_number(lhs[k + 1:]), _parse_number(c)
    left = [_parse_number(x) for x in tail.split(" ")]
    if a is None or b is None or c is None or None in left:
        return None
    return a, lhs[k], b, c, tuple(left)


def extract_answer(text: Optional[str]) -> Optional[str]:
    """The canonical derivation written in ``text``, or None.

    Every candidate claims the target, so the answer of a Countdown output is
    its derivation: the operation lines, each re-rendered with ``+`` and ``*``
    operands larger first (an order the rules allow either way), then
    ``#### n``, joined by :data:`DERIVATION_SEPARATOR`, e.g.
    ``"8-6=2, left 2 3 4; 4*3=12, left 2 12; 12*2=24, left 24; #### 24"``.
    Two outputs share an answer when they write the same operations, so
    majority voting groups identical solutions (self-consistency over
    derivations). None unless the last line is a ``####`` line with an
    integer and every line before it parses as an operation line; such a
    text never grades right (:func:`grade`). Nothing is checked against a
    problem here: :func:`grade_answer` does that.
    """
    if not isinstance(text, str):
        return None
    steps = split_steps(text)
    if not steps or not steps[-1].startswith("####"):
        return None
    lines = []
    for step in steps[:-1]:  # each ends with the delimiter
        parsed = _parse_step(step[:-len(STEP_DELIMITER)])
        if parsed is None:
            return None
        a, op, b, c, left = parsed
        a, b = (max(a, b), min(a, b)) if op in "+*" else (a, b)
        lines.append(f"{a}{op}{b}={c}{LEFT}{_render(left)}")
    last = steps[-1].rstrip(STEP_DELIMITER)
    value = _parse_int(last[4:]) if len(last) <= _MAX_LINE_CHARS else None
    if value is None:
        return None
    return DERIVATION_SEPARATOR.join(lines + [f"{ANSWER_PREFIX}{value}"])


def grade_answer(answer: Optional[str], problem: Problem) -> bool:
    """Whether a derivation from :func:`extract_answer` solves ``problem``.

    The derivation is written back one line a step and graded exactly
    (:func:`grade`), so ``grade_answer(extract_answer(t), p) == grade(t, p)``
    for every text ``t``.
    """
    if not isinstance(answer, str):
        return False
    lines = answer.split(DERIVATION_SEPARATOR)
    return grade("".join(line + STEP_DELIMITER for line in lines), problem)


def check_steps(problem: Problem, text: str) -> list[bool]:
    """Exact validity of each step (one verdict per `split_steps` step).

    A step ``a op b=c, left L`` is valid when ``a`` and ``b`` are two numbers
    of the state, ``c`` is their legal result (module rules) and ``L`` is the
    state with them replaced by ``c``, sorted. ``#### n`` is valid when the
    state is ``(problem.target,)`` and ``n`` equals it. The first state is the
    question's numbers, each later one what the previous step wrote (as in
    the arithmetic task), so a step after a wrong one can be valid. Nothing
    after a ``####`` line, and no empty or malformed line, is valid. Validity
    is not progress: a legal step into a dead end is valid here and False in
    :func:`reachable_after_steps`.

    Args:
      problem: the problem.
      text: a solution, e.g. a model output (any string).

    Returns:
      One bool per step.
    """
    state, verdicts = problem.numbers, []
    for step in split_steps(text if isinstance(text, str) else ""):
        line = step[:-len(STEP_DELIMITER)] if step.endswith(STEP_DELIMITER) else step
        if line.startswith("####"):
            value = _parse_int(line[4:]) if len(line) <= _MAX_LINE_CHARS else None
            verdicts.append(state == (problem.target,) and value == problem.target)
            state = None
            continue
        parsed = _parse_step(line)
        if parsed is None:
            verdicts.append(False)
            state = None
            continue
        (a, op, b, c, left), ok = parsed, False
        if state is not None and _apply(a, op, b, problem.max_value) == c:
            rest = list(state)
            if a in rest:
                rest.remove(a)
                if b in rest:
                    rest.remove(b)
                    ok = left == tuple(sorted(rest + [c]))
        verdicts.append(ok)
        state = tuple(sorted(left))
    return verdicts


def reachable_after_steps(problem: Problem, text: str) -> list[bool]:
    """The ideal value function: whether the target is still reachable after each step.

    Step ``i`` is True when steps ``0..i`` are all valid (:func:`check_steps`)
    and the numbers left after step ``i`` can still reach the target; the
    ``####`` line is True when it is valid. From the first invalid step on,
    every verdict is False (such a derivation can no longer be graded right).

    Args:
      problem: the problem.
      text: a solution, e.g. a model output (any string).

    Returns:
      One bool per step of `split_steps`.
    """
    verdicts, memo, alive = [], {}, True
    for step, ok in zip(split_steps(text if isinstance(text, str) else ""),
                        check_steps(problem, text)):
        alive = alive and ok
        if alive and not step.startswith("####"):
            left = _parse_step(step.rstrip(STEP_DELIMITER))[4]
            alive = _analyse(left, problem.target, problem.max_value, memo)[0] > 0
        verdicts.append(alive)
    return verdicts


def grade(text: Optional[str], problem: Problem) -> bool:
    """Whether ``text`` is a complete valid derivation of ``problem.target``.

    True only when every step is valid and the last is a valid ``####`` line
    (so every number was used and the target reached). Writing ``#### 24``
    without a derivation is worth nothing: the answer is in the question.
    """
    if not isinstance(text, str):
        return False
    verdicts = check_steps(problem, text)
    return bool(verdicts) and all(verdicts) and split_steps(text)[-1].startswith("####")


@_task_base.register
class CountdownTask(_task_base.Task):
    """Countdown behind the `Task` interface; `grade` needs a valid derivation.

    An answer is a canonical derivation (:func:`extract_answer`), not the
    target every candidate claims: `is_equiv` is equality of derivations and
    `grade_answer` checks one against the problem.

    :func:`check_steps` is the exact step checker, :func:`reachable_after_steps`
    the ideal value function (an oracle PRM).
    """

    name = "countdown"
    step_delimiter = STEP_DELIMITER
    reference_solutions = True

    def __init__(self, config: CountdownConfig = CountdownConfig()):
        if not isinstance(config, CountdownConfig):
            raise TypeError(f"CountdownTask takes a CountdownConfig, got {type(config).__name__}")
        self.config = config

    def problems(self, num: Optional[int], seed: int) -> list[Problem]:
        if num is None:
            raise ValueError("the countdown task is generated: give a problem count")
        return generate(self.config, num, seed)

    def prompt(self, problem: Problem) -> str:
        return prompt(problem)

    def extract_answer(self, text: Optional[str]) -> Optional[str]:
        return extract_answer(text)

    def is_equiv(self, predicted: Optional[str], target: str) -> bool:
        # Answers are canonical derivations: equal texts, equal solutions.
        return isinstance(predicted, str) and predicted == target

    def grade(self, text: Optional[str], problem: Problem) -> bool:
        return grade(text, problem)

    def grade_answer(self, answer: Optional[str], problem: Problem) -> bool:
        return grade_answer(answer, problem)

    def max_prompt_chars(self) -> int:
        c = self.config  # "Reach T from a b c d\n"
        return (len(QUESTION_PREFIX) + len(str(c.max_target)) + len(" from ")
                + c.max_numbers * (len(str(c.max_number)) + 1))

    def check_steps(self, problem: Problem, text: str) -> list[bool]:
        return check_steps(problem, text)

    def reachable_after_steps(self, problem: Problem, text: str) -> list[bool]:
        return reachable_after_steps(problem, text)

    def oracle_values(self, problem: Problem, text: str) -> list[bool]:
        # A valid step into a dead end can no longer be completed: the
        # oracle scores the ideal value, not step validity.
        return reachable_after_steps(problem, text)

    def drill(self, problem: Problem, seed: int) -> tuple[str, str]:
        return drill(problem, seed)

    def difficulty_features(self, problem: Problem) -> dict:
        return {"n_numbers": problem.n_numbers, "n_solutions": problem.n_solutions,
                "solve_rate": problem.solve_rate}
