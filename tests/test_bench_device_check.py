"""bench/device_check.sh --tiny runs on a CPU and prints every section's
figures, so the accelerator check cannot rot between GPU runs."""

import math
import os
import re
import subprocess
import sys

from ttcjax.experiments import callbacks
from ttcjax.verifiers import cached

ROOT = os.path.join(os.path.dirname(__file__), "..")

# Row label -> columns it prints, per section (--tiny: one decode batch;
# the search table has a 'full' and an 'incremental' column).
ROWS = {
    "decode": (["tok/s", "prefill ms", "step ms", "MB read/step", "HBM util",
                "decode TFLOP/s"], 1),
    "forward": (["forward ms", "TFLOP/s (causal)", "MFU (causal)",
                 "TFLOP/s (dense)", "MFU (dense)"], 1),
    "search": (["rounds", "round ms", "search s", "verify share",
                "PRM tokens read", "warm-up s"], 2),
}


def _figures(out: str, label: str) -> list[float]:
  """The numbers after `label` on the line it starts (a % as a fraction)."""
  lines = [l for l in out.splitlines() if l.strip().startswith(label + " ")]
  assert len(lines) == 1, f"{label!r} on {len(lines)} lines:\n{out}"
  cells = lines[0].strip()[len(label):].split()
  return [float(c[:-1]) / 100 if c.endswith("%") else float(c)
          for c in cells]


def test_tiny_run_prints_every_section():
  # CPU-sized peaks, so the utilisation figures are not rounded to 0.0%.
  env = dict(os.environ, PYTHON=sys.executable)
  proc = subprocess.run(
      ["bash", os.path.join(ROOT, "bench", "device_check.sh"), "--tiny",
       "--peak_bw", "1e10", "--peak_flops", "1e11"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  out = proc.stdout
  assert proc.returncode == 0, proc.stderr[-3000:] + out
  assert re.search(r"^decode +batch 4$", out, re.M), out
  assert re.search(r"^PRM scoring +full +incremental$", out, re.M), out
  figures = {}
  for section, (labels, columns) in ROWS.items():
    for label in labels:
      values = _figures(out, label)
      assert len(values) == columns, (section, label, values)
      assert all(math.isfinite(v) and v > 0 for v in values), (label, values)
      figures[label] = values
  # Every round ends one synthetic step (3 in --tiny), and the cached PRM
  # reads fewer tokens than re-scoring every prefix.
  assert figures["rounds"] == [3, 3]
  full, cached = figures["PRM tokens read"]
  assert cached < full
  assert re.search(r"^total [0-9.]+ s$", out, re.M), out


def test_device_check_needs_the_core_package_only():
  # A bare JAX + Flax host runs it: the cached PRM scores come from
  # ttcjax.verifiers.cached (what the sweeps use too), not experiments.
  code = (
      "import importlib.util, sys\n"
      f"spec = importlib.util.spec_from_file_location('dc', "
      f"{os.path.join(ROOT, 'bench', 'device_check.py')!r})\n"
      "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
      "bad = [m for m in ('optax', 'orbax', 'ttcjax.experiments', 'gin',\n"
      "       'tensorflow', 'seqio') if m in sys.modules]\n"
      "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                 env=dict(os.environ, PYTHONPATH=ROOT))
  assert callbacks.extend_fn is cached.extend_fn
