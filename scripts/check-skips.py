#!/usr/bin/env python3
"""Reads CTest's JUnit report (ctest --output-junit) and fails when a test did not run,
unless it skipped itself (exit 77, SKIP_RETURN_CODE) and is on the allowed list: a file with
one test a line, the CTest name first, then why a CI machine cannot have what it needs
('#' starts a comment). See docs/testing.md.

usage: check-skips.py JUNIT.xml ALLOWED.txt
Exit: 0 every test ran or skipped with leave; 1 otherwise (each one named, with the last
line it printed); 2 the report or the list cannot be read.
"""
import sys
import xml.etree.ElementTree as ET

SKIP_MESSAGE = "SKIP_RETURN_CODE="  # CTest's message for a test that skipped itself


def read_allowed(path):
    """{test name: reason} from the allowed list; exits 2 on a malformed line."""
    allowed = {}
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 1)
            if len(parts) < 2:
                sys.exit("check-skips: %s:%d: '%s' has no reason; each line is "
                         "'TEST-NAME why CI machines cannot run it'" % (path, n, line))
            allowed[parts[0]] = parts[1]
    return allowed


def last_line(case):
    out = (case.findtext("system-out") or "").strip().splitlines()
    return out[-1].strip() if out else "(no output)"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    report, allowed_path = sys.argv[1], sys.argv[2]
    try:
        allowed = read_allowed(allowed_path)
        cases = ET.parse(report).getroot().iter("testcase")
    except (OSError, ET.ParseError) as e:
        print("check-skips: cannot read %s" % e, file=sys.stderr)
        return 2
    ran, leave, bad = 0, [], []
    for case in cases:
        name, status = case.get("name"), case.get("status")
        if status in ("run", "fail"):
            ran += 1
            continue
        skipped = case.find("skipped")
        message = skipped.get("message", "") if skipped is not None else status
        if message.startswith(SKIP_MESSAGE) and name in allowed:
            leave.append((name, allowed[name]))
        else:
            bad.append((name, message, last_line(case)))
    for name, why in leave:
        print("check-skips: %s skipped, allowed: %s" % (name, why))
    for name, message, said in bad:
        print("check-skips: %s did not run (%s): %s" % (name, message, said))
    print("check-skips: %d ran, %d skipped on the allowed list (%s), %d skipped or not run "
          "without leave" % (ran, len(leave), allowed_path, len(bad)))
    if bad:
        print("check-skips: install what they need (scripts/setup.sh) or, if no CI machine "
              "can have it, add them to %s with the reason (docs/testing.md)" % allowed_path)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
