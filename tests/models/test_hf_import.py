"""Parity of imported Hugging Face Llama / Qwen2 models; bad input refused."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

# pylint: disable=g-import-not-at-top,wrong-import-position
from ttcjax import checkpoint
from ttcjax.models import hf_import, lm_logits, reward_scores

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _hf_model(family, *, kv_heads=2, tied=False, theta=10000.0,
              seq_cls=False, seed=0):
  """A random tiny HF model with every weight (norms, biases too) random."""
  torch.manual_seed(seed)
  config_cls = {"llama": transformers.LlamaConfig,
                "qwen2": transformers.Qwen2Config}[family]
  config = config_cls(
      vocab_size=128, hidden_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=kv_heads,
      intermediate_size=128, rope_theta=theta, tie_word_embeddings=tied,
      max_position_embeddings=64, rms_norm_eps=1e-5, num_labels=1,
      pad_token_id=0, attn_implementation="eager")
  if seq_cls:
    cls = {"llama": transformers.LlamaForSequenceClassification,
           "qwen2": transformers.Qwen2ForSequenceClassification}[family]
  else:
    cls = {"llama": transformers.LlamaForCausalLM,
           "qwen2": transformers.Qwen2ForCausalLM}[family]
  model = cls(config).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "norm" in name:
        param.copy_(1.0 + 0.2 * torch.randn_like(param))
      else:
        param.normal_(0.0, 0.15)
  return model


def _batch(seed=0):
  """Three rows of 12 tokens; rows 1 and 2 are left-padded."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 128, size=(3, 12)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  mask[1, :3] = False
  mask[2, :7] = False
  tokens[~mask] = 0
  return tokens, mask


def _torch_forward(model, tokens, mask):
  ids = torch.tensor(tokens, dtype=torch.long)
  attention_mask = torch.tensor(mask, dtype=torch.long)
  positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
  with torch.no_grad():
    out = model(input_ids=ids, attention_mask=attention_mask,
                position_ids=positions)
  return out.logits.float().numpy()


_PARITY = {
    # name: (family, kv_heads, tied, theta, save dtype, max_shard_size)
    "llama_gqa_untied_1e4": ("llama", 2, False, 1e4, None, None),
    "llama_mha_tied_1e6_sharded": ("llama", 4, True, 1e6, None, "40KB"),
    "qwen2_gqa_untied_1e6": ("qwen2", 2, False, 1e6, None, None),
    "qwen2_mha_tied_1e4_sharded": ("qwen2", 4, True, 1e4, None, "40KB"),
    "llama_gqa_bf16": ("llama", 2, False, 1e4, torch.bfloat16, None),
    "qwen2_gqa_fp16_sharded": ("qwen2", 2, True, 1e6, torch.float16, "40KB"),
}


@pytest.mark.parametrize("name", sorted(_PARITY))
def test_lm_logits_match_transformers(name, tmp_path):
  family, kv_heads, tied, theta, dtype, shard_size = _PARITY[name]
  model = _hf_model(family, kv_heads=kv_heads, tied=tied, theta=theta)
  if dtype is not None:
    model = model.to(dtype)
  kwargs = {"max_shard_size": shard_size} if shard_size else {}
  model.save_pretrained(tmp_path, safe_serialization=True, **kwargs)
  assert os.path.exists(tmp_path / "model.safetensors.index.json") == bool(
      shard_size)

  config, params = hf_import.load_hf(tmp_path)
  expected_dtype = {None: "float32", torch.bfloat16: "bfloat16",
                    torch.float16: "float16"}[dtype]
  assert config.param_dtype == expected_dtype
  assert params["embedding"].dtype == np.dtype(expected_dtype)
  assert (config.n_kv_heads, config.tie_embeddings, config.rope_theta,
          config.qkv_bias) == (kv_heads, tied, theta, family == "qwen2")

  # Both sides run in float32 on the same (possibly 16-bit-rounded) weights;
  # torch reloads them, as `.float()` would keep a 16-bit-rounded RoPE table.
  config, params = hf_import.load_hf(tmp_path, param_dtype="float32")
  if dtype is not None:
    model = type(model).from_pretrained(tmp_path, dtype=torch.float32,
                                        attn_implementation="eager").eval()
  tokens, mask = _batch()
  want = _torch_forward(model, tokens, mask)
  got = np.asarray(lm_logits(config, params, tokens, mask))
  diff = np.abs(got - want)[mask].max()
  print(f"{name}: max |logit diff| {diff:.2e} (max |logit| "
        f"{np.abs(want[mask]).max():.2f})")
  assert diff <= 1e-4


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_reward_model_matches_sequence_classification(family, tmp_path):
  model = _hf_model(family, seq_cls=True)
  model.save_pretrained(tmp_path, safe_serialization=True)
  config, params = hf_import.load_hf(tmp_path)
  assert config.reward_head
  tokens, mask = _batch()
  want = _torch_forward(model, tokens, mask)[:, 0]  # pooled at last real token
  got = np.asarray(reward_scores(config, params, tokens, mask))[:, -1]
  print(f"{family} reward: max |diff| {np.abs(got - want).max():.2e}")
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def _save_tiny(directory, **kwargs):
  _hf_model("qwen2", **kwargs).save_pretrained(directory,
                                               safe_serialization=True)
  return directory


def _edit_tensors(directory, edit):
  path = os.path.join(directory, "model.safetensors")
  tensors = safetensors_numpy.load_file(path)
  edit(tensors)
  safetensors_numpy.save_file(tensors, path)


def _edit_config(directory, **changes):
  path = os.path.join(directory, "config.json")
  with open(path) as f:
    config = json.load(f)
  config.update(changes)
  with open(path, "w") as f:
    json.dump(config, f)


def test_pickle_weights_refused(tmp_path):
  _save_tiny(tmp_path)
  os.remove(tmp_path / "model.safetensors")
  (tmp_path / "pytorch_model.bin").write_bytes(b"not opened")
  with pytest.raises(hf_import.HFImportError,
                     match=r"pytorch_model\.bin.*arbitrary code.*"
                     r"torch\.load\('pytorch_model\.bin', map_location='cpu', "
                     r"weights_only=True\).*save_file") as error:
    hf_import.load_hf(tmp_path)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("changes, match", [
    ({"architectures": ["GemmaForCausalLM"]},
     r"architectures=\['GemmaForCausalLM'\] is not supported.*convert a "
     "model of one of these"),
    ({"architectures": ["Qwen2ForProcessRewardModel"], "num_labels": 3,
      "id2label": None}, "num_labels=3.*P\\(class 1\\)"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}},
     "rope_parameters.rope_type='yarn' is not implemented.*rope_inv_freq"),
    ({"rope_parameters": None, "rope_scaling": {"type": "dynamic",
                                                "factor": 2.0}},
     "rope_scaling.rope_type='dynamic' is not implemented"),
    ({"rope_parameters": None, "rope_scaling": {"type": "llama3",
                                                "factor": 8.0}},
     "rope_scaling of type 'llama3' has no 'low_freq_factor'"),
    ({"use_sliding_window": True, "sliding_window": 16},
     "use_sliding_window=true.*sliding_window=16"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"hidden_act": None}, "hidden_act=None"),
])
def test_unsupported_config_named(tmp_path, changes, match):
  _edit_config(_save_tiny(tmp_path), **changes)
  with pytest.raises(hf_import.HFImportError, match=match) as error:
    hf_import.load_hf(tmp_path)
  message = str(error.value)
  # One line, naming config.json once (errors are not re-wrapped).
  assert "\n" not in message and message.count("config.json") == 1, message


def test_missing_hidden_act_is_an_error_not_silu(tmp_path):
  _save_tiny(tmp_path)
  path = tmp_path / "config.json"
  config = json.loads(path.read_text())
  del config["hidden_act"]
  path.write_text(json.dumps(config))
  with pytest.raises(hf_import.HFImportError,
                     match=r"config\.json: missing key 'hidden_act'"):
    hf_import.load_hf(tmp_path)


def test_rope_theta_read_from_either_place():
  base = {"architectures": ["LlamaForCausalLM"], "vocab_size": 8,
          "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
          "intermediate_size": 8, "hidden_act": "silu"}
  assert hf_import.config_from_hf(base).rope_theta == 10000.0
  assert hf_import.config_from_hf(
      {**base, "rope_theta": 5e5, "rope_scaling": None}).rope_theta == 5e5
  assert hf_import.config_from_hf(
      {**base, "rope_parameters": {"rope_type": "default",
                                   "rope_theta": 1e6}}).rope_theta == 1e6


def test_missing_tensor_named(tmp_path):
  _save_tiny(tmp_path)
  _edit_tensors(tmp_path,
                lambda t: t.pop("model.layers.1.self_attn.k_proj.bias"))
  with pytest.raises(hf_import.HFImportError,
                     match=r"missing tensor 'model\.layers\.1\.self_attn"
                     r"\.k_proj\.bias'"):
    hf_import.load_hf(tmp_path)


def test_misshaped_tensor_named(tmp_path):
  _save_tiny(tmp_path)
  name = "model.layers.0.mlp.up_proj.weight"
  _edit_tensors(tmp_path, lambda t: t.update({name: t[name][:100]}))
  with pytest.raises(hf_import.HFImportError,
                     match=r"'model\.layers\.0\.mlp\.up_proj\.weight' has "
                     r"shape \(100, 64\), expected \(128, 64\)"):
    hf_import.load_hf(tmp_path)


def test_extra_tensor_named_but_inv_freq_ignored(tmp_path):
  _save_tiny(tmp_path)
  extra = np.zeros((8,), np.float32)
  _edit_tensors(tmp_path, lambda t: t.update(
      {"model.layers.0.self_attn.rotary_emb.inv_freq": extra}))
  hf_import.load_hf(tmp_path)
  _edit_tensors(tmp_path, lambda t: t.update({"model.mystery.weight": extra}))
  with pytest.raises(hf_import.HFImportError,
                     match=r"'model\.mystery\.weight'"):
    hf_import.load_hf(tmp_path)


def test_convert_round_trip_and_refusals(tmp_path):
  hf_dir = _save_tiny(tmp_path / "hf")
  out = tmp_path / "out"
  config = hf_import.convert(hf_dir, out, param_dtype="bfloat16")
  restored_config, params = checkpoint.restore(out)
  assert restored_config == config and config.param_dtype == "bfloat16"
  _, want = hf_import.load_hf(hf_dir, param_dtype="bfloat16")
  np.testing.assert_array_equal(np.asarray(params["embedding"]),
                                want["embedding"])
  with pytest.raises(FileExistsError, match="overwrite"):
    hf_import.convert(hf_dir, out)
  hf_import.convert(hf_dir, out, overwrite=True)
  assert checkpoint.load_config(out).param_dtype == "float32"


def test_convert_writes_nothing_on_error(tmp_path):
  hf_dir = _save_tiny(tmp_path / "hf")
  _edit_tensors(hf_dir, lambda t: t.pop("model.norm.weight"))
  with pytest.raises(hf_import.HFImportError, match="model.norm.weight"):
    hf_import.convert(hf_dir, tmp_path / "ckpt" / "out")
  assert not (tmp_path / "ckpt").exists()


def test_convert_cli(tmp_path):
  hf_dir = _save_tiny(tmp_path / "hf")
  cmd = [sys.executable, "-m", "ttcjax.main.convert_hf",
         f"--hf_dir={hf_dir}", f"--output_dir={tmp_path / 'out'}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  subprocess.run(cmd, check=True, cwd=_REPO, env=env, capture_output=True,
                 timeout=60)
  assert checkpoint.exists(tmp_path / "out")
  os.remove(hf_dir / "model.safetensors")
  cmd[-1] = f"--output_dir={tmp_path / 'bad'}"
  result = subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode != 0 and "model.safetensors" in result.stderr
  assert sorted(os.listdir(tmp_path)) == ["hf", "out"]


def _tiny_tokenizer(directory):
  tokenizers = pytest.importorskip("tokenizers")
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
      add_prefix_space=False, use_regex=False)
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=300,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  text = ["Step 1: 2+3=5.\n\nStep 2: 5*4=20.\n\nThe answer is 20.\n"] * 20
  tokenizer.train_from_iterator(text, trainer)
  tokenizer.save(os.path.join(directory, "tokenizer.json"))


def test_tokenizer_and_step_delimiter_ids(tmp_path):
  with pytest.raises(hf_import.HFImportError, match="tokenizer.json"):
    hf_import.load_tokenizer(tmp_path)
  _tiny_tokenizer(tmp_path)
  tokenizer = hf_import.load_tokenizer(tmp_path)
  ids = hf_import.step_delimiter_ids(tokenizer, "\n")
  texts = [tokenizer.decode([i]) for i in range(tokenizer.get_vocab_size())]
  assert sorted(ids) == [i for i, t in enumerate(texts) if t.endswith("\n")]
  assert tokenizer.token_to_id("Ċ") in ids
  assert tokenizer.token_to_id("S") not in ids
  # The last token of a step's text is always a delimiter token.
  assert tokenizer.encode("Step 1: 2+3=5.\n\n").ids[-1] in ids
