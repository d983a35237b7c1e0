"""Round trip, sharded restore and atomicity of ttcjax's orbax checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ttcjax import checkpoint
from ttcjax.models import ModelConfig, abstract_params

_CONFIG = ModelConfig(vocab_size=128, d_model=32, n_layers=2, n_heads=4,
                      n_kv_heads=2, d_ff=64, qkv_bias=True,
                      tie_embeddings=False, reward_head=True, max_len=64)


def _random_params(config, seed):
  """Random numpy parameters; avoids compiling the threefry-heavy init."""
  rng = np.random.default_rng(seed)
  shapes = jax.tree.map(lambda x: x.value, abstract_params(config),
                        is_leaf=lambda x: hasattr(x, "value"))
  return jax.tree.map(
      lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


def _assert_bitwise_equal(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_round_trip_is_bitwise(tmp_path, param_dtype):
  config = _CONFIG.replace(param_dtype=param_dtype)
  params = jax.device_put(_random_params(config, 0))  # jax arrays
  checkpoint.save(tmp_path / "ckpt", params, config, step=7)
  restored_config, restored = checkpoint.restore(tmp_path / "ckpt")
  assert restored_config == config
  assert checkpoint.load_config(tmp_path / "ckpt") == config
  assert checkpoint.load_step(tmp_path / "ckpt") == 7
  _assert_bitwise_equal(params, restored)


def test_numpy_params_round_trip(tmp_path):
  params = _random_params(_CONFIG, 1)
  checkpoint.save(tmp_path / "ckpt", params, _CONFIG)
  assert checkpoint.load_step(tmp_path / "ckpt") is None
  _assert_bitwise_equal(params, checkpoint.restore(tmp_path / "ckpt")[1])


def test_relative_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  params = _random_params(_CONFIG, 2)
  checkpoint.save("rel/ckpt", params, _CONFIG)
  assert checkpoint.exists(tmp_path / "rel" / "ckpt")
  _assert_bitwise_equal(params, checkpoint.restore("rel/ckpt")[1])
  assert str(checkpoint.absolute("gs://b/ckpt")) == "gs://b/ckpt"


def test_sharded_restore(tmp_path):
  assert jax.device_count() == 8, "tests expect 8 host devices (XLA_FLAGS)"
  mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2),
              ("data", "fsdp", "model"))
  params = _random_params(_CONFIG, 2)
  checkpoint.save(tmp_path / "ckpt", params, _CONFIG)
  replicated = NamedSharding(mesh, P())
  shardings = jax.tree.map(lambda _: replicated, params)
  shardings["embedding"] = NamedSharding(mesh, P("model", "fsdp"))
  shardings["layer_0"]["mlp"]["up_proj"]["kernel"] = NamedSharding(
      mesh, P("fsdp", "model"))
  _, restored = checkpoint.restore(tmp_path / "ckpt", shardings)
  _assert_bitwise_equal(params, restored)
  embedding = restored["embedding"]
  assert embedding.sharding == shardings["embedding"]
  assert embedding.addressable_shards[0].data.shape == (64, 16)
  assert restored["final_norm"]["scale"].sharding == replicated
  # One sharding for every leaf is accepted too.
  _, restored = checkpoint.restore(tmp_path / "ckpt", replicated)
  _assert_bitwise_equal(params, restored)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  def fail(tmp, target):
    raise KeyboardInterrupt("interrupted before the rename")

  monkeypatch.setattr(checkpoint, "_commit", fail)
  with pytest.raises(KeyboardInterrupt):
    checkpoint.save(tmp_path / "ckpt", _random_params(_CONFIG, 3), _CONFIG)
  assert not list(tmp_path.iterdir())


def test_killed_write_leaves_no_checkpoint(tmp_path):
  params = _random_params(_CONFIG, 3)
  target = tmp_path / "ckpt"
  # What a process killed before its last write leaves: a temp dir with the
  # params and config but no metadata, and no target.
  checkpoint.save(target, params, _CONFIG)
  leftover = tmp_path / ".ckpt.tmp"
  target.rename(leftover)
  (leftover / "metadata.json").unlink()
  assert not checkpoint.exists(target)
  assert not checkpoint.exists(leftover)
  with pytest.raises(FileNotFoundError, match="not a complete"):
    checkpoint.restore(target)
  with pytest.raises(FileNotFoundError, match="not a complete"):
    checkpoint.restore(leftover)

  checkpoint.save(target, params, _CONFIG)
  assert not leftover.exists()
  _assert_bitwise_equal(params, checkpoint.restore(target)[1])


def test_overwrite(tmp_path):
  target = tmp_path / "ckpt"
  target.mkdir()  # an empty directory may be filled
  first = _random_params(_CONFIG, 4)
  checkpoint.save(target, first, _CONFIG, step=1)
  second = _random_params(_CONFIG, 5)
  with pytest.raises(FileExistsError, match="overwrite"):
    checkpoint.save(target, second, _CONFIG, step=2)
  checkpoint.save(target, second, _CONFIG, step=2, overwrite=True)
  assert checkpoint.load_step(target) == 2
  _assert_bitwise_equal(second, checkpoint.restore(target)[1])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_mismatched_params_refused(tmp_path):
  params = _random_params(_CONFIG, 6)
  with pytest.raises(ValueError, match=r"params\['embedding'\].*float32"):
    checkpoint.save(tmp_path / "a", jax.tree.map(
        lambda x: x.astype(jnp.bfloat16), params), _CONFIG)
  del params["lm_head"]
  with pytest.raises(ValueError, match="lm_head"):
    checkpoint.save(tmp_path / "b", params, _CONFIG)
  assert not list(tmp_path.iterdir())
