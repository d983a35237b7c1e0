"""The `Task` interface and its registry, over every registered task."""

import os

import pytest

from ttcjax import tasks
from ttcjax.tasks import arithmetic, base

_MATH500 = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                        "data", "math500", "test.jsonl")


def test_registry_lists_tasks_and_names_them_on_a_typo():
  assert {"arithmetic", "math"} <= set(tasks.registered())
  with pytest.raises(ValueError, match="unknown task 'arithmetik'.*arithmetic"):
    tasks.get("arithmetik")


def test_register_refuses_a_second_class_under_one_name():
  with pytest.raises(ValueError, match="registered twice"):
    @base.register
    class Other(arithmetic.ArithmeticTask):  # pylint: disable=unused-variable
      pass


def test_arithmetic_task_round_trips_its_reference_solutions():
  task = tasks.get("arithmetic")
  problems = task.problems(20, seed=3)
  assert [p.uid for p in problems] == [p.uid for p in arithmetic.generate(
      arithmetic.ArithmeticConfig(), 20, 3)]
  assert task.has_step_checker
  for p in problems:
    assert task.prompt(p) == arithmetic.prompt(p)
    assert task.grade(p.solution, p)
    assert "".join(task.split_steps(p.solution)) == p.solution
    assert task.check_steps(p, p.solution) == [True] * len(task.split_steps(p.solution))
  p = problems[0]
  wrong = p.solution.replace(f"#### {p.answer}", f"#### {int(p.answer) + 1}")
  assert not task.grade(wrong, p)
  assert task.check_steps(p, wrong)[-1] is False
  assert task.is_equiv("057", "57") and not task.is_equiv(None, "57")


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
def test_grade_answer_of_the_extracted_answer_is_grade(name):
  """Records and MC labels grade extracted answers: the verdict of the text."""
  task = tasks.get(name)
  for p in task.problems(30, seed=5):
    wrong = p.solution.replace(f"#### {p.answer}", f"#### {int(p.answer) + 1}")
    for text in (p.solution, wrong, p.solution[:-3], "", None):
      assert task.grade_answer(task.extract_answer(text), p) is task.grade(text, p)
  assert not task.grade_answer(None, p)
  assert task.max_prompt_chars() >= max(len(task.prompt(q)) for q in
                                        task.problems(300, seed=0))


def test_reference_solutions_is_said_by_the_class_and_holds():
  """`Task.reference_solutions` (what a policy trains on) is read from the
  class before it is built; the tasks that claim it deliver it."""
  with_solutions = [n for n in tasks.registered()
                    if tasks.task_class(n).reference_solutions]
  assert with_solutions == ["arithmetic", "countdown"]
  assert tasks.task_class("math") is type(tasks.get("math", path="x"))
  for name in with_solutions:
    task = tasks.get(name)
    for p in task.problems(30, seed=1000):
      assert p.solution and task.grade(p.solution, p)
  with pytest.raises(ValueError, match="unknown task 'nope'"):
    tasks.task_class("nope")


def test_math_task_has_no_step_checker_and_reads_boxed_answers(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"problem": "1+1?", "answer": "2", "level": 1}\n'
                  '{"problem": "half?", "answer": "\\\\frac{1}{2}"}\n')
  task = tasks.get("math", path=str(path))
  problems = task.problems(None, seed=0)
  assert len(problems) == 2 and len(task.problems(1, seed=0)) == 1
  assert not task.has_step_checker
  assert task.check_steps(problems[0], "x\n\n") is None
  assert task.step_delimiter == "\n\n"
  assert task.split_steps("a\n\nb\n\n\\boxed{2}") == ["a\n\n", "b\n\n", "\\boxed{2}"]
  assert task.grade("so \\boxed{2}", problems[0])
  assert task.grade("\\boxed{0.5}", problems[1])
  assert not task.grade("no box", problems[0])


@pytest.mark.skipif(not os.path.exists(_MATH500),
                    reason="MATH-500 lives in ../shared/data (absent in a user's clone)")
def test_math_task_loads_math500():
  task = tasks.get("math", path=_MATH500)
  problems = task.problems(None, seed=0)
  assert len(problems) == 500
  assert all(task.grade(f"\\boxed{{{p.answer}}}", p) for p in problems)
