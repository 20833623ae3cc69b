# Shared helpers of launch/local.sh, launch/ray_cluster.sh and launch/slurm.sbatch (sourced, not run).
# The caller sets ROOT (the repository root) and `set -euo pipefail` before sourcing this file.
#
# Every launcher prints each command before running it; with --dry-run it only prints, so the output
# of a dry run is itself a shell script (one command per line, notes as `# ...` lines).

# opcd_parse_args "$@": DRY_RUN=1 when --dry-run is among the arguments; FLAGS holds Hydra's own
# flags (-m, --cfg job, -cn NAME, ...), ARGS the overrides, each in order. Flags must come before all
# overrides on the final command line: Hydra's argparse rejects overrides placed after a flag.
opcd_parse_args() {
  DRY_RUN=0
  FLAGS=()
  ARGS=()
  local takes_value=0 a
  for a in "$@"; do
    if (( takes_value )); then FLAGS+=("$a"); takes_value=0; continue; fi
    case "$a" in
      --dry-run) DRY_RUN=1 ;;
      --cfg|-c|--config-name|-cn|--config-path|-cp|--config-dir|-cd|--package|-p|--experimental-rerun)
        FLAGS+=("$a"); takes_value=1 ;;
      -*) FLAGS+=("$a") ;;
      *) ARGS+=("$a") ;;
    esac
  done
}

# opcd_is_multirun: true when FLAGS ask for a Hydra sweep (-m / --multirun).
opcd_is_multirun() {
  local a
  for a in ${FLAGS[@]+"${FLAGS[@]}"}; do
    if [[ "$a" == -m || "$a" == --multirun ]]; then return 0; fi
  done
  return 1
}

# opcd_quote WORD: WORD as a shell would need it typed (bare when safe, else single-quoted), so a
# printed line can be pasted back into a shell unchanged.
opcd_quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# opcd_show CMD...: print CMD quoted. Dry run: on stdout (the output is the plan); otherwise on
# stderr with a `+ ` prefix, like `set -x`, so logs record what ran.
opcd_show() {
  local line="" w
  for w in "$@"; do line+="$(opcd_quote "$w") "; done
  if (( DRY_RUN )); then printf '%s\n' "${line% }"; else printf '+ %s\n' "${line% }" >&2; fi
}

# opcd_note TEXT: a `# TEXT` line in the same stream as the commands.
opcd_note() {
  if (( DRY_RUN )); then printf '# %s\n' "$*"; else printf '# %s\n' "$*" >&2; fi
}

# opcd_run CMD...: print CMD, then run it unless this is a dry run.
opcd_run() {
  opcd_show "$@"
  if (( ! DRY_RUN )); then "$@"; fi
}

# opcd_run_bg CMD...: like opcd_run, in the background (printed with a trailing &); the process id
# is appended to BG_PIDS so the caller can end exactly the processes it started.
BG_PIDS=()
opcd_run_bg() {
  local line="" w
  for w in "$@"; do line+="$(opcd_quote "$w") "; done
  if (( DRY_RUN )); then printf '%s &\n' "${line% }"; return 0; fi
  printf '+ %s &\n' "${line% }" >&2
  "$@" &
  BG_PIDS+=("$!")
}

# opcd_use_venv: put $ROOT/.venv/bin first on PATH (when it exists), so `python` and `ray` are the
# project's in this shell, in `ray start`ed raylets (the Ray job's `python`) and in srun steps.
opcd_use_venv() {
  if [[ -x "$ROOT/.venv/bin/python" ]]; then
    # Printed with a literal $PATH: that is what a shell replaying the dry-run output needs.
    if (( DRY_RUN )); then printf 'export PATH=%s:$PATH\n' "$(opcd_quote "$ROOT/.venv/bin")"; else
      printf '+ export PATH=%s:$PATH\n' "$ROOT/.venv/bin" >&2; fi
    export PATH="$ROOT/.venv/bin:$PATH"
  fi
}

# opcd_ray_auth: Ray (>= 2.5x) turns token authentication on for a head started where a token
# exists (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH), but a client given an explicit
# address (workers joining, `ray job submit`, ray_wait.py) only sends it with RAY_AUTH_MODE=token:
# without this, each of them fails with "InvalidAuthToken". An explicit RAY_AUTH_MODE is kept.
opcd_ray_auth() {
  if [[ -z "${RAY_AUTH_MODE:-}" ]] && [[ -n "${RAY_AUTH_TOKEN:-}" || -n "${RAY_AUTH_TOKEN_PATH:-}" \
        || -f "${HOME:-/nonexistent}/.ray/auth_token" ]]; then
    export RAY_AUTH_MODE=token
    opcd_show export RAY_AUTH_MODE=token
  fi
}

# opcd_has_override KEY: true when the user's ARGS set KEY (KEY=..., +KEY=..., ++KEY=... or ~KEY).
opcd_has_override() {
  local a
  for a in ${ARGS[@]+"${ARGS[@]}"}; do
    a="${a#++}"; a="${a#+}"; a="${a#\~}"
    if [[ "$a" == "$1="* || "$a" == "$1" ]]; then return 0; fi
  done
  return 1
}

# opcd_override_value KEY DEFAULT: the value the user's ARGS give KEY (the last one), else DEFAULT.
opcd_override_value() {
  local a v="$2"
  for a in ${ARGS[@]+"${ARGS[@]}"}; do
    a="${a#++}"; a="${a#+}"
    if [[ "$a" == "$1="* ]]; then v="${a#*=}"; fi
  done
  printf '%s' "$v"
}

# opcd_count_gpus: GPUs usable on this machine. OPCD_NUM_GPUS wins (e.g. 0 forces the CPU build on a
# GPU machine); else nvidia-smi's list, capped by CUDA_VISIBLE_DEVICES when that is set; else 0.
opcd_count_gpus() {
  if [[ -n "${OPCD_NUM_GPUS:-}" ]]; then printf '%s' "$OPCD_NUM_GPUS"; return; fi
  local n=0 visible
  if command -v nvidia-smi >/dev/null 2>&1; then
    n="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
  fi
  if (( n > 0 )) && [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
    visible="$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c . || true)"
    if (( visible < n )); then n="$visible"; fi
  fi
  printf '%s' "${n:-0}"
}

# _opcd_add KEY VALUE: append KEY=VALUE to OVERRIDES unless the user set KEY (the user always wins;
# OVERRIDES also go before ARGS on the command line, where Hydra lets the last value win anyway).
_opcd_add() {
  opcd_has_override "$1" || OVERRIDES+=("$1=$2")
}

# opcd_placement NGPU DEVICE: fill OVERRIDES with the device groups and a placement for NGPU GPUs in
# total (NGPU empty: device groups only). Every actor's GPU share must fit at once (opcd/actors.py
# reserves them as one placement group and stops the run otherwise): the cuda defaults (2 engines +
# 1 learner rank, 1 GPU each) need 3 GPUs, so smaller counts share.
#   1 GPU : 1 engine, teacher and learner share it (0.4 + 0.3 + 0.3 of Ray's GPU; vLLM gets 30% memory)
#   2 GPUs: 1 engine on one; teacher and learner share the other (0.5 + 0.5)
#   N >= 3: teacher 1 GPU, each learner rank 1 GPU, the rest to engines of tensor_parallel_size GPUs
# (1-2 GPUs with tensor_parallel_size or learner.num_ranks > 1: nothing is chosen, only a note.)
opcd_placement() {
  local n="$1" device="$2" tp ranks teacher tg workers
  OVERRIDES=()
  _opcd_add rollout "$device"
  _opcd_add learner "$device"
  if [[ -z "$n" || "$device" != cuda ]] || (( n == 0 )); then return 0; fi
  tp="$(opcd_override_value rollout.tensor_parallel_size 1)"
  ranks="$(opcd_override_value learner.num_ranks 1)"
  if (( n <= 2 )); then
    if (( tp > 1 || ranks > 1 )); then
      opcd_note "$n GPU(s) with tensor_parallel_size=$tp, num_ranks=$ranks: no placement chosen, set the *.num_gpus yourself"
    elif (( n == 1 )); then
      _opcd_add rollout.num_workers 1; _opcd_add rollout.num_gpus 0.4; _opcd_add rollout.gpu_memory_utilization 0.3
      _opcd_add teacher.num_gpus 0.3; _opcd_add learner.num_gpus 0.3
      opcd_note "1 GPU: one vLLM engine, the teacher and the learner share it"
    else
      _opcd_add rollout.num_workers 1; _opcd_add teacher.num_gpus 0.5; _opcd_add learner.num_gpus 0.5
      opcd_note "2 GPUs: one vLLM engine; the teacher and the learner share the other GPU"
    fi
    return 0
  fi
  # Whole GPUs the teacher takes (a user's fractional value rounds up).
  teacher="$(opcd_override_value teacher.num_gpus 1)"
  tg="${teacher%%.*}"; tg="${tg:-0}"
  if [[ "$teacher" == *.* && "${teacher#*.}" =~ [1-9] ]]; then tg=$(( tg + 1 )); fi
  workers=$(( (n - tg - ranks) / tp ))
  if (( workers < 1 )); then
    echo "launch: $n GPUs cannot hold the teacher ($teacher), $ranks learner rank(s) and an engine of $tp GPU(s);" \
         "set rollout.num_workers, rollout.num_gpus, teacher.num_gpus and learner.num_gpus yourself" >&2
    return 1
  fi
  _opcd_add rollout.num_workers "$workers"; _opcd_add teacher.num_gpus 1; _opcd_add learner.num_gpus 1
  opcd_note "$n GPUs: $workers vLLM engine(s) x $tp GPU(s), teacher $tg GPU(s), $ranks learner rank(s) x 1 GPU"
}

# opcd_output_dir ROOT_DIR: a hydra.run.dir (or, for -m, hydra.sweep.dir) override under ROOT_DIR,
# unless the user set one. Needed where the job's working directory is a temporary copy (a Ray
# job's --working-dir): Hydra's default relative outputs/ would be written there and lost.
opcd_output_dir() {
  local stamp='${now:%Y-%m-%d_%H-%M-%S}'
  if opcd_is_multirun; then
    opcd_has_override hydra.sweep.dir || OVERRIDES+=("hydra.sweep.dir=$1/multirun/$stamp")
  else
    opcd_has_override hydra.run.dir || OVERRIDES+=("hydra.run.dir=$1/outputs/\${experiment}/$stamp")
  fi
}

# opcd_python: the interpreter to run opcd with (the project's .venv when present).
opcd_python() {
  if [[ -x "$ROOT/.venv/bin/python" ]]; then printf '%s' "$ROOT/.venv/bin/python"; else printf 'python3'; fi
}
