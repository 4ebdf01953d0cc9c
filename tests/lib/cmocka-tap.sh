#!/usr/bin/env bash
# Runs one cmocka test binary and tells CTest the truth about it. cmocka counts a case that
# calls skip() as not failed, so the binary exits 0 and CTest would report "Passed" for a
# run that left part of the test out. This wrapper asks cmocka for TAP (a line protocol made
# to be read by programs), passes every line through, and exits:
#   the binary's status  when it failed (non-zero) or skipped itself as a whole (77);
#   77 (CTest: skipped)  when it passed but one or more cases were skipped — the names and
#                        the count are printed, the binary's own output says why;
#   1                    when it passed but did not report every case it planned;
#   0                    when every planned case ran and passed.
# usage: cmocka-tap.sh BINARY [ARGS...]
set -uo pipefail
shopt -s lastpipe # the reading loop runs in this shell, so its counts survive the pipe

binary=$1
shift
name=$(basename "$binary")
planned=-1
reported=0
skipped=()

CMOCKA_MESSAGE_OUTPUT=TAP "$binary" "$@" 2>&1 |
        while IFS= read -r line; do
                printf '%s\n' "$line"
                case $line in
                1..*) planned=${line#1..} ;;
                "ok "* | "not ok "*)
                        reported=$((reported + 1))
                        # cmocka 1.1 writes "not ok N # SKIP name", later ones "ok N # SKIP name"
                        [[ $line == *"# SKIP"* ]] && skipped+=("${line##*# SKIP }")
                        ;;
                esac
        done
rc=${PIPESTATUS[0]}

if ((rc != 0)); then
        exit "$rc"
fi
if ((planned < 0 || reported != planned)); then
        echo "cmocka-tap: $name exited 0 but reported $reported of $planned planned cases"
        exit 1
fi
if ((${#skipped[@]})); then
        echo "cmocka-tap: $name: ${#skipped[@]} of $planned cases skipped (${skipped[*]});" \
                "the other $((planned - ${#skipped[@]})) passed. Reported as skipped."
        exit 77
fi
exit 0
