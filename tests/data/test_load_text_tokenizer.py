"""`examples.load_text_tokenizer`, the one tokenizer loader."""

import pytest

from ttcjax.data import examples
from ttcjax.tokenizer import ByteTokenizer


def test_none_is_the_byte_tokenizer():
  tok = examples.load_text_tokenizer(None, "<|endoftext|>", where="X.eos")
  assert isinstance(tok, ByteTokenizer)


def test_tokenizer_json_with_its_eos(tmp_path):
  tokenizers = pytest.importorskip("tokenizers")
  vocab = {"a": 0, "b": 1, "\n": 2, "<|endoftext|>": 3, "[UNK]": 4}
  raw = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab,
                                                         unk_token="[UNK]"))
  raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  raw.save(str(tmp_path / "tokenizer.json"))
  tok = examples.load_text_tokenizer(str(tmp_path), "<|endoftext|>",
                                     where="X.eos")
  assert isinstance(tok, examples.HFTokenizer) and tok.eos_id == 3
  assert tok.encode("a b") == [0, 1]
  with pytest.raises(ValueError, match="DataConfig.eos_token='</s>'"):
    examples.load_text_tokenizer(str(tmp_path), "</s>",
                                 where="DataConfig.eos_token")
