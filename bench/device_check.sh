#!/usr/bin/env bash
# Runs bench/device_check.py on an accelerator host (or with --tiny on a CPU).
# Flags are passed through, e.g. `bash bench/device_check.sh --peak_bw 3.35e12`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi || true
fi
PYTHON="${PYTHON:-python}"
export PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON}" "${REPO}/bench/device_check.py" "$@"
