"""The oracle verifier: exact prefix correctness from a task's step checker,
on real arithmetic solutions and inside a search on the toy LM."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax import search, tasks, testing
from ttcjax.data import examples
from ttcjax.search import batching
from ttcjax.tasks import arithmetic
from ttcjax.tokenizer import ByteTokenizer
from ttcjax.verifiers import aggregate, oracle

TOK = ByteTokenizer()
TASK = tasks.get("arithmetic", config=arithmetic.ArithmeticConfig(max_ops=3))
STOPS = TOK.token_ids_ending_with("\n")


def _prompt(problem):
  return examples.prompt_ids(TOK, TASK.prompt(problem))


@pytest.fixture(scope="module")
def problems():
  return [p for p in TASK.problems(40, 5) if p.n_ops >= 2][:6]


@pytest.fixture(scope="module")
def verifier(problems):
  return oracle.task_verifier_fns(TASK, problems, _prompt, decode=TOK.decode,
                                  stop_ids=STOPS, max_len=256)


def _score(verifier, problems, texts):
  """Per row the oracle's step scores, through the search's own scorer."""
  prompts = [_prompt(p) for p in problems]
  solutions = [TOK.encode(t) for t in texts]
  ends = [batching.step_ends_of(s, 0, len(s), STOPS) for s in solutions]
  scores, read = batching.score_rows(verifier, prompts, solutions, ends)
  assert read == [len(p) + len(s) for p, s in zip(prompts, solutions)]
  return scores


def _wrong_at(solution: str, step: int) -> str:
  """`solution` with the result of reduction `step` off by one (the steps
  after it still follow from what it wrote)."""
  lines = solution.split("\n")
  left, right = lines[step].split("=", 1)
  value, rest = (right.split(", so ", 1) + [None])[:2]
  bad = str(int(value) + 1)
  lines[step] = f"{left}={bad}" + (f", so {rest}" if rest else "")
  return "\n".join(lines)


def test_reference_solutions_score_one_at_every_step(verifier, problems):
  scores = _score(verifier, problems, [p.solution for p in problems])
  for p, row in zip(problems, scores):
    assert row == [1.0] * len(arithmetic.split_steps(p.solution)), p.solution
    assert TASK.check_steps(p, p.solution) == [True] * len(row)


def test_a_wrong_step_zeroes_it_and_every_later_step(verifier, problems):
  texts, firsts = [], []
  for i, p in enumerate(problems):
    step = i % (p.n_ops - 1)  # a reduction step, not the last
    texts.append(_wrong_at(p.solution, step))
    firsts.append(step)
  scores = _score(verifier, problems, texts)
  for p, text, step, row in zip(problems, texts, firsts, scores):
    verdicts = TASK.check_steps(p, text)
    assert not verdicts[step] and all(verdicts[:step])
    assert row == [1.0] * step + [0.0] * (len(verdicts) - step), text
    # The process is wrong though the final answer is still right.
    assert TASK.grade(text, p)
  # 'last' aggregation: the whole solution is right.
  last = aggregate(np.asarray([r[-1:] for r in scores], np.float32),
                   np.ones((len(scores), 1), bool), "last")
  assert not last.any()


def test_a_cut_step_and_a_wrong_answer_line(verifier, problems):
  p = problems[0]
  lines = arithmetic.split_steps(p.solution)
  cut = "".join(lines[:-1]) + lines[-1][:3]  # "###" without the answer
  wrong_answer = "".join(lines[:-1]) + f"#### {int(p.answer) + 1}\n"
  right_steps = len(lines) - 1
  cut_scores, wrong_scores = _score(verifier, [p, p], [cut, wrong_answer])
  assert cut_scores == [1.0] * right_steps + [0.0]
  assert wrong_scores == [1.0] * right_steps + [0.0]


def test_positions_carry_the_last_step_end_and_padding_is_zero(problems):
  p = problems[0]
  prompt = _prompt(p)
  the_oracle = oracle.StepOracle(
      check_steps=TASK.check_steps, problems={tuple(prompt): p},
      decode=TOK.decode, stop_ids=frozenset(STOPS))
  bad = _wrong_at(p.solution, 0)
  ids = np.asarray(prompt + TOK.encode(bad) + [0, 0], np.int32)[None]
  mask = np.ones(ids.shape, bool)
  mask[0, -2:] = False
  scores = the_oracle.host_scores(ids, mask)[0]
  first_end = len(prompt) + bad.index("\n")
  assert (scores[:first_end] == 1.0).all()  # the prompt, and mid-step
  assert (scores[first_end:-2] == 0.0).all() and (scores[-2:] == 0).all()
  # The jitted callback gives the same.
  jitted = jax.jit(the_oracle.score_fn)(None, jnp.asarray(ids),
                                        jnp.asarray(mask))
  np.testing.assert_array_equal(jitted[0], scores)


def test_bad_inputs_fail_naming_the_problem(verifier, problems):
  with pytest.raises(Exception, match="no known problem's prompt"):
    _score(verifier, [TASK.problems(1, 999)[0]], ["1+1=2\n"])
  math_like = type("NoChecker", (tasks.base.Task,), {
      "name": "no_checker", "problems": None, "prompt": None,
      "extract_answer": None, "is_equiv": None})
  with pytest.raises(ValueError, match="no_checker.* has none"):
    oracle.task_verifier_fns(math_like(), problems, _prompt,
                             decode=TOK.decode, stop_ids=STOPS, max_len=64)


# --- In a search, on the toy LM ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ToyProblem:
  uid: str
  answer: str = "1"  # 7 + 7 + 7 mod 10: only the all-sevens path is right


def _toy_check_steps(problem, text):
  """Toy steps: a digit line is right when it is 7; the answer line `#d`
  when d is the digit sum mod 10 (what the toy LM writes)."""
  del problem
  verdicts, total = [], 0
  for line in text.split("\n")[:-1] if text.endswith("\n") else (
      text.split("\n")):
    if line.startswith("#"):
      verdicts.append(line[1:] == str(total % 10))
    else:
      verdicts.append(line == "7")
      total += int(line) if line.isdigit() else 0
  return verdicts


def _random_score_fn(params, tokens, token_mask):
  """A verifier that knows nothing: a fixed pseudo-random value per prefix."""
  del params
  code = jnp.cumsum(tokens.astype(jnp.float32) * 12.9898, axis=1)
  noise = jnp.sin(code + jnp.arange(tokens.shape[1]) * 78.233) * 43758.5453
  return jnp.where(token_mask, noise - jnp.floor(noise), 0.0)


def test_beam_with_the_oracle_finds_what_best_of_n_with_noise_misses():
  problems = [search.SearchProblem(f"toy-{i}", [testing.QUERY] * (1 + i % 3))
              for i in range(12)]
  toy = {tuple(p.prompt_ids): _ToyProblem(p.uid) for p in problems}
  exact = oracle.verifier_fns(_toy_check_steps, toy,
                              decode=testing.detokenize,
                              stop_ids=(testing.NL,), max_len=32)
  noise = search.VerifierFns(score_fn=_random_score_fn, params=None,
                             max_len=32)
  policy = testing.policy_fns(testing.lm_params({1: 0.7, 7: 0.3}))
  task = testing.task_fns()
  key = jax.random.key(0)

  def solved(strategy, verifier, **kw):
    config = search.make_config(strategy, problems_per_batch=4,
                                **kw)
    results = search.run_search(config, problems, 8, policy, verifier, task,
                                key)
    return sum(r.answer == "1" for r in results)

  beam = solved("beam", exact, beam_width=4)
  bon_noise = solved("best_of_n", noise, selection="weighted")
  bon_exact = solved("best_of_n", exact, selection="weighted")
  # Same samples for both best-of-N runs (keys fold uid, strategy, N):
  # the oracle picks the right one whenever one was sampled.
  assert bon_exact >= bon_noise
  # Measured: beam 8, best-of-N 1 (oracle) and 0 (noise) of 12.
  assert beam >= 8 and beam >= bon_exact + 4, (beam, bon_exact, bon_noise)



def test_countdown_oracle_scores_the_ideal_value_not_step_validity():
  """A valid Countdown step into a dead end scores 0: the oracle reads
  `Task.oracle_values` (reachability), not `check_steps` (validity)."""
  from ttcjax.tasks import countdown  # pylint: disable=g-import-not-at-top
  task = tasks.get("countdown")
  n, rate = countdown.solve((3, 4, 6, 8), 24, 999)
  problem = countdown.Problem(
      uid="p24", question="Reach 24 from 3 4 6 8", solution="", answer="24",
      numbers=(3, 4, 6, 8), target=24, max_value=999, n_solutions=n,
      solve_rate=rate, draws=1)
  prompt = lambda p: examples.prompt_ids(TOK, task.prompt(p))
  verifier = oracle.task_verifier_fns(task, [problem], prompt,
                                      decode=TOK.decode, stop_ids=STOPS,
                                      max_len=256)
  good = "8-6=2, left 2 3 4\n4*3=12, left 2 12\n12*2=24, left 24\n#### 24\n"
  dead = "8+6=14, left 3 4 14\n4*3=12, left 12 14\n"
  assert task.check_steps(problem, dead) == [True, True]  # valid steps
  solutions = [TOK.encode(t) for t in (good, dead)]
  ends = [batching.step_ends_of(s, 0, len(s), STOPS) for s in solutions]
  scores, _ = batching.score_rows(verifier, [prompt(problem)] * 2, solutions,
                                  ends)
  assert scores == [[1.0] * 4, [0.0, 0.0]]
  # The arithmetic task's oracle values are its step verdicts.
  p = TASK.problems(4, 5)[0]
  assert TASK.oracle_values(p, p.solution) == TASK.check_steps(p, p.solution)
