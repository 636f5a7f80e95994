#!/usr/bin/env bash
# The Windows suite: real Windows CPython 3.12 under Wine.
#   1. in-process tests with the Windows interpreter (codec, named-pipe transport, the pool with
#      fake workers over named pipes, the HTTP API, Proactor facts);
#   2. the end-to-end tests with the supervisor and its workers running as Windows processes,
#      driven from Linux: HTTP from Linux, `supervisor stop` with the Windows interpreter;
#   3. the end-to-end tests of what an HTTP server does (marked each_server: serving, hostile
#      HTTP and bodies, floods, drain, zero-loss operations under load, rebalancing, real
#      clients) again, the pool serving with --http uvicorn.
# Extra arguments go to the second pytest run. Each part runs whatever the others did; run alone,
# it ends with a table of the parts (from tests/run.sh, its rows join that run's table).
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. tests/tools/suites.sh
prepared=$(mktemp)
if ! suite "Windows: prepare Wine and Windows CPython" bash -c 'bash tests/windows/prepare.sh >"$0"' "$prepared"; then
    rm -f "$prepared"
    suites_end
    exit 1
fi
windows_python=$(tail -n 1 "$prepared")
rm -f "$prepared"
export WINEPREFIX=${WINDOWS_ENV:-$root/.windows-env}/prefix WINEDEBUG=-all

# One wineserver for the whole run, started here with no pipes attached. Otherwise the first
# wine process of a moment starts it, and it inherits (and holds open for seconds) that
# process's stdout: a test reading the output of a short `supervisor status` then waits on it.
# Its services (winedevice.exe...) start with the first wine process too: boot them here, with
# no pipes attached either.
wineserver -k 2>/dev/null || true
wineserver -p </dev/null >/dev/null 2>&1
trap 'wineserver -k 2>/dev/null || true' EXIT
wine wineboot </dev/null >/dev/null 2>&1

# The Windows process wants a pipe for its output, not a file or a terminal: suite gives it one.
suite "Windows part 1: in-process tests, Windows CPython under Wine" \
    wine "$windows_python" -m pytest -p no:cacheprovider -q tests/ipc tests/supervisor tests/worker tests/windows

suite "Windows part 2: end to end, supervisor and workers under Wine" \
    env WINDOWS_PYTHON="$windows_python" python3 -m pytest -q -n 2 -p no:cacheprovider --durations=10 tests/e2e "$@"

suite "Windows part 3: the HTTP server's end to end again, --http uvicorn" \
    env INFERENCE_SUPERVISOR_HTTP=uvicorn WINDOWS_PYTHON="$windows_python" python3 -m pytest -q -n 2 -p no:cacheprovider \
    --durations=5 -m each_server tests/e2e
suites_end
