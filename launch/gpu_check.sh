#!/usr/bin/env bash
# Run every CUDA path one GPU can run (launch/gpu_check.py): one PASS/FAIL/SKIPPED line per path, a
# summary, exit 1 on any FAIL; at most 8 minutes on one GPU.
#   bash launch/gpu_check.sh [--dry-run] [--only NAME] [--out FILE] [--device auto|cuda|cpu]
# On a GPU machine without a package registry, the wheels that launch/gpu_wheels.sh put in .whl/
# (deepspeed, hydra-core, omegaconf and their missing requirements) are installed first into
# /tmp/site, which goes first on PYTHONPATH; without .whl/, or where deepspeed and hydra already
# import, nothing is installed. Python: $PYTHON, else .venv/bin/python, else python3.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi

dry=0
for a in "$@"; do [[ "$a" == --dry-run ]] && dry=1; done
# Install the carried wheels only where they are needed: on top of an environment that already has
# them (this repository's .venv) a second copy for another Python would shadow the working one.
if (( ! dry )) && compgen -G ".whl/*.whl" >/dev/null \
   && ! "$PY" -c 'import importlib.util as u, sys; sys.exit(not (u.find_spec("deepspeed") and u.find_spec("hydra")))'; then
  SITE="${GPU_CHECK_SITE:-/tmp/site}"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check: installing .whl/*.whl failed; the DeepSpeed paths will fail" >&2
  fi
fi
exec "$PY" -u launch/gpu_check.py "$@"
