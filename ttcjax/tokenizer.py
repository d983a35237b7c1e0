"""Byte-level tokenizer for tiny models (no dependencies).

Ids: 0 = pad, 1 = end of sequence, 2 = beginning of sequence, then the 256
byte values at 3..258. The step delimiter of step-by-step solutions is the
newline byte.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
_OFFSET = 3


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """UTF-8 bytes, offset past the three special ids."""

  @property
  def vocab_size(self) -> int:
    return 256 + _OFFSET

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def bos_id(self) -> int:
    return BOS_ID

  def encode(self, text: str, bos: bool = False) -> list[int]:
    ids = [b + _OFFSET for b in text.encode("utf-8")]
    return [BOS_ID] + ids if bos else ids

  def decode(self, ids: Sequence[int]) -> str:
    """Decodes ids, stopping at EOS and skipping other special ids."""
    out = bytearray()
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i >= _OFFSET:
        out.append(i - _OFFSET)
    return out.decode("utf-8", errors="replace")

  def token_ids_ending_with(self, text: str) -> tuple[int, ...]:
    """Ids whose text ends with `text` (a single byte here): step delimiters."""
    encoded = text.encode("utf-8")
    if len(encoded) != 1:
      raise ValueError(f"a byte tokenizer delimiter is one byte, got {text!r}")
    return (encoded[0] + _OFFSET,)
