#!/usr/bin/env bash
# The whole test run, as CI does it on a fresh machine: install the package with its test
# dependencies, run the Linux suite (its end-to-end part once per HTTP server), then the
# Windows suite (Windows CPython under Wine, which tests/windows/prepare.sh sets up on first use).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q -e ".[test]"
PERF_ANALYZER=$(bash tests/tools/get-perf-analyzer.sh)
export PERF_ANALYZER
echo "== Lint and types"
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
echo "== Linux suite"
python3 -m pytest -n 2
echo "== Linux end-to-end suite again, the pool serving with --http uvicorn"
INFERENCE_SUPERVISOR_HTTP=uvicorn python3 -m pytest -n 2 tests/e2e
echo "== Windows suite"
bash tests/windows/run.sh
