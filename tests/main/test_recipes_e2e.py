"""The real-checkpoint recipes, end to end at toy scale, through the CLI.

Tiny random checkpoints of each recipe's families (transformers' classes,
bf16 safetensors) are converted with `ttcjax.main.convert_hf`; a tokenizer
built with the `tokenizers` library carries the family's chat template; the
recipe's gin file runs through `python -m ttcjax.main.study` on 5 MATH-500
problems with best-of-N and beam search at N = 4, and must write
records.jsonl (one record per problem, strategy, selection), results.json
and report.md. MATH-500 is read from ../shared/data (or $TTCJAX_MATH500);
the test skips where it is absent.
"""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# pylint: disable=g-import-not-at-top,wrong-import-position
from ttcjax import hf_testing

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_MATH500 = os.environ.get("TTCJAX_MATH500") or os.path.join(
    _REPO, "..", "shared", "data", "math500", "test.jsonl")


def _tiny(family, vocab, seed, directory):
  """A tiny random model of `family` saved as bf16 safetensors."""
  torch.manual_seed(seed)
  common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, max_position_embeddings=4096,
                tie_word_embeddings=True)
  if family == "llama":
    config = transformers.LlamaConfig(
        **common, rope_parameters={
            "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 256,
            "rope_theta": 5e5})
    model = transformers.LlamaForCausalLM(config)
  elif family == "qwen2":  # Qwen2.5-Math: a plain Qwen2 causal LM
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        **common, rope_theta=1e4))
  elif family == "qwen3":
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        **common, head_dim=16, rope_theta=1e6))
  else:  # qwen2 PRM with Qwen2.5-Math-PRM's head and tensor names
    config = transformers.Qwen2Config(**common, rope_theta=1e4)
    backbone = transformers.Qwen2Model(config)
    state = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    state.update({"score.0.weight": torch.randn(32, 32) * 0.2,
                  "score.0.bias": torch.randn(32) * 0.2,
                  "score.2.weight": torch.randn(2, 32) * 0.2,
                  "score.2.bias": torch.randn(2) * 0.2})
    os.makedirs(directory)
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in state.items()},
        os.path.join(directory, "model.safetensors"))
    hf = config.to_dict()
    hf.update(architectures=["Qwen2ForProcessRewardModel"],
              torch_dtype="bfloat16")
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump(hf, f)
    return directory
  model.to(torch.bfloat16).save_pretrained(directory)
  return directory


def _run(module, args, cwd):
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(filter(None, [
             _REPO, os.environ.get("PYTHONPATH")]))}
  result = subprocess.run([sys.executable, "-m", f"ttcjax.main.{module}",
                           *args], capture_output=True, text=True,
                          timeout=900, cwd=cwd, env=env)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


_RECIPES = {
    # recipe: (policy family, PRM family, tokenizer style)
    "recipe_sal_llama32_1b_rlhflow": ("llama", "llama", "llama3"),
    "recipe_qwen25_math_prm": ("qwen2", "qwen2_prm", "chatml"),
    "recipe_qwen3_policy": ("qwen3", "qwen2_prm", "chatml"),
}


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(_MATH500),
                    reason="MATH-500 lives in ../shared/data (absent in a "
                    "user's clone); set TTCJAX_MATH500 to its test.jsonl")
@pytest.mark.parametrize("recipe", sorted(_RECIPES))
def test_recipe_end_to_end(recipe, tmp_path):
  policy_family, prm_family, style = _RECIPES[recipe]
  tok = hf_testing.write_tokenizer(tmp_path / "tokenizer", style)
  vocab = 400
  hf_policy = _tiny(policy_family, vocab, 0, tmp_path / "hf_policy")
  hf_prm = _tiny(prm_family, vocab, 1, tmp_path / "hf_prm")
  for name, hf_dir in (("policy", hf_policy), ("prm", hf_prm)):
    _run("convert_hf", [f"--hf_dir={hf_dir}",
                        f"--output_dir={tmp_path / name}"], tmp_path)

  bindings = [
      f"POLICY_CKPT = '{tmp_path / 'policy'}'",
      f"PRM_CKPT = '{tmp_path / 'prm'}'",
      f"TOKENIZER_DIR = '{tok}'", f"PRM_TOKENIZER_DIR = '{tok}'",
      f"MATH500_PATH = '{os.path.abspath(_MATH500)}'",
      "BUDGETS = [4]",
      "STRATEGIES = [@best_of_n/search.StrategySpec(), "
      "@beam/search.StrategySpec()]",
      "search.ProblemSource.num_problems = 5",
      "search.SearchRun.max_new_tokens = 24",
      "search.SearchRun.problems_per_batch = 5",
      "search.SearchRun.prompt_len = None",
      "search.SearchRun.tree_cache_tokens = 64",
      "search.SearchRun.verifier_len = None",
      "search.SearchRun.mesh = None",
      "search.SearchRun.verifier_rows = None",
      "search.SearchRun.max_rows = None",
      "beam/search.StrategySpec.base = {'aggregation': 'last', "
      "'max_rounds': 6}",
      "study.AnalysisConfig.target_budgets = (4,)",
      "study.AnalysisConfig.n_bootstrap = 20",
  ]
  workdir = tmp_path / "study"
  _run("study", [f"--gin_file=experiments/{recipe}.gin",
                 *[f"--gin_bindings={b}" for b in bindings],
                 f"--workdir={workdir}"], _REPO)

  found = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      found.setdefault(name, os.path.join(root, name))
  assert {"records.jsonl", "results.json", "report.md"} <= set(found)
  with open(found["records.jsonl"]) as f:
    records = [json.loads(line) for line in f]
  keys = {(r["uid"], r["strategy"], json.dumps(r["hparams"], sort_keys=True))
          for r in records}
  # best-of-N: 3 selections; beam: 2; 5 problems each.
  assert len(keys) == len(records) == 5 * (3 + 2)
  assert {r["strategy"] for r in records} == {"best_of_n", "beam"}
  assert all(r["flops_verifier"] > 0 for r in records)
  with open(found["results.json"]) as f:
    json.load(f)
