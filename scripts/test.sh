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

# The hugetlb case of unit/test-uffd-serve needs 4 free 2 MiB hugepages. As root, reserve
# them when fewer are free (16 MiB, kept until `sysctl vm.nr_hugepages=0` or a reboot);
# otherwise that test reports itself skipped and this script fails.
reserve_hugepages() {
        local need=4 free total
        [[ $(id -u) == 0 && -w /proc/sys/vm/nr_hugepages ]] || return 0
        free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
        total=$(cat /proc/sys/vm/nr_hugepages)
        ((free < need)) || return 0
        echo $((total + need - free)) >/proc/sys/vm/nr_hugepages 2>/dev/null || true
        echo "test.sh: vm.nr_hugepages $total -> $(cat /proc/sys/vm/nr_hugepages)" \
                "(unit/test-uffd-serve needs $need free 2 MiB hugepages)"
}

bash scripts/setup.sh # a no-op check when everything is installed
reserve_hugepages
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
