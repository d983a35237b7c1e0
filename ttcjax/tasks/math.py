r"""MATH / MATH-500 problems: loading, ``\boxed{}`` extraction, equivalence.

Answers are judged by string normalisation after Hendrycks et al.'s MATH
``strip_string``/``is_equiv`` and Lightman et al.'s PRM800K grader, followed by
exact or tolerant numeric comparison and element-wise comparison of tuples,
intervals, sets, lists and matrices. There is no ``eval`` and no sympy: a
grader sees untrusted model output, so every function here is pure string and
integer logic whose work is bounded whatever the input:

* answers longer than :data:`MAX_ANSWER_CHARS` are compared only as strings
  with whitespace removed;
* numbers are parsed only from plain decimals and fractions of at most
  :data:`MAX_NUMBER_DIGITS` digits (no exponents are ever computed);
* element-wise comparison spends at most :data:`MAX_COMPARISONS` sub-comparisons;
* brace matching is a single linear scan, never recursion, and no regex here
  can backtrack catastrophically.

Conventions worth knowing: tuples and intervals compare in order with bracket
types kept (``[1,2)`` differs from ``(1,2)``); sets ``\{..\}`` and bare lists
``1,-2`` compare as multisets; ``1,000`` is one thousand (groups of exactly
three digits); integers compare exactly, other numbers within a relative
tolerance of 1e-6; purely alphabetic answers of three or more letters compare
case-insensitively.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from fractions import Fraction
from typing import Optional

from ttcjax.tasks import base as _task_base

MAX_ANSWER_CHARS = 1_000
MAX_NUMBER_DIGITS = 40
MAX_COMPARISONS = 2_000
REL_TOLERANCE = Fraction(1, 10**6)

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_TEXT = re.compile(r"\\(?:text|textbf|textrm|textit|textnormal|mbox|mathrm|mathbf|mathit"
                   r"|operatorname)\s*\{")
_SPACING = re.compile(r"\\\\|\\[,;:! ]")  # a "\\\\" row break matches first
_LEFT_RIGHT = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])")
_UNIT_POWER = re.compile(r"\s*\^\s*(?:\{\s*[23]\s*\}|[23])")
_UNITS = frozenset(
    "unit units cm centimeter centimeters meter meters km kilometer kilometers mm inch "
    "inches ft foot feet yard yards mile miles degree degrees second seconds minute "
    "minutes hour hours day days week weeks year years cent cents dollar dollars mph "
    "gram grams kg pound pounds liter liters ml gallon gallons percent radians".split())
_SCRIPT_BRACES = re.compile(r"([_^])\{([a-zA-Z0-9]+)\}")
_LEADING_POINT = re.compile(r"(?<![0-9.])\.(?=[0-9])")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"(-?)(\d+)(?:\.(\d+))?")
_SLASH_FRACTION = re.compile(r"(-?)(\d+)/(\d+)")
_NUM = r"(-?\d+(?:\.\d+)?)"
_FRACTION = re.compile(r"(-?)\\frac\{" + _NUM + r"\}\{" + _NUM + r"\}")
_MIXED = re.compile(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_SHORT_LHS = re.compile(r"[a-zA-Z](?:_\{?[a-zA-Z0-9]\}?)?|[a-zA-Z]{2}")
_MEMBER_OF = re.compile(r"^[a-zA-Z]\\in(?![a-zA-Z])")
_CHOICE = re.compile(r"\(([A-E])\)")
_MATRIX = re.compile(r"\\begin\{([pbvB]?matrix)\}(.*)\\end\{\1\}")
_ARG_COUNTS = {"\\frac": 2, "\\binom": 2, "\\sqrt": 1}


@dataclasses.dataclass(frozen=True)
class MathProblem:
    """One MATH problem.

    Attributes:
      uid: the row's ``unique_id``, else ``f"{basename}:{line_no}"``.
      problem: the problem statement (LaTeX).
      solution: the reference solution ("" when the file gives only an answer).
      answer: the reference final answer.
      level: difficulty 1-5; 0 when unknown ("Level ?").
      subject: the ``subject`` (MATH-500) or ``type`` (MATH) field.
    """

    uid: str
    problem: str
    solution: str
    answer: str
    level: int
    subject: str


def _parse_level(value, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        text = text[len("Level"):].strip() if text.startswith("Level") else text
        if text.isdigit() and len(text) < 4:
            return int(text)
        if text == "?":
            return 0
    raise ValueError(f"{where}: unrecognised 'level' {value!r}")


def load_jsonl(path) -> list[MathProblem]:
    """Reads MATH-style problems, one JSON object a line.

    Keys: ``problem``; ``solution`` and/or ``answer`` (when ``answer`` is absent
    it is the last ``\\boxed{}`` of the solution); ``level`` (``3`` or
    ``"Level 3"``); ``subject`` or ``type``; ``unique_id`` (optional).

    Args:
      path: the JSONL file.

    Returns:
      The problems in file order; blank lines are skipped.

    Raises:
      ValueError: naming ``path:line`` for a line that is not a JSON object,
        lacks ``problem``, or has neither a solution nor an answer.
    """
    path = os.fspath(path)
    basename = os.path.basename(path)
    problems = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 text (byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            problem = row.get("problem")
            if not isinstance(problem, str) or not problem.strip():
                raise ValueError(f"{where}: missing or empty 'problem'")
            solution = row.get("solution")
            solution = solution if isinstance(solution, str) else ""
            answer = row.get("answer")
            if isinstance(answer, (int, float)) and not isinstance(answer, bool):
                answer = str(answer)
            if not isinstance(answer, str) or not answer.strip():
                if not solution.strip():
                    raise ValueError(f"{where}: needs a 'solution' or an 'answer'")
                answer = extract_boxed(solution)
                if answer is None:
                    raise ValueError(f"{where}: no 'answer' and no \\boxed{{}} in 'solution'")
            problems.append(MathProblem(
                uid=str(row.get("unique_id") or f"{basename}:{line_no}"),
                problem=problem,
                solution=solution,
                answer=answer,
                level=_parse_level(row.get("level"), where),
                subject=str(row.get("subject") or row.get("type") or ""),
            ))
    return problems


def _group_end(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start``, or -1; skips ``\\{``/``\\}``."""
    depth, i, n = 0, start, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def extract_boxed(text: Optional[str]) -> Optional[str]:
    r"""Returns the content of the last ``\boxed{..}`` / ``\fbox{..}`` in ``text``.

    Also reads the space form ``\boxed 5`` (up to whitespace or ``$``) and, when
    there is no box at all, the rest of the line after the last ``####``.

    Args:
      text: a solution or model output.

    Returns:
      The stripped answer text, or None when there is none, the last box is
      never closed, or it is empty.
    """
    if not isinstance(text, str):
        return None
    start, command = max((text.rfind(c), c) for c in _BOX_COMMANDS)
    if start < 0:
        marker = text.rfind("####")
        if marker < 0:
            return None
        end = text.find("\n", marker)
        answer = text[marker + 4:end if end >= 0 else len(text)].strip()
        return answer or None
    i = j = start + len(command)
    while j < len(text) and text[j] in " \t":
        j += 1
    if j < len(text) and text[j] == "{":
        end = _group_end(text, j)
        answer = text[j + 1:end].strip() if end >= 0 else ""
    elif j > i:
        end = j
        while end < len(text) and text[end] not in " \t\r\n$":
            end += 1
        answer = text[j:end].rstrip(".,")
    else:
        answer = ""
    return answer or None


def _strip_text_groups(s: str) -> str:
    r"""Unwraps ``\text{..}``-like groups; a trailing wordy one is a unit and goes."""
    out, pos, has_value = [], 0, False
    while True:
        match = _TEXT.search(s, pos)
        if match is None:
            break
        end = _group_end(s, match.end() - 1)
        if end < 0:
            break
        content = s[match.end():end].strip()
        after = end + 1
        power = _UNIT_POWER.match(s, after)
        tail_end = power.end() if power else after
        has_value = has_value or bool(s[pos:match.start()].strip())
        is_unit = (has_value and not s[tail_end:].strip(" .")
                   and content.replace(" ", "").replace(".", "").isalpha())
        out.append(s[pos:match.start()])
        if is_unit:
            pos = tail_end
        else:
            out.append(content)
            has_value = has_value or bool(content)
            pos = after
    out.append(s[pos:])
    return "".join(out)


def _strip_unit_word(s: str) -> str:
    parts = s.rsplit(None, 1)
    if len(parts) == 2:
        word = _UNIT_POWER.sub("", parts[1]).rstrip(".").lower()
        if word in _UNITS and (parts[0][-1:].isdigit() or parts[0][-1:] == "}"):
            return parts[0]
    return s


def _respace(match: re.Match) -> str:
    text = match.group()
    return text if text == "\\\\" else "" if text == "\\!" else " "


def _tokens(s: str):
    i, n = 0, len(s)
    while i < n:
        if s[i] == "\\":
            j = i + 1
            while j < n and s[j].isalpha():
                j += 1
            j = max(j, min(i + 2, n))
            yield s[i:j]
            i = j
        else:
            yield s[i]
            i += 1


def _brace_arguments(s: str) -> str:
    r"""Braces single-token arguments: ``\frac12`` -> ``\frac{1}{2}``, ``\sqrt2``.

    One linear pass with an explicit stack of commands still awaiting arguments.
    """
    out = []
    depth = 0
    pending = []  # [depth, args_left, inside_brace_arg, inside_optional_arg]
    for t in _tokens(s):
        top = pending[-1] if pending else None
        if top is not None and top[0] == depth and top[3]:
            out.append(t)
            top[3] = t != "]"
            continue
        if top is not None and top[0] == depth and not top[2] and t not in "{}":
            if t == "[" and top[1] == 1 and out[-1] == "\\sqrt":
                out.append(t)
                top[3] = True
                continue
            out.append("{" + t + "}")
            top[1] -= 1
            if top[1] == 0:
                pending.pop()
            continue
        out.append(t)
        if t == "{":
            if top is not None and top[0] == depth and not top[2]:
                top[2] = True
            depth += 1
        elif t == "}":
            while pending and pending[-1][0] >= depth:
                pending.pop()
            depth -= 1
            if pending and pending[-1][0] == depth and pending[-1][2]:
                pending[-1][2] = False
                pending[-1][1] -= 1
                if pending[-1][1] == 0:
                    pending.pop()
        elif t in _ARG_COUNTS:
            pending.append([depth, _ARG_COUNTS[t], False, False])
    return "".join(out)


def _canonical_decimal(s: str) -> str:
    match = _DECIMAL.fullmatch(s)
    if match is None:
        return s
    sign, whole, frac = match.groups()
    whole = whole.lstrip("0") or "0"
    frac = (frac or "").rstrip("0")
    body = f"{whole}.{frac}" if frac else whole
    return body if body == "0" else sign + body


def normalize_answer(s: Optional[str]) -> str:
    r"""Canonicalises a final answer so equal answers become equal strings.

    Follows MATH's ``strip_string`` and PRM800K's normaliser: drops ``\left``,
    ``\right``, ``\!``-style spacing, ``$``, ``\%``, degree signs, text units
    (``5 \text{ cm}`` -> ``5``) and whitespace; ``\dfrac``/``\tfrac`` ->
    ``\frac``; braces single-token arguments (``\frac12``, ``\sqrt2``); drops a
    short left-hand side (``x = 5`` -> ``5``); writes ``.5`` as ``0.5``,
    ``1,000`` as ``1000``, ``2.50`` as ``2.5`` and ``3/4`` as ``\frac{3}{4}``.

    Args:
      s: an answer (None reads as "").

    Returns:
      The normalised string. Over :data:`MAX_ANSWER_CHARS` characters only the
      whitespace is removed.
    """
    if s is None:
        return ""
    s = str(s)
    if len(s) > MAX_ANSWER_CHARS:
        return "".join(s.split())
    s = s.replace("\n", " ").replace("~", " ").replace("\\displaystyle", "")
    s = _SPACING.sub(_respace, s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\dbinom", "\\binom")
    s = _LEFT_RIGHT.sub("", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _strip_unit_word(_strip_text_groups(s).strip())
    s = "".join(s.split())
    for degree in ("^{\\circ}", "^\\circ", "\\circ", "\\degree", "°"):
        s = s.replace(degree, "")
    s = s.rstrip(".")
    if s.count("=") == 1:
        lhs, rhs = s.split("=")
        if rhs and _SHORT_LHS.fullmatch(lhs):
            s = rhs
    else:
        s = _MEMBER_OF.sub("", s, count=1)
    s = _brace_arguments(s)
    s = _SCRIPT_BRACES.sub(r"\1\2", s)
    s = _LEADING_POINT.sub("0.", s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _canonical_decimal(s)
    match = _SLASH_FRACTION.fullmatch(s)
    if match is not None:
        s = f"{match[1]}\\frac{{{match[2]}}}{{{match[3]}}}"
    match = _CHOICE.fullmatch(s)
    return match[1] if match else s


def _fraction(text: str) -> Optional[Fraction]:
    if len(text.replace("-", "").replace(".", "")) > MAX_NUMBER_DIGITS:
        return None
    return Fraction(text)


def _to_number(s: str) -> Optional[Fraction]:
    """Parses a normalised plain number or simple fraction; None otherwise."""
    if len(s) > 3 * MAX_NUMBER_DIGITS:
        return None
    if _DECIMAL.fullmatch(s):
        return _fraction(s)
    match = _FRACTION.fullmatch(s)
    if match is not None:
        num, den = _fraction(match[2]), _fraction(match[3])
        if num is None or not den:
            return None
        return -num / den if match[1] else num / den
    match = _MIXED.fullmatch(s)
    if match is not None and int(match[4]) != 0:
        value = int(match[2]) + Fraction(int(match[3]), int(match[4]))
        return -value if match[1] else value
    return None


def _close(x: Fraction, y: Fraction) -> bool:
    if x == y:
        return True
    if x.denominator == 1 and y.denominator == 1:
        return False
    return abs(x - y) <= REL_TOLERANCE * max(abs(x), abs(y))


def _split_top_level(s: str, separator: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and s.startswith(separator, i) and depth == 0:
            parts.append(s[start:i])
            i = start = i + len(separator)
            continue
        if c == "\\":
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == separator and depth == 0:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    return parts + [s[start:]]


def _wrapped(s: str) -> bool:
    """Whether the bracket opening ``s`` is the one closing it."""
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False
    return depth == 0


def _structure(s: str):
    """(kind, elements, ordered) for a compound answer, else None."""
    matrix = _MATRIX.fullmatch(s)
    if matrix is not None:
        rows = [_split_top_level(row, "&") for row in _split_top_level(matrix[2], "\\\\")]
        return (matrix[1], tuple(len(r) for r in rows)), [c for r in rows for c in r], True
    pieces = _split_top_level(s, "\\cup")
    if len(pieces) > 1:
        return "cup", pieces, True
    if s.startswith("\\{") and s.endswith("\\}") and len(s) > 4:
        return "set", _split_top_level(s[2:-2], ","), False
    if len(s) > 2 and s[0] in "([" and s[-1] in ")]" and _wrapped(s):
        elements = _split_top_level(s[1:-1], ",")
        return (s[0] + s[-1], elements, True) if len(elements) > 1 else None
    elements = _split_top_level(s, ",")
    return ("list", elements, False) if len(elements) > 1 else None


class _Judge:
    """One is_equiv call: a budget of sub-comparisons and a normalisation memo."""

    def __init__(self):
        self.calls_left = MAX_COMPARISONS
        self.normal = {}

    def _normalize(self, s: str) -> str:
        if s not in self.normal:
            self.normal[s] = normalize_answer(s)
        return self.normal[s]

    def equiv(self, a: str, b: str) -> bool:
        self.calls_left -= 1
        if self.calls_left < 0:
            return False
        if len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
            return "".join(a.split()) == "".join(b.split())
        na, nb = self._normalize(a), self._normalize(b)
        if not na or not nb:
            return False
        if na == nb:
            return True
        if na.isalpha() and nb.isalpha() and len(na) >= 3 and na.lower() == nb.lower():
            return True
        x, y = _to_number(na), _to_number(nb)
        if x is not None and y is not None:
            return _close(x, y)
        sa, sb = _structure(na), _structure(nb)
        if sa is None or sb is None or sa[0] != sb[0] or len(sa[1]) != len(sb[1]):
            return False
        if sa[2]:
            return all(self.equiv(p, q) for p, q in zip(sa[1], sb[1]))
        unused = list(sb[1])
        for p in sa[1]:
            hit = next((k for k, q in enumerate(unused) if self.equiv(p, q)), None)
            if hit is None:
                return False
            unused.pop(hit)
        return True


def is_equiv(pred: Optional[str], target: Optional[str]) -> bool:
    r"""Whether a predicted final answer matches the reference one.

    Args:
      pred: the predicted answer, e.g. ``extract_boxed(model_output)``; None
        (no answer found) is never equivalent.
      target: the reference answer.

    Returns:
      True when the normalised strings are equal, the values are numerically
      equal (integers exactly, others within relative 1e-6), or the compound
      answers (tuple, interval, set, list, union, matrix) match element-wise.
      Takes bounded time on any input.
    """
    if pred is None or target is None:
        return False
    return _Judge().equiv(str(pred), str(target))


@_task_base.register
class MathTask(_task_base.Task):
    """MATH / MATH-500 behind the `Task` interface.

    Problems come from a MATH-style jsonl (:func:`load_jsonl`); the answer is
    the last ``\\boxed{}`` of the output, judged by :func:`is_equiv`. Steps
    end with a blank line, as in huggingface/search-and-learn. There is no
    exact step checker.
    """

    name = "math"
    step_delimiter = "\n\n"

    def __init__(self, path: str):
        self.path = path

    def problems(self, num: Optional[int], seed: int) -> list[MathProblem]:
        del seed  # file order
        loaded = load_jsonl(self.path)
        return loaded if num is None else loaded[:num]

    def prompt(self, problem: MathProblem) -> str:
        return problem.problem + "\n"

    def extract_answer(self, text: Optional[str]) -> Optional[str]:
        return extract_boxed(text)

    def is_equiv(self, predicted: Optional[str], target: str) -> bool:
        return is_equiv(predicted, target)

    def difficulty_features(self, problem: MathProblem) -> dict:
        return {"level": problem.level, "subject": problem.subject}
