#!/usr/bin/env bash
# Quickstart command 2: set up if needed, then run the whole test suite: the fast pure-logic tests,
# then the slow ones that start Ray, vLLM and DeepSpeed and train models. Exits non-zero if any fails.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup.sh" || exit 1
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
REPORTS="$(mktemp -d)"
"$PY" -m pytest -m "not slow" --junitxml="$REPORTS/fast.xml" "$@"; fast=$?
"$PY" -m pytest -m slow --junitxml="$REPORTS/slow.xml" "$@"; slow=$?
echo "fast tests exit code: $fast, slow tests exit code: $slow"
# One combined closing line for both runs (pytest's exit code 5, "no tests collected", counts as a failure).
"$PY" - "$REPORTS" <<'PYEOF'
import sys, pathlib, xml.etree.ElementTree as ET
n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for f in pathlib.Path(sys.argv[1]).glob("*.xml"):
    for s in ET.parse(f).getroot().iter("testsuite"):
        for k in n:
            n[k] += int(s.get(k, 0))
failed = n["failures"] + n["errors"]
print(f"tests: {n['tests'] - failed - n['skipped']} passed, {failed} failed, {n['skipped']} skipped")
PYEOF
[[ $fast -eq 0 && $slow -eq 0 ]]
