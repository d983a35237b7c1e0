"""`ttcjax.training.roles`: the policy's data through the `Task` interface."""

import hashlib

import numpy as np
import pytest

from ttcjax import training
from ttcjax.models import ModelConfig
from ttcjax.tasks import arithmetic
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


@pytest.mark.parametrize("kind", sorted(ARITHMETIC_DIGESTS))
def test_arithmetic_policy_batches_are_unchanged(kind):
  digest, config, pack = ARITHMETIC_DIGESTS[kind]
  assert _digest(_policy_run(arithmetic=config, pack=pack)) == digest
