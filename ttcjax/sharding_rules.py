"""Logical-axis rules and activation constraints: what layers need of sharding.

Parameters and activations carry logical axis names ('embed', 'heads',
'activation_batch', ...); `logical_axis_rules()` maps them to the axes of
the `(data, fsdp, model)` mesh, and `resolve_spec` turns an array's names
into a `PartitionSpec`. `constrain` is the activation constraint the models
call. This module imports no model, so the models can import it;
`ttcjax.partitioning` (meshes, sharded init and placement, which do import
the models) re-exports all of it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")
Rules = tuple[tuple[str, Any], ...]


def logical_axis_rules() -> Rules:
  """Logical axis name -> mesh axes. The one place sharding is decided."""
  return (
      # Activations.
      ("activation_batch", BATCH_AXES),
      ("activation_length", None),
      ("activation_embed", None),
      ("activation_heads", "model"),
      ("activation_kv_heads", "model"),
      ("activation_mlp", "model"),
      ("activation_vocab", "model"),
      # Weights.
      ("vocab", "model"),
      ("embed", "fsdp"),
      ("heads", "model"),
      ("kv_heads", "model"),
      ("mlp", "model"),
      ("head_dim", None),
      ("norm", None),
      # KV cache and decode state.
      ("cache_batch", BATCH_AXES),
      ("cache_kv_heads", "model"),
      ("cache_length", None),
      ("cache_head_dim", None),
  )


def _mesh_axes_for(name, rules):
  for logical, mesh_axes in rules:
    if logical == name:
      return mesh_axes
  return None


def resolve_spec(shape: Sequence[int], logical_axes: Sequence[str | None],
                 mesh: Any, rules: Rules | None = None) -> P:
  """Maps logical axis names of an array to a mesh PartitionSpec.

  A dimension is sharded only if its mesh axes are not already used by an
  earlier dimension and their total size divides it; otherwise it is
  replicated.
  """
  rules = logical_axis_rules() if rules is None else rules
  if len(shape) != len(logical_axes):
    raise ValueError(f"shape {tuple(shape)} and logical axes "
                     f"{tuple(logical_axes)} differ in rank")
  used, out = set(), []
  for dim, name in zip(shape, logical_axes):
    axes = _mesh_axes_for(name, rules) if name else None
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = math.prod(mesh.shape[a] for a in axes)
    if not axes or used & set(axes) or dim % size:
      out.append(None)
      continue
    used |= set(axes)
    out.append(axes[0] if len(axes) == 1 else axes)
  return P(*out)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside
  `ttcjax.partitioning.activate`."""
  mesh = jax.sharding.get_abstract_mesh()
  rules = nn.get_logical_axis_rules()
  if mesh.empty or not rules:
    return x
  return jax.lax.with_sharding_constraint(
      x, resolve_spec(x.shape, logical_axes, mesh, rules))
