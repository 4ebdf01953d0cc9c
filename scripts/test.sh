#!/usr/bin/env bash
# Builds vmsnap with warnings as errors and sanitizers (the `ci` preset) and runs the whole
# test suite: unit, property, crash, fuzz-corpus replay, CLI, end-to-end (real QEMU guest)
# and release (the tarball in a clean Debian chroot) tests. Long runs (label `long`) are
# left out: `ctest --test-dir build/ci -L long` runs them.
#
# Honest by construction (docs/testing.md): a test that skips or does not run fails this
# script unless it is on tests/allowed-skips.txt; the verdict is read from CTest's own JUnit
# report, and the output ends with CTest's summary. Extra arguments go to ctest (-R NAME).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh # a no-op check when everything is installed
cmake --preset ci >/dev/null
cmake --build build/ci

testing=$PWD/build/ci/Testing
mkdir -p "$testing"
report=$testing/junit.xml
log=$testing/ctest-output.log
rm -f "$report"

status=0
ctest --preset ci -j2 --no-tests=error --output-junit "$report" "$@" 2>&1 | tee "$log" ||
        status=${PIPESTATUS[0]}

python3 scripts/check-skips.py "$report" tests/allowed-skips.txt || status=1

# CTest's summary again, so that the output ends with it whatever was printed since.
summary=$(sed -n '/tests passed, .* tests\{0,1\} failed out of/,$p' "$log")
if [[ -n $summary ]]; then
        echo
        printf '%s\n' "$summary"
fi
exit "$status"
