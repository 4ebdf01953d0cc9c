#!/bin/bash
# docs/openapi.yaml passes `redocly lint` (npm @redocly/cli, pinned in tests/api/package.json)
# with the recommended-strict rules (every warning an error; tests/api/redocly.yaml says what
# is turned off and why, tests/api/.redocly.lint-ignore.yaml what is accepted).
set -u
SRC=${VMSNAP_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bash "$SRC/tests/api/tools.sh" || exit $?
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_COLOR=1
out=$("$SRC/tests/api/node_modules/.bin/redocly" lint "$SRC/docs/openapi.yaml" \
        --config "$SRC/tests/api/redocly.yaml" --format=codeframe 2>&1)
rc=$?
# The banner about Node.js versions is noise here; the findings are not.
printf '%s\n' "$out" | grep -v '[║╔╚]'
if [ $rc -ne 0 ]; then
        echo "api-lint: redocly lint failed (exit $rc)"
        exit 1
fi
echo "api-lint: docs/openapi.yaml passes redocly lint"
