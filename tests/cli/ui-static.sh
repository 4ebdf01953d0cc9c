#!/bin/bash
# vmsnapd's static route of the dashboard: files without the token, the API with it, path
# traversal refused, the security headers (issue 15). The test is tests/api/ui_static.py.
set -u
command -v python3 >/dev/null || { echo "ui-static: SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/../api/ui_static.py"
