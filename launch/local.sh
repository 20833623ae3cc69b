#!/usr/bin/env bash
# One machine, any number of GPUs (or none): run `python -m opcd.train` with the device groups and a
# GPU placement chosen for this machine (see opcd_placement in launch/common.sh), then your arguments.
#   bash launch/local.sh [--dry-run] [hydra overrides...]
#   bash launch/local.sh experiment=paper_math model=qwen3_1.7b task.train_file=data/train.jsonl
# GPUs are counted with nvidia-smi (OPCD_NUM_GPUS=N overrides, OPCD_NUM_GPUS=0 forces CPU). Your
# overrides win over the chosen ones. It runs from the repository root (like quickstart.sh): relative
# paths in overrides are relative to it. --dry-run prints the command and runs nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/common.sh"
opcd_parse_args "$@"

NGPU="$(opcd_count_gpus)"
DEVICE="${OPCD_DEVICE:-$([[ "$NGPU" -gt 0 ]] && echo cuda || echo cpu)}"
opcd_note "$NGPU GPU(s) found: $DEVICE build"
opcd_placement "$NGPU" "$DEVICE"

opcd_run cd "$ROOT"
PY="$(opcd_python)"
CMD=("$PY" -m opcd.train ${FLAGS[@]+"${FLAGS[@]}"} ${OVERRIDES[@]+"${OVERRIDES[@]}"} ${ARGS[@]+"${ARGS[@]}"})
opcd_show "${CMD[@]}"
if (( ! DRY_RUN )); then exec "${CMD[@]}"; fi
