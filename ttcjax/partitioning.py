"""Device mesh, logical-axis rules and sharded init / placement.

The mesh has three axes, as in t5x and MaxText:

* `data`: pure data parallelism (rows of a batch, replicas of the weights),
* `fsdp`: rows of a batch *and* a shard of every weight's embed dimension,
* `model`: tensor parallelism over heads, MLP width and vocabulary.

Logical names (on parameters in `ttcjax.models.transformer`, and on
activations) map to mesh axes through `logical_axis_rules()`. A dimension that
a mesh axis does not divide stays replicated instead of failing, and
`sharded_fraction` reports how much of a tree ended up sharded, so a config
that silently replicates a 7B model is caught by a test, not by an OOM.

The rules, `resolve_spec` and the activation constraint `constrain` live in
`ttcjax.sharding_rules`, which the models import (it imports no model); they
are re-exported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ttcjax.models import (KVCache, ModelConfig, abstract_params, init_params,
                           strip_boxes)
from ttcjax.sharding_rules import (BATCH_AXES, MESH_AXES, Rules,  # re-exported
                                   constrain, logical_axis_rules, resolve_spec)

__all__ = [
    "BATCH_AXES", "MESH_AXES", "MeshConfig", "Rules", "activate",
    "cache_shardings", "constrain", "init_sharded", "logical_axis_rules",
    "make_mesh", "param_shardings", "resolve_spec", "row_sharding",
    "shard_params", "shard_rows", "sharded_fraction",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
  """Mesh shape. One axis may be -1: it takes the remaining devices."""
  data: int = -1
  fsdp: int = 1
  model: int = 1

  def __post_init__(self):
    sizes = (self.data, self.fsdp, self.model)
    if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
      raise ValueError(
          f"MeshConfig sizes must be positive with at most one -1, got "
          f"data={self.data}, fsdp={self.fsdp}, model={self.model}")

  def shape(self, num_devices: int) -> tuple[int, int, int]:
    sizes = [self.data, self.fsdp, self.model]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      if num_devices % known:
        raise ValueError(f"MeshConfig {sizes}: {num_devices} devices are not "
                         f"divisible by {known}")
      sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
      raise ValueError(f"MeshConfig {sizes} needs {math.prod(sizes)} devices, "
                       f"{num_devices} are available")
    return tuple(sizes)


def make_mesh(config: MeshConfig = MeshConfig(),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `(data, fsdp, model)` mesh over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = config.shape(len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def param_shardings(config: ModelConfig, mesh: Mesh,
                    rules: Rules | None = None) -> Any:
  """NamedSharding per parameter, from the logical names on the params."""
  boxed = abstract_params(config)
  logical = nn.get_partition_spec(boxed)
  shapes = strip_boxes(boxed)
  return jax.tree.map(
      lambda spec, x: NamedSharding(mesh, resolve_spec(x.shape, spec, mesh,
                                                       rules)),
      logical, shapes, is_leaf=lambda x: isinstance(x, P))


def init_sharded(config: ModelConfig, mesh: Mesh, rng: jax.Array,
                 rules: Rules | None = None) -> Any:
  """Initialises parameters directly into their shardings (no host copy).

  The recipe of flax's lm1b example: eval_shape -> specs -> mesh shardings ->
  jit(init, out_shardings=...).
  """
  shardings = param_shardings(config, mesh, rules)
  init = jax.jit(lambda key: init_params(config, key), out_shardings=shardings)
  return init(rng)


def shard_params(params: Any, config: ModelConfig, mesh: Mesh,
                 rules: Rules | None = None) -> Any:
  """Places existing (host or single-device) params onto the mesh."""
  return jax.device_put(params, param_shardings(config, mesh, rules))


def cache_shardings(cache: KVCache, mesh: Mesh,
                    rules: Rules | None = None) -> KVCache:
  """Rows over the batch axes, kv heads over `model`."""
  kv = lambda x: NamedSharding(mesh, resolve_spec(
      x.shape, ("cache_batch", "cache_kv_heads", "cache_length",
                "cache_head_dim"), mesh, rules))
  rows = lambda x: NamedSharding(mesh, resolve_spec(
      x.shape, ("cache_batch",) + (None,) * (x.ndim - 1), mesh, rules))
  return cache.replace(
      k=tuple(kv(x) for x in cache.k), v=tuple(kv(x) for x in cache.v),
      valid=rows(cache.valid), index=NamedSharding(mesh, P()),
      next_pos=rows(cache.next_pos))


def row_sharding(x: jax.Array, mesh: Mesh, rules: Rules | None = None):
  """Sharding of an array whose leading axis is batch rows."""
  if x.ndim == 0:
    return NamedSharding(mesh, P())
  return NamedSharding(mesh, resolve_spec(
      x.shape, ("cache_batch",) + (None,) * (x.ndim - 1), mesh, rules))


def shard_rows(tree: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
  """Places every array of `tree` with its leading axis over the batch axes.

  A `KVCache` inside the tree gets `cache_shardings` (heads over `model`).
  """
  def place(x):
    if isinstance(x, KVCache):
      return jax.device_put(x, cache_shardings(x, mesh, rules))
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.device_put(x, NamedSharding(mesh, P()))
    return jax.device_put(x, row_sharding(x, mesh, rules))
  return jax.tree.map(place, tree, is_leaf=lambda x: isinstance(x, KVCache))


def sharded_fraction(params: Any) -> float:
  """Fraction of parameter elements whose arrays are split over devices."""
  total = sharded = 0
  for x in jax.tree.leaves(params):
    total += x.size
    if not x.sharding.is_fully_replicated:
      sharded += x.size
  return sharded / max(total, 1)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules | None = None):
  """Makes `mesh` and `rules` current, so activation constraints apply."""
  rules = logical_axis_rules() if rules is None else rules
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield
