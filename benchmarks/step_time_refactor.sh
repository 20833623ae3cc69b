#!/usr/bin/env bash
# Reproduces benchmarks/results/step_time.json (first entry): run on an idle machine, then
#   python -m benchmarks.step_time --label "before: 6ea0505, fp32" /tmp/m_old --label "after: refactored loop, fp32" /tmp/m_new_fp32 --label "after, default dtype=auto (bf16 here)" /tmp/m_new_auto
# It expects `git worktree add /tmp/old 6ea0505` and writes its logs to $R.
# Step time of the default run: fresh-clone quickstart (new code, dtype auto), old code (fp32), new code (fp32).
set -u
R=${R:-/tmp/step_time_logs}; mkdir -p $R
rm -rf /tmp/fresh && git clone -q "$(cd "$(dirname "$0")/.." && pwd)" /tmp/fresh
cd /tmp/fresh
t0=$(date +%s.%N)
bash launch/setup.sh > $R/fresh_setup.log 2>&1
t1=$(date +%s.%N)
.venv/bin/python -m opcd.train hydra.run.dir=/tmp/m_new_auto > $R/new_auto.log 2>&1
t2=$(date +%s.%N)
echo "fresh setup_s=$(echo "$t1-$t0"|bc) run_s=$(echo "$t2-$t1"|bc)" > $R/times.txt
cd /tmp/old
t3=$(date +%s.%N)
PYTHONPATH=/tmp/old /tmp/fresh/.venv/bin/python -m opcd.train hydra.run.dir=/tmp/m_old > $R/old.log 2>&1
t4=$(date +%s.%N)
echo "old run_s=$(echo "$t4-$t3"|bc)" >> $R/times.txt
cd /tmp/fresh
.venv/bin/python -m opcd.train hydra.run.dir=/tmp/m_new_fp32 model.dtype=float32 learner.precision=fp32 > $R/new_fp32.log 2>&1
t5=$(date +%s.%N)
echo "new_fp32 run_s=$(echo "$t5-$t4"|bc)" >> $R/times.txt
echo DONE >> $R/times.txt
