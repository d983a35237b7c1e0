"""Deterministic toy policy and PRM for search tests: no training, tiny vocab.

The toy language writes solutions as steps of one digit and a newline, then
an answer line `# d` and EOS:

    prompt: Q Q Q        solution: 7 \\n 1 \\n 7 \\n # 5 \\n <eos>

The toy LM's next-token distribution is a fixed function of the history it
has cached: after a digit comes a newline; after `#` the answer digit, the
sum of the step digits mod 10; after a newline (or the prompt) with `d`
steps done, the row `start_logits[min(d, D)]` of its params (digits, `#`
or EOS); after the answer line, EOS. Its cache (`ToyCache`) stores the fed
token of every slot, as a KV cache stores keys, with the same slot
bookkeeping (`valid`, `index`, `next_pos`), so `take` and `rollback` behave
like `ttcjax.models.KVCache`'s.

The toy PRM scores a position by how many step digits so far equal a target
digit: `(1 + hits) / (2 + step digits)`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ttcjax import decoding
from ttcjax.search.base import PolicyFns, TaskFns, VerifierFns

PAD, EOS, NL, HASH = 0, 1, 2, 3
DIGIT0 = 4  # ids 4..13 are the digits 0..9
QUERY = 14
VOCAB = 16
MAX_DEPTH = 12
_NEG = -1e9
_CHARS = {PAD: "_", EOS: "$", NL: "\n", HASH: "#", QUERY: "Q", 15: "?"}


def digit(d: int) -> int:
  """Token id of digit `d`."""
  return DIGIT0 + d


def detokenize(ids: Sequence[int]) -> str:
  """Toy ids as text (EOS shown as '$')."""
  return "".join(str(int(i) - DIGIT0) if DIGIT0 <= int(i) < DIGIT0 + 10
                 else _CHARS[int(i)] for i in ids)


def answer_fn(ids: Sequence[int]) -> str | None:
  """The digit of the first complete answer line `# d \\n`, as text."""
  ids = [int(i) for i in ids]
  for i in range(len(ids) - 2):
    if (ids[i] == HASH and DIGIT0 <= ids[i + 1] < DIGIT0 + 10
        and ids[i + 2] == NL):
      return str(ids[i + 1] - DIGIT0)
  return None


def task_fns() -> TaskFns:
  return TaskFns(answer_fn=answer_fn, equiv_fn=lambda a, b: a == b)


@struct.dataclass
class ToyCache:
  """A KV-cache stand-in: the token fed at each slot plus slot bookkeeping.

  Attributes:
    tokens: `[batch, max_len] int32` token fed at each slot ("keys").
    valid: `[batch, max_len] bool`.
    index: `[] int32` next slot to write.
    next_pos: `[batch] int32` real tokens fed so far.
  """
  tokens: jax.Array
  valid: jax.Array
  index: jax.Array
  next_pos: jax.Array

  @property
  def max_len(self) -> int:
    return self.valid.shape[1]

  def take(self, rows):
    take = lambda x: jnp.take(x, rows, axis=0)
    return self.replace(tokens=take(self.tokens), valid=take(self.valid),
                        next_pos=take(self.next_pos))

  def rollback(self, index, valid, next_pos):
    pad = ((0, 0), (0, self.max_len - valid.shape[1]))
    return self.replace(index=index, valid=jnp.pad(valid, pad),
                        next_pos=next_pos)

  def grow(self, max_len):
    pad = ((0, 0), (0, max_len - self.max_len))
    return self.replace(tokens=jnp.pad(self.tokens, pad),
                        valid=jnp.pad(self.valid, pad))


def init_cache(batch: int, max_len: int) -> ToyCache:
  return ToyCache(tokens=jnp.zeros((batch, max_len), jnp.int32),
                  valid=jnp.zeros((batch, max_len), bool),
                  index=jnp.zeros((), jnp.int32),
                  next_pos=jnp.zeros((batch,), jnp.int32))


def lm_params(digit_probs: dict[int, float],
              hash_probs: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
              eos_probs: Sequence[float] | None = None) -> dict:
  """Toy LM parameters.

  Args:
    digit_probs: relative probability of each step digit.
    hash_probs: per steps done d (the last entry for all larger d), the
      probability that the next step is the answer line.
    eos_probs: likewise, the probability of giving up with EOS.

  Returns:
    `{"start_logits": [MAX_DEPTH, VOCAB] float32}` (a fixed shape, so
    changing the distribution does not recompile).
  """
  eos_probs = [0.0] * len(hash_probs) if eos_probs is None else eos_probs
  if not 0 < len(hash_probs) <= MAX_DEPTH or len(eos_probs) != len(
      hash_probs):
    raise ValueError(f"hash_probs and eos_probs need the same length, at "
                     f"most {MAX_DEPTH}")
  pad = lambda x: list(x) + [x[-1]] * (MAX_DEPTH - len(x))
  hash_probs, eos_probs = pad(hash_probs), pad(eos_probs)
  total = sum(digit_probs.values())
  rows = np.zeros((len(hash_probs), VOCAB))
  for d, (h, e) in enumerate(zip(hash_probs, eos_probs)):
    rows[d, HASH], rows[d, EOS] = h, e
    for k, w in digit_probs.items():
      rows[d, digit(k)] = (1.0 - h - e) * w / total
  with np.errstate(divide="ignore"):
    logits = np.where(rows > 0, np.log(np.maximum(rows, 1e-30)), _NEG)
  return {"start_logits": jnp.asarray(logits, jnp.float32)}


def step_fn(params, tokens, token_mask, cache: ToyCache):
  """`(params, tokens[b, t], token_mask[b, t], cache) -> (logits, cache)`."""
  b, t = tokens.shape
  index = cache.index
  fed = jax.lax.dynamic_update_slice(cache.tokens, tokens.astype(jnp.int32),
                                     (0, index))
  valid = jax.lax.dynamic_update_slice(cache.valid, token_mask.astype(bool),
                                       (0, index))
  is_digit = (fed >= DIGIT0) & (fed < DIGIT0 + 10)
  steps = jnp.cumsum(valid & (fed == NL), axis=1)
  hashes = jnp.cumsum(valid & (fed == HASH), axis=1)
  digit_sum = jnp.cumsum(jnp.where(valid & is_digit, fed - DIGIT0, 0), axis=1)
  slots = index + jnp.arange(t)
  at = lambda x: jnp.take(x, slots, axis=1)  # [b, t]
  depth = jnp.minimum(at(steps), params["start_logits"].shape[0] - 1)
  start = params["start_logits"][depth]  # [b, t, V]
  one_hot = lambda i: jnp.where(jax.nn.one_hot(i, VOCAB, dtype=bool), 0.0,
                                _NEG)
  tok = tokens
  logits = jnp.where(
      ((tok >= DIGIT0) & (tok < DIGIT0 + 10))[..., None], one_hot(NL),
      jnp.where((tok == HASH)[..., None],
                one_hot(DIGIT0 + at(digit_sum) % 10),
                jnp.where((at(hashes) > 0)[..., None], one_hot(EOS), start)))
  cache = cache.replace(tokens=fed, valid=valid, index=index + t,
                        next_pos=cache.next_pos + jnp.sum(token_mask, axis=1))
  return logits.astype(jnp.float32), cache


def prm_score_fn(params, tokens, token_mask):
  """`(1 + target step digits) / (2 + step digits)` at each position."""
  mask = token_mask.astype(bool)
  prev = jnp.pad(tokens, ((0, 0), (1, 0)), constant_values=PAD)[:, :-1]
  step_digit = mask & (tokens >= DIGIT0) & (tokens < DIGIT0 + 10) & (
      prev != HASH)
  hits = jnp.cumsum(step_digit & (tokens == params["target"]), axis=1)
  seen = jnp.cumsum(step_digit, axis=1)
  return ((1.0 + hits) / (2.0 + seen)).astype(jnp.float32)


def prm_params(target_digit: int) -> dict:
  return {"target": jnp.asarray(digit(target_digit), jnp.int32)}


def policy_fns(params: dict, *, max_gen: int = 16, max_len: int = 64,
               prompt_len: int = 4, temperature: float = 1.0,
               shard=None) -> PolicyFns:
  """The toy LM as `PolicyFns` (newline is the step delimiter)."""
  decoder = decoding.Decoder(step_fn, eos_id=EOS, stop_ids=(NL,),
                             max_gen=max_gen)
  return PolicyFns(decoder=decoder, params=params, init_cache=init_cache,
                   max_len=max_len, sampler=decoding.Sampling(temperature),
                   pad_id=PAD, prompt_len=prompt_len, detokenize=detokenize,
                   shard=shard)


def verifier_fns(target_digit: int = 7, *, max_len: int = 32,
                 shard=None) -> VerifierFns:
  """The toy PRM as `VerifierFns` (prompt + solution input)."""
  return VerifierFns(score_fn=prm_score_fn, params=prm_params(target_digit),
                     max_len=max_len, pad_id=PAD, shard=shard)


def numpy_params(config, seed: int = 0, stddev: float | None = 0.3) -> dict:
  """Random parameters for a `ttcjax.models.ModelConfig`, drawn with numpy.

  `models.init_params` compiles its `jax.random` initialisers for seconds on
  CPU; tests that only need *some* weights use this instead. Norm scales are
  ones; with `stddev=None`, biases are zeros and kernels N(0, 1/fan_in) like
  the model's own init; else everything else is N(0, stddev^2).
  """
  from ttcjax import models  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return np.ones(leaf.shape, np.float32)
    if stddev is not None:
      return (stddev * rng.standard_normal(leaf.shape)).astype(np.float32)
    if name.endswith("['bias']"):
      return np.zeros(leaf.shape, np.float32)
    if name.endswith("['embedding']"):
      fan_in = leaf.shape[-1]
    elif "o_proj" in name:
      fan_in = leaf.shape[0] * leaf.shape[1]
    else:
      fan_in = leaf.shape[0]
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(
        np.float32)

  return jax.tree_util.tree_map_with_path(
      draw, models.param_shapes(config))


# --- Local multi-process runs (multi-host tests on one CPU machine) ---------


def free_port() -> int:
  """A TCP port free on localhost now (for a local jax.distributed
  coordinator)."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def cpu_process_env(devices: int) -> dict[str, str]:
  """This process's environment for a child on `devices` CPU devices, with
  no process layout inherited (`ttcjax.distributed`'s variables dropped)."""
  import os  # pylint: disable=g-import-not-at-top
  from ttcjax import distributed  # pylint: disable=g-import-not-at-top
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if "xla_force_host_platform_device_count" not in f]
  flags.append(f"--xla_force_host_platform_device_count={devices}")
  env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")
  for name in (distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID,
               distributed.ENV_COORDINATOR, "CLUSTER_SPEC"):
    env.pop(name, None)
  return env


def run_processes(commands: Sequence[Sequence[str]],
                  envs: Sequence[dict[str, str]], *, timeout: float,
                  cwd: str | None = None) -> tuple[list[str], float]:
  """Starts every command at once, waits for all; returns their combined
  stdout/stderr and the wall time. Kills what is left on a timeout and
  fails (AssertionError with the log's tail) on a non-zero exit."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  began = time.perf_counter()
  procs = [subprocess.Popen(list(cmd), cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for cmd, env in zip(commands, envs)]
  try:
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  seconds = time.perf_counter() - began
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i}:\n{logs[i][-4000:]}"
  return logs, seconds
