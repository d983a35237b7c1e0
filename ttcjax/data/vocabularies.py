"""seqio vocabularies matching ttcjax's tokenizers.

`ByteVocabulary`: seqio's own `ByteVocabulary` already lays ids out as
`ttcjax.tokenizer.ByteTokenizer` does (pad 0, eos 1, the 256 bytes at 3..258),
and differs only in id 2, which seqio calls UNK and we use as BOS. Encoding
never produces id 2 (every byte is in the vocabulary) and both decoders drop
it, so the thin subclass below only names 2 as `bos_id` too; its ids equal
`ByteTokenizer`'s for every string, in Python and in TensorFlow.

`HFVocabulary`: a Hugging Face `tokenizers.Tokenizer` (from `tokenizer.json`)
as a seqio vocabulary. Special ids come from arguments, because a
`tokenizer.json` does not say which of its special tokens ends a sequence.
The TensorFlow encode/decode run the Python tokenizer through
`tf.numpy_function`, so they work in `tf.data` pipelines on the host but
cannot be serialised into a graph for another machine.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from ttcjax import tokenizer as byte_tokenizer
from ttcjax.data import examples


class ByteVocabulary(seqio.ByteVocabulary):
  """seqio's byte vocabulary with id 2 named BOS, as in `ByteTokenizer`."""

  def __init__(self):
    super().__init__(extra_ids=0)

  @property
  def bos_id(self) -> int:
    return byte_tokenizer.BOS_ID


class HFVocabulary(seqio.Vocabulary):
  """A `tokenizers.Tokenizer` as a seqio vocabulary.

  Encoding never adds special tokens (`ttcjax.data.examples.prompt_ids` adds
  the BOS where one is configured). Decoding stops at the first EOS, drops
  trailing padding and skips special tokens.
  """

  def __init__(self, tokenizer: Any, eos_id: int, *, pad_id: int = 0,
               bos_id: Optional[int] = None, unk_id: Optional[int] = None):
    """Wraps a tokenizer.

    Args:
      tokenizer: a `tokenizers.Tokenizer`, a `tokenizer.json` file, or a model
        directory holding one.
      eos_id: id ending a target (e.g. `tok.token_to_id("<|endoftext|>")`).
      pad_id: id padding uses (seqio writes it after EOS before decoding).
      bos_id: id starting every sequence, or None.
      unk_id: id of unknown tokens, or None.
    """
    if isinstance(tokenizer, (str, os.PathLike)):
      import tokenizers  # pylint: disable=g-import-not-at-top
      path = os.fspath(tokenizer)
      if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
      if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no tokenizer.json")
      tokenizer = tokenizers.Tokenizer.from_file(path)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    for name, value in (("eos_id", eos_id), ("pad_id", pad_id),
                        ("bos_id", bos_id), ("unk_id", unk_id)):
      if value is not None and not 0 <= value < size:
        raise ValueError(f"HFVocabulary {name}={value} is outside the "
                         f"tokenizer's {size} ids")
    self._text = examples.HFTokenizer(tokenizer, eos_id=eos_id, bos_id=bos_id,
                                      pad_id=pad_id)
    self._size = size
    self._pad_id = pad_id
    self._unk_id = unk_id
    self._digest = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()
    super().__init__(extra_ids=0)

  @property
  def tokenizer(self) -> Any:
    return self._text.tokenizer

  @property
  def bos_id(self) -> Optional[int]:
    return self._text.bos_id

  @property
  def eos_id(self) -> int:
    return self._text.eos_id

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @property
  def unk_id(self) -> Optional[int]:
    return self._unk_id

  @property
  def _base_vocab_size(self) -> int:
    return self._size

  def _encode(self, s) -> list[int]:
    if isinstance(s, np.ndarray):  # a scalar from tf.numpy_function
      s = s.item()
    return self._text.encode(s.decode("utf-8") if isinstance(s, bytes) else s)

  def _decode(self, ids: Sequence[int]) -> str:
    return self._text.decode(ids)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """Encodes a scalar string tensor to `[n] int32`."""
    s = tf.convert_to_tensor(s, tf.string)
    if s.shape.rank != 0:
      raise ValueError(f"HFVocabulary.encode_tf takes a scalar string, got "
                       f"shape {s.shape}")
    ids = tf.numpy_function(
        lambda x: np.asarray(self._encode(x), np.int32), [s], tf.int32,
        stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """Decodes `[..., n]` ids to strings of shape `[...]`."""
    ids = tf.convert_to_tensor(ids, tf.int32)
    if ids.shape.rank == 0:
      raise ValueError("HFVocabulary.decode_tf takes ids of rank >= 1")

    def decode_rows(rows: np.ndarray) -> np.ndarray:
      flat = rows.reshape(-1, rows.shape[-1])
      texts = [self._decode(row.tolist()).encode("utf-8") for row in flat]
      return np.array(texts, dtype=object).reshape(rows.shape[:-1])

    out = tf.numpy_function(decode_rows, [ids], tf.string, stateful=False)
    out.set_shape(ids.shape[:-1])
    return out

  def __eq__(self, other) -> bool:
    return (isinstance(other, HFVocabulary) and self._digest == other._digest
            and (self.eos_id, self.pad_id, self.bos_id, self.unk_id)
            == (other.eos_id, other.pad_id, other.bos_id, other.unk_id))

  def __hash__(self) -> int:
    return hash((self._digest, self.eos_id, self.pad_id, self.bos_id))
