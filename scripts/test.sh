#!/usr/bin/env bash
# The test command: set up .venv if needed, then lint, type-check, check import layers, run pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/ruff check server client tests bench scripts
.venv/bin/ruff format --check server client tests bench scripts
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
