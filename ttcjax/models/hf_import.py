"""Imports Hugging Face Llama / Qwen2 checkpoints into ttcjax's parameter tree.

Only safetensors files are read: pickle-based weights (`pytorch_model.bin`,
`*.pt`, ...) can run arbitrary code when loaded and are never opened (a
directory holding only those is refused; one that also has safetensors is read
from the safetensors). Neither torch
nor transformers is imported; tensors are read with `safetensors`' numpy
backend (bfloat16 through `ml_dtypes`) and returned as host numpy arrays, so
the caller decides where they go (`jax.device_put(params, shardings)`).

Causal LMs (`LlamaForCausalLM`, `Qwen2ForCausalLM`) map one to one. One-label
`*ForSequenceClassification` reward models put their `score` layer in the
reward head (bias zero); having no LM head, they are imported with tied
embeddings, so their LM logits mean nothing.

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

Params = dict[str, Any]

_SINGLE_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_CAUSAL_LM = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
_SEQ_CLS = {"LlamaForSequenceClassification": "llama",
            "Qwen2ForSequenceClassification": "qwen2"}
_UNSUPPORTED = {
    "Qwen2ForProcessRewardModel": "its score head is a two-layer MLP with two "
                                  "outputs",
    "Qwen2ForRewardModel": "its score head is a two-layer MLP",
}
# Buffers some older checkpoints saved next to the weights; recomputed here.
_IGNORABLE = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


class HFImportError(ValueError):
  """A Hugging Face checkpoint that ttcjax cannot import, and why."""


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


def _architecture(hf: dict[str, Any], where: str) -> tuple[str, bool]:
  """Returns (model family, is_reward_model) for a config.json dict."""
  archs = hf.get("architectures") or []
  if not archs:
    family = hf.get("model_type")
    if family in ("llama", "qwen2"):
      return family, False
    raise HFImportError(f"{where}: no 'architectures' and unsupported "
                        f"model_type={family!r}; expected llama or qwen2")
  if len(archs) != 1:
    raise HFImportError(f"{where}: expected one architecture, got {archs}")
  arch = archs[0]
  if arch in _CAUSAL_LM:
    return _CAUSAL_LM[arch], False
  if arch in _SEQ_CLS:
    num_labels = len(hf.get("id2label") or {}) or hf.get("num_labels", 2)
    if num_labels != 1:
      raise HFImportError(f"{where}: {arch} with {num_labels} labels is not a "
                          "reward model; ttcjax's reward head has one output")
    return _SEQ_CLS[arch], True
  why = _UNSUPPORTED.get(arch, "")
  supported = sorted({**_CAUSAL_LM, **_SEQ_CLS})
  raise HFImportError(
      f"{where}: unsupported architecture {arch!r}"
      + (f" ({why}; ttcjax's reward head is one linear layer)" if why else "")
      + f"; supported: {supported}")


def _rope_theta(hf: dict[str, Any], where: str) -> float:
  """RoPE base from `rope_parameters` (transformers 5) or top-level keys."""
  params = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  for source in (params, scaling):
    rope_type = source.get("rope_type", source.get("type", "default"))
    if rope_type not in (None, "default"):
      raise HFImportError(f"{where}: rope scaling type {rope_type!r} is not "
                          "supported; ttcjax implements plain RoPE only")
  factor = params.get("partial_rotary_factor",
                      hf.get("partial_rotary_factor", 1.0))
  if factor != 1.0:
    raise HFImportError(f"{where}: partial_rotary_factor={factor} is not "
                        "supported")
  return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_from_hf(hf: dict[str, Any], where: str = "config.json",
                   param_dtype: str | None = None) -> ModelConfig:
  """Maps a Hugging Face `config.json` dict to a `ModelConfig`.

  Args:
    hf: the parsed config.json.
    where: where it came from, for error messages.
    param_dtype: dtype to store parameters in; defaults to the checkpoint's
      `dtype` / `torch_dtype`, else float32.

  Returns:
    The matching config; compute dtype equals the parameter dtype.

  Raises:
    HFImportError: naming the architecture or setting ttcjax cannot represent.
  """
  family, is_reward = _architecture(hf, where)
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise HFImportError(f"{where}: hidden_act={act!r}; only 'silu' is "
                        "supported")
  if hf.get("mlp_bias"):
    raise HFImportError(f"{where}: mlp_bias=true is not supported")
  if family == "llama" and hf.get("attention_bias"):
    raise HFImportError(f"{where}: attention_bias=true also puts a bias on "
                        "o_proj, which ttcjax's attention does not have")
  if family == "qwen2" and hf.get("use_sliding_window"):
    raise HFImportError(f"{where}: use_sliding_window=true is not supported")
  dtype = param_dtype or hf.get("dtype") or hf.get("torch_dtype") or "float32"
  try:
    as_dtype(dtype)
  except ValueError as e:
    raise HFImportError(f"{where}: {e}") from None
  try:
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        n_kv_heads=hf.get("num_key_value_heads"),
        head_dim=hf.get("head_dim"),
        d_ff=hf["intermediate_size"],
        rope_theta=_rope_theta(hf, where),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=family == "qwen2",
        # A reward model has no LM head; tying avoids inventing one. Its LM
        # logits are therefore meaningless.
        tie_embeddings=is_reward or bool(hf.get("tie_word_embeddings", False)),
        param_dtype=dtype,
        dtype=dtype,
        max_len=hf.get("max_position_embeddings", 2048),
        reward_head=is_reward,
    )
  except KeyError as e:
    raise HFImportError(f"{where}: missing key {e.args[0]!r}") from None
  except ValueError as e:
    raise HFImportError(f"{where}: {e}") from None


def _no_weights_error(directory: str) -> HFImportError:
  pickles = sorted(f for f in os.listdir(directory)
                   if f.endswith(_PICKLE_SUFFIXES))
  return HFImportError(
      f"{directory}: no {_SINGLE_FILE} or {_INDEX_FILE}"
      + (f"; refusing pickle weight files {pickles}: unpickling can run "
         "arbitrary code on load. Convert them in a trusted environment with "
         "`model.save_pretrained(dir, safe_serialization=True)`"
         if pickles else ""))


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


def _to_params(config: ModelConfig, tensors: dict[str, tuple[np.ndarray, str]],
               directory: str) -> Params:
  """Maps HF tensor names and layouts onto ttcjax's tree; consumes `tensors`."""
  dtype = np.dtype(as_dtype(config.param_dtype))
  d, h, kh, hd = (config.d_model, config.n_heads, config.n_kv_heads,
                  config.head_dim)

  def take(name, shape):
    if name not in tensors:
      raise HFImportError(f"{directory}: missing tensor {name!r}")
    array, file = tensors.pop(name)
    if array.shape != shape:
      raise HFImportError(f"{directory}/{file}: tensor {name!r} has shape "
                          f"{array.shape}, expected {shape}")
    return array.astype(dtype)

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
    params["reward_head"] = {"kernel": take("score.weight", (1, d)).T,
                             "bias": np.zeros((1,), dtype)}
  elif not config.tie_embeddings:
    params["lm_head"] = {"kernel": take("lm_head.weight",
                                        (config.vocab_size, d)).T}
  elif "lm_head.weight" in tensors:
    # Some tied checkpoints store the shared matrix twice; accept only a copy.
    head = take("lm_head.weight", (config.vocab_size, d))
    if not np.array_equal(head, params["embedding"]):
      raise HFImportError(f"{directory}: tie_word_embeddings is true but "
                          "lm_head.weight differs from model.embed_tokens")
  unused = sorted(k for k in tensors if not _IGNORABLE.search(k))
  if unused:
    shown = ", ".join(repr(k) for k in unused[:8])
    more = f" and {len(unused) - 8} more" if len(unused) > 8 else ""
    raise HFImportError(f"{directory}: unexpected tensors the model does not "
                        f"use: {shown}{more}")
  return _contiguous(params)


def _contiguous(tree: Params) -> Params:
  # Transposed views would be copied by every later device transfer or save.
  return {k: _contiguous(v) if isinstance(v, dict) else np.ascontiguousarray(v)
          for k, v in tree.items()}


def load_hf(path: str | os.PathLike,
            param_dtype: str | None = None) -> tuple[ModelConfig, Params]:
  """Loads a Hugging Face Llama / Qwen2 model directory.

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
  config = config_from_hf(_read_json(config_path), config_path, param_dtype)
  return config, _to_params(config, _read_tensors(directory), directory)


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
