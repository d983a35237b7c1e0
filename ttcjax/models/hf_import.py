"""Imports Hugging Face checkpoints into ttcjax's parameter tree.

Families and heads: see `ttcjax.models.hf_config` (Llama 2/3.x, Mistral,
Qwen2/2.5, Qwen3; causal LMs, one-label reward models, Qwen2.5-Math-PRM,
Qwen2.5-Math-RM and Skywork-o1-Open-PRM heads).

Only safetensors files are read: pickle-based weights (`pytorch_model.bin`,
`*.pt`, ...) can run arbitrary code when loaded and are never opened (a
directory holding only those is refused, with the command that converts them
safely; one that also has safetensors is read from the safetensors). Neither
torch nor transformers is imported; tensors are read with `safetensors`' numpy
backend (bfloat16 through `ml_dtypes`) and returned as host numpy arrays, so
the caller decides where they go (`jax.device_put(params, shardings)`).

Reward heads land in ttcjax's scalar reward head, whose sigmoid is the score:
a one-label `score` layer (bias zero); Skywork's `v_head.summary` (its bias
kept); Qwen2.5-Math-PRM's `score.0` (Linear(h, h)) -> ReLU -> `score.2`
(Linear(h, 2)) with the two classes folded into one logit, `w = W[1] - W[0]`,
`b = b[1] - b[0]`, so `sigmoid` of it is the model's P(class 1). A reward
model without an `lm_head` is imported with tied embeddings: its LM logits
mean nothing.

Our RoPE uses the same rotate-half convention as Hugging Face, so q/k weights
are only transposed and reshaped, never permuted.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np
import safetensors
import tokenizers

from ttcjax import checkpoint
from ttcjax.models.config import ModelConfig, as_dtype
from ttcjax.models.hf_config import (ARCHITECTURES, HFImportError,
                                     architecture, config_from_hf)

Params = dict[str, Any]
__all__ = ["ARCHITECTURES", "HFImportError", "config_from_hf", "convert",
           "load_hf", "load_tokenizer", "step_delimiter_ids"]

_SINGLE_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Buffers some older checkpoints saved next to the weights; recomputed here.
_IGNORABLE = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise HFImportError(f"{path}: file not found") from None
  except json.JSONDecodeError as e:
    raise HFImportError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
  except UnicodeDecodeError as e:
    raise HFImportError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _no_weights_error(directory: str) -> HFImportError:
  pickles = sorted(f for f in os.listdir(directory)
                   if f.endswith(_PICKLE_SUFFIXES))
  if not pickles:
    return HFImportError(f"{directory}: no {_SINGLE_FILE} or {_INDEX_FILE}; "
                         "point --hf_dir at a Hugging Face model directory")
  first = pickles[0]
  return HFImportError(
      f"{directory}: no {_SINGLE_FILE} or {_INDEX_FILE}; refusing pickle "
      f"weight files {pickles}: unpickling can run arbitrary code on load. "
      "Convert each file with torch's restricted loader, which runs no code "
      "from the file: python -c \"import torch, safetensors.torch as st; "
      f"sd = torch.load('{first}', map_location='cpu', weights_only=True); "
      "st.save_file({k: v.contiguous().clone() for k, v in sd.items()}, "
      f"'{_SINGLE_FILE}', metadata={{'format': 'pt'}})\" (several shards: "
      f"convert each, then list them in {_INDEX_FILE}); never "
      "trust_remote_code")


def _read_tensors(directory: str) -> dict[str, tuple[np.ndarray, str]]:
  """Reads every tensor as {name: (array, file it came from)}."""
  index_path = os.path.join(directory, _INDEX_FILE)
  if os.path.exists(index_path):
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
      raise HFImportError(f"{index_path}: no 'weight_map' object")
    files = sorted(set(weight_map.values()))
  elif os.path.exists(os.path.join(directory, _SINGLE_FILE)):
    files = [_SINGLE_FILE]
  else:
    raise _no_weights_error(directory)
  tensors = {}
  for name in files:
    if os.path.basename(name) != name or not name.endswith(".safetensors"):
      raise HFImportError(f"{index_path}: shard {name!r} is not a "
                          f".safetensors file inside {directory}")
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      raise HFImportError(f"{path}: shard listed in {_INDEX_FILE} is missing")
    with safetensors.safe_open(path, framework="numpy") as f:
      for key in f.keys():
        if key in tensors:
          raise HFImportError(f"{path}: tensor {key!r} also in "
                              f"{tensors[key][1]}")
        tensors[key] = (f.get_tensor(key), name)
  return tensors


def _reward_head(config: ModelConfig, head: str, take) -> Params:
  """The reward head's params from the checkpoint's head tensors."""
  d, f32 = config.d_model, np.float32
  if head == "score":
    kernel = take("score.weight", (1, d)).T
    return {"reward_head": {"kernel": kernel, "bias": np.zeros((1,),
                                                               kernel.dtype)}}
  if head == "value_head":
    return {"reward_head": {"kernel": take("v_head.summary.weight", (1, d)).T,
                            "bias": take("v_head.summary.bias", (1,))}}
  out = {"reward_hidden": {"kernel": take("score.0.weight", (d, d)).T,
                           "bias": take("score.0.bias", (d,))}}
  if head == "rm_mlp":
    out["reward_head"] = {"kernel": take("score.2.weight", (1, d)).T,
                          "bias": take("score.2.bias", (1,))}
    return out
  # prm_mlp: softmax over two classes; P(1) = sigmoid(z1 - z0). The fold is
  # done in float32 from the stored weights, then cast.
  weight = take("score.2.weight", (2, d), f32)
  bias = take("score.2.bias", (2,), f32)
  dtype = out["reward_hidden"]["kernel"].dtype
  out["reward_head"] = {
      "kernel": (weight[1] - weight[0])[:, None].astype(dtype),
      "bias": (bias[1:] - bias[:1]).astype(dtype)}
  return out


def _to_params(config: ModelConfig, head: str,
               tensors: dict[str, tuple[np.ndarray, str]],
               directory: str) -> Params:
  """Maps HF tensor names and layouts onto ttcjax's tree; consumes `tensors`."""
  dtype = np.dtype(as_dtype(config.param_dtype))
  d, h, kh, hd = (config.d_model, config.n_heads, config.n_kv_heads,
                  config.head_dim)

  def take(name, shape, as_type=dtype):
    if name not in tensors:
      raise HFImportError(f"{directory}: missing tensor {name!r}")
    array, file = tensors.pop(name)
    if array.shape != shape:
      what = ("; the reward head is not the shape its architecture names: "
              "convert this head yourself" if head != "lm" and not
              name.startswith("model.") else "")
      raise HFImportError(f"{directory}/{file}: tensor {name!r} has shape "
                          f"{array.shape}, expected {shape}{what}")
    return array.astype(as_type)

  def proj(name, heads):  # HF [heads * hd, d] -> [d, heads, hd]
    return take(name, (heads * hd, d)).T.reshape(d, heads, hd)

  params = {"embedding": take("model.embed_tokens.weight",
                              (config.vocab_size, d)),
            "final_norm": {"scale": take("model.norm.weight", (d,))}}
  for i in range(config.n_layers):
    pre = f"model.layers.{i}."
    attn = {"q_proj": {"kernel": proj(pre + "self_attn.q_proj.weight", h)},
            "k_proj": {"kernel": proj(pre + "self_attn.k_proj.weight", kh)},
            "v_proj": {"kernel": proj(pre + "self_attn.v_proj.weight", kh)},
            "o_proj": {"kernel": take(pre + "self_attn.o_proj.weight",
                                      (d, h * hd)).T.reshape(h, hd, d)}}
    if config.qkv_bias:
      for name, heads in (("q_proj", h), ("k_proj", kh), ("v_proj", kh)):
        attn[name]["bias"] = take(f"{pre}self_attn.{name}.bias",
                                  (heads * hd,)).reshape(heads, hd)
    if config.qk_norm:
      for name in ("q_norm", "k_norm"):
        attn[name] = {"scale": take(f"{pre}self_attn.{name}.weight", (hd,))}
    mlp = {name: {"kernel": take(f"{pre}mlp.{name}.weight", shape).T}
           for name, shape in (("gate_proj", (config.d_ff, d)),
                               ("up_proj", (config.d_ff, d)),
                               ("down_proj", (d, config.d_ff)))}
    params[f"layer_{i}"] = {
        "attn": attn, "mlp": mlp,
        "attn_norm": {"scale": take(pre + "input_layernorm.weight", (d,))},
        "mlp_norm": {"scale": take(pre + "post_attention_layernorm.weight",
                                   (d,))}}
  if config.reward_head:
    params.update(_reward_head(config, head, take))
  if not config.tie_embeddings:
    params["lm_head"] = {"kernel": take("lm_head.weight",
                                        (config.vocab_size, d)).T}
  elif "lm_head.weight" in tensors:
    # Some tied checkpoints store the shared matrix twice; accept only a copy.
    lm_head = take("lm_head.weight", (config.vocab_size, d))
    if not np.array_equal(lm_head, params["embedding"]):
      raise HFImportError(f"{directory}: tie_word_embeddings is true but "
                          "lm_head.weight differs from model.embed_tokens")
  unused = sorted(k for k in tensors if not _IGNORABLE.search(k))
  if unused:
    shown = ", ".join(repr(k) for k in unused[:8])
    more = f" and {len(unused) - 8} more" if len(unused) > 8 else ""
    raise HFImportError(f"{directory}: unexpected tensors the model does not "
                        f"use: {shown}{more}; is config.json's architectures "
                        "right?")
  return _contiguous(params)


def _contiguous(tree: Params) -> Params:
  # Transposed views would be copied by every later device transfer or save.
  return {k: _contiguous(v) if isinstance(v, dict) else np.ascontiguousarray(v)
          for k, v in tree.items()}


def load_hf(path: str | os.PathLike,
            param_dtype: str | None = None) -> tuple[ModelConfig, Params]:
  """Loads a Hugging Face model directory (see `hf_config.ARCHITECTURES`).

  Args:
    path: directory holding `config.json` and `model.safetensors` (or shards
      listed in `model.safetensors.index.json`).
    param_dtype: cast parameters to this dtype ('float32', 'bfloat16',
      'float16'); defaults to the checkpoint's dtype.

  Returns:
    `(config, params)`; params are host numpy arrays in the tree
    `ttcjax.models.init_params(config, ...)` would build.

  Raises:
    HFImportError: for pickle-only weights, an unsupported architecture or
      setting, or a missing, mis-shaped or unexpected tensor.
  """
  directory = os.fspath(path)
  if not os.path.isdir(directory):
    raise HFImportError(f"{directory}: not a directory")
  config_path = os.path.join(directory, "config.json")
  hf = _read_json(config_path)
  config = config_from_hf(hf, config_path, param_dtype)
  _, head = architecture(hf, config_path)
  tensors = _read_tensors(directory)
  if config.reward_head and "lm_head.weight" in tensors and (
      not np.array_equal(tensors["lm_head.weight"][0],
                         tensors["model.embed_tokens.weight"][0])
      if "model.embed_tokens.weight" in tensors else False):
    # A reward model that kept its own LM head (Skywork's PRM does).
    config = config.replace(tie_embeddings=False)
  return config, _to_params(config, head, tensors, directory)


def convert(hf_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
            param_dtype: str | None = None,
            overwrite: bool = False) -> ModelConfig:
  """Converts a Hugging Face model directory into a ttcjax checkpoint.

  The whole model is loaded and checked before anything is written, and the
  checkpoint is written atomically, so a failure leaves `output_dir` as it was.

  Args:
    hf_dir: Hugging Face model directory (see `load_hf`).
    output_dir: checkpoint directory to create (see `ttcjax.checkpoint.save`).
    param_dtype: optional dtype to cast parameters to.
    overwrite: replace an existing non-empty `output_dir`.

  Returns:
    The config of the written checkpoint.
  """
  out = os.fspath(output_dir)
  if os.path.isdir(out) and os.listdir(out) and not overwrite:
    raise FileExistsError(f"{out}: exists and is not empty; pass "
                          "--overwrite to replace it")
  config, params = load_hf(hf_dir, param_dtype)
  checkpoint.save(out, params, config, overwrite=overwrite)
  return config


def load_tokenizer(path: str | os.PathLike) -> tokenizers.Tokenizer:
  """Loads `tokenizer.json` from a Hugging Face model directory."""
  file = os.path.join(os.fspath(path), "tokenizer.json")
  if not os.path.exists(file):
    raise HFImportError(f"{file}: not found; ttcjax reads only the fast "
                        "tokenizer format (tokenizer.json)")
  try:
    return tokenizers.Tokenizer.from_file(file)
  except Exception as e:  # pylint: disable=broad-except
    # The Rust library raises plain `Exception` for a malformed file.
    raise HFImportError(f"{file}: not a tokenizer.json the tokenizers "
                        f"library reads: {e}") from None


def step_delimiter_ids(tokenizer: tokenizers.Tokenizer,
                       delimiter: str = "\n") -> np.ndarray:
  """Ids of every token whose decoded text ends with `delimiter`.

  Decoding stops a step when it samples any of these, so merged tokens such
  as '.\\n\\n' end a step as well as a bare newline.

  Args:
    tokenizer: a loaded tokenizer.
    delimiter: the text that ends a reasoning step.

  Returns:
    `[n] int32`, sorted.
  """
  if not delimiter:
    raise ValueError("step delimiter must be a non-empty string")
  vocab = tokenizer.get_vocab_size(with_added_tokens=True)
  texts = tokenizer.decode_batch([[i] for i in range(vocab)],
                                 skip_special_tokens=False)
  return np.array([i for i, text in enumerate(texts)
                   if text.endswith(delimiter)], np.int32)
