"""Llama 3.x (llama3 RoPE scaling), Qwen3 and Mistral match transformers.

Each test builds a tiny random model with transformers' own class, saves it
as bf16 safetensors, rewrites config.json into one of the two forms of RoPE
settings, imports it and compares in float32 with transformers reloading the
same files: logits within 1e-4, and greedy tokens equal to `generate`'s.
"""

import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# pylint: disable=g-import-not-at-top,wrong-import-position
from ttcjax import decoding, generate
from ttcjax.models import hf_import, lm_logits

_VOCAB = 128
_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
           "high_freq_factor": 4.0, "original_max_position_embeddings": 256}


def _randomize(model, seed):
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "norm" in name:
        param.copy_(1.0 + 0.2 * torch.randn_like(param))
      else:
        param.normal_(0.0, 0.15)
  return model.eval()


def _save_bf16(model, directory):
  model.to(torch.bfloat16).save_pretrained(directory, safe_serialization=True)


def _rewrite_rope(directory, form, theta, scaling):
  """Rewrites config.json's RoPE settings in `form`.

  'rope_parameters': transformers 5's one dict; 'legacy_type' /
  'legacy_rope_type': top-level rope_theta plus rope_scaling keyed by `type`
  or `rope_type`.
  """
  path = os.path.join(directory, "config.json")
  with open(path) as f:
    config = json.load(f)
  for key in ("rope_parameters", "rope_scaling", "rope_theta"):
    config.pop(key, None)
  scaling = dict(scaling or {})
  if form == "rope_parameters":
    config["rope_parameters"] = {"rope_type": "default", **scaling,
                                 "rope_theta": theta}
  else:
    config["rope_theta"] = theta
    if scaling:
      kind = scaling.pop("rope_type")
      key = "type" if form == "legacy_type" else "rope_type"
      config["rope_scaling"] = {key: kind, **scaling}
    else:
      config["rope_scaling"] = None
  with open(path, "w") as f:
    json.dump(config, f)


def _reload_float32(cls, directory):
  return cls.from_pretrained(directory, dtype=torch.float32,
                             attn_implementation="eager").eval()


def _torch_logits(model, tokens, mask):
  ids = torch.tensor(tokens, dtype=torch.long)
  attention_mask = torch.tensor(mask, dtype=torch.long)
  positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
  with torch.no_grad():
    out = model(input_ids=ids, attention_mask=attention_mask,
                position_ids=positions)
  return out.logits.float().numpy()


def _padded_batch(seed, length=12):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, _VOCAB, size=(3, length)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  mask[1, :3] = False
  mask[2, :7] = False
  tokens[~mask] = 0
  return tokens, mask


def _llama(directory, form, *, max_pos=4096, seed=0):
  config = transformers.LlamaConfig(
      vocab_size=_VOCAB, hidden_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
      max_position_embeddings=max_pos, rms_norm_eps=1e-5,
      tie_word_embeddings=True, rope_parameters={**_LLAMA3,
                                                 "rope_theta": 5e5},
      attn_implementation="eager")
  _save_bf16(_randomize(transformers.LlamaForCausalLM(config), seed),
             directory)
  _rewrite_rope(directory, form, 5e5, _LLAMA3)
  return _reload_float32(transformers.LlamaForCausalLM, directory)


def _qwen3(directory, form, seed=0):
  config = transformers.Qwen3Config(
      vocab_size=_VOCAB, hidden_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=32,
      intermediate_size=128, max_position_embeddings=512, rms_norm_eps=1e-6,
      tie_word_embeddings=False, attn_implementation="eager")
  _save_bf16(_randomize(transformers.Qwen3ForCausalLM(config), seed),
             directory)
  _rewrite_rope(directory, form, 1e6, None)
  return _reload_float32(transformers.Qwen3ForCausalLM, directory)


def _mistral(directory, window, seed=0):
  config = transformers.MistralConfig(
      vocab_size=_VOCAB, hidden_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
      max_position_embeddings=256, rms_norm_eps=1e-5, sliding_window=window,
      tie_word_embeddings=False, attn_implementation="eager")
  _save_bf16(_randomize(transformers.MistralForCausalLM(config), seed),
             directory)
  _rewrite_rope(directory, "legacy_type", 1e4, None)
  return _reload_float32(transformers.MistralForCausalLM, directory)


_FORMS = ["rope_parameters", "legacy_type", "legacy_rope_type"]


@pytest.mark.parametrize("form", _FORMS)
def test_llama3_scaling_matches_transformers_to_position_2048(form, tmp_path):
  model = _llama(tmp_path, form)
  config, params = hf_import.load_hf(tmp_path, param_dtype="float32")
  assert (config.rope_type, config.rope_factor, config.rope_low_freq_factor,
          config.rope_high_freq_factor, config.rope_original_max_len,
          config.rope_theta) == ("llama3", 8.0, 1.0, 4.0, 256, 5e5)
  tokens = np.random.default_rng(1).integers(
      1, _VOCAB, size=(1, 2048)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  want = _torch_logits(model, tokens, mask)
  got = np.asarray(lm_logits(config, params, tokens, mask))
  diff = np.abs(got - want).max()
  print(f"llama3 {form}: max |logit diff| over positions 0-2047 {diff:.2e}")
  assert diff <= 1e-4
  # The scaling matters: plain RoPE on the same weights is far off.
  plain = np.asarray(lm_logits(config.replace(rope_type="default"), params,
                               tokens, mask))
  assert np.abs(plain - want)[0, 1024:].max() > 1e-2


@pytest.mark.parametrize("form", _FORMS[:2])
def test_qwen3_matches_transformers(form, tmp_path):
  model = _qwen3(tmp_path, form)
  config, params = hf_import.load_hf(tmp_path)
  assert config.param_dtype == "bfloat16"
  assert (config.qk_norm, config.qkv_bias, config.head_dim, config.d_model,
          config.rope_theta) == (True, False, 32, 64, 1e6)
  config, params = hf_import.load_hf(tmp_path, param_dtype="float32")
  tokens, mask = _padded_batch(0)
  want = _torch_logits(model, tokens, mask)
  got = np.asarray(lm_logits(config, params, tokens, mask))
  diff = np.abs(got - want)[mask].max()
  print(f"qwen3 {form}: max |logit diff| {diff:.2e}")
  assert diff <= 1e-4
  no_norm = config.replace(qk_norm=False)
  params_no_norm = {**params, **{
      k: {**v, "attn": {n: p for n, p in v["attn"].items()
                        if n not in ("q_norm", "k_norm")}}
      for k, v in params.items() if k.startswith("layer_")}}
  off = np.asarray(lm_logits(no_norm, params_no_norm, tokens, mask))
  assert np.abs(off - want)[mask].max() > 1e-2


def _greedy_matches_generate(model, directory, prompt):
  config, params = hf_import.load_hf(directory, param_dtype="float32")
  with torch.no_grad():
    hf_out = model.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                                          dtype=torch.long),
        max_new_tokens=32, min_new_tokens=32, do_sample=False,
        eos_token_id=None, pad_token_id=0)
  want = hf_out[0, len(prompt):].tolist()
  out = generate.generate(config, params, [prompt], num_samples=1,
                          sampler=decoding.Greedy(), max_new_tokens=32,
                          eos_id=_VOCAB + 1, rng=jax.random.key(0))
  got = [int(t) for t in out.tokens[0]]
  print(f"greedy: {got}")
  assert len(want) == 32 and got == want


def test_qwen3_greedy_decode_matches_generate(tmp_path):
  model = _qwen3(tmp_path, "rope_parameters", seed=3)
  _greedy_matches_generate(model, tmp_path, [5, 17, 33, 2, 90, 41, 7])


def test_llama3_greedy_decode_matches_generate(tmp_path):
  model = _llama(tmp_path, "legacy_rope_type", seed=4)
  _greedy_matches_generate(model, tmp_path, [9, 12, 100, 3, 57, 64, 21, 8])


def test_mistral_sliding_window_matches_transformers(tmp_path):
  window = 8
  model = _mistral(tmp_path, window)
  config, params = hf_import.load_hf(tmp_path, param_dtype="float32")
  assert (config.sliding_window, config.qkv_bias, config.qk_norm) == (
      window, False, False)
  tokens = np.random.default_rng(2).integers(
      1, _VOCAB, size=(2, 24)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  want = _torch_logits(model, tokens, mask)
  got = np.asarray(lm_logits(config, params, tokens, mask))
  diff = np.abs(got - want).max()
  print(f"mistral window {window}: max |logit diff| {diff:.2e}")
  assert diff <= 1e-4
  full = np.asarray(lm_logits(config.replace(sliding_window=None), params,
                              tokens, mask))
  assert np.abs(full - want)[:, window:].max() > 1e-2
  # The window counts real tokens: left padding changes nothing.
  padded = np.concatenate([np.zeros((2, 5), np.int32), tokens], 1)
  padded_mask = np.concatenate([np.zeros((2, 5), bool), mask], 1)
  shifted = np.asarray(lm_logits(config, params, padded, padded_mask))
  np.testing.assert_allclose(shifted[:, 5:], got, atol=1e-5, rtol=0)


def test_mistral_window_in_decode_matches_full_forward(tmp_path):
  window = 6
  _mistral(tmp_path, window, seed=5)
  config, params = hf_import.load_hf(tmp_path, param_dtype="float32")
  prompt = [4, 8, 15, 16, 23, 42, 7, 9]
  out = generate.generate(config, params, [prompt], num_samples=1,
                          sampler=decoding.Greedy(), max_new_tokens=12,
                          eos_id=_VOCAB + 1, rng=jax.random.key(0))
  sequence = prompt + [int(t) for t in out.tokens[0]]
  logits = np.asarray(lm_logits(config, params, np.array([sequence[:-1]]),
                                None))
  # Each greedy token is the argmax of the full (windowed) forward pass.
  assert np.argmax(logits[0, len(prompt) - 1:], -1).tolist() == (
      sequence[len(prompt):])
