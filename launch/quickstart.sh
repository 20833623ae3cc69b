#!/usr/bin/env bash
# Quickstart command 1: set up (idempotent), then run the main job, the default OPCD experiment on
# the shipped tiny model. Extra arguments are Hydra overrides, e.g. `bash launch/quickstart.sh steps=10`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m opcd.train "$@"
