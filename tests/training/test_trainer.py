"""The train loop: optimisation, sharding, exact resume, early stopping."""

import json
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from ttcjax import testing
from ttcjax import checkpoint, models, partitioning, training
from ttcjax.training import optimizers, trainer

_CONFIG = models.ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4,
                             n_kv_heads=2, d_ff=64, max_len=16)
_L = 16
# One optimizer setup shared by most tests, so they share a compiled step.
_TRAIN = training.TrainConfig(
    learning_rate=1e-2, warmup_steps=2, total_steps=12,
    final_learning_rate_ratio=0.1, weight_decay=0.01, clip_norm=1.0,
    eval_every=4, eval_batches=1, checkpoint_every=4, keep_checkpoints=3,
    log_every=1, write_tensorboard=False)


def _tiny_params(config, seed):
  """Numpy params shaped like the model's init (no init compile needed)."""
  return testing.numpy_params(config, seed, stddev=None)


def _lm_arrays(rows, seed, prompt=3):
  """Random sequences, right-padded, loss on the tokens after a prompt."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 32, (rows, _L)).astype(np.int32)
  lengths = rng.integers(_L // 2, _L + 1, rows)
  mask = np.arange(_L)[None] < lengths[:, None]
  tokens[~mask] = 0
  weights = (mask & (np.arange(_L)[None] >= prompt)).astype(np.float32)
  return dict(tokens=tokens, token_mask=mask, loss_weights=weights)


def _assert_bitwise_equal(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


class _Killed(Exception):
  pass


class _KilledAt:
  """A source that dies when asked for step `at`, like a preempted job."""

  def __init__(self, source, at):
    self.source, self.at = source, at

  def get(self, step):
    if step == self.at:
      raise _Killed(step)
    return self.source.get(step)


# ---------------------------------------------------------------- config --


@pytest.mark.parametrize("field, value", [
    ("objective", "orm"), ("learning_rate", 0.0), ("warmup_steps", 13),
    ("total_steps", 0), ("weight_decay", -1.0), ("clip_norm", 0.0),
    ("b1", 1.0), ("b2", -0.1), ("eval_every", 0), ("eval_batches", 1.5),
    ("checkpoint_every", 0), ("keep_checkpoints", 0),
    ("early_stopping_patience", 0), ("log_every", True), ("seed", "0"),
    ("final_learning_rate_ratio", 2.0),
])
def test_config_errors_name_the_field(field, value):
  with pytest.raises(ValueError, match=f"TrainConfig.{field} "):
    _TRAIN.replace(**{field: value})


def test_train_refuses_inconsistent_setup(tmp_path):
  source = training.ArraySource(_lm_arrays(4, 0), 4)
  with pytest.raises(ValueError, match="reward_head=True"):
    training.train(_CONFIG, _TRAIN.replace(objective="reward"), source, None,
                   tmp_path)
  with pytest.raises(ValueError, match="early_stopping_patience.*eval_source"):
    training.train(_CONFIG, _TRAIN.replace(early_stopping_patience=2), source,
                   None, tmp_path)
  reward_config = _CONFIG.replace(reward_head=True)
  with pytest.raises(ValueError, match="add_reward_head"):
    training.train(reward_config, _TRAIN.replace(objective="reward"), source,
                   None, tmp_path, init_params=_tiny_params(_CONFIG, 0))
  with pytest.raises(ValueError, match=r"lacks \['reward_targets'"):
    training.train(reward_config, _TRAIN.replace(objective="reward"), source,
                   None, tmp_path,
                   init_params=_tiny_params(reward_config, 0))


def test_import_is_light():
  code = ("import sys, ttcjax.training; "
          "print('tensorflow' in sys.modules, 'clu' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True).stdout.split()
  assert out == ["False", "False"]


# ------------------------------------------------------------- optimizer --


def test_schedule_warms_up_then_decays_to_end():
  config = _TRAIN.replace(learning_rate=1.0, warmup_steps=4, total_steps=14,
                          final_learning_rate_ratio=0.1)
  lr = optimizers.learning_rate_schedule(config)
  np.testing.assert_allclose([lr(s) for s in range(5)],
                             [0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(lr(9), 0.1 + 0.9 * 0.5, rtol=1e-6)  # halfway
  np.testing.assert_allclose(lr(14), 0.1, rtol=1e-6)
  np.testing.assert_allclose(lr(100), 0.1, rtol=1e-6)
  values = [float(lr(s)) for s in range(4, 15)]
  assert all(a > b for a, b in zip(values, values[1:]))
  no_warmup = optimizers.learning_rate_schedule(config.replace(warmup_steps=0))
  np.testing.assert_allclose(no_warmup(0), 1.0)


def test_decay_mask_excludes_norms_and_biases():
  config = _CONFIG.replace(qkv_bias=True, reward_head=True,
                           tie_embeddings=False)
  params = _tiny_params(config, 0)
  mask = optimizers.decay_mask(params)
  flat = {jax.tree_util.keystr(p): m
          for p, m in jax.tree_util.tree_leaves_with_path(mask)}
  for key, decayed in flat.items():
    assert decayed == (not key.endswith(("['scale']", "['bias']"))), key
  assert flat["['layer_0']['attn']['q_proj']['bias']"] is False
  assert flat["['reward_head']['bias']"] is False
  assert flat["['final_norm']['scale']"] is False
  assert flat["['embedding']"] and flat["['lm_head']['kernel']"]
  # Through the chain: a zero gradient decays kernels only.
  opt = optimizers.make_optimizer(_TRAIN.replace(weight_decay=0.5,
                                                 warmup_steps=0))
  zeros = jax.tree.map(np.zeros_like, params)
  updates, _ = jax.jit(opt.update)(zeros, opt.init(params), params)
  for key, update in ((jax.tree_util.keystr(p), u) for p, u in
                      jax.tree_util.tree_leaves_with_path(updates)):
    assert bool(np.any(update)) == flat[key], key


# ---------------------------------------------------------------- source --


def test_array_source_is_deterministic_and_drops_nothing():
  arrays = {"x": np.arange(10), "y": np.arange(10) * 2}
  source = training.ArraySource(arrays, batch_size=4, seed=3)
  seen = np.concatenate([source.get(s)["x"] for s in range(5)])  # 2 epochs
  assert sorted(seen[:10]) == list(range(10))
  assert sorted(seen[10:]) == list(range(10))
  assert not np.array_equal(seen[:10], seen[10:])  # reshuffled per epoch
  again = training.ArraySource(arrays, batch_size=4, seed=3)
  np.testing.assert_array_equal(again.get(3)["x"], source.get(3)["x"])
  np.testing.assert_array_equal(source.get(2)["y"], source.get(2)["x"] * 2)
  big = training.ArraySource(arrays, batch_size=25)
  assert sorted(big.get(0)["x"][:20]) == sorted(list(range(10)) * 2)
  with pytest.raises(ValueError, match="leading size"):
    training.ArraySource({"x": np.zeros(3), "y": np.zeros(4)}, 2)


# ------------------------------------------------------------- training --


def test_memorises_a_batch_from_random_init(tmp_path):
  source = training.ArraySource(_lm_arrays(8, 0), batch_size=8)
  config = _TRAIN.replace(total_steps=30, warmup_steps=2, eval_every=10,
                          checkpoint_every=10)
  params, history = training.train(_CONFIG, config, source, source,
                                   tmp_path)
  losses = [r["loss"] for r in history]
  assert [r["step"] for r in history] == list(range(1, 31))
  assert losses[-1] < 0.3 * losses[0], losses
  assert history[-1]["eval_loss"] < 0.3 * history[9]["eval_loss"]
  assert {"learning_rate", "grad_norm", "accuracy",
          "tokens_per_sec"} <= history[0].keys()
  restored_config, restored = checkpoint.restore(tmp_path / "final")
  assert restored_config == _CONFIG
  assert checkpoint.load_step(tmp_path / "final") == 30
  _assert_bitwise_equal(params, restored)
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["loss"] for line in lines] == losses


def test_exact_resume_is_bitwise(tmp_path):
  init = _tiny_params(_CONFIG, 1)
  source = training.ArraySource(_lm_arrays(12, 1), batch_size=4, seed=1)
  params_a, history_a = training.train(_CONFIG, _TRAIN, source, None,
                                       tmp_path / "a", init_params=init)
  # Killed after steps 9 and 10 ran and were logged; the last checkpoint is 8.
  with pytest.raises(_Killed):
    training.train(_CONFIG, _TRAIN, _KilledAt(source, 10), None,
                   tmp_path / "b", init_params=init)
  assert (tmp_path / "b" / "checkpoints" / "8").exists()
  # As in a fresh process: nothing compiled survives.
  trainer._train_step_fn.cache_clear()
  jax.clear_caches()
  # Resuming ignores init_params: the checkpoint has the state.
  params_b, history_b = training.train(_CONFIG, _TRAIN, source, None,
                                       tmp_path / "b",
                                       init_params=_tiny_params(_CONFIG, 9))
  losses_a = [(r["step"], r["loss"]) for r in history_a]
  assert [(r["step"], r["loss"]) for r in history_b] == losses_a
  _assert_bitwise_equal(params_a, params_b)
  lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == list(range(1, 13))
  # A finished run returns its result without training further.
  params_c, history_c = training.train(_CONFIG, _TRAIN, _KilledAt(source, 12),
                                       None, tmp_path / "b")
  _assert_bitwise_equal(params_a, params_c)
  assert [(r["step"], r["loss"]) for r in history_c] == losses_a


def test_sharded_step_matches_single_device(tmp_path):
  assert jax.device_count() == 8, "tests expect 8 host devices (XLA_FLAGS)"
  mesh = partitioning.make_mesh(
      partitioning.MeshConfig(data=2, fsdp=2, model=2))
  init = _tiny_params(_CONFIG, 2)
  source = training.ArraySource(_lm_arrays(8, 2), batch_size=8)
  # A small step size: Adam's first updates are ~lr * sign(g), so tiny
  # reduction-order differences in near-zero gradients move params by ~lr.
  config = _TRAIN.replace(learning_rate=1e-3, total_steps=4,
                          checkpoint_every=4)
  single, history_1 = training.train(_CONFIG, config, source, None,
                                     tmp_path / "one", init_params=init)
  sharded, history_8 = training.train(_CONFIG, config, source, None,
                                      tmp_path / "mesh", mesh=mesh,
                                      init_params=init)
  assert partitioning.sharded_fraction(sharded) > 0.9
  np.testing.assert_allclose([r["loss"] for r in history_8],
                             [r["loss"] for r in history_1], atol=1e-5)
  chex.assert_trees_all_close(jax.device_get(sharded),
                              jax.device_get(single), atol=1e-5)


def test_early_stopping_returns_best_params(tmp_path):
  arrays = _lm_arrays(8, 3)
  train_source = training.ArraySource(arrays, batch_size=8)

  class Rigged:
    """The train batch for the first two evals, unlearnable noise after."""

    def __init__(self):
      self.calls = 0
      self.noise = _lm_arrays(8, 4)

    def get(self, i):
      assert i == 0
      self.calls += 1
      return arrays if self.calls <= 2 else self.noise

  config = _TRAIN.replace(total_steps=12, eval_every=2, checkpoint_every=4,
                          early_stopping_patience=2)
  rigged = Rigged()
  params, history = training.train(_CONFIG, config, train_source, rigged,
                                   tmp_path,
                                   init_params=_tiny_params(_CONFIG, 3))
  evals = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
  assert [s for s, _ in evals] == [2, 4, 6, 8]  # stopped after 2 bad evals
  assert history[-1]["step"] == 8
  assert evals[1][1] < evals[0][1] and evals[1][1] < min(evals[2][1],
                                                          evals[3][1])
  assert checkpoint.load_step(tmp_path / "final") == 4
  assert checkpoint.load_step(tmp_path / "best") == 4
  _assert_bitwise_equal(params, checkpoint.restore(tmp_path / "best")[1])
  assert (tmp_path / "checkpoints" / "8").exists()  # saved when it stopped
  # Re-running a stopped run neither trains nor evaluates again.
  calls = rigged.calls
  again, history_again = training.train(
      _CONFIG, config, _KilledAt(train_source, 8), rigged, tmp_path)
  assert rigged.calls == calls and history_again == history
  _assert_bitwise_equal(params, again)


def test_checkpoint_manager_keeps_n(tmp_path):
  source = training.ArraySource(_lm_arrays(4, 5), batch_size=4)
  config = _TRAIN.replace(checkpoint_every=2, keep_checkpoints=2)
  training.train(_CONFIG, config, source, None, tmp_path,
                 init_params=_tiny_params(_CONFIG, 5))
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [10, 12]


def test_relative_workdir(tmp_path, monkeypatch):
  """`make study` passes `workdir/study`; orbax refuses relative paths."""
  monkeypatch.chdir(tmp_path)
  source = training.ArraySource(_lm_arrays(4, 5), batch_size=4)
  config = _TRAIN.replace(total_steps=4, warmup_steps=1, checkpoint_every=2)
  training.train(_CONFIG, config, source, None, "rel/run",
                 init_params=_tiny_params(_CONFIG, 5))
  assert (tmp_path / "rel/run/checkpoints/4").is_dir()
  assert checkpoint.load_step("rel/run/final") == 4
  # A rerun resumes from the relative directory's checkpoints.
  training.train(_CONFIG, config, source, None, "rel/run",
                 init_params=_tiny_params(_CONFIG, 5))


def test_reward_objective_trains_with_added_head(tmp_path):
  policy = _tiny_params(_CONFIG, 6)
  params = training.add_reward_head(policy, _CONFIG, jax.random.key(0))
  assert params["reward_head"]["kernel"].shape == (32, 1)
  assert not np.any(params["reward_head"]["bias"])
  assert params["layer_0"] is policy["layer_0"]
  with pytest.raises(ValueError, match="already"):
    training.add_reward_head(params, _CONFIG, jax.random.key(0))

  rng = np.random.default_rng(6)
  arrays = _lm_arrays(8, 6)
  ends = np.array([4, 8, 12, 15])  # step ends: PRM labels with weight 1
  targets = np.zeros((8, _L), np.float32)
  weights = np.zeros((8, _L), np.float32)
  targets[:, ends] = rng.choice([0.0, 0.25, 0.75, 1.0], (8, len(ends)))
  weights[:, ends] = arrays["token_mask"][:, ends]
  arrays.update(reward_targets=targets, reward_weights=weights)
  source = training.ArraySource(arrays, batch_size=8)
  reward_config = _CONFIG.replace(reward_head=True)
  config = _TRAIN.replace(objective="reward", total_steps=20, eval_every=20,
                          checkpoint_every=20)
  _, history = training.train(reward_config, config, source, None, tmp_path,
                              init_params=params)
  assert history[-1]["loss"] < 0.7 * history[0]["loss"], history
  restored_config, _ = checkpoint.restore(tmp_path / "final")
  assert restored_config.reward_head


@pytest.mark.slow
def test_tensorboard_writer(tmp_path):
  source = training.ArraySource(_lm_arrays(4, 7), batch_size=4)
  training.train(_CONFIG, _TRAIN.replace(write_tensorboard=True), source,
                 None, tmp_path, init_params=_tiny_params(_CONFIG, 7))
  assert any(p.name.startswith("events.out.tfevents")
             for p in tmp_path.iterdir())
