"""Per-device memory accounting: exact on small meshes, MATH-500 layouts fit."""

import dataclasses

import jax
import numpy as np
import pytest

from ttcjax import memory, models, partitioning, testing
from ttcjax.models import ModelConfig

TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4,
                   n_kv_heads=2, d_ff=64, qkv_bias=True, tie_embeddings=False,
                   param_dtype="bfloat16", dtype="bfloat16", max_len=32,
                   reward_head=True)


def _local_bytes(tree) -> int:
  """Bytes device 0 actually holds of a placed tree."""
  dev = jax.devices()[0]
  return sum(s.data.nbytes for x in jax.tree.leaves(tree)
             for s in x.addressable_shards if s.device == dev)


@pytest.mark.parametrize("shape", [(1, 8, 1), (1, 2, 4), (2, 2, 2),
                                   (1, 1, 8)])
def test_param_and_cache_bytes_match_real_placement(shape):
  data, fsdp, model = shape
  mesh = partitioning.make_mesh(partitioning.MeshConfig(
      data=data, fsdp=fsdp, model=model))
  abstract = memory.AbstractMesh.of(data, fsdp, model)
  host = jax.tree.map(lambda x, s: x.astype(s.dtype),  # no init compile
                      testing.numpy_params(TINY), models.param_shapes(TINY))
  params = partitioning.shard_params(host, TINY, mesh)
  assert memory.param_bytes(TINY, abstract) == _local_bytes(params)
  cache = partitioning.shard_rows(models.init_cache(TINY, 8, 16), mesh)
  assert memory.cache_bytes(TINY, 8, 16, abstract) == _local_bytes(cache)


def test_replicated_param_bytes_is_the_whole_model():
  mesh = memory.AbstractMesh.of(fsdp=16)
  got = memory.param_bytes(memory.QWEN25_MATH_PRM_7B, mesh,
                           memory.replicated_rules())
  assert got == 2 * memory.QWEN25_MATH_PRM_7B.num_params()


def test_shard_bytes_skips_axes_that_do_not_divide():
  mesh = memory.AbstractMesh.of(model=4)
  # 2 kv heads cannot be split 4 ways: replicated, as resolve_spec does.
  full = 8 * 2 * 16 * 4 * 2
  assert memory.shard_bytes((8, 2, 16, 4), np.float16, memory.CACHE_AXES,
                            mesh) == full
  assert memory.shard_bytes((8, 4, 16, 4), np.float16, memory.CACHE_AXES,
                            mesh) == full * 2 // 4


@pytest.mark.parametrize("layout", memory.MATH500_LAYOUTS,
                         ids=lambda l: f"{l.name}:{l.mesh}:{l.rules_name}")
def test_math500_layouts_fit(layout):
  shapes = memory.math500_shapes()
  est = memory.estimate(shapes, layout.mesh, layout.device, layout.rules)
  assert est.fits, (layout, est)
  assert est.total < 0.85 * layout.device.hbm_bytes
  assert memory.max_rows(shapes, layout.mesh, layout.device,
                         layout.rules) >= shapes.rows


def test_naive_replicated_7b_does_not_fit_a_v5e_chip():
  v5e = memory.DEVICES["v5e"]
  mesh = memory.AbstractMesh.of(fsdp=16)
  naive = memory.replicated_rules()
  prm_only = memory.param_bytes(memory.QWEN25_MATH_PRM_7B, mesh, naive)
  assert prm_only > 0.85 * v5e.hbm_bytes
  est = memory.estimate(memory.math500_shapes(), mesh, v5e, naive)
  assert not est.fits
  assert memory.max_rows(memory.math500_shapes(), mesh, v5e, naive) == 0


def test_default_rules_replicate_a_two_head_cache_over_model():
  """Why `search_rules` exists: 2 kv heads on model=4 copy the cache."""
  v4 = memory.DEVICES["v4"]
  mesh = memory.AbstractMesh.of(model=4)
  shapes = memory.math500_shapes()
  default = memory.estimate(shapes, mesh, v4)
  tweaked = memory.estimate(shapes, mesh, v4, memory.search_rules())
  assert not default.fits and tweaked.fits
  assert 3.9 * tweaked.cache < default.cache <= 4 * tweaked.cache


def test_scoring_every_row_in_one_call_does_not_fit_v4():
  """The PRM must score in micro-batches on v4-8 (see math500_shapes)."""
  layout = memory.MATH500_LAYOUTS[0]
  shapes = memory.math500_shapes()
  one_call = dataclasses.replace(shapes, verifier_rows=shapes.rows)
  assert not memory.estimate(one_call, layout.mesh, layout.device).fits


def test_max_rows_is_the_largest_fitting_multiple():
  layout = memory.MATH500_LAYOUTS[0]
  shapes = memory.math500_shapes()
  most = memory.max_rows(shapes, layout.mesh, layout.device)
  fits = lambda rows: memory.estimate(dataclasses.replace(shapes, rows=rows),
                                      layout.mesh, layout.device).fits
  assert most % 16 == 0 and fits(most) and not fits(most + 16)


def test_search_rules_keep_weights_as_default():
  default = dict(partitioning.logical_axis_rules())
  tweaked = dict(memory.search_rules())
  changed = {k for k in default if default[k] != tweaked[k]}
  assert changed == {"cache_batch", "cache_kv_heads", "activation_batch"}


def test_abstract_mesh_validates():
  with pytest.raises(ValueError, match="AbstractMesh.model"):
    memory.AbstractMesh.of(model=0)


@pytest.mark.parametrize("shape", [(1, 8, 1), (2, 2, 2)])
def test_decode_state_bytes_match_real_placement(shape):
  from ttcjax.decoding import DecodeState  # pylint: disable=g-import-not-at-top
  mesh = partitioning.make_mesh(partitioning.MeshConfig(
      data=shape[0], fsdp=shape[1], model=shape[2]))
  rows, max_gen = 16, 12
  zeros = lambda *s, dtype=np.int32: np.zeros(s, dtype)
  state = DecodeState(
      cache=None, pending=zeros(rows), tokens=zeros(rows, max_gen),
      logprobs=zeros(rows, max_gen, dtype=np.float32),
      num_generated=zeros(rows), step_start=zeros(rows),
      finished=zeros(rows, dtype=bool), step_done=zeros(rows, dtype=bool),
      rngs=jax.random.split(jax.random.key(0), rows))
  rules = memory.search_rules() if shape[2] > 1 else None  # as the run's
  placed = partitioning.shard_rows(state, mesh, rules)
  assert memory.decode_state_bytes(rows, max_gen,
                                   memory.AbstractMesh.of(*shape),
                                   rules) == _local_bytes(placed)


def test_an_incremental_verifier_adds_its_cache_per_row():
  """With `verifier_cache_len`, the PRM's own cache (its layers, kv heads,
  head_dim and dtype, for every policy row) is counted, and the call that
  reads every row into it is a peak of its own."""
  mesh, h100 = memory.AbstractMesh.of(), memory.DEVICES["h100"]
  prm = memory.QWEN25_MATH_PRM_7B
  off = memory.math500_shapes(rows=64, verifier_rows=64)
  on = dataclasses.replace(off, verifier_cache_len=512)
  a, b = (memory.estimate(s, mesh, h100) for s in (off, on))
  rows, slots = 64, 512
  by_hand = (2 * prm.n_layers * rows * prm.n_kv_heads * slots * prm.head_dim
             * 2 + rows * slots + rows * 4 + 4)  # bf16 k, v; valid; next_pos
  assert b.cache - a.cache == by_hand == memory.cache_bytes(prm, rows, slots,
                                                            mesh)
  assert (b.params, b.activations, b.phase, b.state) == (
      a.params, a.activations, a.phase, a.state)
  assert b.total - a.total == by_hand
  # Every row reads up to verifier_len - prompt_len new tokens at once.
  new = off.verifier_len - off.prompt_len
  peak = (rows * prm.n_heads * new * slots * (4 + 2) +
          2 * rows * new * prm.d_ff * 2)
  peaks = memory.activation_bytes(on, mesh)
  assert peaks["incremental verifier"] == peak < peaks["verifier"]
  assert "incremental verifier" not in memory.activation_bytes(off, mesh)
  # Longer, it is the largest peak.
  long = dataclasses.replace(on, verifier_cache_len=4096)
  est = memory.estimate(long, mesh, h100)
  assert est.phase == "incremental verifier"
  assert est.activations == memory.activation_bytes(long, mesh)[
      "incremental verifier"]


def test_an_incremental_verifier_read_in_groups_peaks_per_group():
  """`verifier_rows < rows`: the incremental calls read groups of that many
  rows (`IncrementalVerifier.rows`), so their peak is a group's, and the
  cache copy one group gathers is counted besides every row's cache."""
  mesh, h100 = memory.AbstractMesh.of(), memory.DEVICES["h100"]
  prm, slots = memory.QWEN25_MATH_PRM_7B, 4096
  whole = dataclasses.replace(memory.math500_shapes(rows=64, verifier_rows=64),
                              verifier_cache_len=slots)
  grouped = dataclasses.replace(whole, verifier_rows=16)
  a, b = (memory.activation_bytes(s, mesh)["incremental verifier"]
          for s in (whole, grouped))
  assert a == 4 * b
  ea, eb = (memory.estimate(s, mesh, h100) for s in (whole, grouped))
  assert eb.cache - ea.cache == memory.cache_bytes(prm, 16, slots, mesh)
  assert ea.phase == "incremental verifier" and eb.total < ea.total
