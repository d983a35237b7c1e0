"""Process-independent hashing for deriving PRNG keys from names and ids.

Randomness in ttcjax comes from keys folded with a problem's uid, a strategy
name, a budget, a sample index... Python's `hash` differs between processes,
so names are hashed with SHA-256 instead.
"""

import hashlib


def stable_hash(text: str) -> int:
  """A 31-bit hash of `text` that is the same in every process."""
  digest = hashlib.sha256(text.encode("utf-8")).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
