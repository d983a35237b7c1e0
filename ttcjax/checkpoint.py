"""ttcjax's own model checkpoints: orbax parameters plus a JSON model config.

A checkpoint is a directory::

    <directory>/model_config.json   dataclasses.asdict(ModelConfig)
    <directory>/metadata.json       {"format": 1, "step": int | null}
    <directory>/params/             orbax StandardCheckpointer tree

Everything is written into a hidden sibling `.<name>.tmp` and renamed into
place last, so a write killed half-way never leaves a directory that `exists`
or `restore` accepts (a failed write removes its temp dir; one left by a killed
process is removed by the next `save`). No pickle is involved anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import jax
from etils import epath
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from ttcjax.models.api import param_shapes
from ttcjax.models.config import ModelConfig, as_dtype

Params = Any
PathLike = str | os.PathLike

_CONFIG = "model_config.json"
_METADATA = "metadata.json"
_PARAMS = "params"
_FORMAT = 1


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _expected_leaves(config: ModelConfig) -> dict[str, jax.ShapeDtypeStruct]:
  shapes = param_shapes(config)
  leaves = jax.tree_util.tree_leaves_with_path(shapes)
  return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def _check_params(params: Params, config: ModelConfig) -> None:
  """Raises ValueError unless `params` has exactly the tree `config` implies."""
  expected = _expected_leaves(config)
  got = {jax.tree_util.keystr(path): leaf
         for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  missing, extra = sorted(expected.keys() - got), sorted(got.keys() - expected)
  if missing or extra:
    raise ValueError(f"params do not match the config: missing {missing}, "
                     f"unexpected {extra}")
  want_dtype = as_dtype(config.param_dtype)
  for key, leaf in got.items():
    shape = expected[key].shape
    if tuple(leaf.shape) != shape or leaf.dtype != want_dtype:
      raise ValueError(
          f"params{key}: {leaf.dtype}{list(leaf.shape)}, expected "
          f"{jax.numpy.dtype(want_dtype)}{list(shape)} for "
          f"param_dtype={config.param_dtype!r}")


def absolute(directory: PathLike) -> epath.Path:
  """`directory` as a path, made absolute when local: orbax refuses
  relative paths (`workdir/study` from `make study`). URLs (gs://) stay."""
  text = os.fspath(directory)
  return epath.Path(text if "://" in text else os.path.abspath(text))


def exists(directory: PathLike) -> bool:
  """Whether `directory` holds a complete checkpoint."""
  path = epath.Path(directory)
  return all((path / name).exists() for name in (_CONFIG, _METADATA, _PARAMS))


def _commit(tmp: epath.Path, target: epath.Path) -> None:
  """Moves a finished checkpoint into place, replacing `target` if present.

  When replacing, a kill between the two renames leaves the previous
  checkpoint in `.<name>.old` and no `target`, never a mix of the two.
  """
  old = target.parent / f".{target.name}.old"
  if old.exists():
    old.rmtree()
  if target.exists():
    target.rename(old)
  tmp.rename(target)
  if old.exists():
    old.rmtree()


def save(directory: PathLike, params: Params, config: ModelConfig,
         step: int | None = None, *, overwrite: bool = False) -> None:
  """Writes a checkpoint atomically.

  Call it on every process of a multi-host job; orbax writes each process's
  shards and process 0 writes the JSON files and renames.

  Args:
    directory: the checkpoint directory to create.
    params: parameters matching `config` exactly (tree, shapes and
      `config.param_dtype`); numpy or (sharded) jax arrays.
    config: the model's shape.
    step: optional training step, recorded in metadata.json.
    overwrite: replace an existing non-empty `directory`.

  Raises:
    FileExistsError: `directory` is non-empty and `overwrite` is False.
    ValueError: `params` do not match `config`.
  """
  _check_params(params, config)
  target = absolute(directory)
  if target.exists() and any(target.iterdir()) and not overwrite:
    raise FileExistsError(f"{target}: exists and is not empty; pass "
                          "overwrite=True to replace it")
  tmp = target.parent / f".{target.name}.tmp"
  primary = jax.process_index() == 0
  if primary:
    if tmp.exists():  # left by a write that was killed
      tmp.rmtree()
    tmp.mkdir(parents=True)
  _sync("ttcjax_checkpoint_mkdir")
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(tmp / _PARAMS, params)
      checkpointer.wait_until_finished()
    if primary:
      (tmp / _CONFIG).write_text(
          json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True))
      # Written last: a tmp dir without it is visibly unfinished.
      (tmp / _METADATA).write_text(
          json.dumps({"format": _FORMAT, "step": step}))
      _commit(tmp, target)
  except BaseException:
    if primary and tmp.exists():
      tmp.rmtree()
    raise
  _sync("ttcjax_checkpoint_commit")


def _read_json(path: epath.Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: not found; {path.parent} is not a "
                            "complete ttcjax checkpoint") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def load_config(directory: PathLike) -> ModelConfig:
  """Reads the `ModelConfig` of a checkpoint."""
  path = epath.Path(directory) / _CONFIG
  fields = _read_json(path)
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(fields.keys() - known)
  if unknown:
    raise ValueError(f"{path}: unknown ModelConfig fields {unknown}")
  try:
    return ModelConfig(**fields)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: {e}") from None


def load_step(directory: PathLike) -> int | None:
  """The training step recorded with a checkpoint, or None."""
  metadata = _read_json(epath.Path(directory) / _METADATA)
  if metadata.get("format") != _FORMAT:
    raise ValueError(f"{directory}/{_METADATA}: format "
                     f"{metadata.get('format')!r}, expected {_FORMAT}")
  return metadata.get("step")


def restore(directory: PathLike, shardings: Any = None
            ) -> tuple[ModelConfig, Params]:
  """Restores a checkpoint, optionally straight into sharded arrays.

  Args:
    directory: a directory written by `save`.
    shardings: a pytree of `jax.sharding.Sharding` matching the parameter
      tree, or one `Sharding` for every leaf; each array is read directly into
      its sharding (each host reads only its shards). Default: the first
      local device.

  Returns:
    `(config, params)` with params as jax arrays.

  Raises:
    FileNotFoundError: `directory` is not a complete checkpoint.
    ValueError: the stored config is invalid.
  """
  path = absolute(directory)
  if not exists(path):
    raise FileNotFoundError(f"{path}: not a complete ttcjax checkpoint (needs "
                            f"{_CONFIG}, {_METADATA} and {_PARAMS}/)")
  load_step(path)  # validates the format
  config = load_config(path)
  shapes = param_shapes(config)
  if shardings is None:
    shardings = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, shapes)
  try:
    target = jax.tree.map(
        lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                 sharding=sharding),
        shapes, shardings)
  except ValueError as e:
    raise ValueError(f"shardings do not match the parameter tree of "
                     f"{path}: {e}") from None
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(path / _PARAMS, target)
  return config, params
