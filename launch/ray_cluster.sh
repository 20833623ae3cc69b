#!/usr/bin/env bash
# Several machines with Ray: start a cluster (or attach to one), then submit `python -m opcd.train` as
# a Ray job with ray_address=auto. Every node needs this repository and its .venv at the same path.
#   bash launch/ray_cluster.sh [--dry-run] [hydra overrides...]
#   RAY_ADDRESS=head:6379 bash launch/ray_cluster.sh ...  attach to a running cluster and submit
#   bash launch/ray_cluster.sh ...                        start a head here, print how workers join, submit
#   HOSTS="gpu2 gpu3" bash launch/ray_cluster.sh ...      start a head here and workers over ssh, wait, submit
# Environment:
#   RAY_PORT          GCS port of a head started here (6379)
#   RAY_HEAD_IP       address of a head started here (default: this host's first address)
#   RAY_HEAD_ARGS     more `ray start --head` options, e.g. "--dashboard-host=0.0.0.0" so that other
#                     machines can submit jobs (the dashboard listens on 127.0.0.1 by default)
#   OPCD_DEVICE       cuda | cpu (default cuda): the rollout/learner groups
#   OPCD_NUM_GPUS     GPUs in the whole cluster: wait for them and choose a placement (launch/common.sh)
#   OPCD_OUTPUT_ROOT  where outputs/ and multirun/ are written on the head (default: this checkout's
#                     path, which the head must have: true with a shared file system)
#   RAY_WAIT_TIMEOUT  seconds to wait for nodes and GPUs (600)
# The cluster is left running for further jobs: `ray stop` on each node ends it.
# --dry-run prints every command and runs nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/common.sh"
opcd_parse_args "$@"

PORT="${RAY_PORT:-6379}"
DEVICE="${OPCD_DEVICE:-cuda}"
NGPU="${OPCD_NUM_GPUS:-}"
read -r -a HOST_LIST <<<"${HOSTS:-}"  # space- or comma-separated
if [[ "${HOSTS:-}" == *,* ]]; then IFS=, read -r -a HOST_LIST <<<"${HOSTS// /}"; fi

opcd_run cd "$ROOT"
opcd_use_venv
opcd_ray_auth
if [[ -n "${RAY_ADDRESS:-}" ]]; then
  opcd_note "attaching to the Ray cluster at $RAY_ADDRESS (its nodes must have opcd's environment)"
else
  HEAD_IP="${RAY_HEAD_IP:-$(hostname -I 2>/dev/null | awk '{print $1}')}"
  HEAD_IP="${HEAD_IP:-127.0.0.1}"
  # Started from the venv's PATH: the raylet passes it on, so the job's `python` is the venv's.
  read -r -a HEAD_ARGS <<<"${RAY_HEAD_ARGS:-}"
  opcd_run ray start --head --node-ip-address="$HEAD_IP" --port="$PORT" ${HEAD_ARGS[@]+"${HEAD_ARGS[@]}"}
  JOIN="ray start --address=$HEAD_IP:$PORT"
  # Workers need the same token (a shared home directory, or RAY_AUTH_TOKEN set there).
  if [[ "${RAY_AUTH_MODE:-}" == token ]]; then JOIN="export RAY_AUTH_MODE=token && $JOIN"; fi
  if [[ -x "$ROOT/.venv/bin/ray" ]]; then JOIN="export PATH=$(opcd_quote "$ROOT/.venv/bin"):\$PATH && $JOIN"; fi
  JOIN="cd $(opcd_quote "$ROOT") && $JOIN"
  if (( ${#HOST_LIST[@]} == 0 )); then
    opcd_note "join each worker machine with: $JOIN"
  fi
  for host in ${HOST_LIST[@]+"${HOST_LIST[@]}"}; do
    opcd_run ssh -o BatchMode=yes "$host" "$JOIN"
  done
  export RAY_ADDRESS="$HEAD_IP:$PORT"  # set in dry runs too: later commands print it
  opcd_show export "RAY_ADDRESS=$RAY_ADDRESS"
fi
# Wait for the workers we started, or for the GPUs the user says the cluster has.
if (( ${#HOST_LIST[@]} > 0 )) || [[ -n "$NGPU" ]]; then
  opcd_run python launch/ray_wait.py --address "$RAY_ADDRESS" --nodes "$(( 1 + ${#HOST_LIST[@]} ))" \
    --gpus "${NGPU:-0}" --timeout "${RAY_WAIT_TIMEOUT:-600}"
fi

opcd_placement "$NGPU" "$DEVICE"
opcd_output_dir "${OPCD_OUTPUT_ROOT:-$ROOT}"
# --working-dir ships this checkout (minus .gitignore'd paths) to the cluster: code edits need no
# reinstall on the nodes. The job's driver runs on the head and connects with ray_address=auto.
opcd_run ray job submit --working-dir . -- python -m opcd.train ${FLAGS[@]+"${FLAGS[@]}"} ray_address=auto \
  ${OVERRIDES[@]+"${OVERRIDES[@]}"} ${ARGS[@]+"${ARGS[@]}"}
