"""A synthetic step-by-step arithmetic task with controllable difficulty.

Problems are integer expressions over ``+``, ``-`` and ``*`` with standard
precedence: every multiplication is reduced before any addition or subtraction,
and among operations of the same rank the leftmost goes first. A reference
solution reduces exactly ONE operation per line and rewrites what remains::

    question:  Compute: 37+8*4-12
    solution:  8*4=32, so 37+32-12
               37+32=69, so 69-12
               69-12=57
               #### 57

Every line, including the final ``#### <answer>`` line, ends with
:data:`STEP_DELIMITER` (a newline), so ``"".join(split_steps(s)) == s``.

Intermediate values are never negative: generation resamples (with the same
seeded stream) any expression whose reduction would go below zero, so the text
never contains a unary minus. Strings are short (questions under ~40 bytes,
solutions at most ~120 with the default config) so byte-level models learn the
task in minutes on a CPU.

Everything here is pure Python: no jax, no numpy, and no ``eval``.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Optional, Union

from ttcjax.tasks import base as _task_base

STEP_DELIMITER = "\n"
ANSWER_PREFIX = "#### "
QUESTION_PREFIX = "Compute: "

_OPERATORS = "+-*"
_MAX_INT_CHARS = 32  # bounded int() parsing of untrusted model output
_TOKEN = re.compile(r"[0-9]+|[+\-*]")
_STEP = re.compile(r"([0-9]+)([+\-*])([0-9]+)=([0-9]+)(?:, so (.+))?")
_ATTEMPTS = 100


@dataclasses.dataclass(frozen=True)
class ArithmeticConfig:
    """How arithmetic problems are drawn.

    Each problem draws its number of operations uniformly from
    ``[min_ops, max_ops]`` and its operand width uniformly from
    ``[min_digits, max_digits]``, so one config spans easy (1 op, 1 digit) to
    hard problems.

    Attributes:
      min_ops: fewest operations in a problem (>= 1).
      max_ops: most operations in a problem (<= 8).
      min_digits: narrowest operand width in digits (>= 1).
      max_digits: widest operand width in digits (<= 6).
      operators: the operators to draw from, a non-empty subset of "+-*".
      max_mul_digits: width cap for the right operand of ``*``; keeps products
        (and so solution lengths) small.
    """

    min_ops: int = 1
    max_ops: int = 4
    min_digits: int = 1
    max_digits: int = 3
    operators: str = "+-*"
    max_mul_digits: int = 1

    def __post_init__(self):
        for name in ("min_ops", "max_ops", "min_digits", "max_digits", "max_mul_digits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ArithmeticConfig.{name} must be an int, got {value!r}")
        if not 1 <= self.min_ops <= self.max_ops <= 8:
            raise ValueError(
                f"ArithmeticConfig.min_ops/max_ops must satisfy 1 <= min_ops <= max_ops <= 8, "
                f"got min_ops={self.min_ops}, max_ops={self.max_ops}")
        if not 1 <= self.min_digits <= self.max_digits <= 6:
            raise ValueError(
                f"ArithmeticConfig.min_digits/max_digits must satisfy "
                f"1 <= min_digits <= max_digits <= 6, got min_digits={self.min_digits}, "
                f"max_digits={self.max_digits}")
        if self.max_mul_digits < 1:
            raise ValueError(
                f"ArithmeticConfig.max_mul_digits must be >= 1, got {self.max_mul_digits}")
        if (not isinstance(self.operators, str) or not self.operators
                or set(self.operators) - set(_OPERATORS)
                or len(set(self.operators)) != len(self.operators)):
            raise ValueError(
                f"ArithmeticConfig.operators must be a non-empty string of distinct "
                f"characters from {_OPERATORS!r}, got {self.operators!r}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One arithmetic problem.

    Attributes:
      uid: stable id, ``f"arith-{seed}-{index}"``.
      question: e.g. ``"Compute: 37+8*4-12"``.
      solution: the reference step-by-step solution, every line newline-ended.
      answer: the final value as a decimal string, e.g. ``"57"``.
      n_ops: number of operations in the expression (difficulty axis 1).
      digits: operand width in digits (difficulty axis 2).
    """

    uid: str
    question: str
    solution: str
    answer: str
    n_ops: int
    digits: int

    @property
    def expression(self) -> str:
        """The bare expression, without the question prefix."""
        return self.question[len(QUESTION_PREFIX):]


def _tokenize(expression: str) -> Optional[list]:
    """Splits ``"37+8*4"`` into ``[37, "+", 8, "*", 4]``; None if malformed."""
    if not expression or len(expression) > 512:
        return None
    parts = _TOKEN.findall(expression)
    if "".join(parts) != expression or len(parts) % 2 == 0:
        return None
    tokens = []
    for k, part in enumerate(parts):
        is_number = part.isdigit()
        if is_number != (k % 2 == 0) or (is_number and len(part) > _MAX_INT_CHARS):
            return None
        tokens.append(int(part) if is_number else part)
    return tokens


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _reduce_once(tokens: list) -> tuple[int, list]:
    """Reduces the first operation by precedence; returns (op index, new tokens)."""
    ops = tokens[1::2]
    k = 2 * ops.index("*") + 1 if "*" in ops else 1
    value = _apply(tokens[k - 1], tokens[k], tokens[k + 1])
    return k, tokens[:k - 1] + [value] + tokens[k + 2:]


def _render(tokens: list) -> str:
    return "".join(str(t) for t in tokens)


def evaluate(expression: str) -> Optional[int]:
    """Evaluates a ``+-*`` expression of non-negative integer literals.

    Args:
      expression: e.g. ``"37+8*4-12"`` (no spaces, no parentheses).

    Returns:
      The value with standard precedence, or None if the text is malformed.
    """
    tokens = _tokenize(expression)
    if tokens is None:
        return None
    while len(tokens) > 1:
        _, tokens = _reduce_once(tokens)
    return tokens[0]


def _solve(tokens: list) -> Optional[list[str]]:
    """Reference solution lines (without delimiters); None if a value goes negative."""
    lines = []
    while len(tokens) > 1:
        k, reduced = _reduce_once(tokens)
        value = reduced[k - 1]
        if value < 0:
            return None
        step = f"{tokens[k - 1]}{tokens[k]}{tokens[k + 1]}={value}"
        lines.append(step if len(reduced) == 1 else f"{step}, so {_render(reduced)}")
        tokens = reduced
    return lines + [f"{ANSWER_PREFIX}{tokens[0]}"]


def _number(rng: random.Random, digits: int) -> int:
    return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits)


def _draw(rng: random.Random, config: ArithmeticConfig, n_ops: int, digits: int) -> list:
    tokens = [_number(rng, digits)]
    for _ in range(n_ops):
        op = rng.choice(config.operators)
        width = min(digits, config.max_mul_digits) if op == "*" else digits
        tokens += [op, _number(rng, width)]
    return tokens


def generate(config: ArithmeticConfig, num_problems: int, seed: int) -> list[Problem]:
    """Draws arithmetic problems deterministically.

    Problem ``i`` uses its own ``random.Random(f"arith:{seed}:{i}")`` stream, so
    it is the same whatever ``num_problems`` is, across runs and platforms.

    Args:
      config: the difficulty distribution.
      num_problems: how many problems to draw (>= 0).
      seed: integer seed.

    Returns:
      ``num_problems`` problems with uids ``f"arith-{seed}-{i}"``.
    """
    if num_problems < 0:
        raise ValueError(f"num_problems must be >= 0, got {num_problems}")
    problems = []
    for i in range(num_problems):
        rng = random.Random(f"arith:{seed}:{i}")
        n_ops = rng.randint(config.min_ops, config.max_ops)
        digits = rng.randint(config.min_digits, config.max_digits)
        for _ in range(_ATTEMPTS):
            tokens = _draw(rng, config, n_ops, digits)
            lines = _solve(tokens)
            if lines is not None:
                break
        else:  # Vanishingly rare; '+' keeps every value non-negative.
            tokens = [t if t != "-" else "+" for t in tokens]
            lines = _solve(tokens)
        problems.append(Problem(
            uid=f"arith-{seed}-{i}",
            question=QUESTION_PREFIX + _render(tokens),
            solution="".join(line + STEP_DELIMITER for line in lines),
            answer=lines[-1][len(ANSWER_PREFIX):],
            n_ops=n_ops,
            digits=digits,
        ))
    return problems


def prompt(problem: Problem) -> str:
    """The model input: the question and a newline, after which steps follow."""
    return problem.question + STEP_DELIMITER


def split_steps(text: str) -> list[str]:
    """Splits a solution into steps, each keeping its trailing delimiter.

    ``"".join(split_steps(text)) == text`` always holds; the last step lacks a
    delimiter only if the text does not end with one.

    Args:
      text: a (possibly partial) solution.

    Returns:
      The steps, the final ``#### <answer>`` line included.
    """
    steps = text.split(STEP_DELIMITER)
    out = [s + STEP_DELIMITER for s in steps[:-1]]
    return out + [steps[-1]] if steps[-1] else out


def _parse_int(text: str) -> Optional[int]:
    text = text.strip()
    body = text[1:] if text[:1] in "+-" else text
    if not body or len(body) > _MAX_INT_CHARS or not body.isascii() or not body.isdigit():
        return None
    return int(text)


def extract_answer(text: Optional[str]) -> Optional[str]:
    """Returns the integer after the last ``####`` marker, stripped.

    Args:
      text: a model output.

    Returns:
      The answer text (e.g. ``"57"``), or None when there is no ``####`` or
      what follows it on that line is not an integer.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind("####")
    if start < 0:
        return None
    end = text.find(STEP_DELIMITER, start)
    answer = text[start + 4:end if end >= 0 else len(text)].strip()
    return answer if _parse_int(answer) is not None else None


def grade(prediction_text: Optional[str], problem_or_answer: Union[Problem, str, int]) -> bool:
    """Whether a model output's final answer equals the reference, as integers.

    Args:
      prediction_text: full model output (steps and ``#### <answer>`` line).
      problem_or_answer: a :class:`Problem`, or the reference answer itself.

    Returns:
      True iff an answer is present and equal to the reference.
    """
    target = problem_or_answer.answer if isinstance(problem_or_answer, Problem) else problem_or_answer
    target = target if isinstance(target, int) else _parse_int(str(target))
    predicted = extract_answer(prediction_text)
    return target is not None and predicted is not None and _parse_int(predicted) == target


def check_solution_steps(problem_or_expression: Union[Problem, str], text: str) -> list[bool]:
    """Checks each step of a solution against the expression before it.

    A reduction line ``a op b=c, so REST`` is correct when ``c`` is right, REST
    has one operation fewer than the previous expression and the same value
    (so the step respected precedence); the last reduction writes only
    ``a op b=c``. The ``#### n`` line is correct when ``n`` is the value of the
    previous expression. Each step is judged against the previous step as
    written, so a step after a wrong one can itself be correct.

    Args:
      problem_or_expression: the problem, or its bare expression.
      text: a solution, e.g. a model output.

    Returns:
      One bool per step of ``split_steps(text)`` (empty lines count as wrong).
    """
    expression = (problem_or_expression.expression
                  if isinstance(problem_or_expression, Problem) else problem_or_expression)
    previous = _tokenize(expression)
    verdicts = []
    for step in split_steps(text):
        line = step.rstrip(STEP_DELIMITER)
        if line.startswith(ANSWER_PREFIX):
            value = _parse_int(line[len(ANSWER_PREFIX):])
            ok = previous is not None and len(previous) == 1 and value == previous[0]
            verdicts.append(ok)
            previous = None
            continue
        match = _STEP.fullmatch(line) if len(line) <= 512 else None
        if match is None or previous is None:
            verdicts.append(False)
            previous = None if match is None else _tokenize(match.group(5) or match.group(4))
            continue
        a, op, b, c, rest = match.groups()
        claim_ok = (max(len(a), len(b), len(c)) <= _MAX_INT_CHARS
                    and _apply(int(a), op, int(b)) == int(c))
        current = _tokenize(rest if rest is not None else c)
        operands = [int(a), op, int(b)]
        # The step must rewrite one occurrence of "a op b" and keep the value,
        # which rules out reductions that ignore precedence.
        rewrites = any(
            previous[k - 1:k + 2] == operands
            and previous[:k - 1] + [int(c)] + previous[k + 2:] == current
            for k in range(1, len(previous), 2)) if claim_ok else False
        ok = rewrites and evaluate(_render(current)) == evaluate(_render(previous))
        verdicts.append(ok)
        previous = current
    return verdicts


@_task_base.register
class ArithmeticTask(_task_base.Task):
    """The arithmetic task behind the `Task` interface.

    Problems are drawn with :func:`generate` from ``config`` and a seed;
    answers are compared as integers; :func:`check_solution_steps` is the exact
    step checker.
    """

    name = "arithmetic"
    step_delimiter = STEP_DELIMITER
    reference_solutions = True

    def __init__(self, config: ArithmeticConfig = ArithmeticConfig()):
        if not isinstance(config, ArithmeticConfig):
            raise TypeError(f"ArithmeticTask takes a ArithmeticConfig, got {type(config).__name__}")
        self.config = config

    def problems(self, num: Optional[int], seed: int) -> list[Problem]:
        if num is None:
            raise ValueError("the arithmetic task is generated: give a problem count")
        return generate(self.config, num, seed)

    def prompt(self, problem: Problem) -> str:
        return prompt(problem)

    def extract_answer(self, text: Optional[str]) -> Optional[str]:
        return extract_answer(text)

    def is_equiv(self, predicted: Optional[str], target: str) -> bool:
        if predicted is None:
            return False
        a, b = _parse_int(predicted), _parse_int(str(target))
        return a is not None and a == b

    def split_steps(self, text: str) -> list[str]:
        return split_steps(text)

    def max_prompt_chars(self) -> int:
        c = self.config  # the prefix, (max_ops + 1) operands, the operators, "\n"
        return len(QUESTION_PREFIX) + (c.max_ops + 1) * c.max_digits + c.max_ops + 1

    def check_steps(self, problem: Problem, text: str) -> list[bool]:
        return check_solution_steps(problem, text)

    def difficulty_features(self, problem: Problem) -> dict:
        return {"n_ops": problem.n_ops, "digits": problem.digits}
