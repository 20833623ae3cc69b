#!/usr/bin/env bash
# Quickstart command 2: set up if needed, then run the whole test suite: the fast pure-logic tests,
# then the slow ones that start Ray, vLLM and DeepSpeed and train models. Exits non-zero if any fails.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup.sh" || exit 1
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
"$PY" -m pytest -m "not slow" "$@"; fast=$?
"$PY" -m pytest -m slow "$@"; slow=$?
echo "fast tests exit code: $fast, slow tests exit code: $slow"
[[ $fast -eq 0 && $slow -eq 0 ]]
