"""SIGTERM preemption (issue 14, part 2): the trainer saves at the next step
boundary and the rerun redoes no step, bit for bit; the stage runner stops
between chunks and stages. The CLI test (exit status 75, the sweep) is in
tests/experiments/test_reliability_cli.py."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from ttcjax import faults, preemption, testing, training
from ttcjax.experiments import stages
from ttcjax.training import trainer

@pytest.fixture(autouse=True)
def _clean_flag():
  preemption.uninstall()
  yield
  preemption.uninstall()


def _model():
  from ttcjax import models  # pylint: disable=g-import-not-at-top
  return models.ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4,
                            n_kv_heads=2, d_ff=64, max_len=16)


# log_every=5 and checkpoint_every=4: the preemption at step 7 falls
# between two records, so the pending metrics must travel in the checkpoint.
_TRAIN = training.TrainConfig(
    learning_rate=1e-2, warmup_steps=2, total_steps=12, weight_decay=0.01,
    clip_norm=1.0, eval_every=100, checkpoint_every=4, keep_checkpoints=2,
    log_every=5, write_tensorboard=False)


def _source():
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 32, (12, 16)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  return training.ArraySource(
      dict(tokens=tokens, token_mask=mask,
           loss_weights=mask.astype(np.float32)), batch_size=4, seed=1)


class _NoticeAt:
  """A source that receives the preemption notice when step `at` is read."""

  def __init__(self, source, at):
    self.source, self.at = source, at

  def get(self, step):
    if step == self.at:
      os.kill(os.getpid(), signal.SIGTERM)  # the real signal, caught
    return self.source.get(step)


def test_sigterm_handler_only_sets_the_flag():
  preemption.install()
  assert not preemption.requested()
  os.kill(os.getpid(), signal.SIGTERM)
  assert preemption.requested()
  with pytest.raises(preemption.Preempted, match="saved it"):
    preemption.check("saved it")


def test_trainer_saves_next_step_and_resume_is_exact(tmp_path):
  model = _model()
  params = testing.numpy_params(model, 3, stddev=None)
  params_a, history_a = training.train(model, _TRAIN, _source(), None,
                                       tmp_path / "a", init_params=params)
  preemption.install()
  with pytest.raises(preemption.Preempted, match=r"step 7/12 saved"):
    training.train(model, _TRAIN, _NoticeAt(_source(), 6), None,
                   tmp_path / "b", init_params=params)
  preemption.uninstall()
  steps = sorted(int(p.name) for p in (tmp_path / "b" / "checkpoints"
                                       ).iterdir() if p.name.isdigit())
  assert steps[-1] == 7, steps  # the step boundary after the notice
  trainer._train_step_fn.cache_clear()  # pylint: disable=protected-access
  jax.clear_caches()
  params_b, history_b = training.train(model, _TRAIN, _source(), None,
                                       tmp_path / "b")
  strip = lambda h: [{k: v for k, v in r.items() if k != "tokens_per_sec"}
                     for r in h]
  assert strip(history_b) == strip(history_a)
  for x, y in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
  lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [
      r["step"] for r in history_a]


def test_stage_runner_stops_between_chunks_and_resumes(tmp_path):
  calls = []

  def fn(ctx):
    def chunk(items):
      if not calls:
        preemption.request()  # the notice arrives during the first chunk
      calls.append(list(items))
      return [i * 2 for i in items]
    return {"out": ctx.map_chunks("x", list(range(6)), 2, chunk)}

  later = stages.Stage("later", lambda ctx: None)
  with pytest.raises(preemption.Preempted, match=r"s/x: 1 of 3 chunks"):
    stages.run_stages([stages.Stage("s", fn), later], tmp_path,
                      log=lambda _: None)
  assert calls == [[0, 1]]
  assert stages.read_done(tmp_path / "s") is None
  assert not (tmp_path / "LOCK").exists()
  preemption.uninstall()
  paths = stages.run_stages([stages.Stage("s", fn), later], tmp_path,
                            log=lambda _: None)
  assert calls == [[0, 1], [2, 3], [4, 5]]  # chunk 0 was not redone
  assert sorted(paths) == ["later", "s"]


def test_stage_runner_stops_before_the_next_stage(tmp_path):
  ran = []
  first = stages.Stage("first", lambda ctx: ran.append("first") or
                       preemption.request())
  second = stages.Stage("second", lambda ctx: ran.append("second"))
  with pytest.raises(preemption.Preempted, match="before second"):
    stages.run_stages([first, second], tmp_path, log=lambda _: None)
  assert ran == ["first"] and stages.read_done(tmp_path / "first")
  preemption.uninstall()
  stages.run_stages([first, second], tmp_path, log=lambda _: None)
  assert ran == ["first", "second"]


def test_exit_status_of_the_guard(capsys):
  with pytest.raises(SystemExit) as e:
    with faults.guard("prog"):
      raise preemption.Preempted("state of step 3 saved")
  assert e.value.code == faults.EXIT_PREEMPTED == 75
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["prog: preempted (SIGTERM): state of step 3 saved; rerun "
                 "the same command to resume"]
