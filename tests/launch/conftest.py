"""Makes the repository's `launch/` (not an installed package) importable."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
