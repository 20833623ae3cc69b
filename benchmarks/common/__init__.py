"""What the benchmarks share, one concern per module.

* ``process``    -- run a job (opcd training, an evaluator, the TRL worker) as a timed subprocess
* ``runs``       -- train one method of a head-to-head (opcd or TRL) and collect its run record
* ``trl_sdft``   -- the TRL side: its configurations, the worker's job, ``SDFTConfig``, dataset rows
* ``trl_worker`` -- the TRL training process (``python -m benchmarks.common.trl_worker JOB.json``)
* ``timing``     -- per-step and per-phase summaries of a run record
* ``machine``    -- what machine and packages a result was measured with
* ``report``     -- number formatting for the Markdown tables, JSON writing
* ``plotting``   -- one Matplotlib figure written to a file
* ``memory``     -- peak extra memory of a function, from the torch profiler's allocation timeline
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root: cwd of every job
