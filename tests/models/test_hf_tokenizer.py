"""Tokenizer files and chat templates read as transformers reads them."""

import json

import pytest

transformers = pytest.importorskip("transformers")

# pylint: disable=g-import-not-at-top,wrong-import-position
from ttcjax import hf_testing
from ttcjax.models import hf_tokenizer

_MESSAGES = [
    {"role": "system", "content": "Solve it.  "},
    {"role": "user", "content": "What is 2+3?"},
    {"role": "assistant", "content": "Step 1: 2+3=5.\n\nSo $\\boxed{5}$."},
    {"role": "user", "content": "And 5*4?"},
]


@pytest.mark.parametrize("style", ["chatml", "llama3"])
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_render_matches_apply_chat_template(tmp_path, style,
                                            generation_prompt):
  directory = hf_testing.write_tokenizer(tmp_path, style)
  files = hf_tokenizer.load(directory)
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  want = reference.apply_chat_template(
      _MESSAGES, tokenize=False, add_generation_prompt=generation_prompt)
  assert files.render_chat(_MESSAGES, generation_prompt) == want
  assert files.encode(want) == reference.encode(want,
                                                add_special_tokens=False)
  eos = files.special_id("eos_token")
  assert eos == reference.eos_token_id


def test_date_pinned_and_jinja_file_preferred(tmp_path):
  directory = hf_testing.write_tokenizer(tmp_path, "llama3")
  files = hf_tokenizer.load(directory, {"date_string": "01 Jan 2025"})
  assert "Today Date: 01 Jan 2025" in files.render_chat(_MESSAGES[1:2])
  (tmp_path / "chat_template.jinja").write_text(
      "{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
  assert hf_tokenizer.load(directory).render_chat(_MESSAGES[1:2]) == (
      "[What is 2+3?]")


def test_errors_name_the_file(tmp_path):
  with pytest.raises(hf_tokenizer.TokenizerFilesError,
                     match=r"tokenizer\.json: not found"):
    hf_tokenizer.load(tmp_path)
  directory = hf_testing.write_tokenizer(tmp_path, "chatml")
  config = json.loads((tmp_path / "tokenizer_config.json").read_text())
  del config["chat_template"]
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
  files = hf_tokenizer.load(directory)
  with pytest.raises(hf_tokenizer.TokenizerFilesError,
                     match=r"tokenizer_config\.json: no chat_template"):
    files.render_chat(_MESSAGES)
  with pytest.raises(hf_tokenizer.TokenizerFilesError,
                     match=r"tokenizer\.json: eos_token='<nope>' is not one "
                     "token"):
    files.token_id("<nope>", "eos_token")
