#!/usr/bin/env bash
# Create (or update) .venv with the server, the thin client and the dev tools, in one
# resolved environment pinned by constraints.txt (pynq 4.0 pins grpcio 1.64.0 and numpy<2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ./client -e ".[dev]"
# NVIDIA's tritonclient, for the Triton wire-compatibility test. It needs grpcio >= 1.67, which
# pynq's pin forbids in the main environment, so it lives in its own small venv.
if [ ! -x .venv-triton/bin/python ]; then
  "$PY" -m venv .venv-triton
fi
.venv-triton/bin/python -m pip install -q "tritonclient[grpc]==2.66.0"
