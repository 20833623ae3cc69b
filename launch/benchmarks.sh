#!/usr/bin/env bash
# The five performance benchmarks of benchmarks/README.md, one after another (~6 minutes on 2 cores):
# teacher scoring, rollout, loss memory, weight sync, end to end against TRL on the toy model. Sets up
# first if needed. Each writes benchmarks/results/<name>.json and prints its table; the first failure
# stops the run. Run it on an idle machine: every number is a side-by-side ratio, but a busy CPU
# distorts both sides. The longer jobs (SmolLM2 head-to-head, reproduction reports) have their own
# commands in benchmarks/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup.sh"
cd "$ROOT"
for bench in bench_teacher bench_rollout bench_loss bench_sync bench_vs_trl_toy; do
  echo "=== benchmarks/$bench.py"
  "$ROOT/.venv/bin/python" "benchmarks/$bench.py"
done
echo "=== done: results in benchmarks/results/, tables in benchmarks/README.md"
