# Sourced by tests/run.sh and tests/windows/run.sh: each suite runs to its end whatever the ones
# before it did (with `set -e` the first failure hid every later suite), its row is kept, and
# the script that started the run prints one table at the end and exits 1 if any row failed.
# A nested runner (tests/run.sh calling tests/windows/run.sh) adds its rows to its caller's table.

if [ -z "${SUITES_TABLE:-}" ]; then
    SUITES_TABLE=$(mktemp)
    export SUITES_TABLE
    suites_owner=1
else
    suites_owner=0
fi

# suite NAME COMMAND...: run COMMAND (stdin from /dev/null, output shown as it comes) and record
# its row: the counts from pytest's last summary line, if it printed one.
suite() {
    local name=$1 log start status summary count passed failed skipped
    shift
    log=$(mktemp)
    start=$SECONDS
    echo "== $name"
    "$@" </dev/null 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    # "2 failed, 340 passed, 12 skipped, 1 error in 95.20s (0:01:35)", with or without ===.
    summary=$(grep -aE '([0-9]+ (passed|failed|skipped|errors?)|no tests ran).* in [0-9.]+s' "$log" | tail -n 1)
    rm -f "$log"
    if [ -n "$summary" ]; then
        passed=$(_suite_count passed "$summary")
        failed=$(($(_suite_count failed "$summary") + $(_suite_count 'errors?' "$summary")))
        skipped=$(_suite_count skipped "$summary")
    else
        passed=- failed=- skipped=-
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$([ "$status" -eq 0 ] && echo ok || echo "FAILED ($status)")" \
        "$passed" "$failed" "$skipped" "$((SECONDS - start))" >>"$SUITES_TABLE"
    return "$status"
}

_suite_count() { grep -oE "[0-9]+ $1" <<<"$2" | grep -oE '^[0-9]+' || echo 0; }

# suites_end: the caller's exit code (1 if any row failed); the table, if this script owns it.
suites_end() {
    if [ "$suites_owner" -eq 1 ]; then
        echo
        local row='%-68s %-12s %7s %7s %8s %8s\n' name result passed failed skipped seconds
        # shellcheck disable=SC2059
        printf "$row" suite result passed failed skipped seconds
        while IFS=$'\t' read -r name result passed failed skipped seconds; do
            printf "$row" "$name" "$result" "$passed" "$failed" "$skipped" "$seconds"
        done <"$SUITES_TABLE"
    fi
    local failed_rows
    failed_rows=$(cut -f 2 "$SUITES_TABLE" | grep -c FAILED || true)
    [ "$suites_owner" -eq 1 ] && rm -f "$SUITES_TABLE"
    [ "$failed_rows" -eq 0 ]
}
