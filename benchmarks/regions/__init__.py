"""The functions behind the documents' rendered regions (``benchmarks.common.regions``), one module per
subject. Importing this package registers every region; ``python -m benchmarks.render_docs`` fills them.

* ``perf``    -- the performance benchmarks: teacher scoring, rollout, weight sync, loss memory, data path
* ``trl``     -- the head-to-heads with TRL (SmolLM2, toy model)
* ``quality`` -- the reproduction reports, experience, the quickstart's default run
* ``targets`` -- every target's verdict under the one rule, and the README's status line
* ``scaling`` -- the scaling model of the paper presets (on paper: ``scaling_model.json``)
* ``reliability`` -- faults and bad input: what the user sees, what is kept (docs/reliability.py)
"""
from benchmarks.regions import perf, quality, reliability, scaling, targets, trl  # noqa: F401  (registers the regions)
