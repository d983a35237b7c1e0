"""Maps a Hugging Face `config.json` onto a `ModelConfig`, or says why not.

Families: Llama (Llama 2, 3, 3.1, 3.2, with Llama 3.1 RoPE scaling), Mistral
(the Llama layout plus a sliding window), Qwen2 / Qwen2.5 (q/k/v bias) and
Qwen3 (per-head q/k RMSNorm, head_dim set apart from d_model / heads).

Heads (`HEADS`): a causal LM; a one-label `*ForSequenceClassification`
reward model; Qwen2.5-Math-PRM's two-class MLP head (`Qwen2ForProcessReward
Model`), folded into one logit; Qwen2.5-Math-RM's one-output MLP head
(`Qwen2ForRewardModel`); Skywork-o1-Open-PRM's value head
(`Qwen2ForPrmModel`).

Both forms of RoPE settings are read: transformers 5's `rope_parameters`
(`rope_type`, `rope_theta`, `factor`, ...) and the older top-level
`rope_theta` with `rope_scaling` (`type` or `rope_type`). Every refusal is
one line naming the file, the field and what to do.
"""

from __future__ import annotations

from typing import Any

from ttcjax.models.config import ModelConfig, as_dtype


class HFImportError(ValueError):
  """A Hugging Face checkpoint that ttcjax cannot import, and why."""


FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
# architecture -> (family, head). Heads: 'lm' (causal LM), 'score' (one
# linear output), 'prm_mlp' (Linear(h,h) -> ReLU -> Linear(h,2), read as
# P(class 1)), 'rm_mlp' (Linear(h,h) -> ReLU -> Linear(h,1)), 'value_head'
# (v_head.summary: Linear(h,1) with bias).
ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", "lm"),
    "MistralForCausalLM": ("mistral", "lm"),
    "Qwen2ForCausalLM": ("qwen2", "lm"),
    "Qwen3ForCausalLM": ("qwen3", "lm"),
    "LlamaForSequenceClassification": ("llama", "score"),
    "MistralForSequenceClassification": ("mistral", "score"),
    "Qwen2ForSequenceClassification": ("qwen2", "score"),
    "Qwen3ForSequenceClassification": ("qwen3", "score"),
    "Qwen2ForProcessRewardModel": ("qwen2", "prm_mlp"),
    "Qwen2ForRewardModel": ("qwen2", "rm_mlp"),
    "Qwen2ForPrmModel": ("qwen2", "value_head"),
}
HEADS = ("lm", "score", "prm_mlp", "rm_mlp", "value_head")
ROPE_TYPES = ("default", "linear", "llama3")
_ACTIVATIONS = ("silu", "swish")  # the same function in transformers


def architecture(hf: dict[str, Any], where: str) -> tuple[str, str]:
  """Returns `(family, head)` of a config.json dict (see `ARCHITECTURES`)."""
  archs = hf.get("architectures") or []
  if not archs:
    family = hf.get("model_type")
    if family in FAMILIES:
      return family, "lm"
    raise HFImportError(
        f"{where}: no 'architectures' and model_type={family!r} is not "
        f"supported; set architectures to one of {sorted(ARCHITECTURES)}")
  if len(archs) != 1:
    raise HFImportError(f"{where}: architectures={archs} names several "
                        "models; keep the one whose weights the directory "
                        "holds")
  arch = archs[0]
  if arch not in ARCHITECTURES:
    raise HFImportError(
        f"{where}: architectures=[{arch!r}] is not supported; ttcjax imports "
        f"{sorted(ARCHITECTURES)} (convert a model of one of these families)")
  family, head = ARCHITECTURES[arch]
  labels = len(hf.get("id2label") or {}) or hf.get("num_labels")
  if head == "score" and (labels or 2) != 1:
    raise HFImportError(
        f"{where}: {arch} with num_labels={labels or 2} is a classifier, not "
        "a reward model; ttcjax imports one-label reward models only")
  if head == "prm_mlp" and labels not in (None, 2):
    raise HFImportError(
        f"{where}: {arch} with num_labels={labels}: ttcjax reads P(class 1) "
        "of a two-class head only; fix num_labels or convert the head "
        "yourself")
  return family, head


def _rope_settings(hf: dict[str, Any], where: str) -> dict[str, Any]:
  """`ModelConfig` RoPE fields from `rope_parameters` or the legacy keys."""
  params = hf.get("rope_parameters")
  legacy = hf.get("rope_scaling")
  if params and any(isinstance(v, dict) for v in params.values()):
    raise HFImportError(
        f"{where}: rope_parameters per layer type ({sorted(params)}) is not "
        "supported; ttcjax gives every layer the same RoPE")
  if params:
    field, source = "rope_parameters", dict(params)
    theta = source.get("rope_theta", hf.get("rope_theta", 10000.0))
    if legacy:
      legacy_type = legacy.get("rope_type", legacy.get("type", "default"))
      if legacy_type != source.get("rope_type", "default"):
        raise HFImportError(
            f"{where}: rope_scaling (type {legacy_type!r}) disagrees with "
            f"rope_parameters (type {source.get('rope_type', 'default')!r});"
            " delete the stale rope_scaling")
  else:
    field, source = "rope_scaling", dict(legacy or {})
    theta = hf.get("rope_theta", 10000.0)
  rope_type = source.get("rope_type", source.get("type")) or "default"
  if rope_type not in ROPE_TYPES:
    raise HFImportError(
        f"{where}: {field}.rope_type={rope_type!r} is not implemented; "
        f"ttcjax implements {list(ROPE_TYPES)} (add it to "
        "ttcjax.models.transformer.rope_inv_freq, or use another checkpoint)")
  partial = source.get("partial_rotary_factor",
                       hf.get("partial_rotary_factor", 1.0))
  if partial != 1.0:
    raise HFImportError(f"{where}: partial_rotary_factor={partial} is not "
                        "implemented; ttcjax rotates the whole head")
  attention_factor = source.get("attention_factor")
  if attention_factor not in (None, 1.0):
    raise HFImportError(f"{where}: {field}.attention_factor="
                        f"{attention_factor} is not implemented")

  def need(key):
    if source.get(key) is None:
      raise HFImportError(f"{where}: {field} of type {rope_type!r} has no "
                          f"{key!r}; add it (see the model card)")
    return source[key]

  out = {"rope_theta": float(theta), "rope_type": rope_type}
  if rope_type in ("linear", "llama3"):
    out["rope_factor"] = float(need("factor"))
  if rope_type == "llama3":
    out.update(rope_low_freq_factor=float(need("low_freq_factor")),
               rope_high_freq_factor=float(need("high_freq_factor")),
               rope_original_max_len=int(
                   need("original_max_position_embeddings")))
  return out


def _attention_settings(hf: dict[str, Any], family: str,
                        where: str) -> dict[str, Any]:
  """Bias, q/k norm and sliding window of each family."""
  if family in ("llama", "mistral", "qwen3") and hf.get("attention_bias"):
    raise HFImportError(f"{where}: attention_bias=true also puts a bias on "
                        "o_proj, which ttcjax's attention does not have")
  if family in ("qwen2", "qwen3") and (
      hf.get("use_sliding_window") or
      "sliding_attention" in (hf.get("layer_types") or ())):
    raise HFImportError(
        f"{where}: use_sliding_window=true (a window on some layers only) is "
        "not implemented; set it false only if no input is longer than "
        f"sliding_window={hf.get('sliding_window')}")
  window = hf.get("sliding_window") if family == "mistral" else None
  if family == "qwen3" and hf.get("head_dim") is None:
    raise HFImportError(f"{where}: missing key 'head_dim' (Qwen3's head width "
                        "is not hidden_size / num_attention_heads)")
  return {"qkv_bias": family == "qwen2", "qk_norm": family == "qwen3",
          "sliding_window": window}


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
    HFImportError: naming the file, the field ttcjax cannot represent and
      what to do.
  """
  family, head = architecture(hf, where)
  if "hidden_act" not in hf:
    raise HFImportError(f"{where}: missing key 'hidden_act'; add "
                        "\"hidden_act\": \"silu\" if the model uses SwiGLU")
  if hf["hidden_act"] not in _ACTIVATIONS:
    raise HFImportError(f"{where}: hidden_act={hf['hidden_act']!r} is not "
                        "implemented; ttcjax's MLP is SwiGLU ('silu')")
  if hf.get("mlp_bias"):
    raise HFImportError(f"{where}: mlp_bias=true is not implemented")
  dtype = param_dtype or hf.get("dtype") or hf.get("torch_dtype") or "float32"
  try:
    as_dtype(dtype)
  except ValueError as e:
    raise HFImportError(f"{where}: {e}") from None
  rope = _rope_settings(hf, where)
  attention = _attention_settings(hf, family, where)
  reward = head != "lm"
  try:
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        n_kv_heads=hf.get("num_key_value_heads"),
        head_dim=hf.get("head_dim"),
        d_ff=hf["intermediate_size"],
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        # A reward model without an LM head is tied, not given an invented
        # one: its LM logits mean nothing. `hf_import` unties it when the
        # checkpoint does carry a distinct lm_head.
        tie_embeddings=reward or bool(hf.get("tie_word_embeddings", False)),
        param_dtype=dtype,
        dtype=dtype,
        max_len=hf.get("max_position_embeddings", 2048),
        reward_head=reward,
        reward_mlp=head in ("prm_mlp", "rm_mlp"),
        **rope, **attention,
    )
  except KeyError as e:
    raise HFImportError(f"{where}: missing key {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    raise HFImportError(f"{where}: {e}") from None
