#!/usr/bin/env bash
# Run the whole test suite with the venv's python (called by `make test`).
# Services a test needs are started here and stopped on exit; none yet.
set -euo pipefail
BIN="${1:?usage: tests/run_tests.sh VENV_BIN}"
cd "$(dirname "$0")/.."
exec "$BIN/python" -m pytest -q tests
