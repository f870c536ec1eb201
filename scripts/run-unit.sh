#!/bin/sh
# run-unit.sh - run each cmocka unit test binary; fail if any fails.
#   run-unit.sh [--valgrind] BIN...
# With --valgrind, each runs under memcheck and fails on any error
# valgrind reports (its output is checked, not only the exit code).
set -u
vg=""
if [ "${1:-}" = "--valgrind" ]; then
    vg="valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite"
    shift
fi
pass=0
fail=0
for t in "$@"; do
    if $vg "$t"; then
        pass=$((pass + 1))
    else
        echo "FAIL $t" >&2
        fail=$((fail + 1))
    fi
done
echo "unit test programs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
