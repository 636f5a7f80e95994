#!/usr/bin/env bash
# The whole test run, as CI does it on a fresh machine: install the package with its test
# dependencies, run the Linux suite (then the end-to-end tests marked each_server once more with
# --http uvicorn), then the Windows suite (Windows CPython under Wine, which
# tests/windows/prepare.sh sets up on first use).
# Every suite runs whatever the others did; a table at the end has a row for each (passed,
# failed, skipped, seconds), and the exit code is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/tools/suites.sh

suite "Install the package and its test extras" python3 -m pip install -q -e ".[test]"
# perf_analyzer for tests/e2e/test_clients.py (skipped without it); the wrapper's path is its last line.
perf_log=$(mktemp)
if suite "Fetch perf_analyzer" bash -c 'bash tests/tools/get-perf-analyzer.sh >"$0"' "$perf_log"; then
    PERF_ANALYZER=$(tail -n 1 "$perf_log")
    export PERF_ANALYZER
fi
rm -f "$perf_log"
suite "Lint: ruff check" python3 -m ruff check .
suite "Lint: ruff format --check" python3 -m ruff format --check .
suite "Types: mypy" python3 -m mypy
suite "Linux suite" python3 -m pytest -q -n 2
suite "Linux: the HTTP server's end to end again, --http uvicorn" \
    env INFERENCE_SUPERVISOR_HTTP=uvicorn python3 -m pytest -q -n 2 -m each_server tests/e2e
bash tests/windows/run.sh
suites_end
