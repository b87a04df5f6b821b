#!/usr/bin/env bash
# Create .venv and install the runtime (default) or the runtime plus tests (--dev).
# A convenience: `pip install .` in any venv installs the same runtime. Safe to re-run.
# CPU only: torch is pinned to the local CPU wheel for the tests; see README for GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
extras=""
if [ "${1:-}" = "--dev" ]; then
  # torch first and pinned: an unpinned torch would pull several GB of CUDA packages.
  $PIP install -q "torch==2.13.0"
  extras="[dev,diffusion,fast,pipecat,training]"
fi
$PIP install -q -e ".${extras}"
