"""Public PRMs imported and scored as their reference code scores them.

Each PRM is emulated in torch with the real checkpoint's tensor names and
config (architectures, head shapes), saved as bf16 safetensors, imported,
and scored on multi-step candidates through the ttcjax path (input builder
-> `step_scores`); the reference follows the checkpoint's own recipe with
transformers' tokenizer and chat template. Probabilities agree to 1e-4.
"""

import functools
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

# pylint: disable=g-import-not-at-top,wrong-import-position
from ttcjax import hf_testing, models, verifiers
from ttcjax.models import hf_import, hf_tokenizer
from ttcjax.verifiers import prm_inputs

_QUESTION = "What is 2+3 times 4?"
_SOLUTIONS = [
    "Step 1: We compute $2+3=5$.\n\nStep 2: Then $5\\times 4=20$.\n\n"
    "The answer is $\\boxed{20}$.",
    "Let x be 12 + 30 = 42.\n\nSo $\\boxed{42}$.",
    "To find the sum, add the numbers.\n\nThen 3x = 12, so x = 4.\n\n"
    "Therefore, the final answer is $\\boxed{4}$.\n\n",
]


def _qwen2_config(vocab, **extra):
  return transformers.Qwen2Config(
      vocab_size=vocab, hidden_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
      max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1e4,
      sliding_window=4096, use_sliding_window=False, **extra)


def _randomize(module, seed):
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, param in module.named_parameters():
      if "norm" in name:
        param.copy_(1.0 + 0.2 * torch.randn_like(param))
      else:
        param.normal_(0.0, 0.15)
  return module.eval()


class _Backbone(torch.nn.Module):
  """`model.*` as Qwen2 checkpoints name it, plus a head module."""

  def __init__(self, config, head_name, head):
    super().__init__()
    self.model = transformers.Qwen2Model(config)
    setattr(self, head_name, head)
    self.head_name = head_name

  def hidden(self, ids):
    return self.model(input_ids=torch.tensor([ids])).last_hidden_state[0]


def _save(module, config, architecture, directory):
  """bf16 safetensors + config.json; the module reloads the rounded weights."""
  os.makedirs(directory, exist_ok=True)
  state = {k: v.to(torch.bfloat16).contiguous()
           for k, v in module.state_dict().items()}
  safetensors_torch.save_file(state, os.path.join(directory,
                                                  "model.safetensors"),
                              metadata={"format": "pt"})
  hf = config.to_dict()
  hf.update(architectures=[architecture], torch_dtype="bfloat16")
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf, f)
  module.load_state_dict({k: v.float() for k, v in state.items()})
  return module


def _policy_side(files):
  """Prompt ids (any layout the policy uses) and candidates' step ends."""
  prompt = files.encode(files.render_chat(
      [{"role": "user", "content": _QUESTION}], True))
  table = prm_inputs.QuestionTable({tuple(prompt): _QUESTION})
  return prompt, table


def _candidates(files, delimiter):
  """Per solution: ids and step ends (after every id ending a step)."""
  stops = set(hf_import.step_delimiter_ids(files.tokenizer, delimiter))
  out = []
  for text in _SOLUTIONS:
    ids = files.encode(text)
    ends = [i + 1 for i, t in enumerate(ids) if t in stops]
    if not ends or ends[-1] != len(ids):
      ends.append(len(ids))
    out.append((ids, ends, text))
  return out


def _decode(files):
  return lambda ids: files.tokenizer.decode(list(ids),
                                            skip_special_tokens=False)


def _encode_offsets(files):
  def encode(text):
    encoding = files.tokenizer.encode(text, add_special_tokens=False)
    return encoding.ids, encoding.offsets
  return encode


def _ttcjax_scores(score_fn, params, build, prompt, candidates):
  rows = [build(prompt, ids, ends) for ids, ends, _ in candidates]
  width = max(len(r[0]) for r in rows)
  tokens = np.zeros((len(rows), width), np.int32)
  mask = np.zeros_like(tokens, bool)
  ends = np.zeros_like(tokens, bool)
  for i, (ids, positions) in enumerate(rows):
    tokens[i, :len(ids)] = ids
    mask[i, :len(ids)] = True
    ends[i, positions] = True
  scores, step_mask = verifiers.step_scores(score_fn, params, tokens, mask,
                                            ends)
  scores, step_mask = np.asarray(scores), np.asarray(step_mask)
  return [scores[i, step_mask[i]] for i in range(len(rows))]


def _compare(got, want, what):
  assert [len(g) for g in got] == [len(w) for w in want]
  assert min(len(w) for w in want) >= 2  # multi-step
  diff = max(np.abs(np.asarray(g) - np.asarray(w)).max()
             for g, w in zip(got, want))
  print(f"{what}: {sum(map(len, want))} steps, max |P diff| {diff:.2e}")
  assert diff <= 1e-4


def test_qwen_math_prm_matches_reference(tmp_path):
  files = hf_tokenizer.load(hf_testing.write_tokenizer(tmp_path / "tok",
                                                       "chatml"))
  vocab = files.tokenizer.get_vocab_size()
  config = _qwen2_config(vocab, tie_word_embeddings=False)
  head = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                             torch.nn.Linear(64, 2))
  model = _save(_randomize(_Backbone(config, "score", head), 0), config,
                "Qwen2ForProcessRewardModel", tmp_path / "prm")
  cfg, params = hf_import.load_hf(tmp_path / "prm", param_dtype="float32")
  assert cfg.reward_head and cfg.reward_mlp and cfg.tie_embeddings

  # Reference: Qwen's model-card recipe.
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
  sep = tok.encode("<extra_0>")[0]
  want = []
  for text in _SOLUTIONS:
    steps = text.split("\n\n")
    steps = steps[:-1] if steps[-1] == "" else steps
    messages = [{"role": "system", "content": prm_inputs.QWEN_MATH_PRM_SYSTEM},
                {"role": "user", "content": _QUESTION},
                {"role": "assistant",
                 "content": "<extra_0>".join(steps) + "<extra_0>"}]
    ids = tok.encode(tok.apply_chat_template(messages, tokenize=False),
                     add_special_tokens=False)
    with torch.no_grad():
      logits = model.score(model.hidden(ids))
    probs = torch.softmax(logits, -1)[:, 1].numpy()
    want.append(probs[np.array(ids) == sep])

  prompt, table = _policy_side(files)
  build = prm_inputs.ChatSeparatorInput(
      render=files.render_chat, encode_offsets=_encode_offsets(files),
      decode=_decode(files), question_of=table,
      separator_id=files.token_id("<extra_0>", "separator"))
  score_fn = verifiers.reward_head_score_fn(
      functools.partial(models.reward_scores, cfg))
  got = _ttcjax_scores(score_fn, params, build, prompt,
                       _candidates(files, "\n\n"))
  _compare(got, want, "Qwen2.5-Math-PRM")


@pytest.mark.parametrize("tied", [False, True])
def test_skywork_prm_matches_reference(tmp_path, tied):
  files = hf_tokenizer.load(hf_testing.write_tokenizer(tmp_path / "tok",
                                                       "chatml"))
  vocab = files.tokenizer.get_vocab_size()
  config = _qwen2_config(vocab, tie_word_embeddings=tied)
  head = torch.nn.Module()
  head.summary = torch.nn.Linear(64, 1)
  model = _Backbone(config, "v_head", head)
  model.lm_head = torch.nn.Linear(64, vocab, bias=False)
  model = _randomize(model, 1)
  if tied:
    with torch.no_grad():
      model.lm_head.weight.copy_(model.model.embed_tokens.weight)
  model = _save(model, config, "Qwen2ForPrmModel", tmp_path / "prm")
  cfg, params = hf_import.load_hf(tmp_path / "prm", param_dtype="float32")
  assert cfg.reward_head and not cfg.reward_mlp
  assert cfg.tie_embeddings == tied
  assert float(params["reward_head"]["bias"][0]) != 0.0  # the bias is kept

  # Reference: Skywork's prepare_input (bos + problem + "\n", then each
  # step's ids and the step token), sigmoid of the value head at the flags.
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
  bos = "<|endoftext|>"
  step_id = tok.encode("\n")[-1]
  want, solutions = [], [s.replace("\n\n", "\n") for s in _SOLUTIONS]
  for text in solutions:
    ids = tok.encode(bos + _QUESTION + "\n")
    flags = [0] * len(ids)
    for step in text.split("\n"):
      step_ids = (tok.encode(step) if step else []) + [step_id]
      ids += step_ids
      flags += [0] * (len(step_ids) - 1) + [1]
    if text.endswith("\n"):  # split leaves an empty last piece
      ids, flags = ids[:-1], flags[:-1]
    with torch.no_grad():
      value = model.v_head.summary(model.hidden(ids))[:, 0]
    want.append(torch.sigmoid(value).numpy()[np.array(flags) == 1])

  prompt, table = _policy_side(files)
  build = prm_inputs.StepTokenInput(
      encode=files.encode, decode=_decode(files), question_of=table,
      step_token_id=step_id, bos=bos, delimiter="\n")
  score_fn = verifiers.reward_head_score_fn(
      functools.partial(models.reward_scores, cfg))
  candidates = []
  stops = set(hf_import.step_delimiter_ids(files.tokenizer, "\n"))
  for text in solutions:
    ids = files.encode(text)
    ends = [i + 1 for i, t in enumerate(ids) if t in stops]
    if not ends or ends[-1] != len(ids):
      ends.append(len(ids))
    candidates.append((ids, ends, text))
  got = _ttcjax_scores(score_fn, params, build, prompt, candidates)
  _compare(got, want, f"Skywork PRM (tied={tied})")


def test_rlhflow_prm_matches_reference(tmp_path):
  files = hf_tokenizer.load(hf_testing.write_tokenizer(tmp_path / "tok",
                                                       "llama3"))
  vocab = files.tokenizer.get_vocab_size()
  config = transformers.LlamaConfig(
      vocab_size=vocab, hidden_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
      max_position_embeddings=1024, rms_norm_eps=1e-5,
      tie_word_embeddings=False,
      rope_parameters={"rope_type": "llama3", "factor": 8.0,
                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 64,
                       "rope_theta": 5e5})
  torch_model = _randomize(transformers.LlamaForCausalLM(config), 2)
  torch_model.to(torch.bfloat16).save_pretrained(tmp_path / "prm")
  torch_model = transformers.LlamaForCausalLM.from_pretrained(
      tmp_path / "prm", dtype=torch.float32).eval()
  cfg, params = hf_import.load_hf(tmp_path / "prm", param_dtype="float32")
  assert cfg.rope_type == "llama3" and not cfg.reward_head

  # Reference: RLHFlow's model card: per step k, the conversation up to it
  # with "+" replies; P(+) over {+, -} at position -3 (before "+<|eot_id|>").
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
  plus, minus = tok.encode("+")[-1], tok.encode("-")[-1]
  want = []
  for text in _SOLUTIONS:
    steps = text.split("\n\n")
    steps = steps[:-1] if steps[-1] == "" else steps
    probs, conversation = [], []
    for k, step in enumerate(steps):
      conversation.append({"role": "user", "content":
                           f"{_QUESTION} {step}" if k == 0 else step})
      conversation.append({"role": "assistant", "content": "+"})
      ids = tok.apply_chat_template(conversation, tokenize=True,
                                    return_dict=False)
      with torch.no_grad():
        logits = torch_model(torch.tensor([ids])).logits[0, -3,
                                                          [plus, minus]]
      probs.append(float(torch.softmax(logits, -1)[0]))
    want.append(np.array(probs))

  prompt, table = _policy_side(files)
  build = prm_inputs.ChatTurnsInput(
      render=files.render_chat, encode_offsets=_encode_offsets(files),
      decode=_decode(files), question_of=table,
      reply_id=files.token_id("+", "reply"))
  score_fn = verifiers.step_tag_score_fn(
      functools.partial(models.lm_logits, cfg), good_id=plus, bad_id=minus)
  got = _ttcjax_scores(score_fn, params, build, prompt,
                       _candidates(files, "\n\n"))
  _compare(got, want, "RLHFlow Llama3.1 PRM")


def test_prm_head_of_unknown_shape_refused(tmp_path):
  config = _qwen2_config(64)
  head = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                             torch.nn.Linear(64, 3))
  _save(_randomize(_Backbone(config, "score", head), 0), config,
        "Qwen2ForProcessRewardModel", tmp_path)
  with pytest.raises(hf_import.HFImportError) as error:
    hf_import.load_hf(tmp_path)
  message = str(error.value)
  assert "\n" not in message
  assert re.search(r"model\.safetensors: tensor 'score\.2\.weight' has shape "
                   r"\(3, 64\), expected \(2, 64\); the reward head is not "
                   r"the shape its architecture names", message), message


def test_skywork_pickle_only_refused_with_a_command_that_works(tmp_path):
  """The refusal's conversion command, run as printed, makes it loadable."""
  config = _qwen2_config(64, tie_word_embeddings=False)
  head = torch.nn.Module()
  head.summary = torch.nn.Linear(64, 1)
  model = _Backbone(config, "v_head", head)
  model.lm_head = torch.nn.Linear(64, 64, bias=False)
  _save(_randomize(model, 3), config, "Qwen2ForPrmModel", tmp_path)
  state = safetensors_torch.load_file(tmp_path / "model.safetensors")
  os.remove(tmp_path / "model.safetensors")
  torch.save(state, tmp_path / "pytorch_model.bin")
  with pytest.raises(hf_import.HFImportError) as error:
    hf_import.load_hf(tmp_path)
  message = str(error.value)
  assert "\n" not in message and "weights_only=True" in message
  command = re.search(r'python -c "([^"]+)"', message).group(1)
  subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True,
                 timeout=120)
  cfg, params = hf_import.load_hf(tmp_path)
  assert cfg.reward_head and not cfg.tie_embeddings
  np.testing.assert_array_equal(
      params["reward_head"]["bias"],
      state["v_head.summary.bias"].to(torch.float32).numpy().astype(
          params["reward_head"]["bias"].dtype))


def test_math_shepherd_prm_matches_reference(tmp_path):
  """Math-Shepherd's Mistral PRM (sliding window 16 < its inputs), scored
  from a policy with another tokenizer (its text re-tokenized)."""
  from ttcjax.verifiers import hf_prms  # pylint: disable=g-import-not-at-top
  files = hf_tokenizer.load(hf_testing.write_tokenizer(tmp_path / "tok",
                                                       "sentencepiece"))
  policy = hf_tokenizer.load(hf_testing.write_tokenizer(tmp_path / "policy",
                                                        "chatml"))
  vocab = files.tokenizer.get_vocab_size()
  config = transformers.MistralConfig(
      vocab_size=vocab, hidden_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
      max_position_embeddings=512, rms_norm_eps=1e-5, sliding_window=16,
      tie_word_embeddings=False)
  torch_model = _randomize(transformers.MistralForCausalLM(config), 4)
  torch_model.to(torch.bfloat16).save_pretrained(tmp_path / "prm")
  torch_model = transformers.MistralForCausalLM.from_pretrained(
      tmp_path / "prm", dtype=torch.float32,
      attn_implementation="eager").eval()
  cfg, params = hf_import.load_hf(tmp_path / "prm", param_dtype="float32")
  assert cfg.sliding_window == 16

  # Reference: Math-Shepherd's model card: f"{question} {output}" with
  # each step ending " ки\n", P(+) over encode("+ -")[1:] at each ки.
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
  candidates = tok.encode("+ -")[1:]
  tag_id = tok.encode("ки")[-1]
  want = []
  for text in _SOLUTIONS:
    steps = text.split("\n\n")
    steps = steps[:-1] if steps[-1] == "" else steps
    output = "".join(f"{step} ки\n" for step in steps)
    ids = tok.encode(f"{_QUESTION} {output}")
    with torch.no_grad():
      logits = torch_model(torch.tensor([ids])).logits[0][:, candidates]
    probs = torch.softmax(logits, -1)[:, 0].numpy()
    want.append(probs[np.array(ids) == tag_id])
  assert max(len(tok.encode(f"{_QUESTION} {s}")) for s in _SOLUTIONS) > 16

  prompt, table = _policy_side(policy)
  build = hf_prms.input_builder("math_shepherd", files, _decode(policy),
                                table.questions, "\n\n")
  good, bad = hf_prms.step_tags("math_shepherd", files)
  assert (good, bad) == tuple(candidates)
  score_fn = verifiers.step_tag_score_fn(
      functools.partial(models.lm_logits, cfg), good_id=good, bad_id=bad)
  got = _ttcjax_scores(score_fn, params, build, prompt,
                       _candidates(policy, "\n\n"))
  _compare(got, want, "Math-Shepherd Mistral PRM")
