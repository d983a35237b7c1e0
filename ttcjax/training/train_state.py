"""Train state, its shardings, and parameter surgery for reward models."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ttcjax import models, partitioning
from ttcjax.models import api as models_api
from ttcjax.models.config import as_dtype
from ttcjax.models.transformer import Projection

Params = Any


@struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position (= step).

  Attributes:
    step: `[] int32`, updates applied so far.
    params: the model's parameter tree (`ttcjax.models.abstract_params`
      shapes; each leaf sharded by `partitioning.param_shardings`).
    opt_state: optax state of `make_optimizer`: clipping (empty), Adam
      moments `mu`/`nu` (params-shaped, sharded like params), update counts
      (`[] int32`, replicated), weight-decay mask (empty).
  """

  step: jax.Array
  params: Params
  opt_state: optax.OptState

  @classmethod
  def create(cls, params: Params,
             optimizer: optax.GradientTransformation) -> "TrainState":
    """Step 0 with a fresh optimizer state for `params`."""
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=optimizer.init(params))


def state_shardings(config: models.ModelConfig,
                    optimizer: optax.GradientTransformation,
                    mesh: Mesh) -> TrainState:
  """A `TrainState` of `NamedSharding`s: optimizer moments follow params."""
  params = partitioning.param_shardings(config, mesh)
  shapes = models.param_shapes(config)
  opt_shapes = jax.eval_shape(optimizer.init, shapes)
  replicated = NamedSharding(mesh, P())
  opt_state = optax.tree_utils.tree_map_params(
      optimizer, lambda _, sharding: sharding, opt_shapes, params,
      transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=params, opt_state=opt_state)


def abstract_state(config: models.ModelConfig,
                   optimizer: optax.GradientTransformation,
                   mesh: Mesh) -> TrainState:
  """`ShapeDtypeStruct`s with shardings: the restore target of a state."""
  shapes = jax.eval_shape(
      lambda p: TrainState.create(p, optimizer),
      models.param_shapes(config))
  return jax.tree.map(
      lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                               sharding=sharding),
      shapes, state_shardings(config, optimizer, mesh))


def check_params(params: Params, config: models.ModelConfig) -> None:
  """Raises ValueError unless `params` has the tree and shapes of `config`."""
  expected = {
      jax.tree_util.keystr(path): leaf.shape for path, leaf in
      jax.tree_util.tree_leaves_with_path(
          models.param_shapes(config))}
  got = {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in
         jax.tree_util.tree_leaves_with_path(params)}
  missing, extra = sorted(expected.keys() - got), sorted(got.keys() - expected)
  if missing or extra:
    hint = ""
    if config.reward_head and any("reward_head" in k for k in missing):
      hint = "; use ttcjax.training.add_reward_head to start a reward model"
    raise ValueError(f"init_params do not match the model config: missing "
                     f"{missing}, unexpected {extra}{hint}")
  for key, shape in expected.items():
    if got[key] != shape:
      raise ValueError(f"init_params{key} has shape {list(got[key])}, the "
                       f"model config implies {list(shape)}")


def add_reward_head(params: Params, config: models.ModelConfig,
                    rng: jax.Array) -> Params:
  """Adds a freshly initialised scalar reward head to a policy's params.

  The PRM/ORM recipe: start from the policy's backbone (and keep its LM
  head, so the result still decodes), learn a new `d_model -> 1` head.

  Args:
    params: parameters of `config.replace(reward_head=False)`.
    config: the model shape (its `reward_head` flag is ignored).
    rng: key for the head's kernel (the bias starts at 0).

  Returns:
    Parameters of `config.replace(reward_head=True)`.

  Raises:
    ValueError: `params` already has a reward head.
  """
  if "reward_head" in params:
    raise ValueError("params already have a 'reward_head'")
  config = config.replace(reward_head=True)
  # The same module (and so the same initializer) the model builds.
  head = Projection(config, (config.d_model, 1), ("embed", None),
                    use_bias=True, out_dtype="float32", name="reward_head")
  variables = head.init(rng, jnp.zeros((1, config.d_model),
                                       as_dtype(config.dtype)))
  return {**params, "reward_head": models_api.strip_boxes(variables["params"])}
