"""`ttcjax.training.roles`: the policy's data through the `Task` interface."""

import hashlib

import numpy as np
import pytest

from ttcjax import tasks, training
from ttcjax.data import examples
from ttcjax.models import ModelConfig
from ttcjax.tasks import arithmetic, countdown
from ttcjax.training import roles

TINY = ModelConfig(vocab_size=259, d_model=32, n_layers=1, n_heads=2,
                   n_kv_heads=1, d_ff=64, max_len=64)
# sha256 of the arithmetic policy batches of `_digest`, taken before the
# policy's data went through `ttcjax.tasks` (at c04a4df): the task path must
# build the very same bytes. Padded rows (some examples too long for
# max_len=64, so dropped) and packed rows.
ARITHMETIC_DIGESTS = {
    "padded": ("2548d16bdc76ddb918b1857e9be3c6bdef0e756018a7676b4d25f1e3d6fdb4af",
               arithmetic.ArithmeticConfig(max_ops=3, max_digits=2), False),
    "packed": ("962aea6c7ad92576ac1af3281fb2d5fa482d2f19623912d58b6dbc3efd7bf9e9",
               arithmetic.ArithmeticConfig(max_ops=2, max_digits=1), True),
}


def _policy_run(**data):
  return roles.TrainRun(
      role="policy", model=TINY,
      train=training.TrainConfig(objective="lm", total_steps=2,
                                 warmup_steps=1),
      data=roles.DataConfig(batch_size=4, train_examples=24, eval_examples=6,
                            shuffle_seed=3, **data))


def _digest(run) -> str:
  """sha256 over the train batches 0-1 and eval batch 0, keys in order."""
  train, eval_source = roles.numpy_sources(run, roles.make_tokenizer(run.data))
  h = hashlib.sha256()
  for batch in (train.get(0), train.get(1), eval_source.get(0)):
    for key in sorted(batch):
      h.update(key.encode())
      h.update(str(batch[key].dtype).encode())
      h.update(np.asarray(batch[key].shape, np.int64).tobytes())
      h.update(np.ascontiguousarray(batch[key]).tobytes())
  return h.hexdigest()


@pytest.mark.parametrize("spelling", ["alias", "task"])
@pytest.mark.parametrize("kind", sorted(ARITHMETIC_DIGESTS))
def test_arithmetic_policy_batches_are_unchanged(kind, spelling):
  digest, config, pack = ARITHMETIC_DIGESTS[kind]
  data = ({"arithmetic": config} if spelling == "alias" else
          {"task": "arithmetic", "task_config": config})
  assert _digest(_policy_run(pack=pack, **data)) == digest


def test_arithmetic_alias_is_task_config():
  config = arithmetic.ArithmeticConfig(max_ops=2)
  alias = roles.DataConfig(arithmetic=config)
  assert alias == roles.DataConfig(task="arithmetic", task_config=config)
  assert alias.task_config == config and alias.arithmetic is None
  # None is the task's default config.
  assert roles.DataConfig().make_task().config == arithmetic.ArithmeticConfig()


def test_countdown_policy_examples_are_prompt_then_reference_solution():
  config = countdown.CountdownConfig(max_numbers=3)
  run = _policy_run(task="countdown", task_config=config)
  tok = roles.make_tokenizer(run.data)
  task = tasks.get("countdown", config=config)
  problems = task.problems(6, run.data.eval_seed)
  want = [examples.reference_example(tok, task, p, 64) for p in problems]
  _, eval_source = roles.numpy_sources(run, tok)
  got = eval_source.arrays
  assert len(got["tokens"]) == len(want) == 6
  for i, (ex, p) in enumerate(zip(want, problems)):
    n = len(ex["tokens"])
    np.testing.assert_array_equal(got["tokens"][i, :n], ex["tokens"])
    np.testing.assert_array_equal(got["loss_weights"][i, :n],
                                  ex["loss_weights"])
    assert not got["token_mask"][i, n:].any()
    text = tok.decode(ex["tokens"][ex["loss_weights"] > 0])
    assert text == p.solution
    # max_len=64 cuts long prompts from the left.
    assert (task.prompt(p) + p.solution).endswith(tok.decode(ex["tokens"]))


def test_math_policy_fails_at_config_time_naming_the_field():
  roles.DataConfig(task="math")  # a DataConfig of the jsonl roles may say so
  with pytest.raises(ValueError) as e:
    _policy_run(task="math")
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("DataConfig.task='math' has no generated "
                            "reference solutions")
  assert "['arithmetic', 'countdown']" in message


@pytest.mark.parametrize("data, match", [
    ({"task": "arithmatic"}, r"DataConfig.task must be one of \("),
    ({"task": "countdown", "arithmetic": arithmetic.ArithmeticConfig()},
     r"DataConfig.arithmetic is an alias of DataConfig.task_config"),
    ({"task_config": arithmetic.ArithmeticConfig(),
      "arithmetic": arithmetic.ArithmeticConfig()},
     r"DataConfig.arithmetic is an alias"),
])
def test_bad_task_fields(data, match):
  with pytest.raises(ValueError, match=match):
    roles.DataConfig(**data)


def test_task_config_of_another_task_is_named():
  with pytest.raises(ValueError, match=r"DataConfig.task_config=Arithmetic"
                     r"Config\(.*\) does not configure task 'countdown'"):
    _policy_run(task="countdown", task_config=arithmetic.ArithmeticConfig())


def test_seqio_policy_source_matches_numpy_for_countdown():
  pytest.importorskip("seqio")
  run = _policy_run(task="countdown", source="seqio", max_len=64,
                    task_config=countdown.CountdownConfig(max_numbers=3))
  tok = roles.make_tokenizer(run.data)
  seqio_train, seqio_eval = roles.seqio_sources(run, tok)
  _, numpy_eval = roles.numpy_sources(run, tok)
  want, got = numpy_eval.get(0), seqio_eval.get(0)
  for key, value in want.items():
    length = value.shape[1]
    np.testing.assert_array_equal(got[key][:, :length], value, key)
    assert not got[key][:, length:].any()
  assert seqio_train.get(0)["tokens"].shape == (4, 64)
